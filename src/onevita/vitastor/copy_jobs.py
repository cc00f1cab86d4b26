"""Vitastor jobs that move image data through libvitastor_client: image → new image
(datastore/clone), image or snapshot → save-as image (tm/cpds), image → checksum and image →
stdout (datastore/export and its download).

Like ``onevita.vitastor.jobs``, each takes and returns JSON scalars and is idempotent. Copies
read what the source reads through its parent chain and write only data (holes and zero
granules are skipped), so a copy has no parent and stays sparse.
"""

from __future__ import annotations

import hashlib
import os
import sys
import threading

import orjson

from .. import log
from ..errors import BadRequest, ImageExists
from ..names import check_conf, check_image
from .catalog import Catalog, Inode
from .config import read_config
from .jobs import clear_partial, delete, open_catalog

__all__ = ["copy_into", "copy_to_new", "export_stream", "md5"]

MIB = 1 << 20
COPY_OF = "onevita_copy_of"  # meta key naming the image a datastore clone was made from
HASH_CHUNK = 1 << 20


def _fill_new(conf: str | None, catalog: Catalog, base: Inode, name: str, pool: str | None,
              size: int, meta: dict[str, str] | None = None) -> int:
    """Create ``name`` (``size`` bytes, in ``pool``, default the source's) as ``name.importing``,
    copy ``base`` into it and rename it: ``name`` never holds partial data. A ``name.importing``
    left by an interrupted run is removed first; a failed copy removes it. Returns bytes copied."""
    from .client import copy_image

    partial = clear_partial(conf, catalog, name, "copy")
    target = catalog.pool(pool, default=catalog.pools.get(base.pool_id))
    catalog.create(partial, size, target, meta=meta)
    try:
        copied = copy_image(read_config(conf), base.name, partial)
        catalog.modify(catalog.get(partial), rename=name)
    except BaseException:
        delete(conf, partial)
        raise
    log.info(f"copied {base.name} to {name} ({copied} bytes of data) in pool {target.name}")
    return copied


def copy_to_new(conf: str | None, pool: str | None, source: str, name: str) -> int:
    """A new image ``name`` with the data and size of ``source`` and no parent (datastore/clone).
    The copy's ``meta`` names ``source``, so a retry finds its finished copy and succeeds; any
    other image called ``name``: ImageExists. Returns bytes copied (0 on such a retry)."""
    catalog = open_catalog(conf)
    base = catalog.get(check_image(source))
    existing = catalog.find(check_image(name))
    if existing is not None:
        if (existing.meta or {}).get(COPY_OF) != source or existing.parent_id:
            raise ImageExists(f"Vitastor image {name} already exists and is not a copy of {source}")
        log.info(f"{name} is already a copy of {source}")
        return 0
    return _fill_new(conf, catalog, base, name, pool, base.size, meta={COPY_OF: source})


def copy_into(conf: str | None, pool: str | None, source: str, name: str) -> int:
    """Copy what ``source`` (a disk, or a snapshot ``disk@N``) reads into the save-as image
    ``name`` (tm/cpds). Missing: created like ``copy_to_new``, the source's size. There (an
    empty image from mkfs, or an earlier try of this copy): grown to the source's size if
    smaller, then written in place; a retry writes the same data again. An existing image with
    a parent is not an empty save-as image: ImageExists. Returns bytes copied."""
    from .client import copy_image

    catalog = open_catalog(conf)
    base = catalog.get(check_image(source))
    target = catalog.find(check_image(name))
    if target is None:
        return _fill_new(conf, catalog, base, name, pool, base.size)
    if target.parent_id:
        raise ImageExists(f"Vitastor image {name} already exists and reads through another image: "
                          "it is not an empty save-as image")
    if target.readonly:
        raise ImageExists(f"Vitastor image {name} is readonly: it is not an empty save-as image")
    if target.size < base.size:
        catalog.modify(target, size=base.size)
        log.info(f"grew {name} from {target.size // MIB} to {base.size // MIB} MiB")
    copied = copy_image(read_config(conf), base.name, name)
    log.info(f"copied {source} to {name} ({copied} bytes of data)")
    return copied


def _hash_pipe(read_fd: int, digest: hashlib._Hash, counted: list[int]) -> threading.Thread:
    def pump() -> None:
        with os.fdopen(read_fd, "rb", buffering=0) as stream:
            while chunk := stream.read(HASH_CHUNK):
                digest.update(chunk)
                counted[0] += len(chunk)

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    return thread


def md5(conf: str | None, name: str) -> dict[str, object]:
    """The MD5 (hex) of every byte ``name`` reads, streamed through a pipe into hashlib, and the
    number of bytes hashed."""
    from .client import export_to_file

    digest = hashlib.md5()  # noqa: S324 (OpenNebula's MD5 field, not a security check)
    counted = [0]
    read_fd, write_fd = os.pipe()
    thread = _hash_pipe(read_fd, digest, counted)
    try:
        export_to_file(read_config(conf), check_image(name), write_fd)
    finally:
        os.close(write_fd)
        thread.join()
    log.info(f"md5 of {name}: {digest.hexdigest()} ({counted[0]} bytes)")
    return {"md5": digest.hexdigest(), "size": counted[0]}


def export_stream() -> None:
    """Admin command ``export-stream``, run on a host by ``onevita download``: read
    ``{"conf": path or null, "name": image}`` on stdin and write the image's bytes to stdout.
    Errors go to stderr with exit 1, like any command."""
    from .client import export_to_file

    try:
        request = orjson.loads(sys.stdin.buffer.read())
    except orjson.JSONDecodeError as e:
        raise BadRequest(f"export-stream request is not JSON: {e}") from None
    if not isinstance(request, dict) or not isinstance(request.get("name"), str):
        raise BadRequest("export-stream expects a JSON object with name and conf")
    conf = request.get("conf")
    if conf is not None and not isinstance(conf, str):
        raise BadRequest("export-stream: conf must be a path")
    name = check_image(request["name"])
    config = read_config(check_conf(conf) if conf else None)
    sys.stdout.flush()
    out = os.dup(1)  # the library's child takes fd 1 for its log pipe
    try:
        export_to_file(config, name, out, progress=False)
    finally:
        os.close(out)
