"""Host jobs of a VM backup: checkpoint layers, the staging directory the backup datastore
ships, and one disk's export into it as ``disk.<disk_id>.<increment_id>``.

A backup reads a *checkpoint*: the readonly layer ``<disk>@backup-<increment_id>``, taken for
all of a VM's disks in one etcd transaction (``Catalog.snapshot_many``), so the disks are
consistent with each other and the running VM writes on into new heads. The checkpoint of the
last backup OpenNebula accepted stays until the next backup: an increment holds the granules
written since then, which are the granules the layers between the two checkpoints hold (along
the layer tree: after a snapshot revert the old checkpoint is on a side branch, and what
either branch wrote since their common layer differs). Those come from Vitastor's allocation
bitmaps (READ_BITMAP, no data read), are widened to whole qcow2 clusters and written with the
new checkpoint's bytes; clusters that read as zeros become allocated zero clusters, so
OpenNebula's ``qemu-img rebase -u`` chain never shows an older backup's data through them.

The backup datastores (rsync, restic) take whatever the TM left in the staging directory:
``vm.xml`` (the VM document, base64 in 60-character lines, as Ruby's ``Base64.encode64``
writes it and their ``stat``/``restore`` read it back) and one qcow2 file per disk without a
backing file, which OpenNebula's downloaders rebase and convert (backup contract §2, §3.3).
The image data leaves Vitastor through libvitastor_client into a sparse raw file beside its
target, then QEMU's own ``qemu-img convert`` writes the qcow2 (no qcow2 writer of our own: the
format's details stay QEMU's); the raw file is removed at once. Like every job these take JSON
scalars, and a retry starts over (the staging directory is made anew by ``backup_stage``).
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import socket
import threading
from itertools import takewhile
from typing import Any, BinaryIO

from .. import log
from ..errors import BadRequest, OnevitaError
from ..names import BACKUP_CHECKPOINT, backup_checkpoint_name, check_image, check_path
from ..run import CommandFailed, run
from . import cli
from .catalog import Catalog, Inode
from .config import read_config
from .jobs import open_catalog

__all__ = ["backup_checkpoint", "backup_clean", "backup_disk", "backup_prune", "backup_stage", "backup_write",
           "checkpoints"]

STAGE_NAME = "backup"
CLUSTER = 65536  # the qcow2 cluster size of the files written here
ZERO_CLUSTER = bytes(CLUSTER)


def checkpoints(catalog: Catalog, name: str) -> dict[int, Inode]:
    """The backup checkpoint layers of image ``name``, by increment id."""
    pattern = re.compile(re.escape(name) + "@" + BACKUP_CHECKPOINT + "([0-9]+)")
    found = {}
    for inode in catalog.inodes.values():
        match = pattern.fullmatch(inode.name)
        if match:
            found[int(match.group(1))] = inode
    return found


def backup_checkpoint(conf: str | None, names: list[str], increment_id: int) -> None:
    """Every image of ``names`` gets the checkpoint ``@backup-<increment_id>``, all in one etcd
    transaction. A layer already called that (the previous FULL backup's, an old chain's first,
    or one a failed attempt left) is renamed to a free id first; ``backup_prune`` removes it."""
    catalog = open_catalog(conf)
    for name in names:
        existing = checkpoints(catalog, check_image(name))
        if increment_id in existing:
            free = max(max(existing), increment_id) + 1
            catalog.modify(existing[increment_id], rename=backup_checkpoint_name(name, free))
    catalog.snapshot_many([(name, f"{BACKUP_CHECKPOINT}{int(increment_id)}") for name in names])
    log.info(f"backup checkpoint {increment_id} of {', '.join(names)} taken")


def backup_prune(conf: str | None, names: list[str], keep: list[int]) -> None:
    """Remove the checkpoints of ``names`` whose ids are not in ``keep``; their data merges
    into the layers above (vitastor-cli rm). Called after the new checkpoint is taken, so an
    old checkpoint's child is a readonly layer and rm can take its cheap way."""
    catalog = open_catalog(conf)
    for name in names:
        for increment_id, layer in sorted(checkpoints(catalog, check_image(name)).items()):
            if increment_id not in keep:
                cli.remove(conf, layer.name)
                log.info(f"removed the backup checkpoint {layer.name}")


