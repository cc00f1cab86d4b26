"""Helpers shared by the datastore and system-datastore monitor tests: images made straight in
the catalog (as an earlier action or vitastor-cli would have left them) and IMAGE documents."""

from __future__ import annotations

from typing import Any

from onevita.vitastor.catalog import Catalog, Inode
from onevita.vitastor.jobs import open_catalog
from tests.cloud import IMAGE_DS, Cloud
from tests.harness import documents as docs

MIB = 1 << 20


def catalog(cloud: Cloud) -> Catalog:
    """The cluster's catalog, freshly read."""
    return open_catalog(str(cloud.cluster.config_path))


def names(cloud: Cloud) -> set[str]:
    """The name of every layer of the cloud's own."""
    return {i.name for i in cloud.own_inodes().values()}


def etcd_value(cloud: Cloud, key: str) -> bytes | None:
    """The raw bytes at ``<etcd_prefix><key>``, None if absent."""
    cat = catalog(cloud)
    kv = cat.etcd.get(cat.prefix + key)
    return kv.value if kv is not None else None


def make_image(cloud: Cloud, name: str, size_mb: int = 64, data: bytes = b"", offset: int = 0,
               parent: str | None = None) -> Inode:
    """Create ``name`` (a child of ``parent`` if given) and write ``data`` at ``offset``."""
    cat = catalog(cloud)
    base = cat.get(parent) if parent else None
    inode = cat.create(name, size_mb * MIB, cat.pool(cloud.pool), parent=base)
    if data:
        cloud.cluster.write(name, offset, data)
    return inode


def snapshot(cloud: Cloud, name: str, snap_id: int) -> Inode:
    """``vitastor-cli snap-create name@snap_id``: the current data moves into the snapshot."""
    return catalog(cloud).snapshot(name, str(snap_id))


def image_data(cloud: Cloud, image_id: int, *, source: str = "", path: str = "", size_mb: int = 64,
               persistent: bool = True, target_snapshot: int | None = None, **kwargs: Any) -> bytes:
    """Base64 DS_DRIVER_ACTION_DATA with an IMAGE of the image datastore and the DATASTORE."""
    image = docs.image_xml(image_id, name=f"image-{image_id}", source=source, path=path, size_mb=size_mb,
                           ds_id=IMAGE_DS, persistent=persistent, target_snapshot=target_snapshot, **kwargs)
    return cloud.action_data(image=image)
