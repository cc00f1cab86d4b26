"""The ``<disk>`` the stock ``vmm/kvm/attach_disk`` hands to ``virsh attach-device``, for any
source.

Hot-attached Vitastor disks must get what every other hot-attached disk gets (cache, io,
discard, iotune limits, queues, iothread, boot order, readonly, shareable, LUKS, SCSI address,
serial), so this module follows the stock script and its ``get_disk_information``
(scripts_common.sh) attribute by attribute; only the source differs, and the caller gives it.
Each function is named after the stock script's variable or the OpenNebula attribute it
computes. Where releases differ (6.8 to 7.4), the release decides:

* 6.8.0 to 6.10.1 take the queues default from kvmrc's ``DEFAULT_VIRTIO_BLK_QUEUES`` (a name
  kvmrc never sets), 6.10.2 on from ``DEFAULT_ATTACH_VIRTIO_BLK_QUEUES``;
* 7.0.2 on write ``<serial>`` from DISK/SERIAL;
* 7.3.80 (7.4) on: queues and iothread only for a virtio disk (a ``disk`` device whose target
  is ``vd*``), queues also from the VM's FEATURES/VIRTIO_BLK_QUEUES, the iothread chosen among
  the running domain's ``<iothreads>`` (DISK/IOTHREAD, else kvmrc's
  ``DEFAULT_ATTACH_VIRTIO_BLK_IOTHREAD``, else DISK_ID spread over them), a CD-ROM's driver
  always raw, more ``*_cdrom`` types, and SCSI addresses for ``sdaa`` and later.

Values come from the VM's DISK (users write them) or from kvmrc. Where the stock script pastes
them into XML, here each is checked to be what libvirt takes (numbers, words, a UUID) and
refused with the attribute's name otherwise; the serial is filtered as the stock script filters
it. The XML is built with lxml, so nothing is pasted into markup or reaches a shell.

One deliberate difference: a SERIAL with nothing left after filtering gives no ``<serial>``
rather than an empty one; libvirt's schema refuses the empty element and libvirt reads it as no
serial, so the disk QEMU gets is the same.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Optional

from lxml import etree

from ..errors import BadRequest, ConfigError
from .kvmrc import Release

__all__ = ["AttachDisk", "address", "cache", "ctrl_target", "device", "discard", "disk_element", "disk_io",
           "disk_type", "driver", "driver_element", "encryption", "insert_sec", "iothread", "iotune",
           "reads_domain_iothreads", "serial", "virtio_blk_queues"]

QUEUES_DEFAULT_RENAMED: Release = (6, 10, 2)
SERIAL: Release = (7, 0, 2)
VIRTIO_ONLY: Release = (7, 3, 80)
_NUMBER = re.compile(r"[0-9]{1,20}")
_WORD = re.compile(r"[A-Za-z0-9_]{1,32}")
_UUID = re.compile(r"[0-9A-Fa-f]{8}(-?[0-9A-Fa-f]{4}){3}-?[0-9A-Fa-f]{12}")
_DISK_TARGET = re.compile(r"[a-z0-9]{0,32}")
_SERIAL_DROPPED = re.compile(r"[^0-9a-zA-Z._-]")
_IOTUNE_KEYS = [f"{who}_{what}_SEC{limit}" for who in ("TOTAL", "READ", "WRITE") for what in ("BYTES", "IOPS")
                for limit in ("", "_MAX", "_MAX_LENGTH")]
_CDROM_TYPES = ("cdrom", "rbd_cdrom")
_CDROM_TYPES_74 = ("block_cdrom", "sheepdog_cdrom", "gluster_cdrom")


@dataclass(frozen=True)
class AttachDisk:
    """What the stock attach_disk reads for one disk: the release's logic, ``DISK[ATTACH='YES']``
    of the action data, the VM's TEMPLATE/VCPU and FEATURES/VIRTIO_BLK_QUEUES, kvmrc, the TARGET
    argument and (7.4) the text of the running domain's ``<iothreads>``."""

    release: Release
    disk: Mapping[str, str]
    kvmrc: Mapping[str, str]
    target: str
    vcpu: str = ""
    vm_virtio_blk_queues: str = ""
    domain_iothreads: str = ""

    def since(self, release: Release) -> bool:
        return self.release >= release


