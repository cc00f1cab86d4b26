"""vmm/kvm/deploy.vitastor through its dist/remotes link: the domain XML one_vmm_exec passes
(base64 on stdin) is rewritten for the VM's Vitastor disks and handed to the host's stock
``vmm/kvm/deploy`` (a recording fake here) at the system datastore path.

The domains are written the way oned's LibVirtDriverKVM.cc writes them (tab indentation, single
quotes, CDATA text, a RAW section copied verbatim); every document fed in validates against
libvirt's own schema, and every document the host gets against the schema with Vitastor's
change (tests/vmm/libvirt_schema.py)."""

from __future__ import annotations

import base64
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence

import pytest
from lxml import etree

from tests.cloud import IMAGE_DS, SYSTEM_DS, Cloud
from tests.harness import documents as docs
from tests.vmm.libvirt_schema import LibvirtSchema

VM_ID = 12
UUID = "7c657ee7-166b-46d3-bf5f-53886f0b77dd"
SYSDIR = f"{docs.DATASTORE_LOCATION}/{SYSTEM_DS}/{VM_ID}"
CEPH_DS, SSH_DS = 102, 1
CEPH_SECRET = "0fb8a4a6-13c3-4a8c-9b0e-1e5f5c3e6c11"
CONTEXT_ID = 7
# RAW/DATA of type kvm, copied verbatim by oned: double quotes and character references
RAW = ('<qemu:commandline><qemu:arg value="-fw_cfg"/>'
       '<qemu:arg value="name=opt/one/x,string=a&amp;b &#233; &quot;q&quot;"/></qemu:commandline>')
FAKE_DEPLOY = f"""#!/bin/sh
# The host's stock vmm/kvm/deploy, recording: argv and the plain domain XML on stdin.
dir="$0.calls"
mkdir -p "$dir"
cat > "$dir/stdin"
printf '%s\\n' "$@" > "$dir/argv"
echo "Domain one-{VM_ID} created from $1"
echo {UUID}
"""
PARSER = etree.XMLParser(remove_blank_text=False, strip_cdata=False)


@dataclass
class FakeDeploy:
    """The recording host-side deploy script."""

    calls: Path
    schema: LibvirtSchema

    def argv(self) -> list[str]:
        return (self.calls / "argv").read_text().splitlines()

    def stdin(self) -> bytes:
        return (self.calls / "stdin").read_bytes()

    def domain(self) -> etree._Element:
        """The domain the host got, valid for libvirt with Vitastor's patch."""
        root = etree.fromstring(self.stdin(), PARSER)
        self.schema.check_domain(root)
        return root


@pytest.fixture()
def fake_deploy(world: Path, libvirt_schema: LibvirtSchema) -> Iterator[FakeDeploy]:
    """``<SCRIPTS_REMOTE_DIR>/vmm/kvm/deploy`` on the hosts, removed afterwards."""
    script = world / "host-remotes" / "vmm" / "kvm" / "deploy"
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(FAKE_DEPLOY)
    script.chmod(0o755)
    calls = script.with_name("deploy.calls")
    shutil.rmtree(calls, ignore_errors=True)
    yield FakeDeploy(calls, libvirt_schema)
    script.unlink()
    shutil.rmtree(calls, ignore_errors=True)


# the domain oned writes -----------------------------------------------------------------------
def file_disk(path: str, target: str, *, device: str = "disk", boot: Optional[int] = None,
              driver: str = "raw", extra: str = "") -> str:
    """A ``<disk type='file'>`` as LibVirtDriverKVM.cc writes an image, volatile or CD-ROM disk."""
    lines = [f"\t\t<disk type='file' device='{device}'>",
             f"\t\t\t<source file='{path}'/>",
             f"\t\t\t<target dev='{target}' bus='{'ide' if device == 'cdrom' else 'virtio'}'/>"]
    if boot is not None:
        lines.append(f"\t\t\t<boot order='{boot}'/>")
    if device == "cdrom":
        lines.append("\t\t\t<readonly/>")
    lines.append(f"\t\t\t<driver name='qemu' type='{driver}' cache='none' discard='unmap'/>")
    if extra:
        lines.append(f"\t\t\t{extra}")
    lines.append("\t\t</disk>")
    return "\n".join(lines)


