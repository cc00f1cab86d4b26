"""tm/snap_create, snap_create_live, snap_delete, snap_revert through their dist/remotes links, in
both job modes. A snapshot of disk NAME is the readonly layer NAME@<snap_id>; the bytes a disk or
a snapshot reads are checked through ``vitastor-cli dd``."""

from __future__ import annotations

from typing import Callable

import orjson
import pytest

from tests.cloud import Cloud
from tests.harness import documents as docs
from tests.tm.conftest import (
    MIB,
    FakeVirsh,
    catalog,
    chain,
    contents,
    disk_path,
    etcd_revision,
    etcd_value,
    index_at,
    interleave,
    layers,
    make_image,
    parent_name,
)

SIZE = 64 * MIB
SPAN = 3 * 4096  # the bytes the tests write and read back: three granules
IMAGE = b"I" * SPAN  # the image's data, which the clones read through


def clone_disk(cloud: Cloud, data: bytes = b"", **vm: object) -> str:
    """VM 12 on node1 with disk 0 a clone of image ``<prefix>-5`` (holding ``data``); its name."""
    src = f"{cloud.prefix}-5"
    make_image(cloud, src, 64, data)
    cat = catalog(cloud)
    name = f"{src}-12-0"
    cat.create(name, SIZE, cat.pool(cloud.pool), parent=cat.get(src))
    cloud.add_vm(12, [docs.image_disk(0, 5, source=src, clone=True, size_mb=64)], **vm)
    return name


def snap(cloud: Cloud, action: str, snap_id: int) -> None:
    """Run a snapshot action on disk 0 of VM 12, which must succeed."""
    cloud.ok(f"tm/{action}", disk_path(), str(snap_id), "12", "101")


def read(cloud: Cloud, name: str) -> bytes:
    return cloud.cluster.read(name, 0, SPAN)


def history(cloud: Cloud, name: str) -> list[bytes]:
    """Over IMAGE, overwrite one granule more before each of snapshots 0 and 1 and once after;
    the bytes the disk held at @0, at @1 and now."""
    state, states = bytearray(IMAGE), []
    for n, fill in enumerate(b"ABC"):
        cloud.cluster.write(name, n * 4096, bytes([fill]) * 4096)
        state[n * 4096:(n + 1) * 4096] = bytes([fill]) * 4096
        states.append(bytes(state))
        if n < 2:
            snap(cloud, "snap_create", n)
    return states


