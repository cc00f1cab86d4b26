"""Moving the VM directory between hosts: mv (stop, undeploy, resume, cold migration) and the
live-migration hooks. Disks stay where they are: they live in Vitastor, reachable from every host.

The directory work runs as plain commands over ssh (``sh -c`` with a fixed script, the paths as
its positional parameters), not as onevita host jobs: one end of a move is often the front-end
(``one-fe:`` on stop, undeploy and resume), which has no copy of the remotes in
SCRIPTS_REMOTE_DIR. Before anything is copied or removed, a marker file made in the source
directory is looked for in the destination: seen there, both are the same directory (one host,
or a system datastore shared between hosts) and nothing must be copied onto itself or removed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

from .. import log
from ..errors import ConfigError, OnevitaError
from ..hostfs import check_vm_dir
from ..names import check_host
from ..one.args import int_arg, split_location
from ..one.model import parse_vm, parse_vm_b64
from ..remotes import script
from ..run import CommandFailed, run, run_on, ssh_argv, ssh_failure
from .common import oned
from .vmdir import is_disk_path

DRIVER = "vitastor"
# LCM states in which the source host may be gone (UNKNOWN, PROLOG_MIGRATE_UNKNOWN[_FAILURE]):
# like the stock mv, nothing is moved then.
LCM_HOST_LOST = (16, 60, 61)
MARKER = ".onevita-probe."
# Fixed scripts: "$1" is the VM directory (checked by check_vm_dir), "$2" a marker file name.
# Source: print the path of a new marker file in the directory, or nothing if it does not exist.
_MARK = f'test -d "$1" || exit 0; mktemp "$1/{MARKER}XXXXXXXX"'
# Destination: "same" if the marker is there (removing it), else make the directory.
_CHECK = 'if test -e "$1/$2"; then rm -f "$1/$2"; echo same; else mkdir -p "$1"; fi'
# Source: drop the marker, then archive the directory.
_PACK = 'rm -f "$1/$2"; exec tar -C "$1" --sparse -cf - .'
_MARKER_NAME = re.compile(re.escape(MARKER) + r"[A-Za-z0-9]+")


def _mark(host: str, path: str) -> str | None:
    """A new marker file in ``host:path``: its name, or None if the directory does not exist."""
    out = run_on(host, _MARK, path, what=f"checking {path}").rpartition("\n")[2]  # after any banner
    if not out:
        return None
    name = out.rsplit("/", 1)[-1]
    if not (out.startswith(path + "/") and _MARKER_NAME.fullmatch(name)):
        raise CommandFailed(f"checking {path} on {host}: unexpected output {out!r}")
    return name


def _unmark(host: str, path: str, marker: str) -> None:
    """Best effort: remove a marker left behind by a failed step."""
    run(ssh_argv(host, ["rm", "-f", f"{path}/{marker}"]), check=False)


def _same_dir(src_host: str, src: str, dst_host: str, dst: str) -> tuple[bool, str | None]:
    """(whether src and dst are one directory, the marker left in src); makes dst when they are
    not. ``(False, None)``: src does not exist."""
    marker = _mark(src_host, src)
    if marker is None:
        return False, None
    try:
        same = run_on(dst_host, _CHECK, dst, marker, what=f"preparing {dst}").endswith("same")
    except OnevitaError:
        _unmark(src_host, src, marker)
        raise
    return same, None if same else marker


def _copy(src_host: str, src: str, dst_host: str, dst: str, marker: str) -> None:
    """Stream src_host:src into dst_host:dst as a sparse tar through this process (no ssh
    between the hosts is needed)."""
    pack = subprocess.Popen(ssh_argv(src_host, ["sh", "-c", _PACK, "sh", src, marker]),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert pack.stdout is not None and pack.stderr is not None
    unpack = subprocess.run(ssh_argv(dst_host, ["tar", "-C", dst, "--sparse", "-xf", "-"]),
                            stdin=pack.stdout, capture_output=True, check=False)
    pack.stdout.close()
    pack_err = pack.stderr.read().decode(errors="replace")
    pack.stderr.close()
    pack_rc = pack.wait()
    if unpack.returncode != 0:  # first: a dead destination also breaks the archiving pipe
        _unmark(src_host, src, marker)
        raise CommandFailed(ssh_failure(dst_host, unpack.returncode, unpack.stderr.decode(errors="replace"),
                                        f"copying {src_host}:{src} into {dst}"))
    if pack_rc != 0:
        _unmark(src_host, src, marker)
        raise CommandFailed(ssh_failure(src_host, pack_rc, pack_err, f"archiving {src}"))
    log.info(f"copied {src_host}:{src} to {dst_host}:{dst}")


def _remove(host: str, path: str) -> None:
    run_on(host, 'rm -rf "$1"', path, what=f"removing {path}")
    log.info(f"removed {host}:{path}")


def mv(src: str, dst: str, vm_id: str, ds_id: str) -> None:
    """``MV vitastor src_host:<path> dst_host:<path> VMID DSID``. A disk: nothing to move. The
    VM directory: copy it to the destination and remove the source; nothing when the source
    host is lost (LCM 16, 60, 61). Already moved, or both one directory: success."""
    if is_disk_path(src):
        return
    (src_host, src_path), (dst_host, dst_path) = split_location(src), split_location(dst)
    vm, ds = int_arg(vm_id, "VMID"), int_arg(ds_id, "DSID")
    src_path, dst_path = check_vm_dir(src_path, ds, vm), check_vm_dir(dst_path, ds, vm)
    if (src_host, src_path) == (dst_host, dst_path):
        return
    lcm_state = parse_vm(oned().vm_info(vm)).lcm_state
    if lcm_state in LCM_HOST_LOST:
        log.info(f"VM {vm} is in LCM state {lcm_state} (host lost): not moving files from {src_host}")
        return
    same, marker = _same_dir(src_host, src_path, dst_host, dst_path)
    if same:
        log.info(f"{src_host}:{src_path} and {dst_host}:{dst_path} are the same directory, nothing to move")
        return
    if marker is None:
        log.info(f"{src_host}:{src_path} does not exist, nothing to move")
        return
    _copy(src_host, src_path, dst_host, dst_path, marker)
    _remove(src_host, src_path)


def _other_tms(vm_b64: bytes) -> list[str]:
    """The other TM drivers the VM's disks use (checked names), from the base64 VM on stdin."""
    tms = sorted({d.attrs.get("TM_MAD", DRIVER) for d in parse_vm_b64(vm_b64).disks.values()} - {DRIVER})
    for tm in tms:
        script("tm", tm, "premigrate")  # a BadRequest for a name that is not a driver's
    return tms


