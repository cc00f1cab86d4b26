"""tm/mkimage and tm/mkswap through their dist/remotes links, in both job modes: volatile disks
of the system datastore, empty or formatted in a sparse staging file on the VM's host."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cloud import Cloud
from tests.datastore.util import names
from tests.formatting import (
    EXT_MAGIC,
    SWAP_MAGIC,
    XFS_MAGIC,
    as_oneadmin,
    blkid,
    datastore_conf,  # noqa: F401 (a fixture)
    dumpe2fs,
    has,
    swap_label,
)
from tests.harness import documents as docs
from tests.tm.conftest import MIB, catalog, disk_path, make_image

DISK2 = disk_path(12, 2)


def volatile(cloud: Cloud, size_mb: int = 64, fs: str | None = None, type: str = "fs") -> str:
    """VM 12 with volatile disk 2; the disk's image name."""
    cloud.add_vm(12, [docs.volatile_disk(2, size_mb=size_mb, type=type, fs=fs)])
    return f"{cloud.prefix}-sys-12-2"


def mkimage(cloud: Cloud, size_mb: int = 64, fmt: str = "raw") -> tuple[int, str, str]:
    result = cloud.run("tm/mkimage", str(size_mb), fmt, DISK2, "12", "100")
    return result.rc, result.stdout, result.reason


class TestMkimage:
    def test_without_fs_an_empty_image(self, cloud: Cloud, staging: Path) -> None:
        name = volatile(cloud)
        assert mkimage(cloud) == (0, "", "")
        inode = catalog(cloud).get(name)
        assert (inode.size, inode.parent_id) == (64 * MIB, 0)
        assert cloud.cluster.allocated(name) == 0
        assert list(staging.iterdir()) == []

    def test_ext4_is_a_real_file_system_and_stays_sparse(self, cloud: Cloud, staging: Path,
                                                         tmp_path: Path) -> None:
        name = volatile(cloud, fs="ext4")
        assert mkimage(cloud) == (0, "", "")
        assert has(cloud, name, EXT_MAGIC)
        sb = dumpe2fs(cloud, name, 64 * MIB, tmp_path)
        assert sb["Filesystem state"] == "clean"
        assert int(sb["Block count"]) * int(sb["Block size"]) == 64 * MIB
        assert "has_journal" in sb["Filesystem features"]
        assert 0 < cloud.cluster.allocated(name) < 8 * MIB
        assert names(cloud) == {name}
        assert list(staging.iterdir()) == []

    def test_xfs(self, cloud: Cloud) -> None:
        name = volatile(cloud, size_mb=320, fs="xfs")
        assert mkimage(cloud, 320)[0] == 0
        assert has(cloud, name, XFS_MAGIC)
        assert cloud.cluster.allocated(name) < 320 * MIB // 4

    @pytest.mark.parametrize("fs", ["ext4", "xfs"])
    def test_real_file_system_as_oneadmin(self, cloud: Cloud, tmp_path: Path, fs: str) -> None:
        as_oneadmin(cloud)
        size_mb = 320 if fs == "xfs" else 64
        name = volatile(cloud, size_mb=size_mb, fs=fs)
        assert mkimage(cloud, size_mb) == (0, "", "")
        assert blkid(cloud, name, size_mb * MIB, tmp_path)["TYPE"] == fs

    def test_format_swap_makes_swap(self, cloud: Cloud) -> None:
        """OpenNebula's common mkswap calls mkimage with FORMAT swap."""
        name = volatile(cloud, type="swap")
        assert mkimage(cloud, fmt="swap")[0] == 0
        assert has(cloud, name, SWAP_MAGIC)

    def test_unsupported_fs_fails_and_leaves_nothing(self, cloud: Cloud, staging: Path) -> None:
        """FS comes from the VM's DISK, which users write: only SUPPORTED_FS words pass."""
        volatile(cloud, fs="btrfs")
        assert mkimage(cloud) == (1, "", "Unsupported file system type: btrfs. "
                                         "Supported types are: ext2,ext3,ext4,xfs")
        assert names(cloud) == set()
        assert list(staging.iterdir()) == []

    def test_option_looking_fs_is_refused(self, cloud: Cloud) -> None:
        volatile(cloud, fs="-V")
        rc, _, reason = mkimage(cloud)
        assert (rc, reason) == (1, "Unsupported file system type: -V. Supported types are: ext2,ext3,ext4,xfs")

    def test_retry_after_success_changes_nothing(self, cloud: Cloud) -> None:
        name = volatile(cloud, fs="ext4")
        assert mkimage(cloud)[0] == 0
        before = cloud.own_inodes()
        first = cloud.cluster.read(name, 1024, 1024)
        assert mkimage(cloud) == (0, "", "")
        assert cloud.own_inodes() == before
        assert cloud.cluster.read(name, 1024, 1024) == first

    def test_foreign_image_is_not_taken_over(self, cloud: Cloud) -> None:
        name = volatile(cloud, fs="ext4")
        make_image(cloud, name, 64, b"mine")
        assert mkimage(cloud) == (1, "", f"Vitastor image {name} already exists and is not the 64 MiB ext4 "
                                         "image asked for: remove it first")
        assert cloud.cluster.read(name, 0, 4) == b"mine"

    def test_leftover_of_an_interrupted_run_is_replaced(self, cloud: Cloud) -> None:
        name = volatile(cloud, fs="ext4")
        make_image(cloud, f"{name}.importing", 64, b"junk")
        assert mkimage(cloud)[0] == 0
        assert names(cloud) == {name}
        assert has(cloud, name, EXT_MAGIC)

    def test_fs_opts_of_datastore_conf(self, cloud: Cloud, datastore_conf: Path, tmp_path: Path) -> None:  # noqa: F811
        """FS_OPTS_<fs> is read as KEY="value" lines, never sourced."""
        datastore_conf.write_text('SUPPORTED_FS="ext2,ext3,ext4,xfs"\nFS_OPTS_ext4="-L scratch -m 0"  # c\n'
                                  "$(touch /tmp/onevita-h9-sourced)\n")
        name = volatile(cloud, fs="ext4")
        assert mkimage(cloud)[0] == 0
        sb = dumpe2fs(cloud, name, 64 * MIB, tmp_path)
        assert (sb["Filesystem volume name"], sb["Reserved block count"]) == ("scratch", "0")
        assert not Path("/tmp/onevita-h9-sourced").exists()

    def test_failing_mkfs_leaves_nothing(self, cloud: Cloud, datastore_conf: Path, staging: Path) -> None:  # noqa: F811
        datastore_conf.write_text('FS_OPTS_ext4="-b 3"\n')
        volatile(cloud, fs="ext4")
        rc, _, reason = mkimage(cloud)
        assert rc == 1 and reason.startswith("cannot make the ext4 file system: ")
        assert names(cloud) == set()
        assert list(staging.iterdir()) == []

    def test_image_disk_is_refused(self, cloud: Cloud) -> None:
        cloud.add_vm(12, [docs.image_disk(2, 5, source=f"{cloud.prefix}-5", clone=True, size_mb=64)])
        rc, _, reason = mkimage(cloud)
        assert (rc, reason) == (1, f"disk 2 of VM 12 is not a volatile disk (SOURCE {cloud.prefix}-5)")
        assert names(cloud) == set()