# checked values ----------------------------------------------------------------------------
def _lookup(a: AttachDisk, key: str, default_key: Optional[str] = None) -> tuple[str, str]:
    """DISK/``key``, else kvmrc's ``default_key`` (``${KEY:-${DEFAULT_KEY}}``): the value and
    where it came from, for error messages."""
    value = a.disk.get(key, "")
    if value or default_key is None:
        return value, f"DISK {key}"
    return a.kvmrc.get(default_key, ""), f"{default_key} of kvmrc"


def _refused(where: str, message: str) -> Exception:
    """A bad kvmrc default is the admin's (ConfigError), a bad template value the request's."""
    return (ConfigError if where.endswith(" of kvmrc") else BadRequest)(f"{where} {message}")


def _checked(value: str, where: str, pattern: re.Pattern[str], what: str) -> str:
    if value and not pattern.fullmatch(value):
        raise _refused(where, f"must be {what}, not {value!r}")
    return value


def _number(value: str, where: str) -> str:
    """``value`` if empty or a non-negative integer libvirt takes (unsignedLong)."""
    _checked(value, where, _NUMBER, "a non-negative integer")
    if value and int(value) >= 1 << 64:
        raise _refused(where, f"is too large: {value}")
    return value


def _word(value: str, where: str) -> str:
    return _checked(value, where, _WORD, "a single word of letters, digits and _")


def _default(a: AttachDisk, key: str) -> str:
    """DISK/``key`` or kvmrc's ``DEFAULT_ATTACH_<key>``, a number."""
    return _number(*_lookup(a, key, f"DEFAULT_ATTACH_{key}"))


def _yes(a: AttachDisk, key: str) -> bool:
    """The stock script lowercases READONLY and SHAREABLE and compares with ``yes``."""
    return a.disk.get(key, "").lower() == "yes"


# the <driver> element ----------------------------------------------------------------------
def disk_type(a: AttachDisk) -> str:
    """DISK/TYPE, lowercased as get_disk_information does."""
    return _word(a.disk.get("TYPE", ""), "DISK TYPE").lower()


def device(a: AttachDisk) -> str:
    """``cdrom`` or ``disk`` (get_disk_information's DEVICE)."""
    cdroms = _CDROM_TYPES + (_CDROM_TYPES_74 if a.since(VIRTIO_ONLY) else ())
    return "cdrom" if disk_type(a) in cdroms else "disk"


def driver(a: AttachDisk) -> str:
    """The driver type: DISK/DRIVER, default raw; always raw for a CD-ROM from 7.4."""
    if a.since(VIRTIO_ONLY) and disk_type(a) == "cdrom":
        return "raw"
    return _word(a.disk.get("DRIVER", ""), "DISK DRIVER") or "raw"


def cache(a: AttachDisk) -> str:
    """DISK/CACHE, else DEFAULT_ATTACH_CACHE, else ``default``: the stock disk always has one."""
    return _word(*_lookup(a, "CACHE", "DEFAULT_ATTACH_CACHE")) or "default"


def discard(a: AttachDisk) -> str:
    return _word(*_lookup(a, "DISCARD", "DEFAULT_ATTACH_DISCARD"))


def disk_io(a: AttachDisk) -> str:
    """DISK/IO (the stock script's DISK_IO), else DEFAULT_ATTACH_IO."""
    return _word(*_lookup(a, "IO", "DEFAULT_ATTACH_IO"))


def _virtio_disk(a: AttachDisk) -> bool:
    """7.4's condition for queues and iothread: a ``disk`` device at a ``vd*`` target."""
    return device(a) == "disk" and a.target.startswith("vd")


