"""Jobs of an in-place restore (``tm/restore``): fill a new image per disk, swap them in.

Each restored disk ``NAME`` is first written into ``NAME.restore`` (filled as
``NAME.restore.importing`` by ``import_image``, in the pool of ``NAME``). When every disk of the
VM is there, one etcd transaction per cluster renames every ``NAME`` to ``NAME.old`` and every
``NAME.restore`` to ``NAME``, so the VM sees all its disks restored or none; the old heads and
every snapshot and backup-checkpoint layer of them are removed afterwards. A run that failed
before the swap leaves ``.restore`` images only (removed by the caller, or by the next run); one
that failed after it leaves ``NAME.old`` layers, which the next run removes first.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from .. import log
from ..names import BACKUP_CHECKPOINT, check_image
from . import cli
from .catalog import Catalog, Inode
from .jobs import delete, import_image, leaves_first, open_catalog

if TYPE_CHECKING:
    from ..datastore.source import Reader

__all__ = ["RESTORED", "REPLACED", "restore_disk", "restore_swap"]

RESTORED = ".restore"  # the new image of a disk until the swap
REPLACED = ".old"  # the old head of a disk after the swap, until it is removed


def _old_layers(catalog: Catalog, name: str) -> list[Inode]:
    """What belongs to the replaced disk ``name``: ``name.old``, its snapshot layers
    (``name@N``), backup checkpoints (``name@backup-N``) and an interrupted revert's
    ``name.revert``, but not the current ``name`` or what it reads through; leaves first."""
    pattern = re.compile(re.escape(name) + rf"(\.old|\.revert|@[0-9]+|@{BACKUP_CHECKPOINT}[0-9]+)")
    head = catalog.find(name)
    keep = {head.num, *(a.num for a in catalog.ancestors(head))} if head is not None else set()
    return leaves_first(catalog, [i for i in catalog.inodes.values()
                                  if pattern.fullmatch(i.name) and i.num not in keep])


def _remove_old(conf: str | None, catalog: Catalog, name: str) -> None:
    for layer in _old_layers(catalog, name):
        cli.remove(conf, layer.name)
        log.info(f"removed {layer.name}, replaced by the restored {name}")


def restore_disk(conf: str | None, name: str, fmt: str, staging_dir: str, stream: Reader) -> int:
    """Write the backup in ``stream`` (``fmt``, qcow2 from the backup datastore) into the new
    image ``name.restore`` in the pool of ``name``; returns bytes copied. First finishes what an
    earlier run left: the old layers of a swap it made, and its ``.restore`` images."""
    catalog = open_catalog(conf)
    disk = catalog.get(check_image(name))
    if catalog.find(name + REPLACED) is not None:
        log.warn(f"removing what an earlier restore of {name} replaced")
        _remove_old(conf, catalog, name)
    new = check_image(name + RESTORED)
    if catalog.find(new) is not None:  # import_image removes a NAME.restore.importing itself
        log.warn(f"removing {new}, left by an interrupted restore")
        delete(conf, new)
    return import_image(conf, str(disk.pool_id), new, disk.size, fmt, staging_dir, stream)


def restore_swap(conf: str | None, names: list[str]) -> None:
    """Swap every ``name.restore`` in for ``name`` in one etcd transaction, then remove the
    replaced layers. Already swapped (no ``.restore`` left, ``.old`` there): only the removal."""
    catalog = open_catalog(conf)
    pending = [check_image(n) for n in names if catalog.find(check_image(n) + RESTORED) is not None]
    if pending:
        renames: dict[str, str] = {}
        for name in pending:
            if catalog.find(name + REPLACED) is not None:  # restore_disk removed it; someone made it since
                _remove_old(conf, catalog, name)
                catalog.load()
            renames[name] = name + REPLACED
            renames[name + RESTORED] = name
        catalog.rename_many(renames)
        log.info(f"swapped in the restored {', '.join(pending)}")
    for name in names:
        _remove_old(conf, catalog, name)