def _stage_path(stage: str) -> str:
    """A staging directory: an absolute plain path whose last part is ``backup``, so a wrong
    argument can never make the jobs empty another directory."""
    check_path(stage, "backup staging directory")
    if os.path.basename(stage.rstrip("/")) != STAGE_NAME:
        raise BadRequest(f"unexpected backup staging directory {stage!r}: expected .../{STAGE_NAME}")
    return stage


def _encode64(data: bytes) -> bytes:
    """Ruby's ``Base64.encode64``: 60 characters a line, each ended by a newline."""
    text = base64.b64encode(data)
    return b"".join(text[i:i + 60] + b"\n" for i in range(0, len(text), 60))


def backup_stage(stage: str, vm_xml: str) -> None:
    """The staging directory made anew, with ``vm.xml``."""
    stage = _stage_path(stage)
    shutil.rmtree(stage, ignore_errors=True)
    try:
        os.makedirs(stage, exist_ok=True)
        with open(os.path.join(stage, "vm.xml"), "wb") as f:
            f.write(_encode64(vm_xml.encode()))
    except OSError as e:
        raise OnevitaError(f"cannot prepare the backup staging directory {stage}: {e.strerror}") from e


def backup_write(stage: str, vm_xml: str, disks: list[dict[str, Any]], increment_id: int, since: int,
                 tpm: str | None = None) -> int:
    """The whole staging directory in one job (one ssh session): ``vm.xml``, ``disk.tpm.0``
    (``tpm``, base64, when the VM has a vTPM) and every disk of ``disks`` (``{"conf", "name",
    "disk_id"}``) from its checkpoint. Returns the bytes staged."""
    backup_stage(stage, vm_xml)
    if tpm:
        with open(os.path.join(_stage_path(stage), "disk.tpm.0"), "wb") as f:
            f.write(base64.b64decode(tpm))
    return sum(backup_disk(d.get("conf"), str(d["name"]), stage, int(d["disk_id"]), increment_id, since)
               for d in disks)


def backup_disk(conf: str | None, name: str, stage: str, disk_id: int, increment_id: int,
                since: int) -> int:
    """Checkpoint ``increment_id`` of image ``name`` into ``<stage>/disk.<disk_id>.<increment_id>``,
    a qcow2 without a backing file: the whole disk when ``since`` is -1, else the clusters
    changed since checkpoint ``since``. Returns the file's size in bytes."""
    stage = _stage_path(stage)
    target = os.path.join(stage, f"disk.{int(disk_id)}.{int(increment_id)}")
    source = backup_checkpoint_name(name, increment_id)
    try:
        if since < 0:
            _write_full(conf, source, target)
        else:
            _write_increment(conf, name, source, since, target)
    except CommandFailed as e:
        raise OnevitaError(f"cannot write the backup of {name}: {e}") from e
    except BaseException:
        if os.path.exists(target):
            os.unlink(target)
        raise
    size = os.stat(target).st_size
    log.info(f"backup of {name}: {target} ({size // (1 << 20)} MiB)")
    return size


def _write_full(conf: str | None, source: str, target: str) -> None:
    """The whole layer: exported to a sparse raw file beside the target, which qemu-img
    converts (holes and zeros stay unallocated: nothing is below a full backup)."""
    from .client import export_to_file

    raw = target + ".raw"
    try:
        export_to_file(read_config(conf), source, raw, progress=True)
        run(["qemu-img", "convert", "-q", "-W", "-m", "16", "-f", "raw", "-O", "qcow2", "-o",
             f"compat=1.1,cluster_size={CLUSTER}", raw, target])
    finally:
        if os.path.exists(raw):
            os.unlink(raw)


def changed_layers(catalog: Catalog, old: Inode, new: Inode) -> list[Inode] | None:
    """The layers whose writes make ``new`` differ from ``old``: both sides of the layer tree
    up to their common layer. None if they share no layer."""
    new_chain, old_chain = [new, *catalog.ancestors(new)], [old, *catalog.ancestors(old)]
    old_nums = {i.num for i in old_chain}
    common = next((i.num for i in new_chain if i.num in old_nums), None)
    if common is None:
        return None
    def below_common(chain: list[Inode]) -> list[Inode]:
        return list(takewhile(lambda i: i.num != common, chain))

    return below_common(new_chain) + below_common(old_chain)


