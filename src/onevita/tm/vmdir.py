"""The VM directory ``<DATASTORE_LOCATION>/<sysds>/<vmid>`` on the host: its deletion."""

from __future__ import annotations

import re

from ..cluster import job_host, run_job
from ..names import checkpoint_name
from ..one.args import int_arg, split_location
from .common import datastore

__all__ = ["delete_vm_dir", "is_disk_path"]


def is_disk_path(location: str) -> bool:
    """``is_disk``: whether the path names a disk (``.../disk.N``) rather than the VM directory."""
    return re.search(r"/disk\.[0-9]+$", location) is not None


def delete_vm_dir(location: str, vm_id: str, ds_id: str) -> None:
    """Remove the checkpoint image ``<prefix>-sys-<vm>-checkpoint`` (system datastore's
    settings) and then the directory on its host."""
    host, path = split_location(location)
    vm, ds = int_arg(vm_id, "VMID"), int_arg(ds_id, "DSID")
    settings = datastore(ds).vitastor()
    run_job(job_host(settings, host), "delete", conf=settings.conf, name=checkpoint_name(settings.prefix, vm))
    run_job(host, "remove_vm_dir", path=path, ds_id=ds, vm_id=vm)
