"""What every TM disk action starts with: the VM, its disk and its datastore, from oned.

Plain TM actions get no XML on stdin, so they ask oned over XML-RPC (one connection, one call
per document) instead of forking ``onevm show`` and ``xpath.rb`` two to four times.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from ..names import clone_name, volatile_name
from ..one.args import disk_id, int_arg, split_location
from ..one.model import VM, Datastore, Disk, VitastorSettings, parse_datastore, parse_vm
from ..one.xmlrpc import oned

__all__ = ["DiskContext", "datastore", "disk_name", "load_disk", "oned"]


@cache
def datastore(ds_id: int) -> Datastore:
    """``one.datastore.info``, once per datastore per process."""
    return parse_datastore(oned().datastore_info(ds_id))


@dataclass(frozen=True)
class DiskContext:
    """A VM disk as a TM action sees it."""

    host: str
    path: str
    vm: VM
    disk: Disk
    settings: VitastorSettings

    @property
    def name(self) -> str:
        """The Vitastor image the VM uses for this disk."""
        return disk_name(self.vm.id, self.disk, self.settings)


def disk_name(vm_id: int, disk: Disk, settings: VitastorSettings) -> str:
    """SOURCE for persistent disks, ``<SOURCE>-<vm>-<disk>`` for clones, and
    ``<prefix>-sys-<vm>-<disk>`` for volatile disks (prefix of the system datastore)."""
    if not disk.source:
        return volatile_name(settings.prefix, vm_id, disk.id)
    return clone_name(disk.source, vm_id, disk.id) if disk.clone else disk.source


def load_disk(location: str, vm_id: str, ds_id: str) -> DiskContext:
    """Parse ``host:<sysdir>/disk.N``, VMID and DSID, and fetch the VM and the datastore."""
    host, path = split_location(location)
    vm = parse_vm(oned().vm_info(int_arg(vm_id, "VMID")))
    disk = vm.disk(disk_id(path))
    settings = datastore(int_arg(ds_id, "DSID")).vitastor()
    return DiskContext(host=host, path=path, vm=vm, disk=disk, settings=settings)
