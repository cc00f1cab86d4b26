"""datastore/cp of backup URLs (``oneimage restore``, backup-contract §4.2): IMAGE/PATH is an
``rsync://`` URL the backup datastore's ``ls`` wrote, read through OpenNebula's downloader.sh
(the test-local one of tests/backupds, in a remotes tree laid out like an install), and the
qcow2 it streams lands in the image as raw bytes, in both job modes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.backupds import (
    RsyncBackups,
    backup_remotes_fixture,  # noqa: F401 (fixture)
    backups_fixture,  # noqa: F401 (fixture)
    make_chain,
)
from tests.cloud import Cloud, Result
from tests.datastore.util import MIB, catalog, image_data, names
from tests.harness import documents as docs

VM_ID, BACKUP_IMAGE = 12, 300
SIZE = 6 * MIB + 4096 * 3  # not a whole number of MiB


def backup_chain(backups: RsyncBackups, tmp_path: Path) -> list[dict[int, bytes]]:
    """VM 12's disk 0: a FULL backup and two increments (unaligned data, a zeroed range)."""
    vm_xml = docs.vm_xml(VM_ID, disks=[docs.volatile_disk(0, size_mb=7)])
    vm_dir = tmp_path / "datastores" / "100" / str(VM_ID)
    data = os.urandom(MIB) + bytes(2 * MIB) + os.urandom(MIB) + bytes(SIZE - 4 * MIB)
    steps = [{0: [(10, os.urandom(3000)), (SIZE - 100, os.urandom(100)), (5 * MIB + 7, os.urandom(200_000))]},
             {0: [(3 * MIB + 5, 400_000), (77, b"increment 2")]}]
    return make_chain(backups, vm_dir / "backup", f"node1:{vm_dir}", VM_ID, BACKUP_IMAGE, vm_xml, {0: data}, steps)


def cp(cloud: Cloud, remotes: Path, path: str, env: dict[str, str] | None = None) -> Result:
    """datastore/cp 7 of ``path`` (IMAGE/SIZE from the backup's vm.xml, as rsync/stat says),
    through the links of ``remotes``."""
    return cloud.run("datastore/cp", "7", stdin=image_data(cloud, 7, path=path, size_mb=7), env=env, remotes=remotes)


def test_restore_as_new_image_from_an_rsync_chain(cloud: Cloud, backups: RsyncBackups, tmp_path: Path,
                                                  staging: Path) -> None:
    states = backup_chain(backups, tmp_path)
    for inc in (2, 0):
        url = backups.ls(BACKUP_IMAGE, inc)["0"]
        name = f"{cloud.prefix}-7"
        result = cp(cloud, backups.remotes, url)
        assert (result.rc, result.stdout, result.reason) == (0, f"{name} raw\n", ""), result.stderr
        assert catalog(cloud).get(name).size == SIZE
        assert cloud.cluster.read(name, 0, SIZE) == states[inc][0]
        assert os.listdir(staging) == [] and os.listdir(backups.tmp_dir) == []
        catalog(cloud).modify(catalog(cloud).get(name), rename=f"{name}-inc{inc}")


def test_a_download_failing_half_way_leaves_nothing(cloud: Cloud, backups: RsyncBackups, tmp_path: Path,
                                                     staging: Path) -> None:
    backup_chain(backups, tmp_path)
    result = cp(cloud, backups.remotes, backups.ls(BACKUP_IMAGE)["0"], env={"ONEVITA_TEST_DOWNLOAD_FAIL": "0:300000"})
    assert result.rc == 1
    assert result.reason == (f"cannot download {backups.ls(BACKUP_IMAGE)['0']}: downloader.sh exited with "
                             "status 255: Error copying")
    assert names(cloud) == set()
    assert os.listdir(staging) == [] and os.listdir(backups.tmp_dir) == []


@pytest.mark.parametrize("scheme", ["rsync+rbd", "restic+rbd"])
def test_ceph_rbd_backups_are_refused(cloud: Cloud, backups: RsyncBackups, scheme: str) -> None:
    url = f"{scheme}://200//0:abcdef/var/lib/one/datastores/200/12/abcdef/disk.0.rbd2"
    result = cp(cloud, backups.remotes, url)
    assert (result.rc, result.reason) == (
        1, f"{scheme}:// backups hold Ceph rbd export files (rbd2/rbdiff) of a Ceph disk; onevita imports qcow2 "
           "backups only: restore this one into a Ceph datastore")
    assert names(cloud) == set()


def test_without_opennebula_downloader_it_says_where_it_looked(cloud: Cloud, backups: RsyncBackups,
                                                                tmp_path: Path) -> None:
    """The built tree alone has no downloader.sh: onevita looks where OpenNebula installs it."""
    from tests.cloud import REMOTES

    result = cp(cloud, REMOTES, "rsync://200//0:abcdef/var/lib/one/datastores/200/12/abcdef/disk.0.0")
    assert (result.rc, result.reason) == (
        1, f"OpenNebula's downloader is not at {REMOTES}/datastore/downloader.sh: it is needed to read backup URLs")
    assert names(cloud) == set()
