"""Backup URLs (``rsync://``, ``restic://``) read through OpenNebula's own ``downloader.sh``.

A backup datastore keeps a VM's disks as qcow2 chains on its own host (rsync) or in a restic
repository; only its downloader knows how to reassemble a chain into one qcow2 (backup-contract
§3.3, §4). So, as the Ceph driver does, onevita runs ``<remotes>/datastore/downloader.sh
--nodecomp <url> -`` from the remotes tree the action was started from, as an argument list
(no shell), and reads the qcow2 from its stdout. The ``+rbd`` forms are Ceph's ``rbd export``
formats (a tar.gz of rbd2/rbdiff files), which only Ceph can import: refused up front.
"""

from __future__ import annotations

import collections
import contextlib
import os
import re
import signal
import subprocess
import threading
from typing import IO, Deque

from ..errors import BadRequest, ConfigError, OnevitaError
from ..remotes import remotes_dir

__all__ = ["BACKUP_URL", "Download", "check_backup_url", "downloader_path", "is_backup_url"]

BACKUP_URL = re.compile(r"(rsync|restic)(\+rbd)?://")
STDERR_LINES = 20  # of the downloader's stderr kept for the failure reason
CLOSE_SECONDS = 10.0  # for a downloader whose reader went away to end by itself


def is_backup_url(path: str) -> bool:
    """Whether ``path`` is a backup datastore URL only downloader.sh can read."""
    return BACKUP_URL.match(path) is not None


def check_backup_url(url: str) -> str:
    """``url`` if onevita can import what it names; BadRequest for Ceph's rbd formats and for
    anything that could be read as an option or hold a line break."""
    match = BACKUP_URL.match(url)
    if match is None:
        raise BadRequest(f"not a backup URL: {url!r}")
    if match.group(2):
        raise BadRequest(f"{url.split('://')[0]}:// backups hold Ceph rbd export files (rbd2/rbdiff) of "
                         "a Ceph disk; onevita imports qcow2 backups only: restore this one into a Ceph "
                         "datastore")
    if any(c in url for c in "\n\r\0"):
        raise BadRequest(f"malformed backup URL {url!r}")
    return url


def downloader_path() -> str:
    """OpenNebula's ``datastore/downloader.sh`` in the remotes tree this action runs from."""
    path = os.path.join(remotes_dir(), "datastore", "downloader.sh")
    if not os.access(path, os.X_OK):
        raise ConfigError(f"OpenNebula's downloader is not at {path}: it is needed to read backup URLs")
    return path


class Download:
    """The bytes ``downloader.sh --nodecomp <url> -`` writes; ``read`` returns ``b""`` only after
    the downloader exited 0 (else OnevitaError with its exit status and last stderr lines)."""

    def __init__(self, url: str) -> None:
        self.url = check_backup_url(url)
        self.argv = [downloader_path(), "--nodecomp", self.url, "-"]
        try:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, start_new_session=True)
        except OSError as e:
            raise OnevitaError(f"cannot run {self.argv[0]}: {e.strerror}") from e
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.stdout: IO[bytes] = self.proc.stdout
        self.errors: Deque[str] = collections.deque(maxlen=STDERR_LINES)
        self._drain = threading.Thread(target=self._read_stderr, args=(self.proc.stderr,), daemon=True)
        self._drain.start()
        self.done = False

    def _read_stderr(self, pipe: IO[bytes]) -> None:
        for line in pipe:
            text = line.decode(errors="replace").strip()
            if text:
                self.errors.append(text)

    def read(self, size: int) -> bytes:
        if self.done:
            return b""
        data = self.stdout.read1(size) if hasattr(self.stdout, "read1") else self.stdout.read(size)
        if data:
            return data
        self.done = True
        status = self.proc.wait()
        self._drain.join()
        if status != 0:
            detail = " ".join(self.errors) or "no message"
            raise OnevitaError(f"cannot download {self.url}: downloader.sh exited with status {status}: "
                               f"{detail}")
        return b""

    def close(self) -> None:
        """Stop the downloader if it still runs (a failed import): its pipe closed first, so
        the commands it runs end on SIGPIPE, then its whole process group killed; reaped."""
        self.stdout.close()
        if self.proc.poll() is None:
            try:
                self.proc.wait(timeout=CLOSE_SECONDS)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._drain.join(timeout=CLOSE_SECONDS)
