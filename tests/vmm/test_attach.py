"""vmm/kvm/attach_disk.vitastor through its dist/remotes link: a Vitastor DISK[ATTACH=YES]
becomes a vitastor network disk attached with ``virsh attach-device`` on the host (a recording
fake virsh, named by VIRSH), another driver's disk goes to the host's stock attach_disk. Every
device given to virsh validates as a ``<disk>`` against libvirt's schema with Vitastor's change
(tests/vmm/libvirt_schema.py)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Optional, Sequence

import pytest
from lxml import etree

from tests.cloud import SYSTEM_DS, Cloud, Result
from tests.harness import documents as docs
from tests.vmm.libvirt_schema import LibvirtSchema

VM_ID = 14
DEPLOY_ID = f"one-{VM_ID}"
SYSDIR = f"{docs.DATASTORE_LOCATION}/{SYSTEM_DS}/{VM_ID}"
CEPH_DS, SSH_DS = 102, 1
CEPH = {"DISK_TYPE": "RBD", "POOL_NAME": "one", "CEPH_HOST": "ceph-mon1:6789", "CEPH_USER": "libvirt",
        "CEPH_SECRET": "0fb8a4a6-13c3-4a8c-9b0e-1e5f5c3e6c11"}
RECORDER = """#!/bin/sh
# {what}, recording: argv and stdin.
dir="$0.calls"
mkdir -p "$dir"
cat > "$dir/stdin"
printf '%s\\n' "$@" > "$dir/argv"
{tail}
"""


@dataclass
class Recorder:
    script: Path

    @property
    def calls(self) -> Path:
        return self.script.with_name(self.script.name + ".calls")

    def argv(self) -> list[str]:
        return (self.calls / "argv").read_text().splitlines()

    def stdin(self) -> bytes:
        return (self.calls / "stdin").read_bytes()

    def fail(self, message: str) -> None:
        self.script.write_text(RECORDER.format(what="failing", tail=f"echo '{message}' >&2\nexit 1"))


def _recorder(script: Path, what: str, tail: str) -> Recorder:
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(RECORDER.format(what=what, tail=tail))
    script.chmod(0o755)
    recorder = Recorder(script)
    shutil.rmtree(recorder.calls, ignore_errors=True)
    return recorder


@pytest.fixture()
def virsh(tmp_path: Path) -> Recorder:
    return _recorder(tmp_path / "bin" / "virsh", "virsh", "echo 'Device attached successfully'")


@pytest.fixture()
def stock_attach(world: Path) -> Iterator[Recorder]:
    """``<SCRIPTS_REMOTE_DIR>/vmm/kvm/attach_disk`` on the hosts, removed afterwards."""
    recorder = _recorder(world / "host-remotes" / "vmm" / "kvm" / "attach_disk", "stock attach_disk",
                         "echo stock-out\necho stock-err >&2\nexit 3")
    yield recorder
    recorder.script.unlink()
    shutil.rmtree(recorder.calls, ignore_errors=True)


def action_data(cloud: Cloud, attach: Mapping[str, str], *, disks: Optional[Sequence[Mapping[str, str]]] = None,
                context_disk_id: Optional[int] = None) -> str:
    """VMM_DRIVER_ACTION_DATA (base64) of VM 14 with its ``disks`` (default: a boot disk) and the
    disk to attach."""
    if disks is None:
        disks = [docs.image_disk(0, 5, source=f"{cloud.prefix}-5", clone=True, size_mb=64)]
    vm = docs.vm_xml(VM_ID, disks=[*disks, {**attach, "ATTACH": "YES"}], deploy_id=DEPLOY_ID,
                     context_disk_id=context_disk_id)
    system = cloud.oned.datastores[SYSTEM_DS]
    strip = len('<?xml version="1.0" encoding="UTF-8"?>')
    body = "".join(d[strip:] if d.startswith("<?xml") else d for d in (vm, system))
    return docs.encode_b64(f"<VMM_DRIVER_ACTION_DATA>{body}</VMM_DRIVER_ACTION_DATA>")


def run_attach(cloud: Cloud, virsh: Recorder, data: str, *, disk_id: int = 1, target: str = "vdb",
               arg: Optional[str] = None) -> Result:
    return cloud.run("vmm/attach_disk.vitastor", DEPLOY_ID, f"{SYSDIR}/disk.{disk_id}", target, "1",
                     data if arg is None else arg, str(VM_ID), "node1",
                     stdin=data.encode(), env={"VIRSH": str(virsh.script)})


def device(virsh: Recorder, schema: LibvirtSchema) -> etree._Element:
    """The device virsh got: a valid ``<disk>`` for libvirt with Vitastor's patch."""
    disk = etree.fromstring(virsh.stdin())
    schema.check_disk(disk)
    return disk


