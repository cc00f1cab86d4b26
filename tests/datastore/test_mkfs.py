"""datastore/mkfs through its dist/remotes link, in both job modes: empty datablocks, datablocks
with a file system built in a sparse staging file on the BRIDGE_LIST host, and disk-saveas."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cloud import Cloud
from tests.datastore.util import MIB, catalog, image_data, make_image, names
from tests.formatting import (
    EXT_MAGIC,
    XFS_MAGIC,
    as_oneadmin,
    blkid,
    datastore_conf,  # noqa: F401 (a fixture)
    dumpe2fs,
    has,
)


def mkfs(cloud: Cloud, *, size_mb: int = 64, fs: str = "", format: str = "raw") -> tuple[int, str, str]:
    """Run mkfs 7 for a datablock of ``size_mb`` MB; (rc, stdout, reason)."""
    result = cloud.run("datastore/mkfs", "7", stdin=image_data(cloud, 7, size_mb=size_mb, fs=fs, format=format,
                                                               image_type=2))
    return result.rc, result.stdout, result.reason


def test_empty_datablock(cloud: Cloud, staging: Path) -> None:
    name = f"{cloud.prefix}-7"
    assert mkfs(cloud) == (0, f"{name}\n", "")
    inode = catalog(cloud).get(name)
    assert (inode.size, inode.parent_id) == (64 * MIB, 0)
    assert cloud.cluster.allocated(name) == 0
    assert list(staging.iterdir()) == []


def test_ext4_datablock(cloud: Cloud, staging: Path, tmp_path: Path) -> None:
    name = f"{cloud.prefix}-7"
    assert mkfs(cloud, fs="ext4") == (0, f"{name}\n", "")
    assert has(cloud, name, EXT_MAGIC)
    assert dumpe2fs(cloud, name, 64 * MIB, tmp_path)["Filesystem state"] == "clean"
    assert 0 < cloud.cluster.allocated(name) < 8 * MIB
    assert names(cloud) == {name}
    assert list(staging.iterdir()) == []


def test_xfs_datablock(cloud: Cloud) -> None:
    name = f"{cloud.prefix}-7"
    assert mkfs(cloud, size_mb=320, fs="xfs")[0] == 0
    assert has(cloud, name, XFS_MAGIC)


@pytest.mark.parametrize("fs", ["ext2", "ext3", "ext4", "xfs"])
def test_real_file_system_as_oneadmin(cloud: Cloud, tmp_path: Path, fs: str) -> None:
    """``mkfs -t ext4`` finds mkfs.ext4 through PATH itself: the sbin directories must be in it."""
    as_oneadmin(cloud)
    name, size_mb = f"{cloud.prefix}-7", 320 if fs == "xfs" else 64
    assert mkfs(cloud, size_mb=size_mb, fs=fs) == (0, f"{name}\n", "")
    assert blkid(cloud, name, size_mb * MIB, tmp_path)["TYPE"] == fs


def test_save_as_prints_the_name_only(cloud: Cloud) -> None:
    """tm/cpds creates and fills it."""
    assert mkfs(cloud, fs="ext4", format="save_as") == (0, f"{cloud.prefix}-7\n", "")
    assert names(cloud) == set()


def test_unsupported_fs_fails_and_leaves_nothing(cloud: Cloud, staging: Path) -> None:
    assert mkfs(cloud, fs="ntfs") == (1, "", "Unsupported file system type: ntfs. "
                                             "Supported types are: ext2,ext3,ext4,xfs")
    assert names(cloud) == set()
    assert list(staging.iterdir()) == []


def test_supported_fs_of_datastore_conf(cloud: Cloud, datastore_conf: Path) -> None:  # noqa: F811
    datastore_conf.write_text('SUPPORTED_FS="ext4"\n')
    rc, _, reason = mkfs(cloud, fs="xfs")
    assert (rc, reason) == (1, "Unsupported file system type: xfs. Supported types are: ext4")


@pytest.mark.parametrize("fs", ["", "ext4"])
def test_retry_after_success(cloud: Cloud, fs: str) -> None:
    name = f"{cloud.prefix}-7"
    assert mkfs(cloud, fs=fs)[0] == 0
    before = cloud.own_inodes()
    assert mkfs(cloud, fs=fs) == (0, f"{name}\n", "")
    assert cloud.own_inodes() == before


def test_other_image_of_that_name_is_refused(cloud: Cloud) -> None:
    name = f"{cloud.prefix}-7"
    make_image(cloud, name, 64, b"data")
    assert mkfs(cloud) == (1, "", f"Vitastor image {name} already exists and is not the 64 MiB empty "
                                  "image asked for: remove it first")
    assert cloud.cluster.read(name, 0, 4) == b"data"