def context_disk(path: str, target: str = "hda") -> str:
    """The context CD-ROM, as LibVirtDriverKVM.cc writes it."""
    return "\n".join([
        "\t\t<disk type='file' device='cdrom'>",
        f"\t\t\t<source file='{path}'/>",
        f"\t\t\t<target dev='{target}' bus='ide'/>",
        "\t\t\t<readonly/>",
        "\t\t\t<driver name='qemu' type='raw' cache='none'/>",
        "\t\t</disk>",
    ])


def rbd_disk(name: str, target: str) -> str:
    """A Ceph image (DISK_TYPE RBD), as LibVirtDriverKVM.cc writes it."""
    return "\n".join([
        "\t\t<disk type='network' device='disk'>",
        f"\t\t\t<source protocol='rbd' name='{name}'>",
        "\t\t\t\t<host name='ceph-mon1' port='6789'/>",
        "\t\t\t\t<host name='ceph-mon2' port='6789'/>",
        "\t\t\t</source>",
        "\t\t\t<auth username='libvirt'>",
        f"\t\t\t\t<secret type='ceph' uuid='{CEPH_SECRET}'/>",
        "\t\t\t</auth>",
        f"\t\t\t<target dev='{target}' bus='virtio'/>",
        "\t\t\t<driver name='qemu' type='raw' cache='none' discard='unmap'/>",
        "\t\t</disk>",
    ])


def domain_xml(disks: Sequence[str], sysdir: str = SYSDIR) -> str:
    """A deployment file in the shape and order of the stock kvm driver's (LibVirtDriverKVM.cc)."""
    return "\n".join([
        "<domain type='kvm' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>",
        f"\t<name>one-{VM_ID}</name>",
        f"\t<title>vm-{VM_ID}</title>",
        f"\t<uuid>{UUID}</uuid>",
        "\t<vcpu>1</vcpu>",
        "\t<cputune>",
        "\t\t<shares>1024</shares>",
        "\t</cputune>",
        "\t<memory>1048576</memory>",
        "\t<os>",
        "\t\t<type arch='x86_64' machine='pc'>hvm</type>",
        "\t</os>",
        "\t<devices>",
        "\t\t<emulator><![CDATA[/usr/bin/qemu-system-x86_64]]></emulator>",
        *disks,
        "\t\t<interface type='bridge'>",
        "\t\t\t<source bridge='br0'/>",
        "\t\t\t<mac address='02:00:0a:00:00:0c'/>",
        f"\t\t\t<target dev='one-{VM_ID}-0'/>",
        "\t\t\t<model type='virtio'/>",
        "\t\t</interface>",
        "\t\t<graphics type='vnc' listen='0.0.0.0' port='5912'/>",
        "\t</devices>",
        "\t<features>",
        "\t\t<acpi/>",
        "\t</features>",
        f"\t{RAW}",
        "\t<metadata>",
        "\t\t<one:vm xmlns:one=\"http://opennebula.org/xmlns/libvirt/1.0\">",
        f"\t\t\t<one:system_datastore><![CDATA[{sysdir}]]></one:system_datastore>",
        f"\t\t\t<one:name><![CDATA[vm-{VM_ID}]]></one:name>",
        "\t\t\t<one:uid>0</one:uid>",
        f"\t\t\t<one:stime>{docs.STIME}</one:stime>",
        "\t\t\t<one:pci_devices></one:pci_devices>",
        "\t\t</one:vm>",
        "\t</metadata>",
        "</domain>",
    ]) + "\n"


# the disks of VM 12 ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Kind:
    """One disk of VM 12: its DISK in the VM document (None for the context CD-ROM), its
    ``<disk>`` in the domain oned writes, and the Vitastor image it must become (None: another
    driver's disk or the context, left alone)."""

    disk_id: int
    target: str
    vm_disk: Optional[docs.Disk]
    xml: str
    image: Optional[str]
    device: str = "disk"


