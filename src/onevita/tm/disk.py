"""TM actions on one VM disk: clone, ln, mvds, delete, resize."""

from __future__ import annotations

from .. import log
from ..cluster import job_host, run_job
from ..errors import BadRequest, ImageNotFound
from ..names import check_image
from ..one.args import arg_path, int_arg
from .common import datastore, load_disk
from .vmdir import delete_vm_dir, deletion_host, is_disk_path

MIB = 1 << 20


def clone(src: str, dst: str, vm_id: str, ds_id: str) -> None:
    """``CLONE vitastor fe:SOURCE host:<sysdir>/disk.N VMID DSID``: the non-persistent disk
    ``<SOURCE>-<vm>-<disk>``, a writable child layer of the image (the bash driver's layout).
    Its pool is the system datastore's POOL_NAME when that is a Vitastor one, else the image's."""
    source = check_image(arg_path(src).lstrip("/"))
    ctx = load_disk(dst, vm_id, ds_id)
    system = datastore(ctx.vm.system_ds_id) if ctx.vm.system_ds_id is not None else None
    pool = system.template.get("POOL_NAME") if system and system.tm_mad == "vitastor" else None
    size = (ctx.disk.size_mb or 0) * MIB
    run_job(job_host(ctx.settings, ctx.host), "clone", conf=ctx.settings.conf, pool=pool or None,
            parent=source, name=ctx.name, size=size)


def ln(src: str, dst: str, vm_id: str, ds_id: str) -> None:
    """``LN vitastor fe:SOURCE host:<sysdir>/disk.N VMID DSID``: persistent and CD-ROM disks are
    used in place; check the image exists so a missing one fails here, not inside QEMU."""
    source = check_image(arg_path(src).lstrip("/"))
    ctx = load_disk(dst, vm_id, ds_id)
    if not run_job(job_host(ctx.settings, ctx.host), "exists", conf=ctx.settings.conf, name=source):
        raise ImageNotFound(f"Vitastor image {source} does not exist")


def mvds(src: str, dst: str, vm_id: str, ds_id: str) -> None:
    """``MVDS vitastor host:<sysdir>/disk.N SOURCE VMID DSID``: a persistent disk going back to
    its image at epilog. The VM wrote into the image itself, so there is nothing to move."""
    check_image(dst)
    int_arg(vm_id, "VMID")
    int_arg(ds_id, "DSID")
    log.info(f"{dst} kept in place")


def delete(location: str, vm_id: str, ds_id: str) -> None:
    """``DELETE vitastor host:<sysdir>[/disk.N] VMID DSID``. A disk: remove the clone or volatile
    image with all its snapshot layers (persistent images stay). The VM directory: remove the
    checkpoint image and the directory. Already gone: success."""
    if not is_disk_path(location):
        delete_vm_dir(location, vm_id, ds_id)
        return
    ctx = load_disk(location, vm_id, ds_id)
    if ctx.disk.source and not ctx.disk.clone:
        log.info(f"{ctx.disk.source} is persistent, kept")
        return
    run_job(deletion_host(ctx.settings, ctx.vm, ctx.host), "delete", conf=ctx.settings.conf, name=ctx.name)


def resize(location: str, size_mb: str, vm_id: str, ds_id: str) -> None:
    """``RESIZE vitastor host:<sysdir>/disk.N SIZE_MB VMID DSID``: grow the disk's image. Also
    for a running VM: QEMU only changes its local size on ``virsh blockresize``, the image size
    in etcd must grow first (shrinking is refused)."""
    ctx = load_disk(location, vm_id, ds_id)
    size = int_arg(size_mb, "SIZE") * MIB
    if size <= 0:
        raise BadRequest(f"SIZE must be a positive number of MB, got {size_mb!r}")
    run_job(job_host(ctx.settings, ctx.host), "resize", conf=ctx.settings.conf, name=ctx.name, size=size)
