"""tm/cpds (disk save-as) through its dist/remotes link, in both job modes."""

from __future__ import annotations

from typing import Callable

import pytest

from tests.cloud import Cloud
from tests.datastore.util import names
from tests.harness import documents as docs
from tests.tm.conftest import MIB, catalog, chain, checkpoint, disk_path, make_image

Hosts = Callable[[], list[str]]
CHUNK = b"".join(bytes([i]) * 4096 for i in range(1, 9))  # 32 KiB of distinct granules


def clone_disk(cloud: Cloud, vm_id: int = 12, *, lcm_state: int = 3) -> tuple[str, str]:
    """VM ``vm_id`` with a non-persistent disk 0 of image ``<prefix>-5``: the image holds data at
    0 and 9 MiB, the VM's clone layer at 4 MiB; (image, clone layer)."""
    src = f"{cloud.prefix}-5"
    make_image(cloud, src, 16, CHUNK)
    cloud.cluster.write(src, 9 * MIB, CHUNK)
    cat = catalog(cloud)
    disk = f"{src}-{vm_id}-0"
    cat.create(disk, 16 * MIB, cat.pool(cloud.pool), parent=cat.get(src))
    cloud.cluster.write(disk, 4 * MIB, CHUNK)
    cloud.add_vm(vm_id, [docs.image_disk(0, 5, source=src, clone=True, size_mb=16)], lcm_state=lcm_state)
    return src, disk


def cpds(cloud: Cloud, snap: str = "-1", vm_id: int = 12, host: str = "node1", target: str = "") -> str:
    """Run cpds of disk 0 into ``target`` (default ``<prefix>-20``); the target's name."""
    target = target or f"{cloud.prefix}-20"
    cloud.ok("tm/cpds", disk_path(vm_id, host=host), target, snap, str(vm_id), "101")
    return target