def kinds(cloud: Cloud) -> dict[str, Kind]:
    """Every kind of disk a VM on a Vitastor system datastore has, each with its own disk id."""
    p = cloud.prefix
    cdrom = {"TYPE": "CDROM", "READONLY": "YES", "TARGET": "hdb", "DEV_PREFIX": "hd"}
    ceph = {"DISK_TYPE": "RBD", "POOL_NAME": "one", "CEPH_HOST": "ceph-mon1:6789 ceph-mon2:6789",
            "CEPH_USER": "libvirt", "CEPH_SECRET": CEPH_SECRET}
    return {
        "persistent": Kind(0, "vda", docs.image_disk(0, 5, source=f"{p}-5", clone=False, persistent=True,
                                                     size_mb=64, extra={"ORDER": "1"}),
                           file_disk(f"{SYSDIR}/disk.0", "vda", boot=1), f"{p}-5"),
        "non-persistent": Kind(1, "vdb", docs.image_disk(1, 6, source=f"{p}-6", clone=True, size_mb=64),
                               file_disk(f"{SYSDIR}/disk.1", "vdb"), f"{p}-6-{VM_ID}-1"),
        "volatile-fs": Kind(2, "vdc", docs.volatile_disk(2, size_mb=64, fs="ext4"),
                            file_disk(f"{SYSDIR}/disk.2", "vdc"), f"{p}-sys-{VM_ID}-2"),
        "volatile-swap": Kind(3, "vdd", docs.volatile_disk(3, size_mb=32, type="swap"),
                              file_disk(f"{SYSDIR}/disk.3", "vdd"), f"{p}-sys-{VM_ID}-3"),
        "cdrom": Kind(4, "hdb", docs.image_disk(4, 7, source=f"{p}-7", clone=False, size_mb=16, extra=cdrom),
                      file_disk(f"{SYSDIR}/disk.4", "hdb", device="cdrom"), f"{p}-7", device="cdrom"),
        "ceph": Kind(5, "vdf", docs.image_disk(5, 8, source="one/one-8", clone=True, size_mb=64, ds_id=CEPH_DS,
                                               tm_mad="ceph", extra=ceph),
                     rbd_disk(f"one/one-8-{VM_ID}-5", "vdf"), None),
        "qcow2": Kind(6, "vdg", docs.image_disk(6, 9, source=f"{docs.DATASTORE_LOCATION}/{SSH_DS}/0123abcd",
                                                clone=True, size_mb=64, ds_id=SSH_DS, tm_mad="ssh",
                                                extra={"FORMAT": "qcow2", "DRIVER": "qcow2"}),
                      file_disk(f"{SYSDIR}/disk.6", "vdg", driver="qcow2"), None),
        "context": Kind(CONTEXT_ID, "hda", None, context_disk(f"{SYSDIR}/disk.{CONTEXT_ID}"), None,
                        device="cdrom"),
    }


def vm_and_domain(disks: Sequence[Kind]) -> tuple[str, str]:
    """VM 12's document and its domain XML, with these disks."""
    vm = docs.vm_xml(VM_ID, disks=[k.vm_disk for k in disks if k.vm_disk is not None],
                     context_disk_id=CONTEXT_ID if any(k.disk_id == CONTEXT_ID for k in disks) else None)
    return vm, domain_xml([k.xml for k in disks])


def run_deploy(cloud: Cloud, fake: FakeDeploy, fe_dir: Path, domain: str, *, vm_xml: Optional[str] = None,
               seq: int = 0) -> str:
    """Run deploy.vitastor as one_vmm_exec does locally (the domain valid for stock libvirt); its
    stdout."""
    fake.schema.check_domain(domain, stock=True)
    fe_dir.mkdir(parents=True, exist_ok=True)
    if vm_xml is not None:
        (fe_dir / "vm.xml").write_text(docs.encode_b64(vm_xml))
    stdin = base64.b64encode(domain.encode())
    result = cloud.ok("vmm/deploy.vitastor", str(fe_dir / f"deployment.{seq}"), "node1", str(VM_ID), "node1",
                      stdin=stdin)
    return result.stdout


