"""Moving the VM directory between hosts: mv (stop, undeploy, resume, cold migration) and the
live-migration hooks. Disks stay where they are: they live in Vitastor, reachable from every host."""

from __future__ import annotations

import subprocess
import sys

from .. import log
from ..cluster import run_job
from ..errors import OnevitaError
from ..hostfs import check_vm_dir
from ..one.args import int_arg, split_location
from ..one.model import parse_vm_b64
from ..remotes import script
from ..run import CommandFailed, ssh_argv
from .vmdir import is_disk_path

DRIVER = "vitastor"
# LCM states in which the source host may be gone (UNKNOWN, PROLOG_MIGRATE_UNKNOWN[_FAILURE])
LCM_HOST_LOST = (16, 60, 61)


def _copy_vm_dir(src_host: str, src: str, dst_host: str, dst: str, ds_id: int, vm_id: int) -> None:
    """Stream the directory src_host:src to dst_host:dst as a sparse tar through this process."""
    run_job(dst_host, "make_vm_dir", path=dst, ds_id=ds_id, vm_id=vm_id)
    pack = subprocess.Popen(ssh_argv(src_host, ["tar", "-C", src, "--sparse", "-cf", "-", "."]),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    unpack = subprocess.run(ssh_argv(dst_host, ["tar", "-C", dst, "-xf", "-"]), stdin=pack.stdout,
                            capture_output=True, check=False)
    assert pack.stdout is not None
    pack.stdout.close()
    pack_err = pack.stderr.read() if pack.stderr else b""
    if pack.wait() != 0 or unpack.returncode != 0:
        detail = (pack_err + unpack.stderr).decode(errors="replace").strip()
        raise CommandFailed(f"copying {src_host}:{src} to {dst_host}:{dst} failed: {detail}")
    log.info(f"copied {src_host}:{src} to {dst_host}:{dst}")


def mv(src: str, dst: str, vm_id: str, ds_id: str) -> None:
    """``MV vitastor src_host:<path> dst_host:<path> VMID DSID``. A disk: nothing to move. The
    VM directory: copy it to the destination and remove the source. Already moved: success."""
    if is_disk_path(src):
        return
    (src_host, src_path), (dst_host, dst_path) = split_location(src), split_location(dst)
    vm, ds = int_arg(vm_id, "VMID"), int_arg(ds_id, "DSID")
    check_vm_dir(src_path, ds, vm)
    check_vm_dir(dst_path, ds, vm)
    if (src_host, src_path) == (dst_host, dst_path):
        return
    if not run_job(src_host, "vm_dir_exists", path=src_path, ds_id=ds, vm_id=vm):
        log.info(f"{src_host}:{src_path} does not exist, nothing to move")
        return
    _copy_vm_dir(src_host, src_path, dst_host, dst_path, ds, vm)
    run_job(src_host, "remove_vm_dir", path=src_path, ds_id=ds, vm_id=vm)


def _migrate_other(action: str, args: tuple[str, ...], vm_b64: bytes) -> None:
    """``migrate_other``: run the same hook of every other TM driver the VM's disks use."""
    tms = sorted({d.attrs.get("TM_MAD", DRIVER) for d in parse_vm_b64(vm_b64).disks.values()})
    for tm in tms:
        if tm == DRIVER:
            continue
        path = script("tm", tm, action)
        proc = subprocess.run([path, *args, DRIVER], input=vm_b64, capture_output=True, check=False)
        sys.stderr.buffer.write(proc.stderr)
        if proc.returncode != 0:
            raise OnevitaError(f"{tm}/{action} failed (exit {proc.returncode})")


def premigrate(src_host: str, dst_host: str, sysdir: str, vm_id: str, ds_id: str, *caller: str) -> None:
    """``PREMIGRATE vitastor SRC DST <sysdir> VMID DSID [TM]`` (live migration, VM XML in base64 on
    stdin): the destination needs the VM directory (deployment file, context ISO) before
    libvirt moves the VM. Called by another TM (``TM`` given): nothing of ours to do."""
    if caller:
        return
    vm, ds = int_arg(vm_id, "VMID"), int_arg(ds_id, "DSID")
    path = check_vm_dir(sysdir, ds, vm)
    vm_b64 = sys.stdin.buffer.read()
    _copy_vm_dir(src_host, path, dst_host, path, ds, vm)
    _migrate_other("premigrate", (src_host, dst_host, sysdir, vm_id, ds_id), vm_b64)


def postmigrate(src_host: str, dst_host: str, sysdir: str, vm_id: str, ds_id: str, *caller: str) -> None:
    """``POSTMIGRATE``: the VM runs on the destination; remove its directory from the source."""
    if caller:
        return
    vm, ds = int_arg(vm_id, "VMID"), int_arg(ds_id, "DSID")
    path = check_vm_dir(sysdir, ds, vm)
    _migrate_other("postmigrate", (src_host, dst_host, sysdir, vm_id, ds_id), sys.stdin.buffer.read())
    run_job(src_host, "remove_vm_dir", path=path, ds_id=ds, vm_id=vm)


def failmigrate(src_host: str, dst_host: str, sysdir: str, vm_id: str, ds_id: str, *caller: str) -> None:
    """``FAILMIGRATE``: the VM stays on the source, which still has everything; like the stock
    ``tm/common/failmigrate``, nothing to undo on the storage side."""
    check_vm_dir(sysdir, int_arg(ds_id, "DSID"), int_arg(vm_id, "VMID"))
