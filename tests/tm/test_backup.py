"""tm/prebackup[_live] and tm/postbackup[_live] through their links, with oned's argv and the
plain <VM> on stdin, in both job modes (the staging files land on the VM's host in both): full
backups and increment chains of a VM's Vitastor disks as the rsync/restic backup datastores
take them, reassembled with OpenNebula's recipe (qemu-img rebase -u pairwise, then convert)
and compared byte for byte with the disks at each backup; checkpoint layers in etcd; FS_FREEZE
order against etcd revisions; failures that leave nothing behind."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Callable, Iterator

import pytest

from tests.cloud import Cloud
from tests.formatting import datastore_conf  # noqa: F401 (a fixture)
from tests.harness import documents as docs
from tests.harness.user import ActionUser
from tests.tm.conftest import MIB, FakeVirsh, catalog, disk_path, make_image, ssh_hosts  # noqa: F401

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


# --- increment chains ------------------------------------------------------------------------

PERSISTENT, VOLATILE = 0, 1


class Chain:
    """A VM's backups as a backup datastore keeps them: each accepted backup's files in their
    own directory, and the disks' bytes at each backup time to compare restores with."""

    def __init__(self, cloud: Cloud, location: str, tmp_path: Path) -> None:
        self.cloud, self.location, self.tmp_path = cloud, location, tmp_path
        self.stage = Path(vm_dir(tmp_path)) / "backup"
        self.names = {PERSISTENT: f"{cloud.prefix}-7", VOLATILE: f"{cloud.prefix}-sys-{VM_ID}-1"}
        self.stored: list[Path] = []  # one directory per accepted increment, in order
        self.expected: list[dict[int, bytes]] = []
        self.last = -1

    def disk(self, disk_id: int) -> bytes:
        name = self.names[disk_id]
        return self.cloud.cluster.read(name, 0, catalog(self.cloud).get(name).size)

    def backup(self, *, accepted: bool = True, action: str = "tm/prebackup", **config: str) -> Path:
        """One backup with LAST_INCREMENT_ID as oned has it; stored (and LAST advanced) only if
        ``accepted``, as oned does when the datastore's upload succeeds."""
        xml = backup_vm_doc(self.cloud, {"MODE": "INCREMENT", "LAST_INCREMENT_ID": str(self.last),
                                         "BACKUP_VOLATILE": "YES", **config})
        args = (self.location, "0:1", f"one-{VM_ID}", "-", str(VM_ID), "100")
        self.cloud.ok(action, *args, stdin=xml.encode())
        increment = self.last + 1
        assert sorted(p.name for p in self.stage.iterdir()) == [f"disk.0.{increment}", f"disk.1.{increment}",
                                                                 "vm.xml"]
        kept = self.tmp_path / "store" / f"{increment}-{len(self.stored)}"
        if accepted:
            kept.parent.mkdir(exist_ok=True)
            for file in self.stage.glob("disk.*"):
                subprocess.run(["cp", "--sparse=always", str(file), str(kept.with_name(kept.name + file.name))],
                               check=True)
            self.stored.append(kept)
            self.expected.append({d: self.disk(d) for d in self.names})
            self.last = increment
        self.cloud.ok(action.replace("pre", "post"), *args, stdin=xml.encode())
        assert not self.stage.exists()
        return kept.with_name(kept.name + f"disk.0.{increment}")

    def files(self, disk_id: int, upto: int | None = None) -> list[Path]:
        chain = self.stored[: (upto + 1) if upto is not None else None]
        return [d.with_name(d.name + f"disk.{disk_id}.{i}") for i, d in enumerate(chain)]

    def restore(self, files: list[Path]) -> bytes:
        """What OpenNebula's rsync downloader gives for a chain (rebase -u pairwise, convert),
        as raw bytes."""
        work = self.tmp_path / "restore"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        copies = []
        for file in files:
            copies.append(work / file.name)
            shutil.copy(file, copies[-1])
        for prev, nxt in zip(copies, copies[1:]):
            subprocess.run(["qemu-img", "rebase", "-u", "-F", "qcow2", "-b", str(prev), str(nxt)], check=True)
        return raw_of(copies[-1], work)

    def check(self, *points: int) -> None:
        """The accepted backups (``points``, default all) restore to the disks as they were then."""
        for k in points or range(len(self.expected)):
            expected = self.expected[k]
            for disk_id in self.names:
                assert self.restore(self.files(disk_id, k)) == expected[disk_id], (k, disk_id)

    def checkpoints(self) -> dict[int, list[str]]:
        cat = catalog(self.cloud)
        return {d: sorted(i.name.split("@")[1] for i in cat.inodes.values()
                          if i.name.startswith(name + "@backup-")) for d, name in self.names.items()}