# checks ---------------------------------------------------------------------------------------
def disk_by_target(domain: etree._Element, target: str) -> etree._Element:
    found = [d for d in domain.iterfind("devices/disk") if d.xpath("string(target/@dev)") == target]
    assert len(found) == 1, target
    return found[0]


def c14n(node: etree._Element) -> bytes:
    """The exclusive canonical form (C14N: only the namespaces it uses) of an element, without
    its tail; a comment as it is."""
    if not isinstance(node.tag, str):
        return etree.tostring(node, with_tail=False)
    return etree.tostring(node, method="c14n", exclusive=True, with_tail=False)


def attrs(element: Optional[etree._Element]) -> dict[str, str]:
    assert element is not None
    return {str(k): str(v) for k, v in element.attrib.items()}


def check_vitastor(after: etree._Element, before: etree._Element, name: str, conf: Optional[str]) -> None:
    """``after`` is ``before`` turned into a vitastor network disk of image ``name``: the source
    replaced in place, a blockio added, every other attribute and child as it was."""
    assert attrs(after) == {**attrs(before), "type": "network"}
    (source,) = after.findall("source")
    assert attrs(source) == {"protocol": "vitastor", "name": name}
    if conf is None:
        assert len(source) == 0
    else:
        assert [c.tag for c in source] == ["config"]
        assert attrs(source.find("config")) == {"file": conf}
        assert source.xpath("config/text()") == []
    (blockio,) = after.findall("blockio")
    assert attrs(blockio) == {"logical_block_size": "512", "physical_block_size": "4096"}
    assert attrs(after.find("driver")) == attrs(before.find("driver"))
    assert after.xpath("driver/@type") == ["raw"] and after.xpath("driver/@cache") == ["none"]
    # the other children unchanged, in their order; the blockio appended last
    kept = [c14n(c) for c in after if c.tag not in ("source", "blockio")]
    assert kept == [c14n(c) for c in before if c.tag != "source"]
    assert [c.tag for c in after] == [*(c.tag for c in before), "blockio"]


def rewritten_texts(original: str, rewritten: Sequence[str], output: bytes) -> list[bytes]:
    """``output`` must be ``original`` byte for byte, except that each of the ``rewritten`` disk
    texts (in document order) is replaced; the replacements."""
    chunks, rest = [], original
    for text in rewritten:
        head, sep, rest = rest.partition(text)
        assert sep, f"not in the original: {text}"
        chunks.append(head)
    chunks.append(rest)
    pattern = rb"(<disk\s.*?</disk>)".join(re.escape(c.encode()) for c in chunks)  # disks do not nest
    match = re.fullmatch(pattern, output, re.DOTALL)
    assert match is not None, f"bytes outside the rewritten disks changed:\n{output.decode()}"
    return [match[i + 1] for i in range(len(rewritten))]


def without_disks(domain: etree._Element, targets: Sequence[str]) -> bytes:
    """C14N of the domain without the disks at ``targets``."""
    copy = etree.fromstring(etree.tostring(domain), PARSER)
    for target in targets:
        disk = disk_by_target(copy, target)
        parent = disk.getparent()
        assert parent is not None
        parent.remove(disk)
    return etree.tostring(copy, method="c14n")


