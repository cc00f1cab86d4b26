"""``vitastor-cli`` for the jobs that move data and have no C API: layer removal and flatten.

``rm`` merges a removed layer's data into its children and ``flatten`` copies the parents'
data into an image; both need the OSD object listing that only the C++ client has.
The binary is ``$ONEVITA_VITASTOR_CLI`` or ``vitastor-cli`` from PATH.

Without a terminal vitastor-cli writes a progress line per step (``rm``: one per object, up to
a thousand); every stderr line of an action reaches oned.log, so they are read as they come and
turned into an INFO line per quarter of the job or half a minute at most. The other lines are
kept for the failure reason (stdout and stderr are read as one stream, so neither pipe can
fill up while the other is read).
"""

from __future__ import annotations

import os
import re
import subprocess
import time

from .. import log
from ..errors import OnevitaError
from ..names import check_image

__all__ = ["flatten", "remove"]

_PROGRESS = re.compile(r"(?:Removed|Filtering target blocks:) *([0-9]+)/([0-9]+)")
PROGRESS_SECONDS = 30.0
REASON_LINES = 10


class _Progress:
    """Thins vitastor-cli's progress lines to a few INFO lines."""

    def __init__(self, what: str) -> None:
        self.what, self.quarter, self.last = what, 0, time.monotonic()

    def line(self, text: str) -> bool:
        """Report ``text`` if it is a progress line worth a log line; whether it was one."""
        match = _PROGRESS.search(text)
        if match is None:
            return False
        done, total = int(match[1]), int(match[2])
        quarter = 4 * done // total if total else 0
        now = time.monotonic()
        if quarter > self.quarter or now - self.last >= PROGRESS_SECONDS:
            self.quarter, self.last = max(quarter, self.quarter), now
            log.info(f"{self.what}: {100 * done // max(total, 1)}% ({text.strip()})")
        return True


def _cli(conf: str | None, *args: str) -> None:
    argv = [os.environ.get("ONEVITA_VITASTOR_CLI", "vitastor-cli")]
    if conf:
        argv += ["--config_path", conf]
    argv += args
    what = f"vitastor-cli {' '.join(args)}"
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, errors="replace")
    except FileNotFoundError as e:
        raise OnevitaError(f"{argv[0]}: command not found") from e
    assert proc.stdout is not None
    progress, other = _Progress(what), []
    for line in proc.stdout:  # stdout and stderr, read as they come
        if not progress.line(line) and line.strip():
            other.append(line.strip())
    if proc.wait() != 0:
        raise OnevitaError(f"{what} failed (exit {proc.returncode}): {' '.join(other[-REASON_LINES:])}")


def remove(conf: str | None, name: str) -> None:
    """``vitastor-cli rm NAME``: delete one layer, merging its data into any children."""
    _cli(conf, "rm", check_image(name))


def flatten(conf: str | None, name: str) -> None:
    """``vitastor-cli flatten NAME``: copy the parents' data into NAME and detach it from them."""
    _cli(conf, "flatten", check_image(name))
