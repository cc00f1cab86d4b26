"""TM cpds: a VM disk (or one of its snapshots) saved as a new image."""

from __future__ import annotations

from ..cluster import run_job
from ..errors import BadRequest
from ..names import check_image, snapshot_name
from ..one.args import int_arg
from .common import load_disk
from .vmdir import deletion_host


def cpds(src: str, new_source: str, snap_id: str, vm_id: str, ds_id: str) -> None:
    """``CPDS vitastor host:<sysdir>/disk.N NEW_SOURCE SNAP_ID VMID DSID``: copy what the disk
    reads (its whole layer chain), or its snapshot ``@SNAP_ID`` when SNAP_ID is not -1, into
    the image NEW_SOURCE of datastore DSID (mkfs with FORMAT=save_as only named it: created
    here if missing, grown if smaller). The copy has no parent. The job runs on the VM's host,
    or on a BRIDGE_LIST host of DSID when the VM is not on one (LCM 67/68: oned passes the
    front-end), the same choice as a disk's deletion."""
    target = check_image(new_source)
    snap = int_arg(snap_id, "SNAP_ID")
    if snap < -1:
        raise BadRequest(f"SNAP_ID must be -1 or a snapshot id, got {snap_id!r}")
    ctx = load_disk(src, vm_id, ds_id)
    settings = ctx.settings
    source = ctx.name if snap == -1 else snapshot_name(ctx.name, snap)
    run_job(deletion_host(settings, ctx.vm, ctx.host), "copy_into", conf=settings.conf, pool=settings.pool,
            source=source, name=target)