def check_deployed(cloud: Cloud, fake: FakeDeploy, disks: Sequence[Kind], domain: str) -> None:
    """The host got ``domain`` with exactly the Vitastor disks among ``disks`` rewritten, every
    other byte unchanged."""
    result, original = fake.domain(), etree.fromstring(domain.encode(), PARSER)
    conf = str(cloud.cluster.config_path)
    vitastor = [k for k in disks if k.image is not None]
    for kind in vitastor:
        check_vitastor(disk_by_target(result, kind.target), disk_by_target(original, kind.target),
                       kind.image or "", conf)
        assert disk_by_target(result, kind.target).get("device") == kind.device
    for kind in disks:
        if kind.image is None:  # another driver's disk, the context CD-ROM
            assert c14n(disk_by_target(result, kind.target)) == c14n(disk_by_target(original, kind.target))
    assert [d.xpath("string(target/@dev)") for d in result.iterfind("devices/disk")] == [k.target for k in disks]
    targets = [k.target for k in vitastor]
    assert without_disks(result, targets) == without_disks(original, targets)
    texts = rewritten_texts(domain, [k.xml.strip() for k in vitastor], fake.stdin())
    for kind, text in zip(vitastor, texts):  # a plain <disk>, no namespace declarations brought along
        assert text.startswith(b"<disk ") and b"xmlns" not in text
        assert c14n(etree.fromstring(text, PARSER)) == c14n(disk_by_target(result, kind.target))


# tests ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("from_file", [True, False], ids=["vm.xml", "xmlrpc"])
def test_mixed_vm(cloud: Cloud, fake_deploy: FakeDeploy, tmp_path: Path, from_file: bool) -> None:
    """One VM with every kind of disk: Vitastor persistent, non-persistent, volatile fs and
    swap, CD-ROM; the context CD-ROM; a Ceph RBD disk and a qcow2 disk of the ssh driver."""
    disks = list(kinds(cloud).values())
    vm, domain = vm_and_domain(disks)
    if not from_file:
        cloud.oned.vms[VM_ID] = vm
    out = run_deploy(cloud, fake_deploy, tmp_path / "vms" / str(VM_ID), domain, vm_xml=vm if from_file else None)

    assert out == UUID + "\n"
    assert fake_deploy.argv() == [f"{SYSDIR}/deployment.0"]
    check_deployed(cloud, fake_deploy, disks, domain)
    result = fake_deploy.domain()
    p = cloud.prefix
    assert result.xpath("devices/disk[source/@protocol='vitastor']/source/@name") == [
        f"{p}-5", f"{p}-6-{VM_ID}-1", f"{p}-sys-{VM_ID}-2", f"{p}-sys-{VM_ID}-3", f"{p}-7"]
    assert disk_by_target(result, "vda").xpath("boot/@order") == ["1"]
    assert disk_by_target(result, "hdb").find("readonly") is not None
    assert disk_by_target(result, "vdf").xpath("source/@protocol") == ["rbd"]
    assert disk_by_target(result, "vdg").xpath("driver/@type") == ["qcow2"]
    assert disk_by_target(result, "vdg").xpath("source/@file") == [f"{SYSDIR}/disk.6"]
    # the added blockio keeps the disk's indentation
    vda = disk_by_target(result, "vda")
    assert vda[-1].tag == "blockio" and vda[-1].tail == "\n\t\t" and vda[-2].tail == "\n\t\t\t"


@pytest.mark.parametrize("cloud", ["ssh"], indirect=True)  # deploy runs on the front-end in both modes
@pytest.mark.parametrize("kind", ["persistent", "non-persistent", "volatile-fs", "volatile-swap", "cdrom",
                                  "ceph", "qcow2", "context"])
def test_one_disk_kind(cloud: Cloud, fake_deploy: FakeDeploy, tmp_path: Path, kind: str) -> None:
    """A VM with one disk of a kind (and the context CD-ROM)."""
    table = kinds(cloud)
    disks = [table[kind]] if kind == "context" else [table[kind], table["context"]]
    vm, domain = vm_and_domain(disks)
    run_deploy(cloud, fake_deploy, tmp_path / "fe", domain, vm_xml=vm)
    check_deployed(cloud, fake_deploy, disks, domain)
    if table[kind].image is None:
        assert fake_deploy.stdin() == domain.encode()