def backup_vm_doc(cloud: Cloud, config: dict[str, str]) -> str:
    """VM 12's document with this BACKUP_CONFIG (disks as backup_vm made them)."""
    p = cloud.prefix
    disks = [docs.image_disk(0, 7, source=f"{p}-7", clone=False, persistent=True, size_mb=64),
             docs.volatile_disk(1, size_mb=16)]
    xml = docs.vm_xml(VM_ID, disks=disks, lcm_state=LCM_BACKUP_POWEROFF, state=8, backup_config=config,
                      deploy_id=f"one-{VM_ID}")
    cloud.oned.vms[VM_ID] = xml
    return xml


FRONTEND_ONLY = pytest.mark.parametrize("cloud", ["frontend"], indirect=True)  # long chains: one mode


@pytest.fixture()
def chain(cloud: Cloud, location: str, tmp_path: Path) -> Chain:
    backup_vm(cloud)
    return Chain(cloud, location, tmp_path)


def test_an_increment_holds_only_what_changed_and_restores_exactly(chain: Chain) -> None:
    cloud, p0 = chain.cloud, chain.names[PERSISTENT]
    chain.backup()
    assert chain.checkpoints() == {0: ["backup-0"], 1: ["backup-0"]}
    cloud.cluster.write(p0, 5 * MIB + 4096, os.urandom(10_000))           # guest writes, unaligned
    cloud.cluster.write(p0, 40 * MIB, bytes(1 << 20))                      # a zeroed range over data
    cloud.cluster.write(chain.names[VOLATILE], 0, b"v2".ljust(8192, b"w"))
    inc1 = chain.backup()
    assert chain.checkpoints() == {0: ["backup-0", "backup-1"], 1: ["backup-0", "backup-1"]}
    assert info(inc1)["actual-size"] < 2 * MIB  # the changed clusters, not the disk
    cloud.cluster.write(p0, 63 * MIB, os.urandom(4096))
    chain.backup()
    assert chain.checkpoints() == {0: ["backup-1", "backup-2"], 1: ["backup-1", "backup-2"]}
    chain.check()


@FRONTEND_ONLY
def test_snapshot_revert_and_resize_between_increments(chain: Chain) -> None:
    cloud, vol = chain.cloud, chain.names[VOLATILE]
    chain.backup()
    cloud.cluster.write(vol, 4096, b"before the snapshot".ljust(65536, b"s"))
    cloud.ok("tm/snap_create", disk_path(disk_id=VOLATILE), "0", str(VM_ID), "100")
    cloud.cluster.write(vol, 8 * MIB, os.urandom(70_000))
    chain.backup()                                    # a disk snapshot layer inside the diff
    cloud.ok("tm/snap_revert", disk_path(disk_id=VOLATILE), "0", str(VM_ID), "100")
    cloud.cluster.write(vol, 12 * MIB, b"after the revert".ljust(4096, b"r"))
    chain.backup()                                    # the old checkpoint on a side branch
    cloud.ok("tm/resize", disk_path(disk_id=VOLATILE), "24", str(VM_ID), "100")
    cloud.cluster.write(vol, 20 * MIB, b"in the new space".ljust(4096, b"n"))
    chain.backup()
    assert info(chain.files(VOLATILE)[-1])["virtual-size"] == 24 * MIB
    cloud.ok("tm/snap_delete", disk_path(disk_id=VOLATILE), "0", str(VM_ID), "100")
    cloud.cluster.write(vol, 0, b"after the snapshot went".ljust(4096, b"d"))
    chain.backup()
    chain.check()


@FRONTEND_ONLY
def test_a_failed_upload_is_retried_against_the_same_checkpoint(chain: Chain) -> None:
    cloud, p0 = chain.cloud, chain.names[PERSISTENT]
    chain.backup()
    cloud.cluster.write(p0, MIB, os.urandom(50_000))
    chain.backup(accepted=False)                      # the datastore's upload failed: LAST stays 0
    assert chain.checkpoints()[PERSISTENT] == ["backup-0", "backup-1"]
    cloud.cluster.write(p0, 30 * MIB, os.urandom(50_000))
    chain.backup()                                    # increment 1 again, against checkpoint 0
    assert chain.checkpoints()[PERSISTENT] == ["backup-0", "backup-1"]
    chain.check()


