"""tm/clone, ln, mvds, delete, resize through their dist/remotes links, in both job modes."""

from __future__ import annotations

import orjson
import pytest

from onevita.vitastor.catalog import Catalog
from onevita.vitastor.jobs import open_catalog
from tests.cloud import Cloud
from tests.harness import documents as docs

MIB = 1 << 20
DISK0 = "node1:/var/lib/one//datastores/100/12/disk.0"


def catalog(cloud: Cloud) -> Catalog:
    return open_catalog(str(cloud.cluster.config_path))


def etcd_value(cloud: Cloud, key: str) -> bytes:
    """The raw bytes stored at ``<etcd_prefix><key>``."""
    cat = catalog(cloud)
    kv = cat.etcd.get(cat.prefix + key)
    assert kv is not None, key
    return kv.value


def make_image(cloud: Cloud, name: str, size_mb: int = 64, data: bytes = b"") -> None:
    cat = catalog(cloud)
    cat.create(name, size_mb * MIB, cat.pool(cloud.pool))
    if data:
        cloud.cluster.write(name, 0, data)


class TestClone:
    def test_clone_creates_writable_child_of_the_image(self, cloud: Cloud) -> None:
        """The clone is <SOURCE>-<vm>-<disk>, a child of SOURCE with the disk's SIZE, reading its data."""
        src = f"{cloud.prefix}-5"
        make_image(cloud, src, 64, b"A" * 8192)
        cloud.add_vm(12, [docs.image_disk(0, 5, source=src, clone=True, size_mb=128)])
        cloud.ok("tm/clone", f"one-fe:{src}", DISK0, "12", "101")
        cat = catalog(cloud)
        child, base = cat.get(f"{src}-12-0"), cat.get(src)
        assert (child.parent_id, child.size, child.readonly) == (base.id, 128 * MIB, False)
        assert cloud.cluster.read(f"{src}-12-0", 0, 8192) == b"A" * 8192
        raw = etcd_value(cloud, f"/config/inode/{child.pool_id}/{child.id}")
        assert raw == ('{"name": "%s-12-0", "parent_id": %d, "size": %d}' % (src, base.id, 128 * MIB)).encode()
        assert orjson.loads(etcd_value(cloud, f"/index/image/{src}-12-0")) == {
            "id": child.id, "pool_id": child.pool_id}

    def test_clone_retry_is_success_and_changes_nothing(self, cloud: Cloud) -> None:
        """A second identical clone (oned retrying) succeeds without creating anything."""
        src = f"{cloud.prefix}-5"
        make_image(cloud, src)
        cloud.add_vm(12, [docs.image_disk(0, 5, source=src, clone=True, size_mb=64)])
        cloud.ok("tm/clone", f"one-fe:{src}", DISK0, "12", "101")
        before = catalog(cloud).inodes
        cloud.ok("tm/clone", f"one-fe:{src}", DISK0, "12", "101")
        assert catalog(cloud).inodes == before

    def test_clone_onto_a_foreign_image_fails(self, cloud: Cloud) -> None:
        """An existing image of that name that is not a clone of SOURCE is never taken over."""
        src = f"{cloud.prefix}-5"
        make_image(cloud, src)
        make_image(cloud, f"{src}-12-0")
        cloud.add_vm(12, [docs.image_disk(0, 5, source=src, clone=True, size_mb=64)])
        result = cloud.run("tm/clone", f"one-fe:{src}", DISK0, "12", "101")
        assert result.rc == 1
        assert result.reason == f"Vitastor image {src}-12-0 already exists and is not a clone of {src}"
        assert result.errors

    def test_clone_of_missing_image_fails_and_creates_nothing(self, cloud: Cloud) -> None:
        src = f"{cloud.prefix}-5"
        cloud.add_vm(12, [docs.image_disk(0, 5, source=src, clone=True, size_mb=64)])
        result = cloud.run("tm/clone", f"one-fe:{src}", DISK0, "12", "101")
        assert (result.rc, result.reason) == (1, f"Vitastor image {src} does not exist")
        assert catalog(cloud).inodes == {}

    @pytest.mark.parametrize("source", ["one-5;touch /tmp/x", "one-5 $(id)", "-rf", "../etc"])
    def test_clone_refuses_names_with_shell_metacharacters(self, cloud: Cloud, source: str) -> None:
        cloud.add_vm(12, [docs.image_disk(0, 5, source=source, clone=True, size_mb=64)])
        result = cloud.run("tm/clone", f"one-fe:{source}", DISK0, "12", "101")
        assert result.rc == 1
        assert result.reason == f"invalid Vitastor image name {source!r}"