def test_datastore_without_conf_and_existing_blockio(cloud: Cloud, fake_deploy: FakeDeploy, tmp_path: Path) -> None:
    template = {k: v for k, v in cloud.ds_template().items() if k != "VITASTOR_CONF"}
    cloud.oned.datastores[IMAGE_DS] = docs.datastore_xml(IMAGE_DS, name="images", ds_type=0, template=template)
    vm = docs.vm_xml(VM_ID, disks=[docs.image_disk(0, 5, source=f"{cloud.prefix}-5", clone=True, size_mb=64),
                                   docs.volatile_disk(1, size_mb=64)])
    blockio = "<blockio logical_block_size='4096' physical_block_size='4096'/>"
    domain = domain_xml([file_disk(f"{SYSDIR}/disk.0", "vda", extra=blockio),
                         file_disk(f"{SYSDIR}/disk.1", "vdb")])
    run_deploy(cloud, fake_deploy, tmp_path / "fe", domain, vm_xml=vm, seq=3)

    result = fake_deploy.domain()
    vda = disk_by_target(result, "vda")
    assert vda.xpath("source/@name") == [f"{cloud.prefix}-5-{VM_ID}-0"]
    assert vda.find("source/config") is None  # the image datastore has no VITASTOR_CONF
    assert vda.xpath("blockio/@logical_block_size") == ["4096"] and len(vda.findall("blockio")) == 1
    # the volatile disk takes the system datastore's settings, which still have one
    assert disk_by_target(result, "vdb").xpath("source/config/@file") == [str(cloud.cluster.config_path)]
    assert fake_deploy.argv() == [f"{SYSDIR}/deployment.3"]


def test_vm_without_context(cloud: Cloud, fake_deploy: FakeDeploy, tmp_path: Path) -> None:
    """No CONTEXT and a DATASTORE_LOCATION other than oned's default: the path follows the disks."""
    sysdir = f"/srv/one/datastores/{SYSTEM_DS}/{VM_ID}"
    vm = docs.vm_xml(VM_ID, disks=[docs.image_disk(0, 5, source=f"{cloud.prefix}-5", clone=False,
                                                   persistent=True, size_mb=64)])
    assert "<CONTEXT>" not in vm
    domain = domain_xml([file_disk(f"{sysdir}/disk.0", "vda")], sysdir)
    out = run_deploy(cloud, fake_deploy, tmp_path / "fe", domain, vm_xml=vm)

    assert out.strip() == UUID
    assert fake_deploy.argv() == [f"{sysdir}/deployment.0"]
    before = disk_by_target(etree.fromstring(domain.encode(), PARSER), "vda")
    check_vitastor(disk_by_target(fake_deploy.domain(), "vda"), before, f"{cloud.prefix}-5",
                   str(cloud.cluster.config_path))


def test_no_file_disks_datastore_location(cloud: Cloud, fake_deploy: FakeDeploy, tmp_path: Path) -> None:
    """No disk path to take the system datastore's directory from: oned's DATASTORE_LOCATION,
    read from <ONE_LOCATION>/var/config."""
    vm = docs.vm_xml(VM_ID, disks=[])
    domain = domain_xml([])
    run_deploy(cloud, fake_deploy, tmp_path / "fe", domain, vm_xml=vm)
    location = cloud.env["ONE_LOCATION"]
    assert fake_deploy.argv() == [f"{location}/var//datastores/{SYSTEM_DS}/{VM_ID}/deployment.0"]
    assert fake_deploy.stdin() == domain.encode()


