"""``vmm/kvm/attach_disk.vitastor``: hot-attach a disk, run on the front-end
(``-l attach_disk=attach_disk.vitastor``).

one_vmm_exec runs it with ``DEPLOY_ID <sysdir>/disk.N TARGET TARGET_INDEX VMM_DRIVER_ACTION_DATA
VMID HOST`` (the action data base64, also on stdin). The disk is the VM's
``DISK[ATTACH='YES']``. Another driver's disk goes to the host's stock ``vmm/kvm/attach_disk``
with the same arguments and stdin. A Vitastor disk becomes a ``<disk type='network'>`` with
``<source protocol='vitastor'>`` (built by deploy's ``vitastor_source``) instead of the stock
``<source file='<sysdir>/disk.N'/>``, which does not exist for Vitastor, and is attached with
``virsh attach-device DEPLOY_ID /dev/stdin --live`` on the host (the device XML on stdin).
``VIRSH`` (an absolute path) replaces the host's ``virsh``.
"""

from __future__ import annotations

import os
import re
import sys

from lxml import etree

from ..errors import BadRequest
from ..one.args import int_arg
from ..one.location import scripts_remote_dir
from ..one.model import VM, Disk, parse_vm
from ..run import CommandFailed, run, ssh_argv, ssh_failure
from .deploy import BLOCKIO, DISK_FILE, XML_PARSER, decode_b64, vitastor_source

__all__ = ["attach_disk", "device_xml"]

LIBVIRT_URI = "qemu:///system"
_TARGET = re.compile(r"[a-z]{2}[a-z0-9]{1,14}")
_DEPLOY_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,127}")
_PATH = re.compile(r"(/[A-Za-z0-9_.+-]{1,255}){1,32}")
_WORD = re.compile(r"[A-Za-z0-9_]{1,32}")
BUS = {"sd": "scsi", "hd": "ide", "vd": "virtio"}
YES = ("YES", "yes", "Yes")


def _action_vm(data: bytes) -> VM:
    """The ``<VM>`` of a base64 ``VMM_DRIVER_ACTION_DATA``."""
    try:
        root = etree.fromstring(decode_b64(data, "VMM_DRIVER_ACTION_DATA"), parser=XML_PARSER)
    except etree.XMLSyntaxError as e:
        raise BadRequest(f"malformed VMM_DRIVER_ACTION_DATA: {e.msg}") from e
    node = root if root.tag == "VM" else root.find("VM")
    if node is None:
        raise BadRequest("VMM_DRIVER_ACTION_DATA has no VM")
    return parse_vm(node)


def _attached(vm: VM) -> Disk:
    found = [d for d in vm.disks.values() if d.attrs.get("ATTACH", "").upper() == "YES"]
    if len(found) != 1:
        raise BadRequest(f"VM {vm.id} has {len(found)} disks with ATTACH=YES, not 1")
    return found[0]


def _word(disk: Disk, key: str) -> str:
    value = disk.attrs.get(key, "")
    if value and not _WORD.fullmatch(value):
        raise BadRequest(f"disk {disk.id}: unexpected {key} {value!r}")
    return value


def device_xml(vm: VM, disk: Disk, target: str) -> bytes:
    """The libvirt ``<disk>`` device for a Vitastor disk of ``vm`` at ``target``."""
    if not _TARGET.fullmatch(target):
        raise BadRequest(f"unexpected target device {target!r}")
    cdrom = disk.attrs.get("TYPE", "").upper() == "CDROM"
    element = etree.Element("disk", type="network", device="cdrom" if cdrom else "disk")
    driver = etree.SubElement(element, "driver", name="qemu", type="raw")
    for key in ("CACHE", "DISCARD", "IO"):
        value = _word(disk, key)
        if value:
            driver.set(key.lower(), value)
    element.append(vitastor_source(vm, disk))
    prefix = (_word(disk, "DEV_PREFIX") or target)[:2].lower()
    etree.SubElement(element, "target", dev=target, bus=BUS.get(prefix, "virtio"))
    etree.SubElement(element, "blockio", BLOCKIO)
    if cdrom or disk.attrs.get("READONLY", "") in YES:
        etree.SubElement(element, "readonly")
    return etree.tostring(element)


def _virsh() -> str:
    virsh = os.environ.get("VIRSH", "virsh")
    if virsh != "virsh" and not _PATH.fullmatch(virsh):
        raise BadRequest(f"VIRSH must be an absolute path, not {virsh!r}")
    return virsh


def _hand_over(host: str, args: list[str], stdin: bytes) -> int:
    """The host's stock ``vmm/kvm/attach_disk``, with the same arguments and stdin; its output
    and exit code."""
    remote = f"{scripts_remote_dir()}/vmm/kvm/attach_disk"
    proc = run(ssh_argv(host, [remote, *args]), input=stdin, check=False)
    sys.stdout.buffer.write(proc.stdout)
    sys.stdout.flush()
    sys.stderr.buffer.write(proc.stderr)
    sys.stderr.flush()
    return proc.returncode


def attach_disk(deploy_id: str, disk_path: str, target: str, target_index: str, action_data: str,
                vm_id: str, host: str) -> int:
    """``attach_disk.vitastor DEPLOY_ID DISK_PATH TARGET TARGET_INDEX DATA VMID HOST``."""
    vmid = int_arg(vm_id, "VMID")
    stdin = sys.stdin.buffer.read()
    vm = _action_vm(action_data.encode() if action_data.strip() else stdin)
    if vm.id != vmid:
        raise BadRequest(f"VMM_DRIVER_ACTION_DATA is for VM {vm.id}, not {vmid}")
    disk = _attached(vm)
    if disk.attrs.get("TM_MAD") != "vitastor":
        return _hand_over(host, [deploy_id, disk_path, target, target_index, action_data, vm_id, host], stdin)
    match = DISK_FILE.fullmatch(disk_path)
    if match is not None and int(match["id"]) != disk.id:
        raise BadRequest(f"{disk_path} is not disk {disk.id}, the disk to attach")
    if not _DEPLOY_ID.fullmatch(deploy_id):
        raise BadRequest(f"unexpected deploy id {deploy_id!r}")
    xml = device_xml(vm, disk, target)
    argv = [_virsh(), "--connect", LIBVIRT_URI, "attach-device", deploy_id, "/dev/stdin", "--live"]
    proc = run(ssh_argv(host, argv), input=xml, check=False)
    if proc.returncode != 0:
        raise CommandFailed(ssh_failure(host, proc.returncode, proc.stderr.decode(errors="replace"),
                                        "virsh attach-device"))
    return 0