class TestSnapCreate:
    def test_the_head_becomes_a_readonly_snapshot_with_a_new_child(self, cloud: Cloud) -> None:
        """vitastor-cli snap-create's layout: the old inode, with the data, is renamed NAME@0 and
        made readonly; NAME is a new empty inode on top of it, so the disk reads the same."""
        name = clone_disk(cloud, IMAGE)
        cloud.cluster.write(name, 0, b"A" * 4096)
        old = catalog(cloud).get(name)
        snap(cloud, "snap_create", 0)
        cat = catalog(cloud)
        snapshot, head = cat.get(f"{name}@0"), cat.get(name)
        assert (snapshot.pool_id, snapshot.id, snapshot.readonly, snapshot.size) == (
            old.pool_id, old.id, True, SIZE)
        assert (head.parent_id, head.readonly, head.size) == (old.id, False, SIZE)
        assert head.id != old.id
        assert parent_name(cat, f"{name}@0") == f"{cloud.prefix}-5"
        assert etcd_value(cloud, f"/config/inode/{old.pool_id}/{old.id}") == (
            '{"name": "%s@0", "parent_id": %d, "readonly": true, "size": %d}'
            % (name, old.parent_id, SIZE)).encode()
        assert orjson.loads(etcd_value(cloud, f"/index/image/{name}")) == {"id": head.id, "pool_id": head.pool_id}
        assert read(cloud, name) == read(cloud, f"{name}@0") == b"A" * 4096 + b"I" * 8192

    def test_writes_after_the_snapshot_go_to_the_head_only(self, cloud: Cloud) -> None:
        name = clone_disk(cloud, IMAGE)
        states = history(cloud, name)
        assert read(cloud, f"{name}@0") == states[0]
        assert read(cloud, f"{name}@1") == states[1]
        assert read(cloud, name) == states[2]
        assert parent_name(catalog(cloud), f"{name}@1") == f"{name}@0"

    @pytest.mark.parametrize("kind", ["persistent", "volatile"])
    def test_snapshot_names_follow_the_disk_name(self, cloud: Cloud, kind: str) -> None:
        """A persistent disk's snapshot is <SOURCE>@N, a volatile one's <prefix>-sys-<vm>-<disk>@N."""
        src = f"{cloud.prefix}-7"
        name, disk, ds = {
            "persistent": (src, docs.image_disk(1, 7, source=src, clone=False, persistent=True, size_mb=64),
                           "101"),
            "volatile": (f"{cloud.prefix}-sys-12-1", docs.volatile_disk(1, size_mb=64), "100"),
        }[kind]
        make_image(cloud, name, 64, b"P" * 4096)
        cloud.add_vm(12, [disk])
        cloud.ok("tm/snap_create", disk_path(disk_id=1), "3", "12", ds)
        assert set(layers(cloud, name)) == {name, f"{name}@3"}
        assert parent_name(catalog(cloud), name) == f"{name}@3"
        assert read(cloud, f"{name}@3")[:4096] == b"P" * 4096

    def test_the_job_runs_on_the_vm_host(self, cloud: Cloud, ssh_hosts: Callable[[], list[str]]) -> None:
        clone_disk(cloud)
        snap(cloud, "snap_create", 0)
        assert ssh_hosts() == (["node1"] if cloud.mode == "ssh" else [])

    def test_retry_is_success_and_changes_nothing(self, cloud: Cloud) -> None:
        name = clone_disk(cloud)
        snap(cloud, "snap_create", 0)
        before = cloud.own_inodes()
        result = cloud.ok("tm/snap_create", disk_path(), "0", "12", "101")
        assert cloud.own_inodes() == before
        assert f"{name}@0 already exists" in result.stderr

    def test_a_foreign_layer_of_that_name_fails(self, cloud: Cloud) -> None:
        """NAME@1 exists but is not what NAME reads through (here: a sibling after a revert to
        0): it is someone else's snapshot, never taken as done."""
        name = clone_disk(cloud)
        snap(cloud, "snap_create", 0)
        snap(cloud, "snap_create", 1)
        snap(cloud, "snap_revert", 0)
        before = cloud.own_inodes()
        result = cloud.run("tm/snap_create", disk_path(), "1", "12", "101")
        assert (result.rc, result.reason) == (
            1, f"snapshot {name}@1 already exists and is not the parent of {name}")
        assert cloud.own_inodes() == before

    def test_snapshot_of_a_missing_disk_fails(self, cloud: Cloud) -> None:
        name = f"{cloud.prefix}-5-12-0"
        cloud.add_vm(12, [docs.image_disk(0, 5, source=f"{cloud.prefix}-5", clone=True, size_mb=64)])
        result = cloud.run("tm/snap_create", disk_path(), "0", "12", "101")
        assert (result.rc, result.reason) == (1, f"Vitastor image {name} does not exist")


