"""Typed views of OpenNebula's XML documents (VM, DATASTORE, IMAGE, DS_DRIVER_ACTION_DATA).

Storage settings (VITASTOR_CONF, POOL_NAME, IMAGE_PREFIX) are read from the *datastore*
template only, never from a VM DISK: oned copies inherited datastore attributes into a DISK only
when the DISK leaves them empty, and they are not restricted attributes by default, so a user
could otherwise point the driver at another cluster, pool or prefix.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field

from lxml import etree

from ..errors import BadRequest
from ..names import check_host, check_pool, check_prefix

__all__ = ["ActionData", "Datastore", "Disk", "Image", "VM", "VitastorSettings", "parse_action_data",
           "parse_datastore", "parse_datastore_pool", "parse_host_states", "parse_image", "parse_vm"]

_BASE64 = re.compile(rb"[A-Za-z0-9+/]*={0,2}")
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)
YES = ("YES", "yes", "Yes", "1", "TRUE", "true")
# LCM states the TM actions care about (include/VirtualMachine.h)
LCM_DISK_RESIZE = 62
LCM_HOTPLUG_SAVEAS_UNDEPLOYED = 67
LCM_HOTPLUG_SAVEAS_STOPPED = 68


def _xml(text: str | bytes, what: str) -> etree._Element:
    try:
        return etree.fromstring(text.encode() if isinstance(text, str) else text, parser=_PARSER)
    except etree.XMLSyntaxError as e:
        raise BadRequest(f"malformed {what} XML: {e.msg}") from e


def _b64decode(data: bytes, what: str) -> bytes:
    """Base64 ``data`` decoded; the reason does not carry binascii's wording, which differs
    between Python versions."""
    text = data.strip()
    if not text:
        raise BadRequest(f"no {what} on stdin")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        detail = ("bad length or padding" if _BASE64.fullmatch(text)
                  else "characters outside the base64 alphabet")
        raise BadRequest(f"{what} on stdin is not base64: {detail}") from e


def _text(node: etree._Element, path: str, default: str = "") -> str:
    found = node.find(path)
    return (found.text or "").strip() if found is not None else default


def _int(node: etree._Element, path: str, what: str, default: int | None = None) -> int:
    value = _text(node, path)
    if not value and default is not None:
        return default
    try:
        return int(value)
    except ValueError:
        raise BadRequest(f"{what}: {path} is missing or not an integer ({value!r})") from None


def _attrs(node: etree._Element | None) -> dict[str, str]:
    if node is None:
        return {}
    return {child.tag: (child.text or "").strip() for child in node if isinstance(child.tag, str)}


@dataclass(frozen=True)
class VitastorSettings:
    """Where a datastore's images live: cluster config, pool, name prefix, bridge hosts."""

    conf: str | None
    pool: str | None
    prefix: str
    bridges: tuple[str, ...]
    on_frontend: bool


@dataclass(frozen=True)
class Datastore:
    """A ``<DATASTORE>`` document."""

    id: int
    name: str
    type: int
    tm_mad: str
    ds_mad: str
    template: dict[str, str] = field(default_factory=dict)

    def vitastor(self) -> VitastorSettings:
        """The Vitastor settings of this datastore, each value checked."""
        t = self.template
        pool = t.get("POOL_NAME") or None
        bridges = tuple(check_host(h) for h in t.get("BRIDGE_LIST", "").split())
        conf = t.get("VITASTOR_CONF") or None
        if conf is not None and not conf.startswith("/"):
            raise BadRequest(f"datastore {self.id}: VITASTOR_CONF must be an absolute path, got {conf!r}")
        return VitastorSettings(
            conf=conf,
            pool=check_pool(pool) if pool else None,
            prefix=check_prefix(t.get("IMAGE_PREFIX") or "one"),
            bridges=bridges,
            on_frontend=t.get("VITASTOR_ON_FRONTEND", "NO") in YES,
        )


@dataclass(frozen=True)
class Disk:
    """One ``TEMPLATE/DISK`` of a VM."""

    id: int
    attrs: dict[str, str]

    @property
    def source(self) -> str:
        """The image's Vitastor name (empty for volatile disks)."""
        return self.attrs.get("SOURCE", "")

    @property
    def clone(self) -> bool:
        """Non-persistent image disk: the VM works on its own child layer."""
        return self.attrs.get("CLONE", "NO") in YES

    @property
    def persistent(self) -> bool:
        return self.attrs.get("PERSISTENT", "NO") in YES

    @property
    def volatile(self) -> bool:
        """fs/swap disk created by the system datastore (no image behind it)."""
        return not self.source and self.attrs.get("TYPE", "").lower() in ("fs", "swap")

    @property
    def datastore_id(self) -> int | None:
        value = self.attrs.get("DATASTORE_ID", "")
        return int(value) if value.isdigit() else None

    @property
    def size_mb(self) -> int | None:
        value = self.attrs.get("SIZE", "")
        return int(value) if value.isdigit() else None


@dataclass(frozen=True)
class VM:
    """A ``<VM>`` document: what the TM actions need of it."""

    id: int
    state: int
    lcm_state: int
    host: str
    system_ds_id: int | None
    disks: dict[int, Disk]
    deploy_id: str = ""

    def disk(self, disk_id: int) -> Disk:
        """``TEMPLATE/DISK[DISK_ID=disk_id]``; BadRequest if the VM has no such disk."""
        try:
            return self.disks[disk_id]
        except KeyError:
            raise BadRequest(f"VM {self.id} has no disk {disk_id}") from None

    def datastore_of(self, disk: Disk) -> int:
        """The datastore whose VITASTOR_CONF, pool and prefix ``disk`` uses: its image's, or
        the system datastore for a volatile disk; BadRequest if the document names none."""
        ds_id = disk.datastore_id if disk.source else self.system_ds_id
        if ds_id is None:
            raise BadRequest(f"VM {self.id} disk {disk.id}: no datastore to read VITASTOR_CONF from")
        return ds_id