@pytest.mark.parametrize("cloud", ["ssh"], indirect=True)
def test_bytes_outside_the_disks_kept(cloud: Cloud, fake_deploy: FakeDeploy, tmp_path: Path) -> None:
    """What lxml would re-serialise differently stays as it was: the XML declaration, comments
    and blank lines around the root, attribute quotes and spacing, namespace declarations before
    other attributes, character references, ``<x></x>``, and the ISO-8859-1 text of a document
    in that encoding (the rewritten disk written in it too)."""
    table = kinds(cloud)
    vm, _ = vm_and_domain([table["persistent"], table["context"]])
    disk = table["persistent"].xml.replace("<target dev='vda' bus='virtio'/>",
                                           "<target  dev = \"vda\"  bus='virtio' ></target>"
                                           "\n\t\t\t<!-- disque syst\u00e8me -->")
    domain = domain_xml([disk, table["context"].xml])
    domain = domain.replace("<domain type='kvm' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>",
                            "<domain xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'  type=\"kvm\">")
    domain = domain.replace(f"<title>vm-{VM_ID}</title>", "<title>caf&#233; \u00e9t\u00e9 &lt;1&gt;</title>")
    domain = "<?xml version='1.0' encoding='ISO-8859-1'?>\n<!-- one -->\n\n" + domain + "\n<!-- end -->\n"

    fake_deploy.schema.check_domain(domain.encode("latin-1"), stock=True)
    fe = tmp_path / "fe"
    fe.mkdir()
    (fe / "vm.xml").write_text(docs.encode_b64(vm))
    cloud.ok("vmm/deploy.vitastor", str(fe / "deployment.0"), "node1", str(VM_ID), "node1",
             stdin=base64.b64encode(domain.encode("latin-1")))

    out = fake_deploy.stdin()
    assert "<!-- disque syst\u00e8me -->".encode("latin-1") in out
    (text,) = rewritten_texts(domain, [disk.strip()], out.decode("latin-1").encode())
    result = fake_deploy.domain()
    assert result.findtext("title") == "caf\u00e9 \u00e9t\u00e9 <1>"
    before = disk_by_target(etree.fromstring(domain.encode("latin-1"), PARSER), "vda")
    check_vitastor(disk_by_target(result, "vda"), before, f"{cloud.prefix}-5", str(cloud.cluster.config_path))
    assert text.startswith(b"<disk type=")


@pytest.mark.parametrize("cloud", ["ssh"], indirect=True)
@pytest.mark.parametrize(("domain", "reason"), [
    ("<!DOCTYPE domain [<!ENTITY d '<disk/>'>]>\n<domain><devices>&d;</devices></domain>", "entities"),
    ("<domain><devices><disk></devices></domain>", "malformed domain XML"),
    ("<?xml version='1.0' encoding='UTF-16'?><domain/>", "UTF-16"),
], ids=["entity", "malformed", "utf-16"])
def test_refused_documents(cloud: Cloud, fake_deploy: FakeDeploy, tmp_path: Path, domain: str, reason: str) -> None:
    fe = tmp_path / "fe"
    fe.mkdir()
    (fe / "vm.xml").write_text(docs.encode_b64(docs.vm_xml(VM_ID, disks=[])))
    data = domain.encode("utf-16") if "UTF-16" in domain else domain.encode()
    result = cloud.run("vmm/deploy.vitastor", str(fe / "deployment.0"), "node1", str(VM_ID), "node1",
                       stdin=base64.b64encode(data))
    assert result.rc == 1 and reason in result.reason, result.stderr
    assert not fake_deploy.calls.exists()


def test_host_deploy_failure(cloud: Cloud, fake_deploy: FakeDeploy, tmp_path: Path) -> None:
    script = fake_deploy.calls.with_name("deploy")
    script.write_text("#!/bin/sh\ncat >/dev/null\necho 'error: failed to create domain' >&2\nexit 1\n")
    fe = tmp_path / "fe"
    fe.mkdir()
    (fe / "vm.xml").write_text(docs.encode_b64(docs.vm_xml(VM_ID, disks=[])))
    result = cloud.run("vmm/deploy.vitastor", str(fe / "deployment.0"), "node1", str(VM_ID), "node1",
                       stdin=base64.b64encode(domain_xml([]).encode()))
    assert result.rc == 1
    assert "failed to create domain" in result.reason
    assert result.stdout == ""


def test_bad_stdin(cloud: Cloud, fake_deploy: FakeDeploy, tmp_path: Path) -> None:
    result = cloud.run("vmm/deploy.vitastor", str(tmp_path / "deployment.0"), "node1", str(VM_ID), "node1",
                       stdin=b"<domain/>")
    assert result.rc == 1 and "base64" in result.reason
    assert not fake_deploy.calls.exists()
