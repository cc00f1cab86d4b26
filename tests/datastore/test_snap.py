"""datastore/snap_delete, snap_revert and snap_flatten (``oneimage snapshot-*`` on a persistent
image) through their dist/remotes links, in both job modes: bytes read back and etcd state."""

from __future__ import annotations

import orjson
import pytest

from tests.cloud import Cloud
from tests.datastore.util import MIB, catalog, etcd_value, image_data, make_image, names, snapshot
from tests.tm.conftest import INTERLEAVED_SPAN, chain, contents, interleave

A, B, C = b"A" * 8192, b"B" * 4096, b"C" * 4096
HEAD = B + C                 # what the image reads now
SNAP1 = B + b"A" * 4096      # what snapshot 1 holds
SNAP0 = A                    # what snapshot 0 holds


@pytest.fixture()
def src(cloud: Cloud) -> str:
    """A persistent image with snapshots 0 and 1, each layer holding different data."""
    name = f"{cloud.prefix}-7"
    make_image(cloud, name, data=A)
    snapshot(cloud, name, 0)
    cloud.cluster.write(name, 0, B)
    snapshot(cloud, name, 1)
    cloud.cluster.write(name, 4096, C)
    return name


def test_the_layers_hold_what_the_tests_expect(cloud: Cloud, src: str) -> None:
    assert [cloud.cluster.read(n, 0, 8192) for n in (src, f"{src}@1", f"{src}@0")] == [HEAD, SNAP1, SNAP0]


def run(cloud: Cloud, action: str, src: str, snap_id: int | None) -> None:
    cloud.ok(f"datastore/{action}", "7", stdin=image_data(cloud, 7, source=src, target_snapshot=snap_id,
                                                          snapshots=[0, 1]))


def head_config(cloud: Cloud, name: str) -> bytes:
    inode = catalog(cloud).get(name)
    value = etcd_value(cloud, f"/config/inode/{inode.pool_id}/{inode.id}")
    assert value is not None
    assert orjson.loads(etcd_value(cloud, f"/index/image/{name}") or b"") == {"id": inode.id,
                                                                             "pool_id": inode.pool_id}
    return value


class TestSnapDelete:
    def test_delete_the_oldest_snapshot(self, cloud: Cloud, src: str) -> None:
        """Its data moves into snapshot 1, which reads the same as before and has no parent left."""
        run(cloud, "snap_delete", src, 0)
        assert names(cloud) == {src, f"{src}@1"}
        assert cloud.cluster.read(src, 0, 8192) == HEAD
        assert cloud.cluster.read(f"{src}@1", 0, 8192) == SNAP1
        assert catalog(cloud).get(f"{src}@1").parent_id == 0
        assert etcd_value(cloud, f"/index/image/{src}@0") is None

    def test_delete_the_newest_snapshot(self, cloud: Cloud, src: str) -> None:
        run(cloud, "snap_delete", src, 1)
        cat = catalog(cloud)
        assert names(cloud) == {src, f"{src}@0"}
        assert cat.get(src).parent_id == cat.get(f"{src}@0").id
        assert cloud.cluster.read(src, 0, 8192) == HEAD
        assert cloud.cluster.read(f"{src}@0", 0, 8192) == SNAP0

    def test_delete_of_a_missing_snapshot_is_success(self, cloud: Cloud, src: str) -> None:
        run(cloud, "snap_delete", src, 1)
        run(cloud, "snap_delete", src, 1)
        assert names(cloud) == {src, f"{src}@0"}
        assert cloud.cluster.read(src, 0, 8192) == HEAD


