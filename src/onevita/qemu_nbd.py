"""qcow2 files read and written through QEMU's own ``qemu-nbd``, spoken to over a unix socket.

Backups need qcow2 files with exactly chosen clusters allocated (an increment: changed data,
and allocated zeros where the guest zeroed, so OpenNebula's ``qemu-img rebase -u`` chain reads
them instead of the older backup), and restores need a qcow2 chain's raw bytes without a raw
copy on disk. ``qemu-img convert`` can do neither (it turns zeros into holes, and will not write
to a pipe). So QEMU keeps the format (no qcow2 code here) and onevita speaks NBD to it: the
fixed-newstyle handshake with ``NBD_OPT_GO`` and simple replies, which every qemu-nbd since 2.x
serves. ``write_zeroes`` sends ``NBD_CMD_WRITE_ZEROES`` with ``NO_HOLE``: qcow2 v3 then marks
the clusters as zero clusters, allocated as far as a backing chain is concerned (what
``qemu-io write -z`` does, and what backup-contract.md §3.4 checked).
"""

from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
import tempfile
import time
from contextlib import contextmanager
from typing import Iterator

from .errors import OnevitaError

__all__ = ["NbdClient", "NbdError", "served"]

NBDMAGIC = b"NBDMAGIC"
IHAVEOPT = 0x49484156454F5054
REPLY_MAGIC = 0x3E889045565A9
REQUEST_MAGIC = 0x25609513
SIMPLE_REPLY_MAGIC = 0x67446698
FLAG_FIXED_NEWSTYLE, FLAG_NO_ZEROES = 1, 2
OPT_GO = 7
REP_ACK, REP_INFO = 1, 3
INFO_EXPORT = 0
REP_ERROR_BIT = 1 << 31
CMD_READ, CMD_WRITE, CMD_DISC, CMD_FLUSH, CMD_WRITE_ZEROES = 0, 1, 2, 3, 6
CMD_FLAG_NO_HOLE = 2
TRANSMIT_READ_ONLY = 2
MAX_REQUEST = 4 << 20  # qemu-nbd takes up to 32 MiB per request
START_SECONDS = 30.0
STOP_SECONDS = 60.0


class NbdError(OnevitaError):
    """qemu-nbd could not be started, or refused a request."""