def _migrate_other(tms: list[str], action: str, args: tuple[str, ...], vm_b64: bytes) -> None:
    """``migrate_other``: run the same hook of every other TM driver the VM's disks use, with
    the same arguments plus ours as the caller and the same stdin."""
    for tm in tms:
        path = script("tm", tm, action)
        if not os.access(path, os.X_OK):
            raise ConfigError(f"VM disks use TM_MAD {tm}, but there is no {path}")
        log.info(f"calling {tm}/{action}")
        proc = subprocess.run([path, *args, DRIVER], input=vm_b64, capture_output=True, check=False)
        sys.stderr.buffer.write(proc.stderr)
        sys.stderr.flush()
        if proc.returncode != 0:
            raise OnevitaError(f"tm/{tm}/{action} failed (exit {proc.returncode})")


def _hook_args(src_host: str, dst_host: str, sysdir: str, vm_id: str, ds_id: str) -> str:
    """Check the live-migration hooks' arguments; the VM directory."""
    check_host(src_host)
    check_host(dst_host)
    return check_vm_dir(re.sub("/+", "/", sysdir), int_arg(ds_id, "DSID"), int_arg(vm_id, "VMID"))


def _hook_start(caller: tuple[str, ...], src_host: str, dst_host: str, sysdir: str, vm_id: str,
                ds_id: str) -> tuple[str, list[str], bytes] | None:
    """What pre- and postmigrate start with: (VM directory, other TMs, VM XML), read and checked
    before anything moves; None when there is nothing to do (called by another TM, one host)."""
    if caller:
        log.info(f"called by tm/{caller[0]}, nothing to do")
        return None
    path = _hook_args(src_host, dst_host, sysdir, vm_id, ds_id)
    vm_b64 = sys.stdin.buffer.read()
    tms = _other_tms(vm_b64)
    return None if src_host == dst_host else (path, tms, vm_b64)


def premigrate(src_host: str, dst_host: str, sysdir: str, vm_id: str, ds_id: str, *caller: str) -> None:
    """``PREMIGRATE vitastor SRC DST <sysdir> VMID DSID [TM]`` (live migration, VM XML in base64 on
    stdin): the destination needs the VM directory (deployment file, context ISO) before
    libvirt moves the VM; then the other TMs' premigrate. Called by another TM (``TM`` given),
    or within one host: nothing to do."""
    start = _hook_start(caller, src_host, dst_host, sysdir, vm_id, ds_id)
    if start is None:
        return
    path, tms, vm_b64 = start
    same, marker = _same_dir(src_host, path, dst_host, path)
    if same:
        log.info(f"{path} is shared by {src_host} and {dst_host}, nothing to copy")
    elif marker is None:
        raise OnevitaError(f"{src_host}:{path} does not exist, cannot copy it to {dst_host}")
    else:
        _copy(src_host, path, dst_host, path, marker)
    _migrate_other(tms, "premigrate", (src_host, dst_host, sysdir, vm_id, ds_id), vm_b64)


def postmigrate(src_host: str, dst_host: str, sysdir: str, vm_id: str, ds_id: str, *caller: str) -> None:
    """``POSTMIGRATE``: the VM runs on the destination; the other TMs' postmigrate, then remove
    its directory from the source (unless both hosts share it). Already removed: success."""
    start = _hook_start(caller, src_host, dst_host, sysdir, vm_id, ds_id)
    if start is None:
        return
    path, tms, vm_b64 = start
    _migrate_other(tms, "postmigrate", (src_host, dst_host, sysdir, vm_id, ds_id), vm_b64)
    same, marker = _same_dir(src_host, path, dst_host, path)
    if same:
        log.info(f"{path} is shared by {src_host} and {dst_host}, kept")
    elif marker is not None:
        _remove(src_host, path)


def failmigrate(src_host: str, dst_host: str, sysdir: str, vm_id: str, ds_id: str, *caller: str) -> None:
    """``FAILMIGRATE``: the VM stays on the source, which still has everything; like the stock
    ``tm/common/failmigrate``, nothing to undo on the storage side."""
    _hook_args(src_host, dst_host, sysdir, vm_id, ds_id)