def test_attach_clone(cloud: Cloud, virsh: Recorder, libvirt_schema: LibvirtSchema) -> None:
    attach = docs.image_disk(1, 6, source=f"{cloud.prefix}-6", clone=True, size_mb=64,
                             extra={"CACHE": "none", "DISCARD": "unmap", "IO": "native"})
    result = run_attach(cloud, virsh, action_data(cloud, attach))
    assert result.rc == 0, result.stderr
    assert virsh.argv() == ["--connect", "qemu:///system", "attach-device", DEPLOY_ID, "/dev/stdin", "--live"]
    disk = device(virsh, libvirt_schema)
    assert disk.tag == "disk" and disk.get("type") == "network" and disk.get("device") == "disk"
    assert disk.xpath("source/@protocol") == ["vitastor"]
    assert disk.xpath("source/@name") == [f"{cloud.prefix}-6-{VM_ID}-1"]
    assert disk.xpath("source/config/@file") == [str(cloud.cluster.config_path)]
    assert disk.xpath("source/@file") == []
    assert disk.xpath("target/@dev") == ["vdb"] and disk.xpath("target/@bus") == ["virtio"]
    assert disk.xpath("driver/@name") == ["qemu"] and disk.xpath("driver/@type") == ["raw"]
    assert disk.xpath("driver/@cache") == ["none"] and disk.xpath("driver/@discard") == ["unmap"]
    assert disk.xpath("driver/@io") == ["native"]
    assert disk.xpath("blockio/@logical_block_size") == ["512"]
    assert disk.xpath("blockio/@physical_block_size") == ["4096"]
    assert disk.find("readonly") is None


def test_attach_cdrom_volatile_and_stdin_only(cloud: Cloud, virsh: Recorder, libvirt_schema: LibvirtSchema) -> None:
    cdrom = docs.image_disk(1, 7, source=f"{cloud.prefix}-7", clone=False, size_mb=16,
                            extra={"TYPE": "CDROM", "READONLY": "YES", "TARGET": "sdb", "DEV_PREFIX": "sd"})
    result = run_attach(cloud, virsh, action_data(cloud, cdrom), target="sdb", arg="")  # data on stdin only
    assert result.rc == 0, result.stderr
    disk = device(virsh, libvirt_schema)
    assert disk.get("device") == "cdrom" and disk.find("readonly") is not None
    assert disk.xpath("source/@name") == [f"{cloud.prefix}-7"]
    assert disk.xpath("target/@bus") == ["scsi"]
    assert disk.xpath("driver/@cache") == []

    volatile = docs.volatile_disk(2, size_mb=64, extra={"READONLY": "YES"})
    result = run_attach(cloud, virsh, action_data(cloud, volatile), disk_id=2, target="vdc")
    assert result.rc == 0, result.stderr
    disk = device(virsh, libvirt_schema)
    assert disk.get("device") == "disk" and disk.find("readonly") is not None
    assert disk.xpath("source/@name") == [f"{cloud.prefix}-sys-{VM_ID}-2"]
    assert disk.xpath("source/config/@file") == [str(cloud.cluster.config_path)]


def test_other_driver_goes_to_stock(cloud: Cloud, virsh: Recorder, stock_attach: Recorder) -> None:
    attach = docs.image_disk(1, 8, source="/var/lib/one//datastores/1/abc", clone=True, size_mb=64, ds_id=1,
                             tm_mad="ssh")
    data = action_data(cloud, attach)
    result = run_attach(cloud, virsh, data)
    assert result.rc == 3
    assert result.stdout == "stock-out\n" and result.stderr == "stock-err\n"
    assert stock_attach.argv() == [DEPLOY_ID, f"{SYSDIR}/disk.1", "vdb", "1", data, str(VM_ID), "node1"]
    assert stock_attach.stdin() == data.encode()
    assert not virsh.calls.exists()