class TestSnapRevert:
    @pytest.mark.parametrize(("snap_id", "data"), [(0, SNAP0), (1, SNAP1)])
    def test_revert(self, cloud: Cloud, src: str, snap_id: int, data: bytes) -> None:
        """The image becomes a fresh child of the snapshot; the snapshots stay."""
        old_head = catalog(cloud).get(src)
        run(cloud, "snap_revert", src, snap_id)
        cat = catalog(cloud)
        head, snap = cat.get(src), cat.get(f"{src}@{snap_id}")
        assert names(cloud) == {src, f"{src}@0", f"{src}@1"}
        assert head.id != old_head.id and (old_head.pool_id, old_head.id) not in cat.inodes
        assert cloud.cluster.read(src, 0, 8192) == data
        assert cloud.cluster.allocated(src) == 0
        assert head_config(cloud, src) == (
            '{"name": "%s", "parent_id": %d, "size": %d}' % (src, snap.id, 64 * MIB)).encode()
        assert cloud.cluster.read(f"{src}@0", 0, 8192) == SNAP0
        assert cloud.cluster.read(f"{src}@1", 0, 8192) == SNAP1

    def test_revert_twice(self, cloud: Cloud, src: str) -> None:
        run(cloud, "snap_revert", src, 0)
        cloud.cluster.write(src, 0, C)
        run(cloud, "snap_revert", src, 0)
        assert cloud.cluster.read(src, 0, 8192) == SNAP0
        assert names(cloud) == {src, f"{src}@0", f"{src}@1"}

    def test_revert_finishes_an_interrupted_run(self, cloud: Cloud, src: str) -> None:
        """Stopped after the head was renamed aside: the retry creates the head and drops the old one."""
        cat = catalog(cloud)
        cat.modify(cat.get(src), rename=f"{src}.revert")
        run(cloud, "snap_revert", src, 1)
        assert names(cloud) == {src, f"{src}@0", f"{src}@1"}
        assert cloud.cluster.read(src, 0, 8192) == SNAP1

    def test_revert_to_a_missing_snapshot_fails_and_keeps_the_image(self, cloud: Cloud, src: str) -> None:
        before = cloud.own_inodes()
        result = cloud.run("datastore/snap_revert", "7",
                           stdin=image_data(cloud, 7, source=src, target_snapshot=5))
        assert (result.rc, result.reason) == (1, f"Vitastor image {src}@5 does not exist")
        assert cloud.own_inodes() == before


class TestSnapFlatten:
    @pytest.mark.parametrize(("snap_id", "data"), [(0, SNAP0), (1, SNAP1)])
    def test_flatten(self, cloud: Cloud, src: str, snap_id: int, data: bytes) -> None:
        """The image holds the snapshot's data itself, has no parent, and no @N layer is left."""
        run(cloud, "snap_flatten", src, snap_id)
        assert names(cloud) == {src}
        assert cloud.cluster.read(src, 0, 8192) == data
        assert cloud.cluster.allocated(src) == 8192
        assert head_config(cloud, src) == ('{"name": "%s", "size": %d}' % (src, 64 * MIB)).encode()
        assert etcd_value(cloud, f"/index/image/{src}@0") is None
        assert etcd_value(cloud, f"/index/image/{src}@1") is None
        assert etcd_value(cloud, f"/index/image/{src}.revert") is None

    def test_flatten_retry_is_success(self, cloud: Cloud, src: str) -> None:
        run(cloud, "snap_flatten", src, 1)
        before = cloud.own_inodes()
        run(cloud, "snap_flatten", src, 1)
        assert cloud.own_inodes() == before
        assert cloud.cluster.read(src, 0, 8192) == SNAP1

    def test_flatten_finishes_an_interrupted_run(self, cloud: Cloud, src: str) -> None:
        """Stopped after flatten removed the chosen snapshot but not the older one: the retry
        removes what is left and keeps the data."""
        run(cloud, "snap_revert", src, 1)
        cloud.cluster.cli("flatten", src)
        cloud.cluster.cli("rm", f"{src}@1")
        assert names(cloud) == {src, f"{src}@0"}
        run(cloud, "snap_flatten", src, 1)
        assert names(cloud) == {src}
        assert cloud.cluster.read(src, 0, 8192) == SNAP1