class TestSnapCreateLive:
    """libvirt, QEMU and a guest agent cannot run here: a recording ``virsh`` stands in for them
    on the hosts (first in the sshd sessions' PATH, and the front-end's) and logs each call with
    the etcd revision at that moment, which orders it against the snapshot transaction."""

    def test_freeze_snapshot_thaw_in_this_order(self, cloud: Cloud, virsh: FakeVirsh) -> None:
        name = clone_disk(cloud, IMAGE, deploy_id="one-12")
        result = cloud.ok("tm/snap_create_live", disk_path(), "0", "12", "101")
        created = catalog(cloud).get(f"{name}@0").mod_revision  # the snapshot transaction
        calls = virsh.calls()
        assert [argv for _, argv in calls] == ["-c qemu:///system domfsfreeze one-12",
                                               "-c qemu:///system domfsthaw one-12"]
        (frozen, _), (thawed, _) = calls
        assert frozen < created <= thawed
        assert parent_name(catalog(cloud), name) == f"{name}@0"
        assert not [line for line in result.stderr.splitlines() if line.startswith(("WARN", "ERROR"))]

    def test_without_guest_agent_the_snapshot_is_taken_unfrozen(self, cloud: Cloud, virsh: FakeVirsh) -> None:
        """domfsfreeze fails: a WARN line says the snapshot is crash-consistent, the snapshot is
        taken anyway, and a thaw is still tried (a timed-out freeze may have frozen the guest)."""
        name = clone_disk(cloud, IMAGE, deploy_id="one-12")
        virsh.without_agent("one-12")
        result = cloud.ok("tm/snap_create_live", disk_path(), "0", "12", "101")
        assert [argv for _, argv in virsh.calls()] == ["-c qemu:///system domfsfreeze one-12",
                                                      "-c qemu:///system domfsthaw one-12"]
        warnings = [line for line in result.stderr.splitlines() if line.startswith("WARN:")]
        assert warnings == [
            "WARN: host-job/fsfreeze: cannot freeze the file systems of one-12, the snapshot is "
            "crash-consistent: virsh -c qemu:///system domfsfreeze one-12 failed (exit 1): "
            "error: Guest agent is not responding: QEMU guest agent is not connected"]
        assert result.errors == []
        cat = catalog(cloud)
        assert cat.get(f"{name}@0").readonly and parent_name(cat, name) == f"{name}@0"
        assert read(cloud, f"{name}@0") == IMAGE

    def test_a_failed_snapshot_is_thawed_too(self, cloud: Cloud, virsh: FakeVirsh) -> None:
        """The guest never stays frozen: thaw runs when the snapshot fails, and the snapshot's
        error is the reason."""
        name = f"{cloud.prefix}-5-12-0"
        cloud.add_vm(12, [docs.image_disk(0, 5, source=f"{cloud.prefix}-5", clone=True, size_mb=64)],
                     deploy_id="one-12")
        result = cloud.run("tm/snap_create_live", disk_path(), "0", "12", "101")
        assert (result.rc, result.reason) == (1, f"Vitastor image {name} does not exist")
        assert [argv for _, argv in virsh.calls()] == ["-c qemu:///system domfsfreeze one-12",
                                                       "-c qemu:///system domfsthaw one-12"]

    def test_retry_is_success(self, cloud: Cloud, virsh: FakeVirsh) -> None:
        name = clone_disk(cloud, deploy_id="one-12")
        cloud.ok("tm/snap_create_live", disk_path(), "0", "12", "101")
        before = cloud.own_inodes()
        cloud.ok("tm/snap_create_live", disk_path(), "0", "12", "101")
        assert cloud.own_inodes() == before
        assert set(layers(cloud, name)) == {name, f"{name}@0"}


