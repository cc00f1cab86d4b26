"""deploy.vitastor and the second ``<devices>`` oned writes: with FEATURES/GUEST_AGENT=YES the
qemu-guest-agent channel comes in a ``<devices>`` of its own after ``<features>`` (every release
6.8 to 7.4, LibVirtDriverKVM.cc), up to 6.10 q35's PCI controllers come in another right after
the first, and RAW data may bring more. libvirt's schema allows one ``<devices>``: deploy moves
the children of the later ones, byte for byte, to the end of the first and removes the later
ones with their lines, rewriting Vitastor disks in any of them."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from lxml import etree

from onevita.errors import BadRequest
from onevita.vmm.splice import merge_devices
from tests.captures import HERE as CAPTURES
from tests.captures import Capture, captures
from tests.cloud import Cloud
from tests.harness import documents as docs
from tests.vmm.libvirt_schema import LibvirtSchema
from tests.vmm.test_deploy import (  # noqa: F401 (fake_deploy is a fixture)
    SYSDIR,
    VM_ID,
    FakeDeploy,
    Kind,
    check_deployed,
    domain_xml,
    fake_deploy,
    file_disk,
    kinds,
)

GRAPHICS = "\t\t<graphics type='vnc' listen='0.0.0.0' port='5912'/>\n"
FEATURES_END = "\t</features>\n"
# as LibVirtDriverKVM.cc writes them
GUEST_AGENT = ("\t<devices>\n\t\t<channel type='unix'>\n"
               "\t\t\t<source mode='bind'/><target type='virtio' name='org.qemu.guest_agent.0'/>\n"
               "\t\t</channel>\n\t</devices>\n")
CHANNEL = ("\t\t<channel type='unix'>\n"
           "\t\t\t<source mode='bind'/><target type='virtio' name='org.qemu.guest_agent.0'/>\n\t\t</channel>\n")
Q35 = ("\t<devices>\n\t\t<controller index='0' type='pci' model='pcie-root'/>\n"
       "\t\t<controller type='pci' model='pcie-root-port'/>\n"
       "\t\t<controller type='pci' model='pcie-to-pci-bridge'/>\n\t</devices>\n")
CONTROLLERS = ("\t\t<controller index='0' type='pci' model='pcie-root'/>\n"
               "\t\t<controller type='pci' model='pcie-root-port'/>\n"
               "\t\t<controller type='pci' model='pcie-to-pci-bridge'/>\n")


def deploy_raw(cloud: Cloud, fake: FakeDeploy, fe_dir: Path, domain: str, vm_xml: str) -> None:
    """deploy.vitastor with a domain that stock libvirt's schema refuses (two <devices>)."""
    with pytest.raises(AssertionError, match="does not validate"):
        fake.schema.check_domain(domain, stock=True)
    fe_dir.mkdir(parents=True, exist_ok=True)
    (fe_dir / "vm.xml").write_text(docs.encode_b64(vm_xml))
    cloud.ok("vmm/deploy.vitastor", str(fe_dir / "deployment.0"), "node1", str(VM_ID), "node1",
             stdin=base64.b64encode(domain.encode()))


def with_guest_agent(domain: str) -> str:
    """The domain with GUEST_AGENT=YES: the channel's <devices> after <features>."""
    assert domain.count(FEATURES_END) == 1
    return domain.replace(FEATURES_END, FEATURES_END + GUEST_AGENT)


@pytest.mark.parametrize("cloud", ["ssh"], indirect=True)  # deploy runs on the front-end in both modes
def test_guest_agent(cloud: Cloud, fake_deploy: FakeDeploy, tmp_path: Path) -> None:  # noqa: F811
    """The channel ends up last in the one <devices>, every other byte as oned wrote it, the
    Vitastor disk rewritten."""
    table = kinds(cloud)
    disks = [table["persistent"], table["ceph"], table["context"]]
    vm = docs.vm_xml(VM_ID, disks=[k.vm_disk for k in disks if k.vm_disk is not None], context_disk_id=7)
    plain = domain_xml([k.xml for k in disks])
    deploy_raw(cloud, fake_deploy, tmp_path / "fe", with_guest_agent(plain), vm)

    merged = plain.replace(GRAPHICS, GRAPHICS + CHANNEL)  # as if oned had written one <devices>
    check_deployed(cloud, fake_deploy, disks, merged)
    result = fake_deploy.domain()
    assert len(result.findall("devices")) == 1
    assert result.find("devices")[-1].tag == "channel"  # type: ignore[index]