@pytest.fixture()
def checkpointed(cloud: Cloud) -> tuple[str, dict[str, bytes]]:
    """A persistent image with snapshots and backup checkpoints in turn (INTERLEAVED: @0 <-
    @backup-3 <- @1 <- @backup-4 <- the image), as VM disk snapshots and backups of it leave
    it: its name, and what each of its layers reads."""
    name = f"{cloud.prefix}-7"
    make_image(cloud, name)
    return name, interleave(cloud, name, lambda snap_id: snapshot(cloud, name, snap_id))


@pytest.mark.parametrize("cloud", ["frontend"], indirect=True)  # suite time: one mode
class TestBackupCheckpoints:
    """The image's backup checkpoints (``SOURCE@backup-<increment>``) are no snapshots of
    OpenNebula's: the snapshot actions keep them with their names and bytes, and they go
    where the image's data goes (rm, flatten)."""

    def test_snap_delete_keeps_them(self, cloud: Cloud, checkpointed: tuple[str, dict[str, bytes]]) -> None:
        src, expected = checkpointed
        run(cloud, "snap_delete", src, 1)
        del expected[f"{src}@1"]
        assert chain(cloud, src) == [src, f"{src}@backup-4", f"{src}@backup-3", f"{src}@0"]
        assert names(cloud) == set(expected)
        assert contents(cloud, expected) == expected

    def test_snap_revert_keeps_them(self, cloud: Cloud, checkpointed: tuple[str, dict[str, bytes]]) -> None:
        """Reverted to @0, under both checkpoints: they stay on the branch the image left."""
        src, expected = checkpointed
        run(cloud, "snap_revert", src, 0)
        expected[src] = expected[f"{src}@0"]
        assert chain(cloud, src) == [src, f"{src}@0"]
        assert chain(cloud, f"{src}@backup-4") == [f"{src}@backup-4", f"{src}@1", f"{src}@backup-3", f"{src}@0"]
        assert names(cloud) == set(expected)
        assert contents(cloud, expected) == expected

    def test_snap_flatten_drops_them(self, cloud: Cloud, checkpointed: tuple[str, dict[str, bytes]]) -> None:
        """Like every snapshot layer: the image no longer reads through them, and its next
        backup is taken whole."""
        src, expected = checkpointed
        run(cloud, "snap_flatten", src, 1)
        assert names(cloud) == {src}
        assert cloud.cluster.read(src, 0, INTERLEAVED_SPAN) == expected[f"{src}@1"]
        assert etcd_value(cloud, f"/index/image/{src}@backup-3") is None
        assert etcd_value(cloud, f"/index/image/{src}@backup-4") is None

    def test_rm_removes_them(self, cloud: Cloud, checkpointed: tuple[str, dict[str, bytes]]) -> None:
        src, _ = checkpointed
        cloud.ok("datastore/rm", "7", stdin=image_data(cloud, 7, source=src))
        assert names(cloud) == set()
        assert etcd_value(cloud, f"/index/image/{src}@backup-4") is None

    def test_clone_copies_what_the_image_reads(self, cloud: Cloud,
                                                checkpointed: tuple[str, dict[str, bytes]]) -> None:
        src, expected = checkpointed
        new = f"{cloud.prefix}-9"
        cloud.ok("datastore/clone", "9", stdin=image_data(cloud, 9, path=src, persistent=False))
        assert catalog(cloud).get(new).parent_id == 0
        assert cloud.cluster.read(new, 0, INTERLEAVED_SPAN) == expected[src]
        assert names(cloud) == {*expected, new}
        assert contents(cloud, expected) == expected


@pytest.mark.parametrize("action", ["snap_delete", "snap_revert", "snap_flatten"])
def test_target_snapshot_missing(cloud: Cloud, action: str) -> None:
    """oned writes TARGET_SNAPSHOT -1 when no snapshot is targeted: refused, nothing touched."""
    src = f"{cloud.prefix}-7"
    make_image(cloud, src)
    snapshot(cloud, src, 0)
    before = cloud.own_inodes()
    result = cloud.run(f"datastore/{action}", "7", stdin=image_data(cloud, 7, source=src, target_snapshot=None))
    assert (result.rc, result.reason) == (1, "image 7: TARGET_SNAPSHOT is missing")
    assert cloud.own_inodes() == before
