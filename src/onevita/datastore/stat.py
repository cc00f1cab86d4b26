"""``datastore/stat``: the size in MB the image will have once ``cp`` has imported IMAGE/PATH.

oned calls it before ``cp`` and makes the answer IMAGE/SIZE, which ``cp`` then creates a raw
image of, so the answer follows what ``cp`` will do with the same datastore settings:

* a local file is opened like ``cp`` opens it (``source.open_source``: RESTRICTED_DIRS and
  SAFE_DIRS, symlinks resolved, gzip/bzip2/xz told apart by their magic bytes and decompressed
  unless NO_DECOMPRESS=yes, the format probed from the first decompressed bytes);
* uncompressed: ``qemu-img info -f <format>`` of the file (a raw file's size, a qcow2's or
  other format's virtual size);
* compressed raw: the decompressed byte count, by decompressing the whole stream (gzip's ISIZE
  trailer is the size modulo 2^32 and only covers the last member, so it cannot be the answer);
* compressed qcow2/vmdk/vdi/vhdx/vpc: the decompressed data in a sparse temporary file under
  STAGING_DIR (default /var/tmp; on the front-end, where stat runs), then its virtual size from
  ``qemu-img info``;
* an http(s) URL: its Content-Length (a HEAD request). The size of compressed or non-raw data
  behind a URL is not knowable without downloading it all, so stat reports the size of the bytes
  served; ``cp`` sizes a converted image by its own conversion, and raw data longer than that
  answer (a compressed raw download) makes the import fail with a clear reason.
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
import urllib.request

import orjson

from ..errors import BadRequest, OnevitaError
from ..one.model import YES, Datastore, parse_action_data
from ..run import run
from .source import CHUNK, ImageSource, open_source

__all__ = ["stat"]

MIB = 1 << 20
STAGING_DIR = "/var/tmp"  # noqa: S108 (the bash driver's default, as cp uses it)
_ZEROS = bytes(CHUNK)


def _url_size(url: str) -> int:
    request = urllib.request.Request(url, method="HEAD")  # noqa: S310 (http/https only, checked)
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:  # noqa: S310
            length = reply.headers.get("Content-Length")
    except OSError as e:
        raise OnevitaError(f"cannot reach {url}: {e}") from e
    if length is None or not length.isdigit():
        raise OnevitaError(f"{url} does not report its size (no Content-Length)")
    return int(length)


def _virtual_size(path: str, fmt: str, what: str) -> int:
    """``qemu-img info``'s virtual size of ``path`` read as ``fmt`` (never probed, so a raw file
    that looks like another format is measured as the raw data ``cp`` will import)."""
    proc = run(["qemu-img", "info", "-f", fmt, "--output", "json", path], check=False)
    if proc.returncode != 0:
        raise OnevitaError(f"cannot read image {what}: {proc.stderr.decode(errors='replace').strip()}")
    return int(orjson.loads(proc.stdout)["virtual-size"])


def _count(source: ImageSource) -> int:
    """The bytes left in ``source``, read to the end."""
    total = 0
    while True:
        data = source.read(CHUNK)
        if not data:
            return total
        total += len(data)


def _staged_virtual_size(source: ImageSource, staging_dir: str) -> int:
    """Decompress ``source`` into a sparse file in ``staging_dir`` and measure it there."""
    if not staging_dir.startswith("/"):
        raise BadRequest(f"STAGING_DIR must be an absolute path, got {staging_dir!r}")
    try:
        tmp = tempfile.TemporaryDirectory(prefix="onevita-stat-", dir=staging_dir)
    except OSError as e:
        raise OnevitaError(f"cannot create a staging directory in {staging_dir}: {e.strerror}") from e
    with tmp:
        staged = os.path.join(tmp.name, f"image.{source.format}")
        try:
            with open(staged, "wb") as f:
                size = 0
                while True:
                    data = source.read(CHUNK)
                    if not data:
                        break
                    if data == _ZEROS[:len(data)]:
                        f.seek(len(data), os.SEEK_CUR)  # leave a hole
                    else:
                        f.write(data)
                    size += len(data)
                f.truncate(size)
        except OSError as e:
            raise OnevitaError(f"cannot write the staging file in {staging_dir}: {e.strerror}") from e
        return _virtual_size(staged, source.format, source.what)


def _local_size(path: str, datastore: Datastore) -> int:
    template = datastore.template
    with open_source(path, restricted=template.get("RESTRICTED_DIRS", ""), safe=template.get("SAFE_DIRS", ""),
                     decompress=template.get("NO_DECOMPRESS", "") not in YES) as source:
        if not source.compression:
            return _virtual_size(os.path.realpath(path), source.format, path)
        if source.format == "raw":
            return _count(source)
        return _staged_virtual_size(source, template.get("STAGING_DIR") or STAGING_DIR)


def stat(request_id: str) -> None:
    """``stat REQUEST_ID``: print the size in MB, rounded up, of the image ``cp`` would make of
    IMAGE/PATH (see the module's docstring)."""
    data = parse_action_data(sys.stdin.buffer.read())
    path = data.image_path
    if not path:
        raise BadRequest("stat needs IMAGE/PATH")
    if path.startswith(("http://", "https://")):
        size = _url_size(path)
    elif path.startswith("/"):
        size = _local_size(path, data.datastore)
    else:
        raise BadRequest(f"unsupported image PATH {path!r}")
    sys.stdout.write(f"{math.ceil(size / MIB)}\n")