def virtio_blk_queues(a: AttachDisk) -> str:
    """The ``queues`` attribute: DISK/VIRTIO_BLK_QUEUES, else (7.4) the VM's
    FEATURES/VIRTIO_BLK_QUEUES, else kvmrc's default; ``auto`` means the VM's VCPU (default 1)."""
    if a.since(VIRTIO_ONLY):
        if not _virtio_disk(a):
            return ""
        value, where = _lookup(a, "VIRTIO_BLK_QUEUES")
        if not value:
            value, where = a.vm_virtio_blk_queues, "VM FEATURES/VIRTIO_BLK_QUEUES"
        if not value:
            default = "DEFAULT_ATTACH_VIRTIO_BLK_QUEUES"
            value, where = a.kvmrc.get(default, ""), f"{default} of kvmrc"
    else:
        default = ("DEFAULT_ATTACH_VIRTIO_BLK_QUEUES" if a.since(QUEUES_DEFAULT_RENAMED)
                   else "DEFAULT_VIRTIO_BLK_QUEUES")
        value, where = _lookup(a, "VIRTIO_BLK_QUEUES", default)
    if value == "auto":
        return _number(a.vcpu, "VM VCPU") or "1"
    return _number(value, where)


def reads_domain_iothreads(a: AttachDisk) -> bool:
    """Whether the stock script (7.4) reads ``<iothreads>`` of the running domain for this disk."""
    return a.since(VIRTIO_ONLY) and _virtio_disk(a)


def iothread(a: AttachDisk) -> str:
    """The ``iothread`` attribute. Up to 7.2: DISK/IOTHREAD as it is. From 7.4, for a virtio
    disk of a domain with N iothreads: DISK/IOTHREAD (else DEFAULT_ATTACH_VIRTIO_BLK_IOTHREAD)
    if positive, else DISK_ID % N + 1, at most N; none when the domain has no iothreads."""
    if not a.since(VIRTIO_ONLY):
        return _number(*_lookup(a, "IOTHREAD"))
    if not _virtio_disk(a):
        return ""
    wanted = _number(*_lookup(a, "IOTHREAD", "DEFAULT_ATTACH_VIRTIO_BLK_IOTHREAD"))
    count = a.domain_iothreads.strip()
    if not _NUMBER.fullmatch(count) or int(count) <= 0:
        return ""
    disk_id = a.disk.get("DISK_ID", "")
    if wanted and int(wanted) > 0:
        chosen = int(wanted)
    elif _NUMBER.fullmatch(disk_id):
        chosen = int(disk_id) % int(count) + 1
    else:
        chosen = 1
    return str(min(chosen, int(count)))


def driver_element(a: AttachDisk) -> etree._Element:
    """``<driver name='qemu' type=… cache=… io=… discard=… iothread=… queues=…/>``, in the
    stock script's attribute order."""
    element = etree.Element("driver", name="qemu", type=driver(a), cache=cache(a))
    for name, value in (("io", disk_io(a)), ("discard", discard(a)), ("iothread", iothread(a)),
                        ("queues", virtio_blk_queues(a))):
        if value:
            element.set(name, value)
    return element


# <iotune> ----------------------------------------------------------------------------------
def insert_sec(iotune: etree._Element, name: str, sec: str, sec_max: str, sec_max_length: str) -> None:
    """``<NAME_sec>``, then ``<NAME_sec_max>`` only if it is above the base (0 when unset), then
    ``<NAME_sec_max_length>`` only with that max: the stock insert_sec."""
    if sec:
        etree.SubElement(iotune, f"{name}_sec").text = sec
    if sec_max and int(sec_max) > int(sec or "0"):
        etree.SubElement(iotune, f"{name}_sec_max").text = sec_max
        if sec_max_length:
            etree.SubElement(iotune, f"{name}_sec_max_length").text = sec_max_length


