"""The VM directory ``<DATASTORE_LOCATION>/<sysds>/<vmid>`` on the host: its deletion, and where
a deletion's Vitastor jobs run."""

from __future__ import annotations

import re

from ..cluster import bridge, job_host, run_job
from ..hostfs import check_vm_dir
from ..names import checkpoint_name
from ..one.args import int_arg, split_location
from ..one.model import (
    LCM_HOTPLUG_SAVEAS_STOPPED,
    LCM_HOTPLUG_SAVEAS_UNDEPLOYED,
    VM,
    VitastorSettings,
    parse_vm,
)
from ..run import run_on
from .common import datastore, oned

__all__ = ["delete_vm_dir", "deletion_host", "is_disk_path"]


def is_disk_path(location: str) -> bool:
    """``is_disk``: whether the path names a disk (``.../disk.N``) rather than the VM directory."""
    return re.search(r"/disk\.[0-9]+$", location) is not None


def deletion_host(settings: VitastorSettings, vm: VM, host: str) -> str | None:
    """Where a DELETE's Vitastor job runs: on ``host`` while the VM is there, else on a
    BRIDGE_LIST host (``is_undeployed``: the VM's last host is not ``host``). oned then passes
    the front-end (stopped or undeployed VM) or a previous host, and neither has to reach the
    cluster."""
    saveas = (LCM_HOTPLUG_SAVEAS_UNDEPLOYED, LCM_HOTPLUG_SAVEAS_STOPPED)
    undeployed = vm.host != host or vm.lcm_state in saveas
    return bridge(settings, vm.id) if undeployed else job_host(settings, host)


def delete_vm_dir(location: str, vm_id: str, ds_id: str) -> None:
    """Remove the checkpoint image ``<prefix>-sys-<vm>-checkpoint`` (system datastore's
    settings) and then the directory on its host, with a plain ``rm`` over ssh: for a stopped
    or undeployed VM that host is the front-end, which has no onevita under SCRIPTS_REMOTE_DIR."""
    host, path = split_location(location)
    vm, ds = int_arg(vm_id, "VMID"), int_arg(ds_id, "DSID")
    settings = datastore(ds).vitastor()
    run_job(deletion_host(settings, parse_vm(oned().vm_info(vm)), host), "delete", conf=settings.conf,
            name=checkpoint_name(settings.prefix, vm))
    check_vm_dir(path, ds, vm)
    run_on(host, 'rm -rf -- "$1"', path, what=f"removing {path}")