class TestSnapDelete:
    def test_data_of_the_removed_layers_moves_into_the_head(self, cloud: Cloud) -> None:
        """Removing @0 (under @1), then @1 (under the head): the disk and @1 read the same bytes
        before and after, and the chain closes over the removed layers."""
        name = clone_disk(cloud, IMAGE)
        states = history(cloud, name)
        snap(cloud, "snap_delete", 0)
        cat = catalog(cloud)
        assert set(layers(cloud, name)) == {name, f"{name}@1"}
        assert parent_name(cat, f"{name}@1") == f"{cloud.prefix}-5"
        assert (read(cloud, f"{name}@1"), read(cloud, name)) == (states[1], states[2])
        snap(cloud, "snap_delete", 1)
        assert set(layers(cloud, name)) == {name}
        assert parent_name(catalog(cloud), name) == f"{cloud.prefix}-5"
        assert read(cloud, name) == states[2]
        assert read(cloud, f"{cloud.prefix}-5") == IMAGE

    def test_delete_under_two_children_after_a_revert(self, cloud: Cloud) -> None:
        """After a revert to 0, @0 holds up both @1 and the head: both keep their bytes."""
        name = clone_disk(cloud, IMAGE)
        states = history(cloud, name)
        snap(cloud, "snap_revert", 0)
        cloud.cluster.write(name, 2 * 4096, b"D" * 4096)
        head = read(cloud, name)
        snap(cloud, "snap_delete", 0)
        assert (read(cloud, f"{name}@1"), read(cloud, name)) == (states[1], head)
        assert set(layers(cloud, name)) == {name, f"{name}@1"}

    def test_deleting_a_missing_snapshot_is_success(self, cloud: Cloud) -> None:
        name = clone_disk(cloud)
        snap(cloud, "snap_create", 0)
        snap(cloud, "snap_delete", 0)
        result = cloud.ok("tm/snap_delete", disk_path(), "0", "12", "101")
        assert f"{name}@0 does not exist, nothing to delete" in result.stderr
        assert set(layers(cloud, name)) == {name}


class TestSnapRevert:
    def test_the_disk_reads_the_snapshot_bytes(self, cloud: Cloud) -> None:
        """NAME becomes a fresh child of NAME@N: it reads the snapshot, later snapshots stay,
        and no aside layer is left."""
        name = clone_disk(cloud, IMAGE)
        states = history(cloud, name)
        snap(cloud, "snap_revert", 0)
        cat = catalog(cloud)
        assert read(cloud, name) == states[0]
        assert (parent_name(cat, name), cat.get(name).readonly) == (f"{name}@0", False)
        assert set(layers(cloud, name)) == {name, f"{name}@0", f"{name}@1"}
        snap(cloud, "snap_revert", 1)
        assert read(cloud, name) == states[1]
        assert read(cloud, f"{name}@0") == states[0]

    def test_retry_is_success(self, cloud: Cloud) -> None:
        name = clone_disk(cloud, IMAGE)
        states = history(cloud, name)
        snap(cloud, "snap_revert", 0)
        snap(cloud, "snap_revert", 0)
        assert read(cloud, name) == states[0]
        assert set(layers(cloud, name)) == {name, f"{name}@0", f"{name}@1"}

    def test_the_disk_data_is_there_at_every_step(self, cloud: Cloud) -> None:
        """At every etcd revision of the revert NAME exists: renaming the old head aside and
        creating the new one is a single transaction."""
        name = clone_disk(cloud, IMAGE)
        history(cloud, name)
        start = etcd_revision(cloud)
        snap(cloud, "snap_revert", 0)
        end = etcd_revision(cloud)
        steps = [(index_at(cloud, name, rev), index_at(cloud, f"{name}.revert", rev))
                 for rev in range(start, end + 1)]
        assert all(head for head, _ in steps), steps
        assert steps[-1] == (True, False)

    def test_an_interrupted_revert_is_finished_by_the_retry(self, cloud: Cloud) -> None:
        """Stopped after the old head was renamed aside (NAME missing), or after the new head was
        created (both there): the retry ends with NAME on the snapshot and no aside."""
        name = clone_disk(cloud, IMAGE)
        states = history(cloud, name)
        cat = catalog(cloud)
        cat.modify(cat.get(name), rename=f"{name}.revert")  # stopped after step 1
        snap(cloud, "snap_revert", 0)
        assert read(cloud, name) == states[0]
        assert set(layers(cloud, name)) == {name, f"{name}@0", f"{name}@1"}
        cat = catalog(cloud)
        cat.modify(cat.get(name), rename=f"{name}.revert")
        cat.create(name, SIZE, cat.pool(cloud.pool), parent=cat.get(f"{name}@1"))  # stopped after step 2
        snap(cloud, "snap_revert", 1)
        assert read(cloud, name) == states[1]
        assert set(layers(cloud, name)) == {name, f"{name}@0", f"{name}@1"}

    def test_a_stale_aside_does_not_stop_the_revert(self, cloud: Cloud) -> None:
        """An aside left by an earlier revert whose last step failed, and NAME written since:
        the new revert still discards those writes (it used to skip the rename and report
        success with the disk unreverted)."""
        name = clone_disk(cloud, IMAGE)
        states = history(cloud, name)
        cat = catalog(cloud)
        cat.create(f"{name}.revert", SIZE, cat.pool(cloud.pool), parent=cat.get(f"{name}@1"))
        cloud.cluster.write(name, 0, b"W" * 4096)
        snap(cloud, "snap_revert", 0)
        assert read(cloud, name) == states[0]
        assert set(layers(cloud, name)) == {name, f"{name}@0", f"{name}@1"}

    def test_revert_to_a_missing_snapshot_fails_and_keeps_the_disk(self, cloud: Cloud) -> None:
        name = clone_disk(cloud, IMAGE)
        states = history(cloud, name)
        before = cloud.own_inodes()
        result = cloud.run("tm/snap_revert", disk_path(), "5", "12", "101")
        assert (result.rc, result.reason) == (1, f"Vitastor image {name}@5 does not exist")
        assert cloud.own_inodes() == before
        assert read(cloud, name) == states[2]


