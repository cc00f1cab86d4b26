"""Vitastor jobs: each opens the cluster named by a vitastor.conf path and does one thing.

They take and return JSON scalars so the same function runs in-process on the front-end or on
a host behind ``onevita host-job`` (see ``onevita.cluster``). Each is idempotent: a retried job
finds its own earlier work done and succeeds; deleting something missing succeeds.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import threading
from typing import TYPE_CHECKING, Any, Iterator

import orjson

from .. import log
from ..errors import BadRequest, ConfigError, ImageExists, OnevitaError
from ..names import BACKUP_CHECKPOINT, check_image, snapshot_name
from ..run import CommandFailed, run
from . import cli
from .catalog import Catalog, Inode
from .config import read_config
from .etcd import Etcd

if TYPE_CHECKING:
    from ..datastore.source import Reader

__all__ = ["clone", "delete", "exists", "import_image", "pool_usage", "resize",
           "snapshot_create", "snapshot_delete", "snapshot_revert", "snapshot_flatten", "vm_disk_usage"]

MIB = 1 << 20


def open_catalog(conf: str | None) -> Catalog:
    """The image catalog of the cluster ``conf`` (vitastor.conf path) points at."""
    config = read_config(conf)
    return Catalog(Etcd(config.etcd_address), config.etcd_prefix)


def _layers(catalog: Catalog, name: str) -> list[Inode]:
    """``name``, all its ``name@N`` snapshot layers, its ``name@backup-N`` backup checkpoints and
    the old head an interrupted revert left (``name.revert``), leaves first."""
    pattern = re.compile(re.escape(name) + rf"(@[0-9]+|@{BACKUP_CHECKPOINT}[0-9]+|\.revert)?")
    return leaves_first(catalog, [i for i in catalog.inodes.values() if pattern.fullmatch(i.name)])


def leaves_first(catalog: Catalog, layers: list[Inode]) -> list[Inode]:
    """``layers``, each after every one of them that reads through it, so removing them in this
    order never merges data between them."""
    ordered: list[Inode] = []
    remaining = {i.num: i for i in layers}
    while remaining:
        leaves = [i for i in remaining.values()
                  if not any(c.num in remaining for c in catalog.children(i))]
        if not leaves:  # a cycle cannot happen in Vitastor; stop rather than spin
            leaves = list(remaining.values())
        for leaf in sorted(leaves, key=lambda i: i.name):
            ordered.append(leaf)
            del remaining[leaf.num]
    return ordered


def exists(conf: str | None, name: str) -> bool:
    """Whether layer ``name`` exists."""
    return open_catalog(conf).find(check_image(name)) is not None


def clone(conf: str | None, pool: str | None, parent: str, name: str, size: int) -> None:
    """A new writable layer ``name`` on top of ``parent`` (bash: ``create --parent``), ``size``
    bytes (0 = the parent's). Already there as a child of ``parent``: success."""
    catalog = open_catalog(conf)
    base = catalog.get(check_image(parent))
    size = max(size, base.size)
    existing = catalog.find(check_image(name))
    if existing is not None:
        if base.num not in {a.num for a in catalog.ancestors(existing)}:
            raise ImageExists(f"Vitastor image {name} already exists and is not a clone of {parent}")
        log.info(f"{name} already exists as a clone of {parent}")
        if existing.size < size:
            catalog.modify(existing, size=size)
        return
    target_pool = catalog.pool(pool, default=catalog.pools.get(base.pool_id))
    catalog.create(name, size, target_pool, parent=base)
    log.info(f"created {name} ({size // MIB} MiB) on {parent} in pool {target_pool.name}")


def delete(conf: str | None, name: str) -> None:
    """Remove ``name``, every ``name@N`` snapshot layer and every ``name@backup-N`` backup
    checkpoint; layers other images read through keep their data in those images (vitastor-cli
    rm merges it). Missing: success."""
    catalog = open_catalog(conf)
    layers = _layers(catalog, check_image(name))
    if not layers:
        log.info(f"{name} does not exist, nothing to delete")
    for layer in layers:
        cli.remove(conf, layer.name)
        log.info(f"removed {layer.name}")


def resize(conf: str | None, name: str, size: int) -> None:
    """Grow ``name`` to ``size`` bytes (rounded up to 4 KiB); already that big: success."""
    catalog = open_catalog(conf)
    inode = catalog.get(check_image(name))
    size = -(-size // 4096) * 4096
    if inode.size != size:
        catalog.modify(inode, size=size)
        log.info(f"resized {name} from {inode.size // MIB} to {size // MIB} MiB")


def snapshot_create(conf: str | None, name: str, snap_id: int) -> None:
    """Snapshot ``name`` as ``name@snap_id``; already the parent of ``name``: success."""
    catalog = open_catalog(conf)
    snap = snapshot_name(name, snap_id)
    existing = catalog.find(snap)
    if existing is not None:
        head = catalog.get(name)
        if head.parent_key != (existing.pool_id, existing.id):
            raise ImageExists(f"snapshot {snap} already exists and is not the parent of {name}")
        log.info(f"{snap} already exists")
        return
    catalog.snapshot(name, str(snap_id))
    log.info(f"created snapshot {snap}")


def snapshot_delete(conf: str | None, name: str, snap_id: int) -> None:
    """Remove the layer ``name@snap_id``, merging its data into the layers above; missing: success."""
    snap = snapshot_name(name, snap_id)
    if open_catalog(conf).find(snap) is None:
        log.info(f"{snap} does not exist, nothing to delete")
        return
    cli.remove(conf, snap)
    log.info(f"removed snapshot {snap}")


def snapshot_revert(conf: str | None, name: str, snap_id: int) -> None:
    """Make ``name`` a fresh child of ``name@snap_id``. One transaction renames the current
    head aside (``name.revert``) and creates the new one, so ``name`` exists at every etcd
    revision; the old head is removed afterwards, and a retry finishes an interrupted revert.
    An aside found while ``name`` exists is left over from an earlier revert: it goes first."""
    catalog = open_catalog(conf)
    snap = catalog.get(snapshot_name(name, snap_id))
    aside = f"{name}.revert"
    if catalog.find(name) is None:  # an older, interrupted revert
        catalog.create(name, snap.size, catalog.pools[snap.pool_id], parent=snap)
    else:
        if catalog.find(aside) is not None:
            cli.remove(conf, aside)
            catalog.load()
        catalog.swap_head(name, aside, snap)
    if catalog.find(aside) is not None:
        cli.remove(conf, aside)
    log.info(f"reverted {name} to {snap.name}")


def snapshot_flatten(conf: str | None, name: str, snap_id: int) -> None:
    """Make ``name`` an independent copy of ``name@snap_id`` and drop every snapshot of it
    (OpenNebula's snapshot-flatten), backup checkpoints too: the next backup of a flattened
    image is taken whole. The old head is renamed aside before anything is removed. A retry
    after the snapshot itself was removed (``name`` has no parent any more) only removes the
    layers that are left."""
    catalog = open_catalog(conf)
    snap = snapshot_name(name, snap_id)
    if catalog.find(snap) is not None:
        snapshot_revert(conf, name, snap_id)
        cli.flatten(conf, name)
        catalog = open_catalog(conf)
    elif catalog.get(name).parent_id:
        catalog.get(snap)  # ImageNotFound: not an earlier flatten of this snapshot
    else:
        log.info(f"{snap} is gone and {name} has no parent: finishing an earlier flatten")
    for layer in _layers(catalog, name):
        if layer.name != name:
            cli.remove(conf, layer.name)
    log.info(f"flattened {name} from snapshot {snap_id}")


def pool_usage(conf: str | None, pool: str | None) -> dict[str, float]:
    """TOTAL_MB, USED_MB, FREE_MB of the datastore's pool, as ``vitastor-cli df`` counts them."""
    catalog = open_catalog(conf)
    usage = catalog.usage(catalog.pool(pool))
    return {"TOTAL_MB": usage.total / MIB, "USED_MB": usage.used / MIB, "FREE_MB": usage.free / MIB}


def vm_disk_usage(conf: str | None, prefix: str) -> dict[str, dict[str, dict[str, Any]]]:
    """Used bytes of every VM disk and disk snapshot in the cluster, by VM id, found by name:
    ``<prefix>-sys-<vm>-<disk>`` (volatile) and ``<image>-<vm>-<disk>`` where ``<image>`` exists
    (clones), each with its ``@<snap>`` layers. Persistent images carry no VM in their name.

    A disk's backup checkpoints (``@backup-<increment>``) are no OpenNebula snapshot: their
    bytes count in the disk's own size (DISK_SIZE), since the disk holds that space until the
    next backup replaces them. Other ``@`` layers are not the driver's and are left out."""
    catalog = open_catalog(conf)
    used = catalog.used_sizes()
    names = {i.name for i in catalog.inodes.values()}
    volatile = re.compile(re.escape(prefix) + r"-sys-([0-9]+)-([0-9]+)")
    cloned = re.compile(r"(.+)-([0-9]+)-([0-9]+)")
    snapshot, checkpoint = re.compile(r"[0-9]+"), re.compile(re.escape(BACKUP_CHECKPOINT) + r"[0-9]+")
    result: dict[str, dict[str, dict[str, Any]]] = {}
    for inode in catalog.inodes.values():
        base, at, snap = inode.name.partition("@")
        if at and not (snapshot.fullmatch(snap) or checkpoint.fullmatch(snap)):
            continue
        match = volatile.fullmatch(base)
        if match:
            vm, disk = match.groups()
        else:
            match = cloned.fullmatch(base)
            if not match or match.group(1) not in names:
                continue
            vm, disk = match.group(2), match.group(3)
        entry = result.setdefault(vm, {"disks": {}, "snapshots": {}})
        size = used.get((inode.pool_id, inode.id), 0)
        if snapshot.fullmatch(snap):
            entry["snapshots"].setdefault(disk, {})[snap] = size
        else:  # the disk itself or one of its backup checkpoints
            entry["disks"][disk] = entry["disks"].get(disk, 0) + size
    return result


IMPORTING = ".importing"  # suffix of an image while it is filled
CONVERTIBLE = ("qcow2", "vmdk", "vdi", "vhdx", "vpc")  # what onevita.datastore.source detects
STAGE_CHUNK = 1 << 20
CHECK_OK = (0, 3, 63)  # qemu-img check: clean, only leaked clusters, format without checks


def clear_partial(conf: str | None, catalog: Catalog, name: str, what: str) -> str:
    """``name.importing``, the name an image has while it is filled (renamed when complete, so
    ``name`` never holds partial data); one an interrupted ``what`` left is removed first, so a
    retry starts clean."""
    partial = check_image(name + IMPORTING)
    if catalog.find(partial) is not None:
        log.warn(f"removing {partial}, left by an interrupted {what}")
        delete(conf, partial)
        catalog.load()
    return partial


def _round_up(size: int) -> int:
    """``size`` rounded up to Vitastor's 4 KiB, and at least 4 KiB (an image cannot be empty)."""
    return max(-(-size // 4096) * 4096, 4096)


def _stream_into(conf: str | None, image: str, size: int, stream: Reader) -> int:
    """Copy ``stream`` into ``image`` (``size`` bytes): the C client reads a socket that a
    thread fills. A socket, not a pipe: the client forks, its child inherits the writing end
    too, and only ``shutdown`` ends the data for every holder. The data is good only if the
    stream reached its end without an error (a checksum is checked there), so the thread's
    error wins over a finished copy."""
    import socket

    from .client import import_fd

    errors: list[BaseException] = []

    def pump(out: socket.socket) -> None:
        total = 0
        try:
            while True:
                data = stream.read(STAGE_CHUNK)
                if not data:
                    return
                total += len(data)
                if total > size:
                    raise OnevitaError(f"the image data is longer than IMAGE/SIZE ({size // MIB} MB)")
                out.sendall(data)
        except BaseException as e:  # noqa: B036 (re-raised by the caller's thread)
            errors.append(e)
        finally:
            with contextlib.suppress(OSError):  # the reader is gone when the copy failed
                out.shutdown(socket.SHUT_WR)
            out.close()

    reader, writer = socket.socketpair()
    thread = threading.Thread(target=pump, args=(writer,), daemon=True)
    thread.start()
    try:
        copied = import_fd(read_config(conf), reader.fileno(), image, size)
    finally:
        reader.close()  # a pump still sending gets EPIPE and stops
        thread.join()
    if errors:
        raise errors[0]
    return copied


def _stage(stream: Reader, path: str) -> None:
    """Write ``stream`` to ``path``, leaving holes for all-zero chunks."""
    with open(path, "wb") as out:
        while True:
            data = stream.read(STAGE_CHUNK)
            if not data:
                break
            if data.count(0) == len(data):
                out.seek(len(data), os.SEEK_CUR)
            else:
                out.write(data)
        out.truncate()


def _other_files(info: Any, path: str) -> Iterator[str]:
    """Files other than ``path`` that ``qemu-img info`` says the image reads: backing files,
    external data files, VMDK extents."""
    if isinstance(info, dict):
        for key, value in info.items():
            if key in ("backing-filename", "full-backing-filename", "data-file") or (
                    key == "filename" and value != path):
                yield str(value)
            else:
                yield from _other_files(value, path)
    elif isinstance(info, list):
        for item in info:
            yield from _other_files(item, path)


def _check_staged(stream: Reader, fmt: str, tmp: str) -> tuple[str, int]:
    """Stage ``stream`` (an image in ``fmt``) in ``tmp`` and check it; its path and virtual
    size. An image referring to other files (a backing file, a data file, VMDK extents) is
    refused: qemu-img and qemu-nbd would read them from this host's disks."""
    staged = os.path.join(tmp, f"image.{fmt}")
    try:
        _stage(stream, staged)
    except OSError as e:
        raise OnevitaError(f"cannot write the staging file in {os.path.dirname(tmp)}: {e.strerror}") from e
    try:
        info = orjson.loads(run(["qemu-img", "info", "--output", "json", "-f", fmt, staged]).stdout)
        others = sorted(set(_other_files(info, staged)))
        if others:
            raise OnevitaError(f"refusing the {fmt} image: it refers to other files ({', '.join(others)})")
        # reading past the end of a truncated file gives zeros, not an error: check first
        check = run(["qemu-img", "check", "-q", "-f", fmt, staged], check=False)
        if check.returncode not in CHECK_OK:
            detail = (check.stderr or check.stdout).decode(errors="replace").strip()
            raise OnevitaError(f"the {fmt} image is damaged (qemu-img check exit {check.returncode}): "
                               f"{detail}")
    except CommandFailed as e:
        raise OnevitaError(f"cannot convert the {fmt} image to raw: {e}") from e
    return staged, int(info.get("virtual-size", 0))


class _NbdReader:
    """The raw bytes of an image served by qemu-nbd, read in order up to its size."""

    def __init__(self, client: Any) -> None:
        self.client, self.offset = client, 0

    def read(self, size: int) -> bytes:
        size = min(size, self.client.size - self.offset)
        if size <= 0:
            return b""
        data: bytes = self.client.read(self.offset, size)
        self.offset += len(data)
        return data


def _import_converted(conf: str | None, catalog: Catalog, target: Any, partial: str, fmt: str,
                      staging_dir: str, stream: Reader) -> int:
    """Stage and check ``stream`` (``fmt``) in ``staging_dir``, create ``partial`` of its
    virtual size and fill it with the raw bytes qemu-nbd serves: no raw copy on disk. The
    staging files are always removed; ``partial`` is the caller's to remove on failure."""
    from ..qemu_nbd import served

    try:
        tmp = tempfile.mkdtemp(prefix="onevita-cp-", dir=staging_dir)
    except OSError as e:
        raise ConfigError(f"cannot use STAGING_DIR {staging_dir}: {e.strerror}") from e
    try:
        staged, size = _check_staged(stream, fmt, tmp)
        catalog.create(partial, _round_up(size), target)
        with served(staged, fmt, readonly=True) as client:
            return _stream_into(conf, partial, _round_up(size), _NbdReader(client))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def import_image(conf: str | None, pool: str | None, name: str, size: int, fmt: str, staging_dir: str,
                 stream: Reader) -> int:
    """A new image ``name`` with the data of ``stream`` (datastore/cp); returns bytes copied.

    Raw data goes straight into an image of ``size`` bytes (IMAGE/SIZE, rounded up to 4 KiB;
    longer data fails the import). Other formats are staged in ``staging_dir`` and checked
    (``qemu-img info``/``check``); the image gets their virtual size and the raw bytes qemu-nbd
    serves from the staged file (no raw copy on disk); the staging files are always removed.
    The image is filled as ``name.importing`` and renamed when complete, so ``name`` never
    holds partial data; a failed import removes it. OpenNebula
    never reuses image ids, so an existing ``name`` is not this image's: ImageExists. A
    ``name.importing`` left by an interrupted run is removed first, so a retry starts clean."""
    catalog = open_catalog(conf)
    if catalog.find(check_image(name)) is not None:
        raise ImageExists(f"Vitastor image {name} already exists; OpenNebula never reuses image ids, "
                          "so it holds other data: remove it first")
    partial = clear_partial(conf, catalog, name, "import")
    target = catalog.pool(pool)
    try:
        if fmt == "raw":
            if size <= 0:
                raise BadRequest("IMAGE/SIZE is needed to import raw data")
            catalog.create(partial, _round_up(size), target)
            copied = _stream_into(conf, partial, _round_up(size), stream)
        elif fmt in CONVERTIBLE:
            copied = _import_converted(conf, catalog, target, partial, fmt, staging_dir, stream)
        else:
            raise BadRequest(f"unsupported image format {fmt!r}")
        catalog.modify(catalog.get(partial), rename=name)
    except BaseException:
        if catalog.find(partial) is not None:  # created by this run (the catalog keeps its own writes)
            delete(conf, partial)
        raise
    log.info(f"imported {copied} bytes of {fmt} data into {name} in pool {target.name}")
    return copied
