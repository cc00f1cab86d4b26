"""datastore/rm and clone through their dist/remotes links, in both job modes."""

from __future__ import annotations

import orjson
import pytest

from tests.cloud import Cloud
from tests.datastore.util import MIB, catalog, etcd_value, image_data, make_image, names, snapshot

A, B, C = b"A" * 8192, b"B" * 4096, b"C" * 4096


# rm -------------------------------------------------------------------------------------------
class TestRm:
    def test_rm_removes_the_image_and_every_snapshot_layer(self, cloud: Cloud) -> None:
        src = f"{cloud.prefix}-7"
        make_image(cloud, src, data=A)
        snapshot(cloud, src, 0)
        cloud.cluster.write(src, 0, B)
        snapshot(cloud, src, 1)
        cloud.cluster.write(src, 4096, C)
        make_image(cloud, f"{cloud.prefix}-70", data=B)  # a neighbour whose name starts alike
        assert names(cloud) == {src, f"{src}@0", f"{src}@1", f"{cloud.prefix}-70"}
        cloud.ok("datastore/rm", "7", stdin=image_data(cloud, 7, source=src))
        assert names(cloud) == {f"{cloud.prefix}-70"}
        assert etcd_value(cloud, f"/index/image/{src}") is None
        assert etcd_value(cloud, f"/index/image/{src}@0") is None
        assert cloud.cluster.read(f"{cloud.prefix}-70", 0, 4096) == B

    def test_outside_child_of_a_snapshot_keeps_its_bytes(self, cloud: Cloud) -> None:
        """An image cloned from ``src@0`` (another image, not one of src's layers) survives the
        removal of src with all the data it read through the snapshot."""
        src, other = f"{cloud.prefix}-7", f"{cloud.prefix}-8"
        make_image(cloud, src, data=A)
        snapshot(cloud, src, 0)
        cloud.cluster.write(src, 0, B)
        make_image(cloud, other, parent=f"{src}@0", data=C, offset=8192)
        expected = A + C
        assert cloud.cluster.read(other, 0, 3 * 4096) == expected
        cloud.ok("datastore/rm", "7", stdin=image_data(cloud, 7, source=src))
        assert names(cloud) == {other}
        assert cloud.cluster.read(other, 0, 3 * 4096) == expected
        assert catalog(cloud).get(other).parent_id == 0

    def test_rm_of_a_missing_image_is_success(self, cloud: Cloud) -> None:
        """oned retrying a delete that already happened."""
        src = f"{cloud.prefix}-7"
        result = cloud.ok("datastore/rm", "7", stdin=image_data(cloud, 7, source=src))
        assert result.stdout == ""
        assert f"{src} does not exist, nothing to delete" in result.stderr

    def test_rm_twice(self, cloud: Cloud) -> None:
        src = f"{cloud.prefix}-7"
        make_image(cloud, src, data=A)
        snapshot(cloud, src, 0)
        cloud.ok("datastore/rm", "7", stdin=image_data(cloud, 7, source=src))
        cloud.ok("datastore/rm", "7", stdin=image_data(cloud, 7, source=src))
        assert names(cloud) == set()

    def test_rm_without_source_does_nothing(self, cloud: Cloud) -> None:
        make_image(cloud, f"{cloud.prefix}-7")
        result = cloud.ok("datastore/rm", "7", stdin=image_data(cloud, 7, source=""))
        assert "image 7 has no SOURCE, nothing to remove" in result.stderr
        assert names(cloud) == {f"{cloud.prefix}-7"}

    def test_rm_refuses_a_malicious_source(self, cloud: Cloud) -> None:
        result = cloud.run("datastore/rm", "7", stdin=image_data(cloud, 7, source="one-7;rm -rf /"))
        assert (result.rc, result.reason) == (1, "invalid Vitastor image name 'one-7;rm -rf /'")


