"""``vmm/kvm/attach_disk.vitastor``: hot-attach a disk, run on the front-end
(``-l attach_disk=attach_disk.vitastor``).

one_vmm_exec runs it with ``DEPLOY_ID <sysdir>/disk.N TARGET TARGET_INDEX VMM_DRIVER_ACTION_DATA
VMID HOST`` (the action data base64, also on stdin). The disk is the VM's
``DISK[ATTACH='YES']``. Another driver's disk goes to the host's stock ``vmm/kvm/attach_disk``
with the same arguments and stdin. A Vitastor disk gets the ``<disk>`` the stock script would
build for it (:mod:`onevita.vmm.disk_xml`, with the defaults of the remotes tree's kvmrc and the
logic of its OpenNebula release), except that its source is deploy's Vitastor network source
(``type='network'``, ``<source protocol='vitastor'>``, ``<blockio>`` appended) instead of the
stock ``<source file='<sysdir>/disk.N'/>``, which does not exist for Vitastor. It is attached
with ``virsh attach-device DEPLOY_ID /dev/stdin --live`` on the host (the device XML on stdin);
on 7.4 a virtio disk first needs ``virsh dumpxml`` for the domain's iothreads, as the stock
script reads them. ``VIRSH`` (an absolute path) replaces the host's ``virsh``.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys

from lxml import etree

from ..errors import BadRequest
from ..one.args import int_arg
from ..one.location import scripts_remote_dir
from ..one.model import VM, Disk, parse_vm
from ..run import CommandFailed, run, ssh_argv, ssh_failure
from . import disk_xml
from .deploy import BLOCKIO, DISK_FILE, XML_PARSER, decode_b64, vitastor_source
from .kvmrc import load_kvmrc, opennebula_release

__all__ = ["attach_disk", "attach_inputs", "device_xml"]

LIBVIRT_URI = "qemu:///system"
_TARGET = re.compile(r"[a-z]{2}[a-z0-9]{1,14}")
_DEPLOY_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,127}")
_PATH = re.compile(r"(/[A-Za-z0-9_.+-]{1,255}){1,32}")


def _action_vm(data: bytes) -> etree._Element:
    """The ``<VM>`` of a base64 ``VMM_DRIVER_ACTION_DATA``."""
    try:
        root = etree.fromstring(decode_b64(data, "VMM_DRIVER_ACTION_DATA"), parser=XML_PARSER)
    except etree.XMLSyntaxError as e:
        raise BadRequest(f"malformed VMM_DRIVER_ACTION_DATA: {e.msg}") from e
    node = root if root.tag == "VM" else root.find("VM")
    if node is None:
        raise BadRequest("VMM_DRIVER_ACTION_DATA has no VM")
    return node


def _attached(vm: VM) -> Disk:
    found = [d for d in vm.disks.values() if d.attrs.get("ATTACH", "").upper() == "YES"]
    if len(found) != 1:
        raise BadRequest(f"VM {vm.id} has {len(found)} disks with ATTACH=YES, not 1")
    return found[0]


def attach_inputs(node: etree._Element, disk: Disk, target: str) -> disk_xml.AttachDisk:
    """What the stock attach_disk would read for ``disk`` of the ``<VM>`` ``node``: the
    release and kvmrc of the remotes tree, the DISK, the VM's VCPU and FEATURES/VIRTIO_BLK_QUEUES."""
    if not _TARGET.fullmatch(target):
        raise BadRequest(f"unexpected target device {target!r}")
    return disk_xml.AttachDisk(
        release=opennebula_release(), disk=disk.attrs, kvmrc=load_kvmrc(), target=target,
        vcpu=(node.findtext("TEMPLATE/VCPU") or "").strip(),
        vm_virtio_blk_queues=(node.findtext("TEMPLATE/FEATURES/VIRTIO_BLK_QUEUES") or "").strip())


def device_xml(inputs: disk_xml.AttachDisk, source: etree._Element) -> bytes:
    """The stock ``<disk>`` for ``inputs`` with the Vitastor network ``source``, and the
    ``<blockio>`` deploy gives Vitastor disks, last."""
    element = disk_xml.disk_element(inputs, source, "network")
    etree.SubElement(element, "blockio", BLOCKIO)
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


def _domain_iothreads(host: str, deploy_id: str) -> str:
    """The text of the running domain's ``<iothreads>`` (``virsh dumpxml`` on the host); empty
    when virsh fails or answers something else, as the stock script's ``2>/dev/null`` pipeline
    leaves it."""
    proc = run(ssh_argv(host, [_virsh(), "--connect", LIBVIRT_URI, "dumpxml", deploy_id]), check=False)
    if proc.returncode != 0:
        return ""
    try:
        domain = etree.fromstring(proc.stdout, parser=XML_PARSER)
    except etree.XMLSyntaxError:
        return ""
    return (domain.findtext("iothreads") or "") if domain.tag == "domain" else ""


def attach_disk(deploy_id: str, disk_path: str, target: str, target_index: str, action_data: str,
                vm_id: str, host: str) -> int:
    """``attach_disk.vitastor DEPLOY_ID DISK_PATH TARGET TARGET_INDEX DATA VMID HOST``."""
    vmid = int_arg(vm_id, "VMID")
    stdin = sys.stdin.buffer.read()
    node = _action_vm(action_data.encode() if action_data.strip() else stdin)
    vm = parse_vm(node)
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
    inputs = attach_inputs(node, disk, target)
    source = vitastor_source(vm, disk)
    if disk_xml.reads_domain_iothreads(inputs):
        inputs = dataclasses.replace(inputs, domain_iothreads=_domain_iothreads(host, deploy_id))
    xml = device_xml(inputs, source)
    argv = [_virsh(), "--connect", LIBVIRT_URI, "attach-device", deploy_id, "/dev/stdin", "--live"]
    proc = run(ssh_argv(host, argv), input=xml, check=False)
    if proc.returncode != 0:
        raise CommandFailed(ssh_failure(host, proc.returncode, proc.stderr.decode(errors="replace"),
                                        "virsh attach-device"))
    return 0