@pytest.mark.parametrize("cloud", ["ssh"], indirect=True)
def test_q35_guest_agent_and_raw_devices(cloud: Cloud, fake_deploy: FakeDeploy, tmp_path: Path) -> None:  # noqa: F811
    """6.10 with a q35 machine and GUEST_AGENT, and RAW data with a <devices> holding a Vitastor
    disk on one line: all merged in document order, the RAW disk rewritten too."""
    table = kinds(cloud)
    raw_disk = file_disk(f"{SYSDIR}/disk.1", "vdb").replace("\n", "").replace("\t", "")
    raw = Kind(1, "vdb", table["non-persistent"].vm_disk, raw_disk, table["non-persistent"].image)
    disks = [table["persistent"], table["context"], raw]
    vm = docs.vm_xml(VM_ID, disks=[k.vm_disk for k in disks if k.vm_disk is not None], context_disk_id=7)
    plain = domain_xml([table["persistent"].xml, table["context"].xml])
    raw_line = f"\t<devices>{raw_disk}</devices>\n"
    domain = with_guest_agent(plain.replace("\t</devices>\n", "\t</devices>\n" + Q35, 1))
    domain = domain.replace("\t<metadata>\n", raw_line + "\t<metadata>\n")
    deploy_raw(cloud, fake_deploy, tmp_path / "fe", domain, vm)

    merged = plain.replace(GRAPHICS, GRAPHICS + CONTROLLERS + CHANNEL.rstrip("\n") + raw_disk + "\n")
    check_deployed(cloud, fake_deploy, disks, merged)
    assert len(fake_deploy.domain().findall("devices")) == 1


@pytest.mark.parametrize("cloud", ["ssh"], indirect=True)
def test_later_devices_with_attributes_refused(cloud: Cloud, fake_deploy: FakeDeploy, tmp_path: Path) -> None:  # noqa: F811
    table = kinds(cloud)
    vm = docs.vm_xml(VM_ID, disks=[])
    domain = domain_xml([table["context"].xml]).replace(
        FEATURES_END, FEATURES_END + "\t<devices xmlns:x='urn:x'><x:y/></devices>\n")
    fe = tmp_path / "fe"
    fe.mkdir()
    (fe / "vm.xml").write_text(docs.encode_b64(vm))
    result = cloud.run("vmm/deploy.vitastor", str(fe / "deployment.0"), "node1", str(VM_ID), "node1",
                       stdin=base64.b64encode(domain.encode()))
    assert result.rc == 1 and "later <devices> element with attributes" in result.reason
    assert not fake_deploy.calls.exists()


# merge_devices in-process ---------------------------------------------------------------------
@pytest.mark.parametrize(("xml", "merged"), [
    (b"<d><devices><a/></devices></d>", b"<d><devices><a/></devices></d>"),  # one: unchanged
    (b"<d><devices/><x/><devices><b/></devices></d>", b"<d><devices><b/></devices><x/></d>"),
    (b"<d><devices><a/></devices><devices/><devices></devices></d>", b"<d><devices><a/></devices></d>"),
    (b"<d>\r\n <devices>\r\n  <a/>\r\n </devices>\r\n <devices>\r\n  <b/>\r\n </devices>\r\n</d>",
     b"<d>\r\n <devices>\r\n  <a/>\r\n  <b/>\r\n </devices>\r\n</d>"),
    (b"<d><devices a='&gt;'><a x='>'/></devices><y/> <devices><!-- c --><b/></devices> <z/></d>",
     b"<d><devices a='&gt;'><a x='>'/><!-- c --><b/></devices><y/>  <z/></d>"),
    (b"<d xmlns:q='urn:q'><devices><a/></devices><q:devices><b/></q:devices></d>",  # not libvirt's
     b"<d xmlns:q='urn:q'><devices><a/></devices><q:devices><b/></q:devices></d>"),
], ids=["one", "first-empty", "later-empty", "crlf", "inline-comment", "namespaced"])
def test_merge_devices(xml: bytes, merged: bytes) -> None:
    assert merge_devices(xml) == merged


def test_merge_devices_refuses() -> None:
    with pytest.raises(BadRequest, match="later <devices> element with attributes"):
        merge_devices(b"<d><devices/><devices id='x'><b/></devices></d>")
    with pytest.raises(BadRequest, match="entities"):
        merge_devices(b"<!DOCTYPE d [<!ENTITY e 'x'>]><d><devices/></d>")


# a real OpenNebula 7.0.2 (tests/captures) ---------------------------------------------------------
@pytest.mark.parametrize("call", [c for c in captures("7.0.2") if c.action == "vmm/deploy.vitastor"],
                         ids=lambda c: c.file)
def test_captured_deployments(call: Capture, libvirt_schema: LibvirtSchema) -> None:
    """The domains a real 7.0.2 oned gave deploy (each with GUEST_AGENT=YES): valid for
    stock libvirt once merged, with nothing lost."""
    domain = base64.b64decode(call.stdin)
    merged = merge_devices(domain)
    libvirt_schema.check_domain(merged, stock=True)
    before, after = etree.fromstring(domain), etree.fromstring(merged)
    assert [etree.tostring(d, with_tail=False) for d in after.find("devices")] == [  # type: ignore[union-attr]
        etree.tostring(d, with_tail=False) for devices in before.findall("devices") for d in devices]


def test_captured_virsh_create(libvirt_schema: LibvirtSchema) -> None:
    """What virsh create got on that front-end from deploy before the merge: two <devices>;
    merged, valid with Vitastor's schema change."""
    domain = (CAPTURES / "7.0.2" / "virsh" / "create-one-0.xml").read_bytes()
    assert domain.count(b"<devices>") == 2
    with pytest.raises(AssertionError, match="does not validate"):
        libvirt_schema.check_domain(domain)
    libvirt_schema.check_domain(merge_devices(domain))