@FRONTEND_ONLY
def test_twelve_increments_restore_in_order(chain: Chain) -> None:
    """disk.<d>.10 and up sort before disk.<d>.2 as text: the chain must follow the numbers."""
    chain.backup()
    for k in range(12):
        chain.cloud.cluster.write(chain.names[k % 2], (k * 5 % 15) * MIB + k * 4096, os.urandom(3000 + k))
        chain.backup()
    assert len(chain.stored) == 13
    chain.check(2, 10, 12)


@FRONTEND_ONLY
def test_keep_last_merges_the_oldest_increments_and_still_restores(chain: Chain) -> None:
    """rsync's increment_flatten: the oldest increments committed into one full backup."""
    chain.backup()
    for k in range(3):
        chain.cloud.cluster.write(chain.names[PERSISTENT], k * 7 * MIB, os.urandom(20_000))
        chain.backup()
    for disk_id in chain.names:
        files = chain.files(disk_id)[:3]
        for prev, nxt in zip(files, files[1:]):
            subprocess.run(["qemu-img", "rebase", "-u", "-F", "qcow2", "-b", str(prev), str(nxt)], check=True)
        for top in reversed(files[1:]):
            subprocess.run(["qemu-img", "commit", "-q", str(top)], check=True)
        files[0].rename(files[2])
        subprocess.run(["qemu-img", "rebase", "-u", "-b", "", str(files[2])], check=True)
        merged = [files[2], *chain.files(disk_id)[3:]]
        assert chain.restore(merged) == chain.expected[-1][disk_id]


@FRONTEND_ONLY
def test_a_missing_checkpoint_gives_a_whole_disk_increment(chain: Chain) -> None:
    chain.backup()
    cat = catalog(chain.cloud)
    chain.cloud.cluster.cli("rm", cat.get(chain.names[PERSISTENT] + "@backup-0").name)
    chain.cloud.cluster.write(chain.names[PERSISTENT], 3 * MIB, os.urandom(9000))
    result_file = chain.backup()
    assert info(result_file)["virtual-size"] == 64 * MIB
    chain.check()


@FRONTEND_ONLY
def test_full_mode_keeps_one_checkpoint(chain: Chain) -> None:
    chain.backup(MODE="FULL")
    chain.last = -1  # oned keeps -1 in FULL mode
    chain.cloud.cluster.write(chain.names[PERSISTENT], 0, os.urandom(4096))
    chain.backup(MODE="FULL")
    assert chain.checkpoints() == {0: ["backup-0"], 1: ["backup-0"]}
    second = chain.stored[1]
    assert chain.restore([second.with_name(second.name + "disk.0.0")]) == chain.disk(PERSISTENT)


# --- live backups ----------------------------------------------------------------------------

def checkpoint_revision(cloud: Cloud, name: str) -> int:
    return catalog(cloud).get(name).mod_revision


@pytest.mark.parametrize(("mode", "before", "after"), [("AGENT", "domfsfreeze", "domfsthaw"),
                                                       ("SUSPEND", "suspend", "resume")])
def test_live_backup_quiesces_around_the_checkpoints(chain: Chain, virsh: FakeVirsh, mode: str, before: str,
                                                     after: str) -> None:
    chain.backup(action="tm/prebackup_live", FS_FREEZE=mode)
    calls = virsh.calls()
    assert [argv.split()[-2:] for _, argv in calls] == [[before, f"one-{VM_ID}"], [after, f"one-{VM_ID}"]]
    taken = checkpoint_revision(chain.cloud, chain.names[PERSISTENT] + "@backup-0")
    assert checkpoint_revision(chain.cloud, chain.names[VOLATILE] + "@backup-0") == taken  # one transaction
    assert calls[0][0] < taken <= calls[1][0]
    chain.check()