def test_attach_to_a_mixed_vm(cloud: Cloud, virsh: Recorder, stock_attach: Recorder,
                              libvirt_schema: LibvirtSchema) -> None:
    """A VM with Vitastor, Ceph and ssh (qcow2) disks and a context CD-ROM: a Vitastor disk goes
    to virsh as a vitastor network disk, then a Ceph disk to the stock attach_disk."""
    p = cloud.prefix
    disks = [docs.image_disk(0, 5, source=f"{p}-5", clone=False, persistent=True, size_mb=64),
             docs.image_disk(1, 8, source="one/one-8", clone=True, size_mb=64, ds_id=CEPH_DS, tm_mad="ceph",
                             extra=CEPH),
             docs.image_disk(2, 9, source=f"{docs.DATASTORE_LOCATION}/{SSH_DS}/0123abcd", clone=True, size_mb=64,
                             ds_id=SSH_DS, tm_mad="ssh", extra={"FORMAT": "qcow2", "DRIVER": "qcow2"}),
             docs.volatile_disk(3, size_mb=32, type="swap")]
    vitastor = docs.image_disk(5, 6, source=f"{p}-6", clone=True, size_mb=64,
                               extra={"CACHE": "none", "DISCARD": "unmap", "IO": "native"})
    result = run_attach(cloud, virsh, action_data(cloud, vitastor, disks=disks, context_disk_id=4), disk_id=5,
                        target="vdf")
    assert result.rc == 0, result.stderr
    disk = device(virsh, libvirt_schema)
    assert disk.get("type") == "network" and disk.get("device") == "disk"
    assert disk.xpath("source/@protocol") == ["vitastor"] and disk.xpath("source/@name") == [f"{p}-6-{VM_ID}-5"]
    assert disk.xpath("source/config/@file") == [str(cloud.cluster.config_path)]
    assert disk.xpath("target/@dev") == ["vdf"] and disk.xpath("target/@bus") == ["virtio"]
    driver = disk.find("driver")
    assert driver is not None and dict(driver.attrib) == {
        "name": "qemu", "type": "raw", "cache": "none", "discard": "unmap", "io": "native"}
    assert disk.xpath("blockio/@logical_block_size") == ["512"]
    assert disk.xpath("blockio/@physical_block_size") == ["4096"]
    assert not stock_attach.calls.exists()
    attached = virsh.stdin()

    ceph = docs.image_disk(6, 10, source="one/one-10", clone=True, size_mb=64, ds_id=CEPH_DS, tm_mad="ceph",
                           extra=CEPH)
    data = action_data(cloud, ceph, disks=[*disks, vitastor], context_disk_id=4)
    result = run_attach(cloud, virsh, data, disk_id=6, target="vdg")
    assert result.rc == 3 and result.stdout == "stock-out\n"
    assert stock_attach.argv() == [DEPLOY_ID, f"{SYSDIR}/disk.6", "vdg", "1", data, str(VM_ID), "node1"]
    assert stock_attach.stdin() == data.encode()
    assert virsh.stdin() == attached  # virsh not called again


def test_virsh_failure(cloud: Cloud, virsh: Recorder) -> None:
    virsh.fail("error: Failed to attach device: internal error")
    attach = docs.image_disk(1, 6, source=f"{cloud.prefix}-6", clone=True, size_mb=64)
    result = run_attach(cloud, virsh, action_data(cloud, attach))
    assert result.rc == 1
    assert "Failed to attach device: internal error" in result.reason
    assert result.errors


def test_bad_virsh_and_data(cloud: Cloud, virsh: Recorder) -> None:
    attach = docs.image_disk(1, 6, source=f"{cloud.prefix}-6", clone=True, size_mb=64)
    data = action_data(cloud, attach)
    result = cloud.run("vmm/attach_disk.vitastor", DEPLOY_ID, f"{SYSDIR}/disk.1", "vdb", "1", data,
                       str(VM_ID), "node1", stdin=data.encode(), env={"VIRSH": "virsh; rm -rf /"})
    assert result.rc == 1 and "VIRSH" in result.reason
    result = run_attach(cloud, virsh, "", arg="not base64!")
    assert result.rc == 1 and "base64" in result.reason
    assert not virsh.calls.exists()
