"""Jobs on a host's file system (the VM directory under the system datastore).

They run on the host behind ``onevita host-job``; each checks that the path it is given is the
VM directory OpenNebula named (``.../<ds_id>/<vm_id>``) before touching it.
"""

from __future__ import annotations

import os
import re
import shutil

from . import log
from .errors import BadRequest

__all__ = ["check_vm_dir", "make_vm_dir", "remove_vm_dir", "vm_dir_exists"]

_SAFE_PATH = re.compile(r"/[A-Za-z0-9_.+/-]*")


def check_vm_dir(path: str, ds_id: int, vm_id: int) -> str:
    """``path`` if it is an absolute, plain ``<DATASTORE_LOCATION>/<ds_id>/<vm_id>``."""
    parts = path.rstrip("/").split("/")
    if (not _SAFE_PATH.fullmatch(path) or ".." in parts or len(parts) < 4
            or parts[-2:] != [str(ds_id), str(vm_id)]):
        raise BadRequest(f"{path!r} is not the directory of VM {vm_id} in datastore {ds_id}")
    return path.rstrip("/")


def remove_vm_dir(path: str, ds_id: int, vm_id: int) -> None:
    """``rm -rf`` the VM directory; already gone: success."""
    path = check_vm_dir(path, ds_id, vm_id)
    if os.path.lexists(path):
        shutil.rmtree(path)
        log.info(f"removed {path}")


def make_vm_dir(path: str, ds_id: int, vm_id: int) -> None:
    """``mkdir -p`` the VM directory."""
    os.makedirs(check_vm_dir(path, ds_id, vm_id), exist_ok=True)


def vm_dir_exists(path: str, ds_id: int, vm_id: int) -> bool:
    """Whether the VM directory is there."""
    return os.path.isdir(check_vm_dir(path, ds_id, vm_id))
