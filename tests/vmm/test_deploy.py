"""vmm/kvm/deploy.vitastor through its dist/remotes link: the domain XML one_vmm_exec passes
(base64 on stdin) is rewritten for the VM's Vitastor disks and handed to the host's stock
``vmm/kvm/deploy`` (a recording fake here) at the system datastore path."""

from __future__ import annotations

import base64
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence

import pytest
from lxml import etree

from tests.cloud import IMAGE_DS, SYSTEM_DS, Cloud
from tests.harness import documents as docs

VM_ID = 12
UUID = "7c657ee7-166b-46d3-bf5f-53886f0b77dd"
SYSDIR = f"{docs.DATASTORE_LOCATION}/{SYSTEM_DS}/{VM_ID}"
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

    def argv(self) -> list[str]:
        return (self.calls / "argv").read_text().splitlines()

    def stdin(self) -> bytes:
        return (self.calls / "stdin").read_bytes()

    def domain(self) -> etree._Element:
        return etree.fromstring(self.stdin(), PARSER)


@pytest.fixture()
def fake_deploy(world: Path) -> Iterator[FakeDeploy]:
    """``<SCRIPTS_REMOTE_DIR>/vmm/kvm/deploy`` on the hosts, removed afterwards."""
    script = world / "host-remotes" / "vmm" / "kvm" / "deploy"
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(FAKE_DEPLOY)
    script.chmod(0o755)
    calls = script.with_name("deploy.calls")
    shutil.rmtree(calls, ignore_errors=True)
    yield FakeDeploy(calls)
    script.unlink()
    shutil.rmtree(calls, ignore_errors=True)


def file_disk(path: str, target: str, *, device: str = "disk", boot: Optional[int] = None,
              extra: str = "") -> str:
    """A ``<disk>`` as LibVirtDriverKVM.cc writes it, tab-indented."""
    lines = [f"\t\t<disk type='file' device='{device}'>",
             f"\t\t\t<source file='{path}'/>",
             f"\t\t\t<target dev='{target}' bus='{'ide' if device == 'cdrom' else 'virtio'}'/>"]
    if boot is not None:
        lines.append(f"\t\t\t<boot order='{boot}'/>")
    if device == "cdrom":
        lines.append("\t\t\t<readonly/>")
    lines.append("\t\t\t<driver name='qemu' type='raw' cache='none' discard='unmap'/>")
    if extra:
        lines.append(f"\t\t\t{extra}")
    lines.append("\t\t</disk>")
    return "\n".join(lines)


def domain_xml(disks: Sequence[str], sysdir: str = SYSDIR) -> str:
    """A deployment file in the shape of the stock kvm driver's (SYNTHETIC_kvm_deployment.0.xml)."""
    return "\n".join([
        "<domain type='kvm' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>",
        f"\t<name>one-{VM_ID}</name>",
        "\t<vcpu>1</vcpu>",
        "\t<memory>1048576</memory>",
        "\t<os>",
        "\t\t<type arch='x86_64'>hvm</type>",
        "\t</os>",
        "\t<devices>",
        "\t\t<emulator><![CDATA[/usr/bin/qemu-system-x86_64]]></emulator>",
        *disks,
        "\t\t<graphics type='vnc' listen='0.0.0.0' port='5912'/>",
        "\t</devices>",
        "\t<metadata>",
        "\t\t<one:vm xmlns:one=\"http://opennebula.org/xmlns/libvirt/1.0\">",
        f"\t\t\t<one:system_datastore><![CDATA[{sysdir}]]></one:system_datastore>",
        "\t\t</one:vm>",
        "\t</metadata>",
        "</domain>",
    ]) + "\n"


def run_deploy(cloud: Cloud, fe_dir: Path, domain: str, *, vm_xml: Optional[str] = None,
               seq: int = 0) -> str:
    """Run deploy.vitastor as one_vmm_exec does locally; its stdout."""
    fe_dir.mkdir(parents=True, exist_ok=True)
    if vm_xml is not None:
        (fe_dir / "vm.xml").write_text(docs.encode_b64(vm_xml))
    stdin = base64.b64encode(domain.encode())
    result = cloud.ok("vmm/deploy.vitastor", str(fe_dir / f"deployment.{seq}"), "node1", str(VM_ID), "node1",
                      stdin=stdin)
    return result.stdout


def disk_by_target(domain: etree._Element, target: str) -> etree._Element:
    found = [d for d in domain.iterfind("devices/disk") if d.xpath("string(target/@dev)") == target]
    assert len(found) == 1, target
    return found[0]


def subtree(element: etree._Element) -> bytes:
    """A disk's serialized subtree, as lxml writes it."""
    return etree.tostring(element, with_tail=False)


def full_vm(cloud: Cloud) -> tuple[str, dict[str, str]]:
    """VM 12 with every kind of disk; its document and the domain's disk XML by target."""
    disks = [
        docs.image_disk(0, 5, source=f"{cloud.prefix}-5", clone=False, persistent=True, size_mb=64),
        docs.image_disk(1, 6, source=f"{cloud.prefix}-6", clone=True, size_mb=64),
        docs.volatile_disk(2, size_mb=64, fs="ext4"),
        docs.image_disk(3, 7, source=f"{cloud.prefix}-7", clone=False, size_mb=16,
                        extra={"TYPE": "CDROM", "READONLY": "YES", "TARGET": "hdb", "DEV_PREFIX": "hd"}),
        docs.image_disk(4, 8, source="/var/lib/one//datastores/1/abc", clone=True, size_mb=64, ds_id=1,
                        tm_mad="ssh"),
    ]
    vm = docs.vm_xml(VM_ID, disks=disks, context_disk_id=5)
    domain_disks = {
        "vda": file_disk(f"{SYSDIR}/disk.0", "vda", boot=1),
        "vdb": file_disk(f"{SYSDIR}/disk.1", "vdb"),
        "vdc": file_disk(f"{SYSDIR}/disk.2", "vdc"),
        "hdb": file_disk(f"{SYSDIR}/disk.3", "hdb", device="cdrom"),
        "vde": file_disk(f"{SYSDIR}/disk.4", "vde"),
        "hda": file_disk(f"{SYSDIR}/disk.5", "hda", device="cdrom"),
    }
    return vm, domain_disks


