"""``vmm/kvm/deploy.vitastor``: the kvm deploy action, run on the front-end (``-l deploy=deploy.vitastor``).

one_vmm_exec runs it with ``'<FE vms dir>/deployment.N' HOST VMID HOST`` and the libvirt domain
XML base64-encoded on stdin. Every ``<disk>`` backed by a Vitastor disk of the VM (matched by the
``disk.N`` suffix of its ``source/@file``) becomes a ``type='network'`` disk with
``<source protocol='vitastor' name='IMAGE'>`` and, when the disk's datastore sets VITASTOR_CONF,
``<config file='VITASTOR_CONF'/>`` (the attribute libvirt's Vitastor patch reads). Only those
``<disk>`` elements are re-serialised and spliced into the original text at their byte offsets
(found with expat, :mod:`onevita.vmm.splice`), so every other byte of the document stays as
oned wrote it (lxml would otherwise re-quote attributes, reorder namespace declarations,
collapse ``<x></x>`` and decode character references throughout). oned writes a second
``<devices>`` for the guest agent channel (FEATURES/GUEST_AGENT; up to 6.10 also for q35's PCI
controllers), which libvirt's schema refuses: the children of every later ``<devices>`` are
moved, as bytes, to the end of the first one, and the later elements removed with their lines;
Vitastor disks are rewritten in any of them. The plain XML then goes to the host's stock
``vmm/kvm/deploy`` at the system datastore path ``<DATASTORE_LOCATION>/<DS_ID>/<VM_ID>/deployment.N``,
where its vm.xml / TPM / vGPU lookups expect it, and its last output line (the domain UUID) is
printed.
"""

from __future__ import annotations

import base64
import binascii
import copy
import os
import re
import sys
from typing import Optional

from lxml import etree

from ..errors import BadRequest
from ..names import check_conf
from ..one.args import int_arg
from ..one.location import datastore_location, scripts_remote_dir
from ..one.model import VM, Disk, parse_vm
from ..run import CommandFailed, run, ssh_argv, ssh_failure
from ..tm.common import datastore, disk_name, oned
from .splice import Span, element_spans, merge_devices, replace_spans

__all__ = ["BLOCKIO", "DISK_FILE", "XML_PARSER", "decode_b64", "deploy", "rewrite", "rewrite_disk",
           "vitastor_source"]

DISK_FILE = re.compile(r"(?P<sysdir>.*)/disk\.(?P<id>[0-9]+)")
_DEPLOYMENT = re.compile(r"deployment\.[0-9]+")
_PATH = re.compile(r"(/[A-Za-z0-9_.+-]*)+")  # plain absolute paths only (they reach ssh argv)
XML_PARSER = etree.XMLParser(remove_blank_text=False, strip_cdata=False, resolve_entities=False,
                          no_network=True, huge_tree=False)
BLOCKIO = {"logical_block_size": "512", "physical_block_size": "4096"}


def decode_b64(data: bytes, what: str) -> bytes:
    text = data.strip()
    if not text:
        raise BadRequest(f"no {what}")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"{what} is not base64") from None


def _parse_domain(xml: bytes) -> etree._Element:
    try:
        return etree.fromstring(xml, parser=XML_PARSER)
    except etree.XMLSyntaxError as e:
        raise BadRequest(f"malformed domain XML: {e.msg}") from e


def _load_vm(dep_file: str, vm_id: int) -> VM:
    """The VM: from the ``vm.xml`` one_vmm_exec wrote beside the deployment file (base64, or
    plain XML), else from oned."""
    path = os.path.join(os.path.dirname(dep_file), "vm.xml")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        data = b""
    except OSError as e:
        raise BadRequest(f"cannot read {path}: {e.strerror}") from e
    if data.strip():
        vm = parse_vm(data if data.lstrip().startswith(b"<") else decode_b64(data, path))
    else:
        vm = parse_vm(oned().vm_info(vm_id))
    if vm.id != vm_id:
        raise BadRequest(f"VM document is for VM {vm.id}, not {vm_id}")
    return vm


def _indent_append(parent: etree._Element, child: etree._Element) -> None:
    """Append ``child`` as the last child, with the whitespace its siblings have."""
    children = list(parent)
    if children:
        last = children[-1]
        child.tail = last.tail
        last.tail = children[-2].tail if len(children) > 1 else parent.text
    parent.append(child)


