"""OpenNebula's argv conventions for TM and DS actions (``tm_common.sh``, ``scripts_common.sh``)."""

from __future__ import annotations

import re

from ..errors import BadRequest
from ..names import check_host

__all__ = ["arg_host", "arg_path", "disk_id", "ds_id_of", "int_arg", "split_location"]

_DISK = re.compile(r"/disk\.([0-9]+)$")


def arg_host(location: str) -> str:
    """``host:/path`` → ``host`` (the whole argument when it has no ``:``), like ``arg_host``."""
    return location.split(":", 1)[0]


def arg_path(location: str) -> str:
    """``host:/path`` → ``/path`` with ``//`` collapsed and no trailing ``/``, like ``arg_path``."""
    path = location.split(":", 1)[1] if ":" in location else location
    path = re.sub("/+", "/", path)
    return path.rstrip("/") or "/"


def split_location(location: str) -> tuple[str, str]:
    """A checked (host, path) pair from ``host:/path``."""
    if ":" not in location:
        raise BadRequest(f"expected host:path, got {location!r}")
    return check_host(arg_host(location)), arg_path(location)


def disk_id(path: str) -> int:
    """The disk id from ``.../disk.N``; BadRequest for anything else."""
    match = _DISK.search(path)
    if not match:
        raise BadRequest(f"not a disk path: {path!r}")
    return int(match.group(1))


def ds_id_of(path: str) -> int:
    """The system datastore id in ``<DATASTORE_LOCATION>/<ds>/<vm>/disk.N`` (bash ``$(NF-2)``)."""
    parts = path.split("/")
    offset = 3 if _DISK.search(path) else 2
    if len(parts) < offset or not parts[-offset].isdigit():
        raise BadRequest(f"no datastore id in path {path!r}")
    return int(parts[-offset])


def int_arg(value: str, what: str) -> int:
    """An integer argument (VM id, datastore id, size...), or BadRequest naming it."""
    try:
        return int(value)
    except ValueError:
        raise BadRequest(f"{what} must be an integer, got {value!r}") from None