@dataclass(frozen=True)
class Image:
    """An ``<IMAGE>`` document."""

    id: int
    source: str
    size_mb: int
    persistent: bool
    datastore_id: int
    target_snapshot: int | None
    path: str
    format: str
    fs: str
    template: dict[str, str]


@dataclass(frozen=True)
class ActionData:
    """A decoded ``DS_DRIVER_ACTION_DATA`` message: datastore, optional IMAGE, extra elements.

    The IMAGE is kept as XML and read on demand: ``stat`` runs at allocate time, before the
    image exists, and oned then sends only ``<IMAGE><PATH>…</PATH>[<BACKUP_JOB_ID>]</IMAGE>``
    (ImageManager::stat_image), with no ID to parse a whole image from."""

    datastore: Datastore
    image_node: etree._Element | None
    extra: dict[str, str]

    @property
    def image(self) -> Image | None:
        """The whole IMAGE document, as every action but ``stat`` gets it."""
        return parse_image(self.image_node) if self.image_node is not None else None

    @property
    def image_path(self) -> str:
        """IMAGE/PATH, the one element ``stat`` gets."""
        return _text(self.image_node, "PATH") if self.image_node is not None else ""


def parse_datastore(text: str | bytes | etree._Element) -> Datastore:
    """Read a ``<DATASTORE>`` document."""
    node = text if isinstance(text, etree._Element) else _xml(text, "DATASTORE")
    return Datastore(
        id=_int(node, "ID", "DATASTORE"),
        name=_text(node, "NAME"),
        type=_int(node, "TYPE", "DATASTORE", default=0),
        tm_mad=_text(node, "TM_MAD"),
        ds_mad=_text(node, "DS_MAD"),
        template=_attrs(node.find("TEMPLATE")),
    )


def parse_datastore_pool(text: str | bytes) -> list[Datastore]:
    """Read a ``<DATASTORE_POOL>`` document."""
    return [parse_datastore(node) for node in _xml(text, "DATASTORE_POOL").iterfind("DATASTORE")]


def parse_vm(text: str | bytes | etree._Element) -> VM:
    """Read a ``<VM>`` document."""
    node = text if isinstance(text, etree._Element) else _xml(text, "VM")
    vm_id = _int(node, "ID", "VM")
    disks = {}
    for disk in node.iterfind("TEMPLATE/DISK"):
        attrs = _attrs(disk)
        disks[_int(disk, "DISK_ID", f"VM {vm_id} DISK")] = Disk(id=int(attrs["DISK_ID"]), attrs=attrs)
    history = node.findall("HISTORY_RECORDS/HISTORY")
    last = history[-1] if history else None
    return VM(
        id=vm_id,
        state=_int(node, "STATE", "VM", default=0),
        lcm_state=_int(node, "LCM_STATE", "VM", default=0),
        host=_text(last, "HOSTNAME") if last is not None else "",
        system_ds_id=_int(last, "DS_ID", "VM HISTORY") if last is not None else None,
        disks=disks,
        deploy_id=_text(node, "DEPLOY_ID"),
    )


def parse_vm_b64(data: bytes) -> VM:
    """Read the base64 ``<VM>`` document the migration hooks get on stdin."""
    return parse_vm(_b64decode(data, "VM XML"))


def parse_image(text: str | bytes | etree._Element) -> Image:
    """Read an ``<IMAGE>`` document."""
    node = text if isinstance(text, etree._Element) else _xml(text, "IMAGE")
    target = _text(node, "TARGET_SNAPSHOT")
    return Image(
        id=_int(node, "ID", "IMAGE"),
        source=_text(node, "SOURCE"),
        size_mb=_int(node, "SIZE", "IMAGE", default=0),
        persistent=_text(node, "PERSISTENT") == "1",
        datastore_id=_int(node, "DATASTORE_ID", "IMAGE", default=-1),
        target_snapshot=int(target) if target.isdigit() else None,  # oned writes -1 for "none"
        path=_text(node, "PATH"),
        format=_text(node, "FORMAT"),
        fs=_text(node, "FS"),
        template=_attrs(node.find("TEMPLATE")),
    )


def parse_action_data(stdin: bytes) -> ActionData:
    """Decode the base64 ``DS_DRIVER_ACTION_DATA`` oned writes on a DS action's stdin."""
    root = _xml(_b64decode(stdin, "DS_DRIVER_ACTION_DATA"), "DS_DRIVER_ACTION_DATA")
    ds_node = root.find("DATASTORE")
    if ds_node is None:
        raise BadRequest("DS_DRIVER_ACTION_DATA has no DATASTORE")
    image_node = root.find("IMAGE")
    extra = {c.tag: (c.text or "").strip() for c in root
             if isinstance(c.tag, str) and c.tag not in ("DATASTORE", "IMAGE") and len(c) == 0}
    return ActionData(
        datastore=parse_datastore(ds_node),
        image_node=image_node,
        extra=extra,
    )


def parse_host_states(text: str | bytes) -> dict[str, str]:
    """NAME → STATE of every host in a ``<HOST_POOL>`` document."""
    root = _xml(text, "HOST_POOL")
    return {_text(h, "NAME"): _text(h, "STATE") for h in root.iterfind("HOST")}
