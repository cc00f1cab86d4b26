"""An image's PATH opened as a byte stream, in this process, the way OpenNebula's
``downloader.sh`` would deliver it to the bash driver's ``cp``.

No downloader.sh, curl or shell: a local file (refused under RESTRICTED_DIRS unless under
SAFE_DIRS, like ``libfs.sh check_restricted``) or an http(s) URL (urllib, streamed), throttled to
LIMIT_TRANSFER_BW, checked against IMAGE/TEMPLATE/MD5 and SHA1 over the bytes as fetched, and
decompressed (gzip, bzip2, xz, told apart by their magic bytes) unless NO_DECOMPRESS=yes. The
format is read from the first decompressed bytes, like qemu-img's probes, so the caller knows
whether the data can go straight into an image (raw) or needs ``qemu-img convert`` first.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import lzma
import os
import re
import time
import urllib.error
import urllib.request
import zlib
from typing import Any, Protocol

from ..errors import BadRequest, OnevitaError
from ..one.location import etc_dir, var_dir

__all__ = ["CHUNK", "ChecksumMismatch", "ImageSource", "Reader", "detect_format", "open_source",
           "parse_bandwidth", "restricted_dirs"]

CHUNK = 1 << 20
HEAD = 512  # enough for every magic detect_format looks at
HTTP_TIMEOUT = 60.0  # seconds for connecting and for each read: a stalled server fails the copy
_BANDWIDTH = re.compile(r"([0-9]+)([KMG]?)", re.IGNORECASE)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}  # as curl's --limit-rate counts them


class Reader(Protocol):
    """Anything with ``read(n)`` returning at most n bytes, ``b""`` at the end."""

    def read(self, size: int, /) -> bytes: ...


class ChecksumMismatch(OnevitaError):
    """The fetched bytes do not have the MD5 or SHA1 the image template declares."""


def parse_bandwidth(value: str) -> int | None:
    """LIMIT_TRANSFER_BW in bytes/s (``500K``, ``10M``, ``1G`` as downloader.sh passes them to
    curl); None when unset or 0."""
    value = value.strip()
    if not value:
        return None
    match = _BANDWIDTH.fullmatch(value)
    if not match:
        raise BadRequest(f"LIMIT_TRANSFER_BW must be bytes per second with an optional K, M or G, "
                         f"got {value!r}")
    limit = int(match.group(1)) * _UNITS[match.group(2).upper()]
    return limit or None


def restricted_dirs(extra: str) -> str:
    """RESTRICTED_DIRS as ``set_up_datastore`` builds it: oned's var and etc directories (under
    ONE_LOCATION when set), $HOME/, then the datastore's own list."""
    var, etc = f"{var_dir()}/", f"{etc_dir()}/"
    home = os.environ.get("HOME", "")
    return " ".join(d for d in (var, etc, f"{home}/" if home else "", extra.strip()) if d)


def _check_restricted(path: str, restricted: str, safe: str) -> str:
    """The path with symlinks resolved (``readlink -f``), refused when it starts with a
    RESTRICTED_DIRS entry and with no SAFE_DIRS entry. The resolved path is what gets opened, so
    a link swapped after the check still cannot lead elsewhere."""
    real = os.path.realpath(path)
    if any(real.startswith(d) for d in safe.split()):
        return real
    if any(real.startswith(d) for d in restricted.split()):
        raise OnevitaError(f"Not allowed to copy images from {restricted}")
    return real


def detect_format(head: bytes) -> str:
    """qemu-img's name for the format whose magic ``head`` starts with; ``raw`` otherwise."""
    if head.startswith(b"QFI\xfb"):
        return "qcow2"
    if head.startswith((b"KDMV", b"# Disk DescriptorFile")):
        return "vmdk"
    if head[64:68] == b"\x7f\x10\xda\xbe":  # VDI signature 0xbeda107f, little endian
        return "vdi"
    if head.startswith(b"vhdxfile"):
        return "vhdx"
    if head.startswith(b"conectix"):
        return "vpc"
    return "raw"


def _read_full(reader: Reader, size: int) -> bytes:
    """Up to ``size`` bytes, fewer only at the end (a socket's read may return less)."""
    parts, left = [], size
    while left:
        part = reader.read(left)
        if not part:
            break
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


