"""Guest file-system freeze around live snapshots (``virsh domfsfreeze``), and suspend/resume
around backup checkpoints (FS_FREEZE=SUSPEND), run on the VM's host.

Like Ceph's snap_create_live: freeze through the QEMU guest agent, snapshot, always thaw. A
guest without an agent cannot be frozen; the snapshot is then crash-consistent, and the log
says so. Every virsh call has a timeout (a hung agent must not hang the action, one#5921).
"""

from __future__ import annotations

import contextlib
import os
import re

from . import log
from .errors import BadRequest
from .run import CommandFailed, run

__all__ = ["fsfreeze", "fsthaw", "resume", "suspend"]

_DEPLOY_ID = re.compile(r"[A-Za-z0-9_.:-]+")
TIMEOUT = 60.0


def _virsh(command: str, deploy_id: str) -> None:
    if not _DEPLOY_ID.fullmatch(deploy_id):
        raise BadRequest(f"invalid deploy id {deploy_id!r}")
    uri = os.environ.get("LIBVIRT_URI", "qemu:///system")
    run(["virsh", "-c", uri, command, deploy_id], timeout=float(os.environ.get("VIRSH_TIMEOUT", TIMEOUT)))


def fsfreeze(deploy_id: str) -> bool:
    """Freeze the guest's file systems; False (with a warning) if the guest cannot be frozen."""
    try:
        _virsh("domfsfreeze", deploy_id)
    except CommandFailed as e:
        log.warn(f"cannot freeze the file systems of {deploy_id}, the snapshot is crash-consistent: {e}")
        _thaw_quietly(deploy_id)
        return False
    return True


def _thaw_quietly(deploy_id: str) -> None:
    """A freeze that timed out may still have frozen the guest: thaw, ignoring "not frozen"."""
    with contextlib.suppress(CommandFailed):
        _virsh("domfsthaw", deploy_id)


def fsthaw(deploy_id: str) -> None:
    """Thaw the guest's file systems."""
    _virsh("domfsthaw", deploy_id)


def suspend(deploy_id: str) -> None:
    """Pause the VM (``virsh suspend``): nothing the guest does reaches its disks meanwhile."""
    _virsh("suspend", deploy_id)


def resume(deploy_id: str) -> None:
    """Let a suspended VM run again."""
    _virsh("resume", deploy_id)
