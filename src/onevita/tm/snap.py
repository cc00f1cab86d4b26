"""TM disk snapshot actions. A snapshot of disk NAME is the readonly layer ``NAME@<snap_id>``.

Backup checkpoints (``NAME@backup-<increment>``) sit in the same chain, taken the same way; these
actions leave them as they are: a revert leaves them on the old branch, and vitastor-cli rm
keeps a checkpoint's name and bytes whether it merges a removed snapshot into it or (3.0.8's
"inverse" shortcut) merges it into the removed snapshot's inode, which takes its name."""

from __future__ import annotations

from ..cluster import job_host, run_job
from ..one.args import int_arg
from .common import DiskContext, load_disk


def _snapshot_job(job: str, location: str, snap_id: str, vm_id: str, ds_id: str) -> DiskContext:
    ctx = load_disk(location, vm_id, ds_id)
    run_job(job_host(ctx.settings, ctx.host), job, conf=ctx.settings.conf, name=ctx.name,
            snap_id=int_arg(snap_id, "SNAP_ID"))
    return ctx


def snap_create(location: str, snap_id: str, vm_id: str, ds_id: str) -> None:
    """``SNAP_CREATE vitastor host:<sysdir>/disk.N SNAP_ID VMID DSID`` (VM powered off or
    suspended): the disk's current layer becomes ``NAME@SNAP_ID``; NAME a new empty child."""
    _snapshot_job("snapshot_create", location, snap_id, vm_id, ds_id)


def snap_create_live(location: str, snap_id: str, vm_id: str, ds_id: str) -> None:
    """``SNAP_CREATE_LIVE`` (VM running): as snap_create, with the guest's file systems frozen
    through the guest agent around it and always thawed afterwards. QEMU follows the new head
    by itself: it watches the image by name and switches to the new inode."""
    ctx = load_disk(location, vm_id, ds_id)
    frozen = bool(ctx.vm.deploy_id) and run_job(ctx.host, "fsfreeze", deploy_id=ctx.vm.deploy_id)
    try:
        run_job(job_host(ctx.settings, ctx.host), "snapshot_create", conf=ctx.settings.conf,
                name=ctx.name, snap_id=int_arg(snap_id, "SNAP_ID"))
    finally:
        if frozen:
            run_job(ctx.host, "fsthaw", deploy_id=ctx.vm.deploy_id)


def snap_delete(location: str, snap_id: str, vm_id: str, ds_id: str) -> None:
    """``SNAP_DELETE``: remove ``NAME@SNAP_ID``; its data is merged into the layers above it."""
    _snapshot_job("snapshot_delete", location, snap_id, vm_id, ds_id)


def snap_revert(location: str, snap_id: str, vm_id: str, ds_id: str) -> None:
    """``SNAP_REVERT`` (VM powered off): NAME becomes a fresh child of ``NAME@SNAP_ID``."""
    _snapshot_job("snapshot_revert", location, snap_id, vm_id, ds_id)
