"""TM actions creating volatile disks: mkimage (TYPE=fs) and mkswap (TYPE=swap).

The disk is ``<IMAGE_PREFIX>-sys-<vm>-<disk>`` with the system datastore's prefix, pool and
cluster, made on the VM's host. Unlike the bash driver, which passed FORMAT ``raw`` on and
never formatted swap (driver contract §12.6), a swap disk gets a real signature.
"""

from __future__ import annotations

from ..cluster import job_host
from ..errors import BadRequest
from ..formatting import SWAP, make_empty
from ..one.args import int_arg
from .common import datastore, load_disk

__all__ = ["mkimage", "mkswap"]


def mkimage(size_mb: str, fmt: str, location: str, vm_id: str, ds_id: str) -> None:
    """``MKIMAGE vitastor SIZE_MB FORMAT host:<sysdir>/disk.N VMID SYS_DSID``: a volatile disk,
    with the file system the VM's DISK names in FS (checked against SUPPORTED_FS), else empty.
    FORMAT ``swap`` (OpenNebula's common mkswap calls mkimage so) makes a swap disk."""
    _volatile(size_mb, location, vm_id, ds_id, swap=fmt == SWAP)


def mkswap(size_mb: str, location: str, vm_id: str, ds_id: str) -> None:
    """``MKSWAP vitastor SIZE_MB host:<sysdir>/disk.N VMID SYS_DSID``: a volatile disk holding a
    swap signature labelled ``swap`` (``mkswap -L swap``)."""
    _volatile(size_mb, location, vm_id, ds_id, swap=True)


def _volatile(size_mb: str, location: str, vm_id: str, ds_id: str, *, swap: bool) -> None:
    """Make the volatile disk at ``location``; a disk backed by an image is refused, so a wrong
    transfer line can never write a file system over an image."""
    ctx = load_disk(location, vm_id, ds_id)
    if ctx.disk.source:
        raise BadRequest(f"disk {ctx.disk.id} of VM {ctx.vm.id} is not a volatile disk "
                         f"(SOURCE {ctx.disk.source})")
    fs = SWAP if swap else ctx.disk.attrs.get("FS", "")
    make_empty(job_host(ctx.settings, ctx.host), ctx.settings, datastore(int_arg(ds_id, "DSID")).template,
               ctx.name, int_arg(size_mb, "SIZE"), fs)