def vitastor_source(vm: VM, disk: Disk) -> etree._Element:
    """``<source protocol='vitastor' name='IMAGE'>`` for a Vitastor disk of ``vm``, with
    ``<config file='VITASTOR_CONF'/>`` when the disk's datastore (the system datastore for a
    volatile disk) sets one."""
    settings = datastore(vm.datastore_of(disk)).vitastor()
    source = etree.Element("source", protocol="vitastor", name=disk_name(vm.id, disk, settings))
    if settings.conf:
        etree.SubElement(source, "config", file=check_conf(settings.conf))
    return source


def rewrite_disk(element: etree._Element, vm: VM) -> Optional[int]:
    """Turn the ``<disk>`` ``element`` into a vitastor network disk, in place, if it is one of
    the VM's Vitastor disks; its disk id then, else None."""
    source = element.find("source")
    if source is None or element.get("type") != "file":
        return None
    match = DISK_FILE.fullmatch(source.get("file", ""))
    if match is None:
        return None
    disk = vm.disks.get(int(match["id"]))
    if disk is None or disk.attrs.get("TM_MAD") != "vitastor":
        return None  # the context CD-ROM, or another driver's disk
    new = vitastor_source(vm, disk)
    new.tail = source.tail
    element.set("type", "network")
    element.replace(source, new)
    if element.find("blockio") is None:
        _indent_append(element, etree.Element("blockio", BLOCKIO))
    return disk.id


def rewrite(xml: bytes, domain: etree._Element, vm: VM) -> bytes:
    """``xml`` (parsed as ``domain``) with the VM's Vitastor disks rewritten; every byte outside
    those ``<disk>`` elements as it was."""
    encoding = domain.getroottree().docinfo.encoding or "UTF-8"
    try:
        ascii_compatible = "</disk>".encode(encoding) == b"</disk>"
    except LookupError:
        ascii_compatible = False
    if not ascii_compatible:
        raise BadRequest(f"domain XML in {encoding} is not supported")
    disks = domain.findall("devices/disk")
    spans = element_spans(xml, ("devices", "disk"))
    if len(spans) != len(disks):
        raise BadRequest("cannot locate the disks in the domain XML")
    replacements: list[tuple[Span, bytes]] = []
    for element, span in zip(disks, spans):
        if rewrite_disk(element, vm) is not None:
            # a copy drops the ancestors' namespace declarations tostring() would repeat on it
            text = etree.tostring(copy.deepcopy(element), encoding="unicode", with_tail=False)
            replacements.append((span, text.encode(encoding, "xmlcharrefreplace")))
    return replace_spans(xml, replacements)


def _system_dir(domain: etree._Element, vm: VM) -> str:
    """``<DATASTORE_LOCATION>/<DS_ID>/<VM_ID>`` on the host: the directory of the VM's
    ``disk.N`` files in the domain, else oned's DATASTORE_LOCATION."""
    if vm.system_ds_id is None:
        raise BadRequest(f"VM {vm.id} has no HISTORY: no system datastore to deploy in")
    tail = f"/{vm.system_ds_id}/{vm.id}"
    for source in domain.iterfind("devices/disk/source"):
        match = DISK_FILE.fullmatch(source.get("file", ""))
        if match and match["sysdir"].endswith(tail) and _PATH.fullmatch(match["sysdir"]):
            return match["sysdir"]
    return f"{datastore_location()}{tail}"


def deploy(dep_file: str, host: str, vm_id: str, host2: str = "") -> None:
    """``deploy.vitastor DEPLOYMENT_FILE HOST VMID HOST``: rewrite the domain's Vitastor disks
    and create the domain on HOST with its stock ``vmm/kvm/deploy``; print the deploy id."""
    vmid = int_arg(vm_id, "VMID")
    name = os.path.basename(dep_file)
    if not _DEPLOYMENT.fullmatch(name):
        raise BadRequest(f"unexpected deployment file name {dep_file!r}")
    xml = decode_b64(sys.stdin.buffer.read(), "domain XML on stdin")
    domain = _parse_domain(xml)
    vm = _load_vm(dep_file, vmid)
    target = f"{_system_dir(domain, vm)}/{name}"  # before rewrite: it reads the disk.N paths
    plain = merge_devices(rewrite(xml, domain, vm))
    remote = f"{scripts_remote_dir()}/vmm/kvm/deploy"
    proc = run(ssh_argv(host, [remote, target]), input=plain, check=False)
    if proc.returncode != 0:
        raise CommandFailed(ssh_failure(host, proc.returncode, proc.stderr.decode(errors="replace"),
                                        "vmm/kvm/deploy"))
    lines = [line.strip() for line in proc.stdout.decode(errors="replace").splitlines() if line.strip()]
    if not lines:
        raise CommandFailed(f"vmm/kvm/deploy on {host} printed no deploy id")
    sys.stdout.write(lines[-1] + "\n")