class TestMkswap:
    def test_real_swap_as_oneadmin(self, cloud: Cloud, tmp_path: Path) -> None:
        as_oneadmin(cloud)
        name = volatile(cloud, type="swap")
        cloud.ok("tm/mkswap", "64", DISK2, "12", "100")
        probed = blkid(cloud, name, 64 * MIB, tmp_path)
        assert (probed["TYPE"], probed["LABEL"]) == ("swap", "swap")

    def test_swap_signature_and_label(self, cloud: Cloud, staging: Path) -> None:
        name = volatile(cloud, type="swap")
        result = cloud.run("tm/mkswap", "64", DISK2, "12", "100")
        assert (result.rc, result.stdout, result.reason) == (0, "", "")
        assert has(cloud, name, SWAP_MAGIC)
        assert swap_label(cloud, name) == b"swap"
        assert cloud.cluster.allocated(name) <= 64 * 1024
        assert list(staging.iterdir()) == []

    def test_retry_after_success(self, cloud: Cloud) -> None:
        volatile(cloud, type="swap")
        cloud.ok("tm/mkswap", "64", DISK2, "12", "100")
        before = cloud.own_inodes()
        cloud.ok("tm/mkswap", "64", DISK2, "12", "100")
        assert cloud.own_inodes() == before

    def test_fs_of_the_disk_is_ignored(self, cloud: Cloud) -> None:
        name = volatile(cloud, type="swap", fs="btrfs")
        cloud.ok("tm/mkswap", "64", DISK2, "12", "100")
        assert has(cloud, name, SWAP_MAGIC)