def iotune(a: AttachDisk) -> Optional[etree._Element]:
    """``<iotune>`` when any byte or IOPS limit (base or max, from DISK or kvmrc) is set. TOTAL_*
    wins over READ_*/WRITE_* (for bytes and IOPS separately); SIZE_IOPS_SEC only comes with an
    IOPS base limit; *_MAX_LENGTH alone does not make an iotune."""
    v = {key: _default(a, key) for key in [*_IOTUNE_KEYS, "SIZE_IOPS_SEC"]}
    if not any(v[key] for key in _IOTUNE_KEYS if not key.endswith("_LENGTH")):
        return None
    element = etree.Element("iotune")
    for what in ("BYTES", "IOPS"):
        whos = ("TOTAL",) if v[f"TOTAL_{what}_SEC"] or v[f"TOTAL_{what}_SEC_MAX"] else ("READ", "WRITE")
        for who in whos:
            key = f"{who}_{what}_SEC"
            insert_sec(element, f"{who}_{what}".lower(), v[key], v[f"{key}_MAX"], v[f"{key}_MAX_LENGTH"])
    if v["SIZE_IOPS_SEC"] and any(v[f"{who}_IOPS_SEC"] for who in ("TOTAL", "READ", "WRITE")):
        insert_sec(element, "size_iops", v["SIZE_IOPS_SEC"], "", "")
    return element


# the other children ------------------------------------------------------------------------
def encryption(a: AttachDisk) -> Optional[etree._Element]:
    """``<encryption format='luks'>`` with the passphrase secret DISK/LUKS_SECRET names."""
    secret = _checked(a.disk.get("LUKS_SECRET", ""), "DISK LUKS_SECRET", _UUID, "a UUID")
    if not secret:
        return None
    element = etree.Element("encryption", format="luks")
    etree.SubElement(element, "secret", type="passphrase", uuid=secret)
    return element


def ctrl_target(a: AttachDisk) -> Optional[int]:
    """The SCSI target of an ``sd*`` DISK/TARGET: its letters as a number (``sda`` 0, ``sdz``
    25, from 7.4 ``sdaa`` 26), up to 7.2 only the first letter counts; None outside 0..255 or
    for other targets."""
    target = _checked(a.disk.get("TARGET", ""), "DISK TARGET", _DISK_TARGET, "a device name")
    if target and not target.startswith("sd"):
        return None
    suffix = target[2:]
    if a.since(VIRTIO_ONLY):
        number = 0
        for letter in suffix:
            if not "a" <= letter <= "z":
                return None
            number = number * 26 + ord(letter) - ord("a") + 1
        number -= 1
    else:
        number = (ord(suffix[0]) if suffix else 0) - ord("a")
    return number if 0 <= number < 256 else None


def address(a: AttachDisk) -> Optional[etree._Element]:
    """``<address type='drive' controller='0' bus='0' target=N unit='0'/>`` for an sd* disk."""
    number = ctrl_target(a)
    if number is None:
        return None
    return etree.Element("address", type="drive", controller="0", bus="0", target=str(number), unit="0")


def serial(a: AttachDisk) -> str:
    """DISK/SERIAL (7.0.2 on) without the characters the stock script removes (all but letters,
    digits, ``.``, ``_`` and ``-``)."""
    if not a.since(SERIAL):
        return ""
    return _SERIAL_DROPPED.sub("", a.disk.get("SERIAL", ""))


def disk_element(a: AttachDisk, source: etree._Element, source_type: str) -> etree._Element:
    """The stock script's ``<disk>`` with ``source`` (and ``type=source_type``) in place of its
    own source: driver, source, target, boot, readonly, shareable, encryption, iotune, address,
    serial, in its order. Building it reads, and so checks, every value it depends on."""
    element = etree.Element("disk", type=source_type, device=device(a))
    element.append(driver_element(a))
    element.append(source)
    etree.SubElement(element, "target", dev=a.target)
    order = _number(a.disk.get("ORDER", ""), "DISK ORDER")
    if order:
        etree.SubElement(element, "boot", order=order)
    for key, tag in (("READONLY", "readonly"), ("SHAREABLE", "shareable")):
        if _yes(a, key):
            etree.SubElement(element, tag)
    for child in (encryption(a), iotune(a), address(a)):
        if child is not None:
            element.append(child)
    text = serial(a)
    if text:
        etree.SubElement(element, "serial").text = text
    return element
