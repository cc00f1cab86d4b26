"""Vitastor jobs: each opens the cluster named by a vitastor.conf path and does one thing.

They take and return JSON scalars so the same function runs in-process on the front-end or on
a host behind ``onevita host-job`` (see ``onevita.cluster``). Each is idempotent: a retried job
finds its own earlier work done and succeeds; deleting something missing succeeds.
"""

from __future__ import annotations

import re
from typing import Any

from .. import log
from ..errors import ImageExists
from ..names import check_image, snapshot_name
from . import cli
from .catalog import Catalog, Inode
from .config import read_config
from .etcd import Etcd

__all__ = ["clone", "delete", "exists", "flatten_copy", "pool_usage", "resize",
           "snapshot_create", "snapshot_delete", "snapshot_revert", "snapshot_flatten", "vm_disk_usage"]

MIB = 1 << 20


def open_catalog(conf: str | None) -> Catalog:
    """The image catalog of the cluster ``conf`` (vitastor.conf path) points at."""
    config = read_config(conf)
    return Catalog(Etcd(config.etcd_address), config.etcd_prefix)


def _layers(catalog: Catalog, name: str) -> list[Inode]:
    """``name``, all its ``name@N`` snapshot layers and the old head an interrupted revert left
    (``name.revert``), each after every layer that reads through it, so removing them in this
    order never merges data between them."""
    pattern = re.compile(re.escape(name) + r"(@[0-9]+|\.revert)?")
    own = [i for i in catalog.inodes.values() if pattern.fullmatch(i.name)]
    ordered: list[Inode] = []
    remaining = {i.num: i for i in own}
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
    """Remove ``name`` and every ``name@N`` snapshot layer; layers other images read through
    keep their data in those images (vitastor-cli rm merges it). Missing: success."""
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
    (OpenNebula's snapshot-flatten). The old head is renamed aside before anything is removed.
    A retry after the snapshot itself was removed (``name`` has no parent any more) only
    removes the snapshot layers that are left."""
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


COPY_OF = "onevita_copy_of"  # meta key naming the image a flatten_copy was made from


def flatten_copy(conf: str | None, pool: str | None, source: str, name: str) -> None:
    """A new image ``name`` with the data of ``source`` and no parent (bash: create --parent +
    flatten). The copy is created with ``meta`` naming ``source`` (flatten keeps it), so a
    retry finds a finished copy and succeeds; a leftover child of ``source`` from an
    interrupted run is finished, not duplicated. Any other image called ``name``: ImageExists."""
    catalog = open_catalog(conf)
    base = catalog.get(check_image(source))
    copy = catalog.find(check_image(name))
    if copy is None:
        target_pool = catalog.pool(pool, default=catalog.pools.get(base.pool_id))
        copy = catalog.create(name, base.size, target_pool, parent=base, meta={COPY_OF: source})
        log.info(f"created {name} ({base.size // MIB} MiB) on {source} in pool {target_pool.name}")
    elif (copy.meta or {}).get(COPY_OF) != source and base.num not in {
            a.num for a in catalog.ancestors(copy)}:
        raise ImageExists(f"Vitastor image {name} already exists and is not a copy of {source}")
    if copy.parent_id:
        cli.flatten(conf, name)
        log.info(f"copied {source} to {name}")
    else:
        log.info(f"{name} is already a copy of {source}")


def pool_usage(conf: str | None, pool: str | None) -> dict[str, float]:
    """TOTAL_MB, USED_MB, FREE_MB of the datastore's pool, as ``vitastor-cli df`` counts them."""
    catalog = open_catalog(conf)
    usage = catalog.usage(catalog.pool(pool))
    return {"TOTAL_MB": usage.total / MIB, "USED_MB": usage.used / MIB, "FREE_MB": usage.free / MIB}


def vm_disk_usage(conf: str | None, prefix: str) -> dict[str, dict[str, dict[str, Any]]]:
    """Used bytes of every VM disk and disk snapshot in the cluster, by VM id, found by name:
    ``<prefix>-sys-<vm>-<disk>`` (volatile) and ``<image>-<vm>-<disk>`` where ``<image>`` exists
    (clones), each with its ``@<snap>`` layers. Persistent images carry no VM in their name."""
    catalog = open_catalog(conf)
    used = catalog.used_sizes()
    names = {i.name for i in catalog.inodes.values()}
    volatile = re.compile(re.escape(prefix) + r"-sys-([0-9]+)-([0-9]+)")
    cloned = re.compile(r"(.+)-([0-9]+)-([0-9]+)")
    result: dict[str, dict[str, dict[str, Any]]] = {}
    for inode in catalog.inodes.values():
        base, _, snap = inode.name.partition("@")
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
        if snap:
            entry["snapshots"].setdefault(disk, {})[snap] = size
        else:
            entry["disks"][disk] = size
    return result