def clusters(bitmap: bytes, granularity: int, size: int) -> list[tuple[int, int]]:
    """The runs of set bits as (offset, length), widened to whole qcow2 clusters and clipped to
    ``size``: a partly written cluster is written whole, since without a backing file qcow2
    fills the rest of a cluster with zeros."""
    byte_span = granularity * 8
    align = max(CLUSTER, byte_span)
    extents: list[tuple[int, int]] = []
    for run_ in re.finditer(rb"[^\x00]+", bitmap):
        start = run_.start() * byte_span // align * align
        end = min(-(-run_.end() * byte_span // align) * align, size)
        if extents and start <= extents[-1][0] + extents[-1][1]:
            start = extents[-1][0]
            extents.pop()
        if end > start:
            extents.append((start, end - start))
    return extents


def _write_increment(conf: str | None, name: str, source: str, since: int, target: str) -> None:
    """The clusters of checkpoint ``source`` that changed since checkpoint ``since`` of
    ``name``, into a new qcow2 of the disk's size through qemu-nbd. Without the older
    checkpoint (flattened away, removed by hand) every cluster is written: a longer increment,
    but the chain stays whole."""
    catalog = open_catalog(conf)
    new = catalog.get(check_image(source))
    old = catalog.find(backup_checkpoint_name(name, since))
    layers = changed_layers(catalog, old, new) if old is not None else None
    if layers is None:
        log.warn(f"no backup checkpoint {since} of {name}: this increment holds the whole disk")
    run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", f"compat=1.1,cluster_size={CLUSTER}", target,
         str(new.size)])
    _fill(conf, source, None if layers is None else [i.name for i in layers], target,
          f"increment of {name} since checkpoint {since}")


def _read_exactly(stream: BinaryIO, n: int) -> bytes:
    data = stream.read(n)
    if len(data) < n:
        raise OnevitaError("the changed data ended early")
    return data


def _fill(conf: str | None, source: str, layers: list[str] | None, target: str, what: str) -> None:
    """What ``layers`` changed in ``source`` into the qcow2 ``target``: the C client streams the
    extents and their data into a socket (export_changes), a thread here writes each cluster
    through qemu-nbd, zeros as zero clusters."""
    from ..qemu_nbd import served
    from .client import COUNT, EXTENT, export_changes

    errors: list[BaseException] = []

    def writer(sock: socket.socket) -> None:
        try:
            with served(target, "qcow2", readonly=False) as nbd, sock.makefile("rb") as stream:
                count = COUNT.unpack(_read_exactly(stream, COUNT.size))[0]
                extents = [EXTENT.unpack(_read_exactly(stream, EXTENT.size)) for _ in range(count)]
                changed = sum(length for _, length in extents)
                log.info(f"{what}: {len(extents)} extents, {changed >> 20} MiB")
                for offset, length in extents:
                    for pos in range(offset, offset + length, CLUSTER):
                        chunk = _read_exactly(stream, min(CLUSTER, offset + length - pos))
                        if chunk == ZERO_CLUSTER[:len(chunk)]:
                            nbd.write_zeroes(pos, len(chunk))
                        else:
                            nbd.write(pos, chunk)
        except BaseException as e:  # noqa: B036 (re-raised by the caller's thread)
            errors.append(e)
        finally:
            sock.close()

    reader, writer_end = socket.socketpair()
    thread = threading.Thread(target=writer, args=(reader,), daemon=True)
    thread.start()
    failure: OnevitaError | None = None
    try:
        export_changes(read_config(conf), source, layers, clusters, writer_end.fileno())
    except OnevitaError as e:
        failure = e
    finally:
        writer_end.close()
        thread.join()
    if errors:  # the writer's failure (qemu-nbd's) also breaks the export: it is the cause
        raise errors[0]
    if failure is not None:
        raise failure


def backup_clean(stage: str) -> None:
    """The staging directory removed (nothing there is success)."""
    shutil.rmtree(_stage_path(stage), ignore_errors=True)