@pytest.mark.etcd_only
@pytest.mark.parametrize("cloud", ["frontend"], indirect=True)  # metadata and vitastor-cli rm only
class TestBackupCheckpoints:
    """Backup checkpoints (``NAME@backup-<increment>``, readonly layers the backup jobs take like
    a snapshot) sit in the disk's chain among its snapshots: every snapshot action works around
    them, and each keeps its name and the bytes of its backup."""

    def checkpointed(self, cloud: Cloud) -> tuple[str, dict[str, bytes]]:
        """VM 12's disk 0 (a clone of IMAGE) after INTERLEAVED, snapshots through tm/snap_create:
        the disk's name, and the bytes each of its layers reads."""
        name = clone_disk(cloud, IMAGE)
        expected = interleave(cloud, name, lambda snap_id: snap(cloud, "snap_create", snap_id))
        assert chain(cloud, name) == [name, f"{name}@backup-4", f"{name}@1", f"{name}@backup-3", f"{name}@0",
                                      f"{cloud.prefix}-5"]
        return name, expected

    @staticmethod
    def stats(cloud: Cloud, with_stats: bool) -> None:
        """With statistics (simulation only), vitastor-cli rm may take its "inverse" shortcut."""
        if with_stats:
            cloud.cluster.stats()

    def test_snapshots_around_checkpoints_leave_them_as_they_were(self, cloud: Cloud) -> None:
        """snap_create on a disk whose head reads through checkpoints, and snap_delete of a
        snapshot between the newest checkpoint and the head (its data goes into the head): the
        checkpoints stay readonly under their names, each reading the disk as it was then."""
        name, expected = self.checkpointed(cloud)
        assert contents(cloud, expected) == expected
        cat = catalog(cloud)
        assert [cat.get(f"{name}@{layer}").readonly for layer in ("0", "backup-3", "1", "backup-4")] == [True] * 4
        snap(cloud, "snap_create", 2)
        cloud.cluster.write(name, 0, b"F" * 4096)
        expected[name] = b"F" * 4096 + expected[name][4096:]
        assert chain(cloud, name)[:3] == [name, f"{name}@2", f"{name}@backup-4"]
        snap(cloud, "snap_delete", 2)
        assert chain(cloud, name)[:2] == [name, f"{name}@backup-4"]
        assert set(layers(cloud, name)) == set(expected)
        assert contents(cloud, expected) == expected

    @pytest.mark.parametrize("with_stats", [False, True], ids=["merge", "inverse"])
    def test_delete_snapshots_under_and_over_checkpoints(self, cloud: Cloud, with_stats: bool) -> None:
        """@0 (just under @backup-3), then @1 (over @backup-3, just under @backup-4): each
        checkpoint over a removed snapshot keeps its name and bytes, whether rm merges the
        snapshot into it or (statistics showing the snapshot holds more) merges it into the
        snapshot's inode and gives that its name (3.0.8's "inverse" shortcut)."""
        name, expected = self.checkpointed(cloud)
        for snap_id, remaining in ((0, ["", "@backup-4", "@1", "@backup-3"]), (1, ["", "@backup-4", "@backup-3"])):
            removed = catalog(cloud).get(f"{name}@{snap_id}")
            self.stats(cloud, with_stats)
            snap(cloud, "snap_delete", snap_id)
            assert chain(cloud, name) == [f"{name}{layer}" for layer in remaining] + [f"{cloud.prefix}-5"]
            del expected[f"{name}@{snap_id}"]
            assert set(layers(cloud, name)) == set(expected)
            assert contents(cloud, expected) == expected
            over = catalog(cloud).get(f"{name}@backup-{snap_id + 3}")
            assert over.readonly
            # with statistics the inverse shortcut is taken: the checkpoint lives on in the old inode
            assert ((over.pool_id, over.id) == (removed.pool_id, removed.id)) == with_stats

    def test_revert_to_snapshots_older_than_checkpoints(self, cloud: Cloud) -> None:
        """To @1 (under @backup-4), then to @0 (under both): the disk reads the snapshot again;
        the newer checkpoints stay where they were, now on a side branch, and writes to the
        reverted disk do not reach them. Then @0, holding up both @backup-3 and the disk, is
        removed: rm merges it into both, and both read what they read."""
        name, expected = self.checkpointed(cloud)
        for snap_id in (1, 0):
            snap(cloud, "snap_revert", snap_id)
            cloud.cluster.write(name, 4096, b"R" * 4096)
            snapshot = expected[f"{name}@{snap_id}"]
            expected[name] = snapshot[:4096] + b"R" * 4096 + snapshot[8192:]
            assert chain(cloud, name)[:2] == [name, f"{name}@{snap_id}"]
            assert chain(cloud, f"{name}@backup-4")[:2] == [f"{name}@backup-4", f"{name}@1"]
            assert set(layers(cloud, name)) == set(expected)
            assert contents(cloud, expected) == expected
        snap(cloud, "snap_delete", 0)
        del expected[f"{name}@0"]
        assert set(layers(cloud, name)) == set(expected)
        assert contents(cloud, expected) == expected
        assert chain(cloud, f"{name}@backup-3") == [f"{name}@backup-3", f"{cloud.prefix}-5"]

    def test_inverse_delete_of_a_snapshot_under_a_checkpoint_and_the_reverted_disk(self, cloud: Cloud) -> None:
        """After a revert to 0, @0 holds up both @backup-3 and the disk; the statistics show @0
        holds more than @backup-3, so rm merges the checkpoint into @0's inode, which takes its
        name, and merges @0 into the disk: both read what they read."""
        name, expected = self.checkpointed(cloud)
        snap(cloud, "snap_revert", 0)
        cloud.cluster.write(name, 2 * 4096, b"R" * 4096)
        expected[name] = expected[f"{name}@0"][:8192] + b"R" * 4096
        removed = catalog(cloud).get(f"{name}@0")
        cloud.cluster.stats()
        snap(cloud, "snap_delete", 0)
        del expected[f"{name}@0"]
        assert set(layers(cloud, name)) == set(expected)
        assert contents(cloud, expected) == expected
        cat = catalog(cloud)
        assert (cat.get(f"{name}@backup-3").id, cat.get(f"{name}@backup-3").readonly) == (removed.id, True)
        assert chain(cloud, f"{name}@backup-3") == [f"{name}@backup-3", f"{cloud.prefix}-5"]
        assert chain(cloud, name) == [name, f"{cloud.prefix}-5"]