def test_live_backup_thaws_when_the_checkpoint_fails(chain: Chain, virsh: FakeVirsh) -> None:
    chain.cloud.cluster.cli("rm", chain.names[VOLATILE])
    xml = backup_vm_doc(chain.cloud, {"MODE": "FULL", "FS_FREEZE": "AGENT", "BACKUP_VOLATILE": "YES"})
    result = chain.cloud.run("tm/prebackup_live", chain.location, "0:1", f"one-{VM_ID}", "-", str(VM_ID), "100",
                             stdin=xml.encode())
    assert (result.rc, result.reason) == (1, f"Vitastor image {chain.names[VOLATILE]} does not exist")
    assert [argv.split()[-2] for _, argv in virsh.calls()] == ["domfsfreeze", "domfsthaw"]
    assert chain.checkpoints()[PERSISTENT] == []
    assert not chain.stage.exists()


# --- bad input ---------------------------------------------------------------------------------

@FRONTEND_ONLY
@pytest.mark.parametrize(("config", "ids", "reason"), [
    ({"MODE": "WEEKLY"}, "0", "BACKUP_CONFIG/MODE 'WEEKLY' is neither FULL nor INCREMENT"),
    ({"MODE": "INCREMENT", "LAST_INCREMENT_ID": "x"}, "0", "BACKUP_CONFIG/LAST_INCREMENT_ID must be an integer, got 'x'"),
    ({"MODE": "FULL", "FS_FREEZE": "PAUSE"}, "0", "BACKUP_CONFIG/FS_FREEZE 'PAUSE' is not one of NONE, AGENT, SUSPEND"),
    ({"MODE": "FULL"}, "0:5", f"VM {VM_ID} has no disk 5"),
])
def test_bad_input_leaves_nothing(chain: Chain, config: dict[str, str], ids: str, reason: str) -> None:
    xml = backup_vm_doc(chain.cloud, config)
    result = chain.cloud.run("tm/prebackup_live", chain.location, ids, f"one-{VM_ID}", "-", str(VM_ID), "100",
                             stdin=xml.encode())
    assert (result.rc, result.reason) == (1, reason)
    assert chain.checkpoints() == {0: [], 1: []}
    assert not chain.stage.exists()


@pytest.fixture()
def small_vm_dir(tmp_path: Path, location: str) -> Iterator[Path]:
    """The VM directory on a 2 MiB file system: no room to stage a backup."""
    path = Path(vm_dir(tmp_path))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0777", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


@FRONTEND_ONLY
def test_no_room_to_stage_leaves_no_checkpoint(chain: Chain, small_vm_dir: Path) -> None:
    chain.cloud.cluster.write(chain.names[PERSISTENT], 0, os.urandom(4 * MIB))
    xml = backup_vm_doc(chain.cloud, {"MODE": "FULL", "BACKUP_VOLATILE": "YES"})
    result = chain.cloud.run("tm/prebackup", chain.location, "0:1", f"one-{VM_ID}", "-", str(VM_ID), "100",
                             stdin=xml.encode())
    assert result.rc == 1 and "No space left on device" in result.reason, result.stderr
    assert chain.checkpoints() == {0: [], 1: []}
    assert list(small_vm_dir.iterdir()) == []


def test_last_bridge_and_backup_base_path(chain: Chain, tmp_path: Path, datastore_conf: Path,  # noqa: F811
                                          ssh_hosts: Callable[[], list[str]]) -> None:  # noqa: F811
    """The files are written on BACKUP_CONFIG/LAST_BRIDGE (7.0+), in BACKUP_BASE_PATH/<vm>/backup
    when datastore.conf sets it, which postbackup removes there."""
    base = tmp_path / "backup-base"
    base.mkdir()
    datastore_conf.write_text(f'BACKUP_BASE_PATH="{base}"\n')
    xml = backup_vm_doc(chain.cloud, {"MODE": "FULL", "LAST_BRIDGE": "bridge1", "BACKUP_VOLATILE": "YES"})
    args = (chain.location, "0:1", f"one-{VM_ID}", "-", str(VM_ID), "100")
    chain.cloud.ok("tm/prebackup", *args, stdin=xml.encode())
    assert ssh_hosts()[-1] == "bridge1"  # the files' job; the checkpoint's ran before it
    stage = base / str(VM_ID) / "backup"
    assert sorted(p.name for p in stage.iterdir()) == ["disk.0.0", "disk.1.0", "vm.xml"]
    assert not chain.stage.exists()
    chain.cloud.ok("tm/postbackup", *args, stdin=xml.encode())
    assert ssh_hosts()[-1] == "bridge1" and not stage.exists()