class _Fetch:
    """The bytes as fetched: throttled, hashed, and checked against MD5/SHA1 at the end."""

    def __init__(self, inner: Any, what: str, checksums: dict[str, str], limit: int | None) -> None:
        self.inner, self.what, self.limit = inner, what, limit
        self.hashes = {name: (hashlib.new(name), want.strip().lower()) for name, want in checksums.items()}
        self.total, self.start, self.done = 0, time.monotonic(), False
        # small reads keep a low limit smooth instead of bursting a whole chunk
        self.chunk = min(CHUNK, max(4096, limit // 8)) if limit else CHUNK

    def read(self, size: int) -> bytes:
        if self.done:
            return b""
        try:
            data = self.inner.read(min(size, self.chunk))
        except OSError as e:  # a reset connection, a read timeout, an I/O error
            raise OnevitaError(f"cannot read {self.what}: {e}") from e
        if not data:
            self.done = True
            self._verify()
            return b""
        self.total += len(data)
        for hasher, _ in self.hashes.values():
            hasher.update(data)
        if self.limit:
            ahead = self.total / self.limit - (time.monotonic() - self.start)
            if ahead > 0:
                time.sleep(ahead)
        return data  # type: ignore[no-any-return]

    def _verify(self) -> None:
        for name, (hasher, want) in self.hashes.items():
            got = hasher.hexdigest()
            if got != want:
                raise ChecksumMismatch(f"checksum mismatch: {name.upper()} of {self.what} is {got}, "
                                       f"the image template says {want}")


class _Prefixed:
    """A reader whose first bytes were taken out to look at, handed out again first."""

    def __init__(self, head: bytes, inner: Reader) -> None:
        self.head, self.inner = head, inner

    def read(self, size: int) -> bytes:
        if self.head:
            data, self.head = self.head[:size], self.head[size:]
            return data
        return self.inner.read(size)


_DECOMPRESSORS: tuple[tuple[bytes, str, Any], ...] = (
    (b"\x1f\x8b", "gzip", lambda f: gzip.GzipFile(fileobj=f, mode="rb")),
    (b"BZh", "bzip2", lambda f: bz2.BZ2File(f, mode="rb")),
    (b"\xfd7zXZ\x00", "xz", lambda f: lzma.LZMAFile(f, mode="rb")),  # noqa: SIM115
)


class ImageSource:
    """The image data, decompressed, with its detected ``format`` and ``compression``.

    ``read`` raises ChecksumMismatch at the end when the fetched bytes differ from the template's
    checksum, so a consumer must treat the data as good only after reading ``b""``."""

    def __init__(self, inner: Any, what: str, *, checksums: dict[str, str], limit: int | None,
                 decompress: bool) -> None:
        self.what = what
        self._closable = inner
        self._fetch = _Fetch(inner, what, checksums, limit)
        head = _read_full(self._fetch, HEAD)
        stream: Reader = _Prefixed(head, self._fetch)
        self.compression = ""
        for magic, name, opener in _DECOMPRESSORS if decompress else ():
            if head.startswith(magic):
                self.compression, stream = name, opener(stream)
                head = self._guard(lambda s=stream: _read_full(s, HEAD))
                stream = _Prefixed(head, stream)
                break
        self._stream = stream
        self.format = detect_format(head)

    def _guard(self, call: Any) -> bytes:
        """``call()``, with a decompressor's own errors turned into a reason naming the file."""
        try:
            return call()  # type: ignore[no-any-return]
        except OnevitaError:
            raise
        except (OSError, EOFError, zlib.error, lzma.LZMAError, ValueError) as e:
            raise OnevitaError(f"cannot decompress {self.what} ({self.compression}): {e}") from e

    def read(self, size: int = CHUNK) -> bytes:
        """Up to ``size`` bytes of image data; ``b""`` once all of it was read and checked."""
        data = self._guard(lambda: self._stream.read(size))
        if not data:  # a decompressor may stop before the fetched stream ends: check it all
            while self._fetch.read(CHUNK):
                pass
        return data

    def close(self) -> None:
        self._closable.close()

    def __enter__(self) -> ImageSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _open_url(url: str) -> Any:
    """The response to GET ``url``; only http(s) handlers, so a redirect cannot lead to a
    file:// or ftp:// URL."""
    opener = urllib.request.OpenerDirector()
    for handler in (urllib.request.ProxyHandler(), urllib.request.HTTPHandler(),
                    urllib.request.HTTPSHandler(), urllib.request.HTTPRedirectHandler(),
                    urllib.request.HTTPDefaultErrorHandler(), urllib.request.HTTPErrorProcessor()):
        opener.add_handler(handler)
    try:
        return opener.open(url, timeout=HTTP_TIMEOUT)
    except urllib.error.HTTPError as e:
        raise OnevitaError(f"cannot download {url}: HTTP {e.code} {e.reason}") from e
    except urllib.error.URLError as e:
        raise OnevitaError(f"cannot download {url}: {e.reason}") from e
    except OSError as e:
        raise OnevitaError(f"cannot download {url}: {e}") from e


def open_source(path: str, *, restricted: str = "", safe: str = "", md5: str = "", sha1: str = "",
                limit: int | None = None, decompress: bool = True) -> ImageSource:
    """Open IMAGE/PATH: an absolute local path, an http(s) URL, or a backup URL (``rsync://``,
    ``restic://``: ``backup_url``, never decompressed, as ``downloader.sh --nodecomp``).
    ``restricted`` is the datastore's RESTRICTED_DIRS (the defaults of ``restricted_dirs`` are
    added here)."""
    from .backup_url import Download, is_backup_url

    checksums = {name: value for name, value in (("md5", md5), ("sha1", sha1)) if value.strip()}
    inner: Any
    if is_backup_url(path):  # a backup datastore's qcow2 chain, through OpenNebula's downloader.sh
        inner, decompress = Download(path), False
    elif path.startswith(("http://", "https://")):
        inner = _open_url(path)
    elif path.startswith("/"):
        real = _check_restricted(path, restricted_dirs(restricted), safe)
        try:
            inner = open(real, "rb")  # noqa: SIM115 (closed by ImageSource.close)
        except OSError as e:
            raise OnevitaError(f"cannot open {path}: {e.strerror}") from e
    else:
        raise BadRequest(f"unsupported image PATH {path!r}")
    try:
        return ImageSource(inner, path, checksums=checksums, limit=limit, decompress=decompress)
    except BaseException:
        inner.close()
        raise
