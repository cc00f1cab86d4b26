"""Vitastor image names, compatible with the bash driver, and the checks every name passes.

The bash driver's names are kept so a cloud can switch drivers with running VMs:
``<IMAGE_PREFIX>-<IMAGE_ID>`` (image), ``<SOURCE>-<VMID>-<DISKID>`` (non-persistent disk),
``<IMAGE_PREFIX>-sys-<VMID>-<DISKID>`` (volatile disk), ``<IMAGE_PREFIX>-sys-<VMID>-checkpoint``,
``<name>@<snap_id>`` (disk snapshot), ``<name>@backup-<increment_id>`` (backup checkpoint, a
layer OpenNebula never sees: its snapshot ids are numbers). Anything that reaches etcd keys, argv
or ssh is checked against a strict character set first, so no template value can smuggle in a
path or an option.
"""

from __future__ import annotations

import re

from .errors import BadName

__all__ = ["backup_checkpoint_name", "check_conf", "check_deploy_id", "check_host", "check_image",
           "check_path", "check_pool", "check_prefix", "checkpoint_name", "clone_name", "image_name",
           "snapshot_name", "volatile_name"]

_IMAGE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,254}(@[0-9]+|@backup-[0-9]+)?")
_PREFIX = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,63}")
_POOL = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
_HOST = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,252}|\[[0-9A-Fa-f:.]+\]")
_PATH = re.compile(r"(/[A-Za-z0-9_.+-]{1,255}){1,32}")
_DEPLOY_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,127}")


def _check(pattern: re.Pattern[str], value: str, what: str) -> str:
    if not pattern.fullmatch(value):
        raise BadName(f"invalid {what} {value!r}")
    return value


def check_image(name: str) -> str:
    """An image or snapshot layer name (``one-5``, ``one-5-12-0@3``, ``one-5-12-0@backup-2``)."""
    return _check(_IMAGE, name, "Vitastor image name")


def check_prefix(prefix: str) -> str:
    """IMAGE_PREFIX."""
    return _check(_PREFIX, prefix, "IMAGE_PREFIX")


def check_pool(pool: str) -> str:
    """POOL_NAME (a pool name or numeric id)."""
    return _check(_POOL, pool, "POOL_NAME")


def check_host(host: str) -> str:
    """A host name or address as OpenNebula passes it (never starting with ``-``)."""
    return _check(_HOST, host, "host name")


def _plain_path(path: str) -> bool:
    return bool(_PATH.fullmatch(path)) and not any(part in (".", "..") for part in path.split("/"))


def check_path(path: str, what: str) -> str:
    """An absolute path of plain characters naming a file, with no ``.`` or ``..`` component (it
    may reach OpenNebula's own shell scripts, which expand arguments unquoted); ``//`` is
    allowed, as oned's DATASTORE_LOCATION has it."""
    if not _plain_path(re.sub("/+", "/", path)):
        raise BadName(f"invalid {what} {path!r}")
    return path


def check_conf(path: str) -> str:
    """A vitastor.conf path: absolute, plain characters, no empty, ``.`` or ``..`` component."""
    if not _plain_path(path):
        raise BadName(f"invalid VITASTOR_CONF path {path!r}")
    return path


def check_deploy_id(deploy_id: str) -> str:
    """A libvirt domain name as oned passes it (``one-12``)."""
    return _check(_DEPLOY_ID, deploy_id, "deploy id")


def image_name(prefix: str, image_id: int) -> str:
    """The image datastore's name for OpenNebula image ``image_id``."""
    return f"{check_prefix(prefix)}-{image_id}"


def clone_name(source: str, vm_id: int, disk_id: int) -> str:
    """A non-persistent disk: a child layer of the image SOURCE."""
    return f"{check_image(source)}-{vm_id}-{disk_id}"


def volatile_name(prefix: str, vm_id: int, disk_id: int) -> str:
    """A volatile (fs/swap) disk created in the system datastore."""
    return f"{check_prefix(prefix)}-sys-{vm_id}-{disk_id}"


def checkpoint_name(prefix: str, vm_id: int) -> str:
    """The memory checkpoint image of a stopped or suspended VM."""
    return f"{check_prefix(prefix)}-sys-{vm_id}-checkpoint"


def snapshot_name(name: str, snap_id: int) -> str:
    """The readonly layer holding snapshot ``snap_id`` of disk or image ``name``."""
    return f"{check_image(name)}@{snap_id}"


BACKUP_CHECKPOINT = "backup-"


def backup_checkpoint_name(name: str, increment_id: int) -> str:
    """The readonly layer holding disk or image ``name`` as it was at backup ``increment_id``
    (the id OpenNebula gives that backup's files): what the next increment is taken against."""
    return f"{check_image(name)}@{BACKUP_CHECKPOINT}{int(increment_id)}"