class TestCpds:
    def test_saveas_creates_an_independent_copy(self, cloud: Cloud) -> None:
        """NEW_SOURCE missing (mkfs only named it): created with the disk's size and bytes (its
        clone layer and the image under it), no parent, only the data allocated."""
        src, disk = clone_disk(cloud)
        expected = cloud.cluster.read(disk, 0, 16 * MIB)
        new = cpds(cloud)
        copy = catalog(cloud).get(new)
        assert (copy.parent_id, copy.size, copy.readonly) == (0, 16 * MIB, False)
        assert cloud.cluster.read(new, 0, 16 * MIB) == expected
        assert cloud.cluster.allocated(new) == 3 * len(CHUNK)
        cloud.cluster.write(src, 0, bytes(len(CHUNK)))  # independent of the image
        assert cloud.cluster.read(new, 0, 16 * MIB) == expected
        assert f"{new}.importing" not in names(cloud)

    def test_saveas_of_a_snapshot_gives_the_snapshots_bytes(self, cloud: Cloud) -> None:
        _, disk = clone_disk(cloud)
        catalog(cloud).snapshot(disk, "3")
        snap_bytes = cloud.cluster.read(f"{disk}@3", 0, 16 * MIB)
        cloud.cluster.write(disk, 0, b"Z" * 8192)  # after the snapshot: not in the copy
        new = cpds(cloud, snap="3")
        assert catalog(cloud).get(new).parent_id == 0
        assert cloud.cluster.read(new, 0, 16 * MIB) == snap_bytes
        assert cloud.cluster.read(new, 0, 8192) == CHUNK[:8192]

    def test_backup_checkpoints_in_the_chain_change_nothing(self, cloud: Cloud) -> None:
        """The disk reads through backup checkpoints (taken as the backup jobs take them) and a
        snapshot between them: the copy of the disk has what the disk reads, the copy of the
        snapshot what the snapshot reads, and the checkpoints stay as they were."""
        _, disk = clone_disk(cloud)
        checkpoint(cloud, disk, 3)
        cloud.cluster.write(disk, 0, b"S" * 4096)
        catalog(cloud).snapshot(disk, "1")
        cloud.cluster.write(disk, 4096, b"T" * 4096)
        checkpoint(cloud, disk, 4)
        cloud.cluster.write(disk, 9 * MIB, b"U" * 4096)
        before = chain(cloud, disk)
        assert before[:4] == [disk, f"{disk}@backup-4", f"{disk}@1", f"{disk}@backup-3"]
        expected = {name: cloud.cluster.read(name, 0, 16 * MIB) for name in before[:4]}
        assert len(set(expected.values())) == 4
        whole, snap = cpds(cloud), cpds(cloud, snap="1", target=f"{cloud.prefix}-21")
        cat = catalog(cloud)
        assert (cat.get(whole).parent_id, cat.get(snap).parent_id) == (0, 0)
        assert cloud.cluster.read(whole, 0, 16 * MIB) == expected[disk]
        assert cloud.cluster.read(snap, 0, 16 * MIB) == expected[f"{disk}@1"]
        assert chain(cloud, disk) == before
        assert {name: cloud.cluster.read(name, 0, 16 * MIB) for name in expected} == expected

    def test_an_existing_smaller_image_is_grown_and_filled(self, cloud: Cloud) -> None:
        """mkfs created NEW_SOURCE empty and smaller: grown to the disk's size, then filled."""
        _, disk = clone_disk(cloud)
        make_image(cloud, f"{cloud.prefix}-20", 1)
        new = cpds(cloud)
        copy = catalog(cloud).get(new)
        assert (copy.parent_id, copy.size) == (0, 16 * MIB)
        assert cloud.cluster.read(new, 0, 16 * MIB) == cloud.cluster.read(disk, 0, 16 * MIB)

    def test_persistent_disk_is_copied_from_its_source(self, cloud: Cloud) -> None:
        src = f"{cloud.prefix}-5"
        make_image(cloud, src, 8, CHUNK, offset=MIB)
        cloud.add_vm(12, [docs.image_disk(0, 5, source=src, clone=False, persistent=True, size_mb=8)])
        new = cpds(cloud)
        assert catalog(cloud).get(new).size == 8 * MIB
        assert cloud.cluster.read(new, 0, 8 * MIB) == cloud.cluster.read(src, 0, 8 * MIB)

    def test_retry_is_success_with_the_same_bytes(self, cloud: Cloud) -> None:
        _, disk = clone_disk(cloud)
        new = cpds(cloud)
        before = catalog(cloud).get(new)
        cpds(cloud)
        assert catalog(cloud).get(new) == before
        assert cloud.cluster.read(new, 0, 16 * MIB) == cloud.cluster.read(disk, 0, 16 * MIB)

    @pytest.mark.parametrize(("lcm_state", "vm_id", "bridge"), [(67, 12, "bridge1"), (68, 13, "bridge2")])
    def test_saveas_of_an_undeployed_vm_runs_on_a_bridge(self, cloud: Cloud, ssh_hosts: Hosts, lcm_state: int,
                                                         vm_id: int, bridge: str) -> None:
        """HOTPLUG_SAVEAS_UNDEPLOYED/STOPPED: oned passes the front-end; the job goes to
        BRIDGE_LIST host <vm> % 2 of DSID (or stays in-process with VITASTOR_ON_FRONTEND)."""
        _, disk = clone_disk(cloud, vm_id, lcm_state=lcm_state)
        start = len(ssh_hosts())
        new = cpds(cloud, vm_id=vm_id, host="one-fe")
        assert ssh_hosts()[start:] == ([bridge] if cloud.mode == "ssh" else [])
        assert cloud.cluster.read(new, 0, 16 * MIB) == cloud.cluster.read(disk, 0, 16 * MIB)

    def test_saveas_runs_on_the_vms_host(self, cloud: Cloud, ssh_hosts: Hosts) -> None:
        clone_disk(cloud)
        start = len(ssh_hosts())
        cpds(cloud)
        assert ssh_hosts()[start:] == (["node1"] if cloud.mode == "ssh" else [])

    def test_missing_snapshot_fails_and_creates_nothing(self, cloud: Cloud) -> None:
        _, disk = clone_disk(cloud)
        result = cloud.run("tm/cpds", disk_path(), f"{cloud.prefix}-20", "4", "12", "101")
        assert (result.rc, result.reason) == (1, f"Vitastor image {disk}@4 does not exist")
        assert catalog(cloud).find(f"{cloud.prefix}-20") is None

    def test_target_reading_through_another_image_is_refused(self, cloud: Cloud) -> None:
        src, _ = clone_disk(cloud)
        cat = catalog(cloud)
        target = f"{cloud.prefix}-20"
        cat.create(target, 16 * MIB, cat.pool(cloud.pool), parent=cat.get(src))
        result = cloud.run("tm/cpds", disk_path(), target, "-1", "12", "101")
        assert (result.rc, result.reason) == (
            1, f"Vitastor image {target} already exists and reads through another image: "
               "it is not an empty save-as image")

    @pytest.mark.parametrize(("args", "reason"), [
        (("one-20;x", "-1"), "invalid Vitastor image name 'one-20;x'"),
        (("one-20", "-2"), "SNAP_ID must be -1 or a snapshot id, got '-2'"),
        (("one-20", "x"), "SNAP_ID must be an integer, got 'x'"),
    ])
    def test_bad_arguments(self, cloud: Cloud, args: tuple[str, str], reason: str) -> None:
        clone_disk(cloud)
        result = cloud.run("tm/cpds", disk_path(), *args, "12", "101")
        assert (result.rc, result.reason) == (1, reason)
