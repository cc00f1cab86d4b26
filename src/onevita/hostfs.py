"""The VM directory under a system datastore, as OpenNebula names it.

Every action that copies or removes a VM directory on a host checks the path first: it must be
the plain ``<DATASTORE_LOCATION>/<ds_id>/<vm_id>`` of the VM and datastore in the arguments.
"""

from __future__ import annotations

import re

from .errors import BadRequest

__all__ = ["check_vm_dir"]

_SAFE_PATH = re.compile(r"/[A-Za-z0-9_.+/-]*")


def check_vm_dir(path: str, ds_id: int, vm_id: int) -> str:
    """``path`` if it is an absolute, plain ``<DATASTORE_LOCATION>/<ds_id>/<vm_id>``."""
    parts = path.rstrip("/").split("/")
    if (not _SAFE_PATH.fullmatch(path) or ".." in parts or len(parts) < 4
            or parts[-2:] != [str(ds_id), str(vm_id)]):
        raise BadRequest(f"{path!r} is not the directory of VM {vm_id} in datastore {ds_id}")
    return path.rstrip("/")

