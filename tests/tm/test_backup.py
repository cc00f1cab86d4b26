"""tm/prebackup and tm/postbackup through their links, with oned's argv and the plain <VM> on
stdin, in both job modes (the staging files land on the VM's host in both): a full backup of a
powered-off VM's Vitastor disks as the rsync/restic backup datastores take it, checked with
QEMU's own tools and byte for byte against the disks."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.cloud import Cloud
from tests.harness import documents as docs
from tests.harness.user import ActionUser
from tests.tm.conftest import MIB, catalog, make_image

VM_ID = 12
LCM_BACKUP_POWEROFF = 70


def vm_dir(tmp_path: Path) -> str:
    """The VM directory on node1, named as oned names it (DATASTORE_LOCATION's ``//``)."""
    return f"{tmp_path}/datastores//100/{VM_ID}"


def backup_vm(cloud: Cloud, config: dict[str, str] | None = None, disks: list[dict[str, str]] | None = None) -> str:
    """VM 12, powered off in BACKUP_POWEROFF, with a persistent image (disk 0) and a volatile
    disk (disk 1) written with data; the VM document oned sends on stdin."""
    p = cloud.prefix
    make_image(cloud, f"{p}-7", 64, b"persistent".ljust(4096, b"P") + os.urandom(8192), 0)
    cloud.cluster.write(f"{p}-7", 40 * MIB + 123, os.urandom(100_000))
    make_image(cloud, f"{p}-sys-{VM_ID}-1", 16, b"volatile".ljust(4096, b"V"), 0)
    disks = disks or [docs.image_disk(0, 7, source=f"{p}-7", clone=False, persistent=True, size_mb=64),
                      docs.volatile_disk(1, size_mb=16)]
    xml = docs.vm_xml(VM_ID, disks=disks, lcm_state=LCM_BACKUP_POWEROFF, state=8,
                      backup_config=config if config is not None else {"MODE": "FULL", "BACKUP_VOLATILE": "YES"})
    cloud.oned.vms[VM_ID] = xml
    return xml


def raw_of(qcow2: Path, tmp_path: Path) -> bytes:
    """The disk a qcow2 backup file holds, converted back as OpenNebula's restore does."""
    out = tmp_path / f"{qcow2.name}.check.raw"
    subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", str(qcow2), str(out)], check=True)
    data = out.read_bytes()
    out.unlink()
    return data


def info(path: Path) -> dict[str, object]:
    proc = subprocess.run(["qemu-img", "info", "--output", "json", str(path)], capture_output=True, check=True)
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


@pytest.fixture()
def location(tmp_path: Path, action_user: ActionUser) -> str:
    path = Path(vm_dir(tmp_path))
    path.mkdir(parents=True)
    action_user.give(tmp_path / "datastores")
    return f"node1:{vm_dir(tmp_path)}"


def test_full_backup_of_a_powered_off_vm(cloud: Cloud, location: str, tmp_path: Path) -> None:
    xml = backup_vm(cloud)
    cloud.ok("tm/prebackup", location, "0:1", f"one-{VM_ID}", "-", str(VM_ID), "100", stdin=xml.encode())
    stage = Path(vm_dir(tmp_path)) / "backup"
    assert sorted(p.name for p in stage.iterdir()) == ["disk.0.0", "disk.1.0", "vm.xml"]
    assert base64.b64decode((stage / "vm.xml").read_bytes()) == xml.encode()
    assert all(len(line) <= 60 for line in (stage / "vm.xml").read_text().splitlines())  # Base64.encode64
    for disk_id, name, size in ((0, f"{cloud.prefix}-7", 64 * MIB), (1, f"{cloud.prefix}-sys-{VM_ID}-1", 16 * MIB)):
        file = stage / f"disk.{disk_id}.0"
        details = info(file)
        assert details["format"] == "qcow2" and "backing-filename" not in details
        assert details["virtual-size"] == size
        assert raw_of(file, tmp_path) == cloud.cluster.read(name, 0, size)
        assert details["actual-size"] < size // 2  # holes stay holes
    assert not list(stage.glob("*.raw"))
    cloud.ok("tm/postbackup", location, "0:1", f"one-{VM_ID}", "-", str(VM_ID), "100", stdin=xml.encode())
    assert not stage.exists()


def test_only_the_listed_disks_and_the_trailing_colon_of_6_8(cloud: Cloud, location: str, tmp_path: Path) -> None:
    xml = backup_vm(cloud)
    cloud.ok("tm/prebackup", location, "0:", f"one-{VM_ID}", "-", str(VM_ID), "100", stdin=xml.encode())
    assert sorted(p.name for p in (Path(vm_dir(tmp_path)) / "backup").iterdir()) == ["disk.0.0", "vm.xml"]


def test_a_disk_of_another_driver_is_named_and_nothing_is_staged(cloud: Cloud, location: str,
                                                                 tmp_path: Path) -> None:
    ceph = docs.image_disk(2, 9, source="one/one-9", clone=True, size_mb=8, tm_mad="ceph")
    xml = backup_vm(cloud, disks=[docs.image_disk(0, 7, source=f"{cloud.prefix}-7", clone=False,
                                                  persistent=True, size_mb=64), ceph])
    result = cloud.run("tm/prebackup", location, "0:2", f"one-{VM_ID}", "-", str(VM_ID), "100", stdin=xml.encode())
    assert (result.rc, result.reason) == (
        1, f"VM {VM_ID}: disk(s) 2 are not on Vitastor; onevita backs up Vitastor disks only")
    assert not (Path(vm_dir(tmp_path)) / "backup").exists()


def test_an_increment_fails_loudly_and_leaves_nothing(cloud: Cloud, location: str, tmp_path: Path) -> None:
    xml = backup_vm(cloud, {"MODE": "INCREMENT", "LAST_INCREMENT_ID": "0"})
    result = cloud.run("tm/prebackup", location, "0", f"one-{VM_ID}", "-", str(VM_ID), "100", stdin=xml.encode())
    assert (result.rc, result.reason) == (
        1, "incremental backups of Vitastor disks are not implemented yet: set the VM's BACKUP_CONFIG MODE "
           "to FULL (or reset the chain)")
    assert result.errors
    assert not (Path(vm_dir(tmp_path)) / "backup").exists()


def test_a_new_chain_is_a_full_backup(cloud: Cloud, location: str, tmp_path: Path) -> None:
    xml = backup_vm(cloud, {"MODE": "INCREMENT", "LAST_INCREMENT_ID": "-1"})
    cloud.ok("tm/prebackup", location, "0", f"one-{VM_ID}", "-", str(VM_ID), "100", stdin=xml.encode())
    assert (Path(vm_dir(tmp_path)) / "backup" / "disk.0.0").exists()


def test_a_failed_export_leaves_no_staging_directory(cloud: Cloud, location: str, tmp_path: Path) -> None:
    p = cloud.prefix
    xml = backup_vm(cloud, disks=[docs.image_disk(0, 8, source=f"{p}-8", clone=False, persistent=True, size_mb=64)])
    assert catalog(cloud).find(f"{p}-8") is None
    result = cloud.run("tm/prebackup", location, "0", f"one-{VM_ID}", "-", str(VM_ID), "100", stdin=xml.encode())
    assert result.rc == 1 and f"{p}-8" in result.reason
    assert not (Path(vm_dir(tmp_path)) / "backup").exists()


def test_postbackup_always_succeeds(cloud: Cloud, location: str) -> None:
    """Nothing staged, or no document at all: exit 0, as a failure would fail a stored backup."""
    xml = backup_vm(cloud)
    cloud.ok("tm/postbackup", location, "0", f"one-{VM_ID}", "-", str(VM_ID), "100", stdin=xml.encode())
    result = cloud.ok("tm/postbackup", location, "0", f"one-{VM_ID}", "-", str(VM_ID), "100", stdin=b"")
    assert any(line.startswith("WARN:") for line in result.stderr.splitlines())