# clone ----------------------------------------------------------------------------------------
class TestClone:
    def test_clone_is_an_independent_copy(self, cloud: Cloud) -> None:
        """The new image ``<prefix>-<id>`` has the source's bytes (from every layer of its chain),
        its size, and no parent; the source is untouched."""
        src, new = f"{cloud.prefix}-5", f"{cloud.prefix}-9"
        make_image(cloud, src, size_mb=32, data=A)
        snapshot(cloud, src, 0)
        cloud.cluster.write(src, 4096, C)
        before = catalog(cloud).get(src)
        result = cloud.ok("datastore/clone", "9", stdin=image_data(cloud, 9, path=src, persistent=False))
        assert result.stdout == f"{new} raw\n"
        cat = catalog(cloud)
        copy = cat.get(new)
        assert (copy.parent_id, copy.size, copy.readonly) == (0, 32 * MIB, False)
        assert cat.get(src) == before
        assert cloud.cluster.read(new, 0, 3 * 4096) == b"A" * 4096 + C + bytes(4096)
        assert cloud.cluster.allocated(new) == 8192  # the data was copied, not read through
        # no parent_id; meta names the source, so a retry knows the copy is its own
        assert etcd_value(cloud, f"/config/inode/{copy.pool_id}/{copy.id}") == (
            '{"meta": {"onevita_copy_of": "%s"}, "name": "%s", "size": %d}' % (src, new, 32 * MIB)).encode()
        assert orjson.loads(etcd_value(cloud, f"/index/image/{new}") or b"") == {
            "id": copy.id, "pool_id": copy.pool_id}
        # independent: writing the source no longer shows through
        cloud.cluster.write(src, 0, B)
        assert cloud.cluster.read(new, 0, 4096) == b"A" * 4096

    def test_clone_retry_is_success_and_changes_nothing(self, cloud: Cloud) -> None:
        src, new = f"{cloud.prefix}-5", f"{cloud.prefix}-9"
        make_image(cloud, src, data=A)
        stdin = image_data(cloud, 9, path=src, persistent=False)
        cloud.ok("datastore/clone", "9", stdin=stdin)
        before = cloud.own_inodes()
        result = cloud.ok("datastore/clone", "9", stdin=stdin)
        assert result.stdout == f"{new} raw\n"
        assert cloud.own_inodes() == before
        assert cloud.cluster.read(new, 0, 8192) == A

    def test_clone_restarts_an_interrupted_copy(self, cloud: Cloud) -> None:
        """A half-written ``<name>.importing`` left by a run stopped mid-copy is removed and the
        copy made again; ``<name>`` never held partial data."""
        src, new = f"{cloud.prefix}-5", f"{cloud.prefix}-9"
        make_image(cloud, src, data=A)
        make_image(cloud, f"{new}.importing", data=B, offset=16384)
        result = cloud.ok("datastore/clone", "9", stdin=image_data(cloud, 9, path=src, persistent=False))
        assert f"removing {new}.importing, left by an interrupted copy" in result.stderr
        assert catalog(cloud).get(new).parent_id == 0
        assert cloud.cluster.read(new, 0, 5 * 4096) == A + bytes(3 * 4096)
        assert names(cloud) == {src, new}

    def test_copy_reads_nothing_through_the_source(self, cloud: Cloud) -> None:
        """Sparse data across a two-layer chain: the copy has the same bytes, no parent, only
        the granules holding data allocated, and keeps them when the source is removed."""
        src, new = f"{cloud.prefix}-5", f"{cloud.prefix}-9"
        chunk = b"".join(bytes([i]) * 4096 for i in range(1, 9))
        make_image(cloud, src, size_mb=16, data=chunk)
        cloud.cluster.write(src, 15 * MIB, chunk)
        snapshot(cloud, src, 0)
        cloud.cluster.write(src, 7 * MIB + 4096, chunk)
        cloud.cluster.write(src, 0, bytes(4096))  # zeros over the snapshot's first granule
        expected = cloud.cluster.read(src, 0, 16 * MIB)
        cloud.ok("datastore/clone", "9", stdin=image_data(cloud, 9, path=src, persistent=False))
        copy = catalog(cloud).get(new)
        assert (copy.parent_id, copy.parent_pool, copy.size) == (0, 0, 16 * MIB)
        assert cloud.cluster.read(new, 0, 16 * MIB) == expected
        assert cloud.cluster.allocated(new) == 3 * len(chunk) - 4096
        cloud.ok("datastore/rm", "5", stdin=image_data(cloud, 5, source=src))
        assert names(cloud) == {new}
        assert cloud.cluster.read(new, 0, 16 * MIB) == expected

    def test_failed_copy_leaves_nothing(self, cloud: Cloud) -> None:
        """The copy fails after ``<name>.importing`` was created (no libvitastor_client; only the
        front-end's environment can be changed here): no ``<name>``, no ``.importing``."""
        if cloud.mode != "frontend":
            pytest.skip("the hosts' environment is the session sshd's")
        src = f"{cloud.prefix}-5"
        make_image(cloud, src, data=A)
        result = cloud.run("datastore/clone", "9", stdin=image_data(cloud, 9, path=src, persistent=False),
                           env={"ONEVITA_LIBVITASTOR": "/nonexistent/libvitastor_client.so"})
        assert (result.rc, result.stdout) == (1, "")
        assert result.reason == "ONEVITA_LIBVITASTOR=/nonexistent/libvitastor_client.so: no such file"
        assert names(cloud) == {src}

    def test_clone_onto_a_foreign_image_fails(self, cloud: Cloud) -> None:
        src, new = f"{cloud.prefix}-5", f"{cloud.prefix}-9"
        make_image(cloud, src, data=A)
        make_image(cloud, new, data=B)
        result = cloud.run("datastore/clone", "9", stdin=image_data(cloud, 9, path=src, persistent=False))
        assert result.rc == 1
        assert result.reason == f"Vitastor image {new} already exists and is not a copy of {src}"
        assert cloud.cluster.read(new, 0, 4096) == B

    def test_clone_of_a_missing_image_fails(self, cloud: Cloud) -> None:
        src = f"{cloud.prefix}-5"
        result = cloud.run("datastore/clone", "9", stdin=image_data(cloud, 9, path=src, persistent=False))
        assert (result.rc, result.stdout, result.reason) == (1, "", f"Vitastor image {src} does not exist")
        assert names(cloud) == set()