class NbdClient:
    """One NBD connection in the transmission phase: the export's ``size`` and its I/O."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.size, self.readonly = self._handshake()
        self._cookie = 0

    def _recv(self, n: int) -> bytes:
        data = bytearray()
        while len(data) < n:
            chunk = self.sock.recv(min(n - len(data), 1 << 20))
            if not chunk:
                raise NbdError("qemu-nbd closed the connection")
            data += chunk
        return bytes(data)

    def _recv_into(self, view: memoryview) -> None:
        while view:
            got = self.sock.recv_into(view)
            if not got:
                raise NbdError("qemu-nbd closed the connection")
            view = view[got:]

    def _handshake(self) -> tuple[int, bool]:
        """Fixed newstyle: greet, ``NBD_OPT_GO`` for the default export, read its size."""
        magic, opt_magic, flags = struct.unpack(">8sQH", self._recv(18))
        if magic != NBDMAGIC or opt_magic != IHAVEOPT or not flags & FLAG_FIXED_NEWSTYLE:
            raise NbdError("qemu-nbd does not speak fixed-newstyle NBD")
        self.sock.sendall(struct.pack(">I", FLAG_FIXED_NEWSTYLE | (flags & FLAG_NO_ZEROES)))
        payload = struct.pack(">IH", 0, 0)  # default export name "", no extra info asked
        self.sock.sendall(struct.pack(">QII", IHAVEOPT, OPT_GO, len(payload)) + payload)
        size, transmit = -1, 0
        while True:
            magic, _opt, kind, length = struct.unpack(">QIII", self._recv(20))
            data = self._recv(length)
            if magic != REPLY_MAGIC:
                raise NbdError("qemu-nbd sent a malformed option reply")
            if kind & REP_ERROR_BIT:
                raise NbdError(f"qemu-nbd refused the export: {data.decode(errors='replace') or kind}")
            if kind == REP_INFO and len(data) >= 12 and struct.unpack(">H", data[:2])[0] == INFO_EXPORT:
                size, transmit = struct.unpack(">QH", data[2:12])
            elif kind == REP_ACK:
                break
        if size < 0:
            raise NbdError("qemu-nbd did not say the export's size")
        return size, bool(transmit & TRANSMIT_READ_ONLY)

    def _request(self, cmd: int, offset: int, length: int, flags: int = 0,
                 data: bytes | memoryview = b"") -> int:
        self._cookie += 1
        self.sock.sendall(struct.pack(">IHHQQI", REQUEST_MAGIC, flags, cmd, self._cookie, offset, length))
        if data:
            self.sock.sendall(data)
        return self._cookie

    def _reply(self, cookie: int, what: str, offset: int) -> None:
        magic, error, got = struct.unpack(">IIQ", self._recv(16))
        if magic != SIMPLE_REPLY_MAGIC or got != cookie:
            raise NbdError("qemu-nbd sent a malformed reply")
        if error:
            raise NbdError(f"{what} at offset {offset} failed in qemu-nbd: {os.strerror(error)}")

    def read(self, offset: int, length: int) -> bytes:
        """``length`` bytes at ``offset``."""
        out = bytearray(length)
        view = memoryview(out)
        for pos in range(0, length, MAX_REQUEST):
            n = min(MAX_REQUEST, length - pos)
            self._reply(self._request(CMD_READ, offset + pos, n), "read", offset + pos)
            self._recv_into(view[pos:pos + n])
        return bytes(out)

    def write(self, offset: int, data: bytes | memoryview) -> None:
        """``data`` at ``offset``: allocated data clusters."""
        view = memoryview(data)
        for pos in range(0, len(view), MAX_REQUEST):
            chunk = view[pos:pos + MAX_REQUEST]
            self._reply(self._request(CMD_WRITE, offset + pos, len(chunk), data=chunk), "write", offset + pos)

    def write_zeroes(self, offset: int, length: int) -> None:
        """Zeros at ``offset`` that stay allocated (``NO_HOLE``): a backing file never shows through."""
        for pos in range(0, length, MAX_REQUEST):
            n = min(MAX_REQUEST, length - pos)
            self._reply(self._request(CMD_WRITE_ZEROES, offset + pos, n, CMD_FLAG_NO_HOLE), "write zeroes",
                        offset + pos)

    def flush(self) -> None:
        """Everything written is on disk."""
        self._reply(self._request(CMD_FLUSH, 0, 0), "flush", 0)

    def disconnect(self) -> None:
        """``NBD_CMD_DISC``: qemu-nbd closes the image and, as started here, exits."""
        self._request(CMD_DISC, 0, 0)


def _connect(path: str, server: subprocess.Popen[bytes]) -> socket.socket:
    """Connect once qemu-nbd listens; NbdError with its stderr if it exits first."""
    deadline = time.monotonic() + START_SECONDS
    while True:
        if server.poll() is not None:
            raise NbdError(f"qemu-nbd exited with status {server.returncode}")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
            return sock
        except OSError:
            sock.close()
            if time.monotonic() > deadline:
                raise NbdError(f"qemu-nbd did not listen on {path} within {START_SECONDS:.0f} s") from None
            time.sleep(0.01)


@contextmanager
def served(path: str, fmt: str, *, readonly: bool) -> Iterator[NbdClient]:
    """``path`` (a ``fmt`` image) served by a private qemu-nbd and connected. Leaving the block
    cleanly flushes, disconnects and waits for qemu-nbd to close the image; on an error it is
    killed (the file is then the caller's to remove)."""
    workdir = tempfile.mkdtemp(prefix="onevita-nbd-")
    sock_path = os.path.join(workdir, "sock")
    argv = ["qemu-nbd", "--format", fmt, "--socket", sock_path, "--cache", "writeback",
            *(["--read-only"] if readonly else []), path]
    errfile = tempfile.TemporaryFile(dir=workdir)  # noqa: SIM115 (closed in the finally below)
    try:
        server = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errfile)
    except FileNotFoundError as e:
        shutil.rmtree(workdir, ignore_errors=True)
        raise NbdError("qemu-nbd: command not found (install QEMU's utilities: qemu-utils)") from e
    clean = False
    try:
        try:
            client = NbdClient(_connect(sock_path, server))
        except NbdError as e:
            server.kill()
            server.wait()
            errfile.seek(0)
            detail = errfile.read().decode(errors="replace").strip()
            raise NbdError(f"{e} serving {path}" + (f": {detail}" if detail else "")) from None
        try:
            yield client
            if not readonly:
                client.flush()
            client.disconnect()
            clean = True
        finally:
            client.sock.close()
        server.wait(timeout=STOP_SECONDS)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        errfile.close()
        shutil.rmtree(workdir, ignore_errors=True)
        if clean and server.returncode != 0:
            raise NbdError(f"qemu-nbd serving {path} exited with status {server.returncode}")
