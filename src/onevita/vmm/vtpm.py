"""A VM's vTPM state in its backups (OpenNebula 7.0+): ``disk.tpm.0`` out, and back in on restore.

libvirt keeps the state under /var/lib/libvirt/swtpm/<uuid>; OpenNebula's ``vtpm_setup`` (in
the host's remotes tree, run through sudo where sudoers allows it) copies it to ``<vm_dir>/tpm``
(``backup``) and back at deploy (``recover``). The backup datastores expect ``disk.tpm.0`` to be
``tar zcf disk.tpm.0 -C <vm_dir> tpm`` and restores unpack it into the VM directory after
removing the old ``tpm`` (backup contract §6). Both run on the VM's host as jobs; the state is
a few KiB, so it travels base64 in the job's JSON, not as a stream.
"""

from __future__ import annotations

import base64
import io
import os
import shutil
import tarfile

from ..errors import BadRequest, OnevitaError
from ..names import check_deploy_id, check_path
from ..remotes import remotes_dir
from ..run import run

__all__ = ["restore_state", "save_state"]

STATE_DIR = "tpm"
MAX_STATE = 16 << 20


def _sudo_allows(command: str) -> bool:
    """Whether ``sudo -n -l`` lists ``command`` for this user (OpenNebula's sudoers do on hosts)."""
    proc = run(["sudo", "-n", "-l"], check=False)
    return proc.returncode == 0 and command in proc.stdout.decode(errors="replace")


def save_state(deploy_id: str, vm_dir: str) -> str:
    """``disk.tpm.0`` of the running or stopped VM, base64: ``vtpm_setup backup`` first where
    sudo allows it, then the VM directory's ``tpm`` as a gzip tar."""
    vm_dir = check_path(vm_dir, "VM directory")
    vtpm_setup = os.path.join(remotes_dir(), "vtpm_setup")
    if _sudo_allows("vtpm_setup"):
        run(["sudo", "-n", vtpm_setup, "backup", check_deploy_id(deploy_id), vm_dir])
    state = os.path.join(vm_dir, STATE_DIR)
    if not os.path.isdir(state):
        raise OnevitaError(f"the VM has a vTPM but {state} does not exist: is {vtpm_setup} allowed "
                           "for oneadmin in sudoers?")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(state, arcname=STATE_DIR)
    return base64.b64encode(buffer.getvalue()).decode()


def _checked_members(tar: tarfile.TarFile) -> list[tarfile.TarInfo]:
    """Only plain files and directories under ``tpm/``: a crafted archive cannot write elsewhere."""
    members = tar.getmembers()
    for member in members:
        parts = member.name.split("/")
        if parts[0] != STATE_DIR or ".." in parts or member.name.startswith("/") or \
                not (member.isfile() or member.isdir()):
            raise BadRequest(f"unexpected entry {member.name!r} in the vTPM state of the backup")
    return members


def restore_state(vm_dir: str, state: str) -> None:
    """The VM directory's ``tpm`` replaced by the backup's (``deploy`` recovers it)."""
    vm_dir = check_path(vm_dir, "VM directory")
    data = base64.b64decode(state)
    if len(data) > MAX_STATE:
        raise BadRequest(f"the vTPM state of the backup is larger than {MAX_STATE >> 20} MiB")
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            members = _checked_members(tar)
            shutil.rmtree(os.path.join(vm_dir, STATE_DIR), ignore_errors=True)
            tar.extractall(vm_dir, members=members)  # noqa: S202 (members checked above)
    except tarfile.TarError as e:
        raise BadRequest(f"the vTPM state of the backup is not a gzip tar: {e}") from e