def check_vitastor(disk: etree._Element, name: str, conf: Optional[str], device: str = "disk") -> None:
    assert disk.get("type") == "network"
    assert disk.get("device") == device
    (source,) = disk.findall("source")
    assert source.get("protocol") == "vitastor"
    assert source.get("name") == name
    assert source.get("file") is None
    if conf is None:
        assert source.find("config") is None
    else:
        assert source.xpath("config/@file") == [conf]
        assert source.xpath("config/text()") == []
    (blockio,) = disk.findall("blockio")
    assert {str(k): str(v) for k, v in blockio.attrib.items()} == {"logical_block_size": "512", "physical_block_size": "4096"}
    assert disk.xpath("driver/@cache") == ["none"]
    assert disk.xpath("driver/@discard") == ["unmap"]


@pytest.mark.parametrize("from_file", [True, False], ids=["vm.xml", "xmlrpc"])
def test_every_disk_kind(cloud: Cloud, fake_deploy: FakeDeploy, tmp_path: Path, from_file: bool) -> None:
    vm, disks = full_vm(cloud)
    if not from_file:
        cloud.oned.vms[VM_ID] = vm
    domain = domain_xml(list(disks.values()))
    out = run_deploy(cloud, tmp_path / "vms" / str(VM_ID), domain, vm_xml=vm if from_file else None)

    assert out == UUID + "\n"
    assert fake_deploy.argv() == [f"{SYSDIR}/deployment.0"]
    result = fake_deploy.domain()
    conf = str(cloud.cluster.config_path)
    p = cloud.prefix
    check_vitastor(disk_by_target(result, "vda"), f"{p}-5", conf)
    assert disk_by_target(result, "vda").xpath("boot/@order") == ["1"]
    check_vitastor(disk_by_target(result, "vdb"), f"{p}-6-{VM_ID}-1", conf)
    check_vitastor(disk_by_target(result, "vdc"), f"{p}-sys-{VM_ID}-2", conf)
    check_vitastor(disk_by_target(result, "hdb"), f"{p}-7", conf, device="cdrom")
    assert disk_by_target(result, "hdb").find("readonly") is not None
    original = etree.fromstring(domain.encode(), PARSER)
    for untouched in ("vde", "hda"):  # another driver's disk, the context CD-ROM
        assert subtree(disk_by_target(result, untouched)) == subtree(disk_by_target(original, untouched))
        assert disk_by_target(result, untouched).get("type") == "file"
    # the rest of the document as it was
    text = fake_deploy.stdin()
    assert b"<![CDATA[/usr/bin/qemu-system-x86_64]]>" in text
    assert b"xmlns:qemu=" in text
    assert result.xpath("count(devices/disk)") == 6
    metadata, original_metadata = result.find("metadata"), original.find("metadata")
    assert metadata is not None and original_metadata is not None
    assert etree.tostring(metadata) == etree.tostring(original_metadata)
    graphics = result.find("devices/graphics")
    assert graphics is not None and graphics.getprevious() is disk_by_target(result, "hda")
    # the added blockio keeps the disk's indentation
    vda = disk_by_target(result, "vda")
    assert vda[-1].tag == "blockio" and vda[-1].tail == "\n\t\t" and vda[-2].tail == "\n\t\t\t"


def test_datastore_without_conf_and_existing_blockio(cloud: Cloud, fake_deploy: FakeDeploy, tmp_path: Path) -> None:
    template = {k: v for k, v in cloud.ds_template().items() if k != "VITASTOR_CONF"}
    cloud.oned.datastores[IMAGE_DS] = docs.datastore_xml(IMAGE_DS, name="images", ds_type=0, template=template)
    vm = docs.vm_xml(VM_ID, disks=[docs.image_disk(0, 5, source=f"{cloud.prefix}-5", clone=True, size_mb=64),
                                   docs.volatile_disk(1, size_mb=64)])
    blockio = "<blockio logical_block_size='4096' physical_block_size='4096'/>"
    domain = domain_xml([file_disk(f"{SYSDIR}/disk.0", "vda", extra=blockio),
                         file_disk(f"{SYSDIR}/disk.1", "vdb")])
    run_deploy(cloud, tmp_path / "fe", domain, vm_xml=vm, seq=3)

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
    out = run_deploy(cloud, tmp_path / "fe", domain_xml([file_disk(f"{sysdir}/disk.0", "vda")], sysdir),
                     vm_xml=vm)

    assert out.strip() == UUID
    assert fake_deploy.argv() == [f"{sysdir}/deployment.0"]
    check_vitastor(disk_by_target(fake_deploy.domain(), "vda"), f"{cloud.prefix}-5", str(cloud.cluster.config_path))


def test_no_file_disks_default_location(cloud: Cloud, fake_deploy: FakeDeploy, tmp_path: Path) -> None:
    vm = docs.vm_xml(VM_ID, disks=[])
    domain = domain_xml([])
    run_deploy(cloud, tmp_path / "fe", domain, vm_xml=vm)
    assert fake_deploy.argv() == [f"/var/lib/one//datastores/{SYSTEM_DS}/{VM_ID}/deployment.0"]
    assert etree.tostring(fake_deploy.domain()) == etree.tostring(etree.fromstring(domain.encode(), PARSER))


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
