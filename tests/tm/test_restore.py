"""tm/restore (6.10+, backup-contract §4.1) through its link in a remotes tree that also holds
the test-local rsync backup datastore and downloader.sh (tests/backupds), with oned's argv and
no stdin, in both job modes: a 2-disk VM restored in place from a FULL backup and two
increments built with qemu-img/qemu-io, checked byte for byte and in etcd."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from onevita.vitastor.catalog import Inode
from tests.backupds import (
    RsyncBackups,
    backup_remotes_fixture,  # noqa: F401 (fixture)
    backups_fixture,  # noqa: F401 (fixture)
    make_chain,
)
from tests.cloud import Cloud, Result
from tests.harness import documents as docs
from tests.tm.conftest import MIB, catalog, make_image

VM_ID, BACKUP_IMAGE = 12, 300
FRONTEND_ONLY = pytest.mark.parametrize("cloud", ["frontend"], indirect=True)  # suite time: one mode
SIZES = {0: 8 * MIB, 1: 4 * MIB}
LCM_RESTORE = 72  # POWEROFF + RESTORE while tm/restore runs


def vm_dir(tmp_path: Path) -> Path:
    return tmp_path / "datastores" / "100" / str(VM_ID)


def names_of(cloud: Cloud) -> dict[int, str]:
    return {0: f"{cloud.prefix}-7", 1: f"{cloud.prefix}-sys-{VM_ID}-1"}


def setup_vm(cloud: Cloud, backups: RsyncBackups, tmp_path: Path) -> list[dict[int, bytes]]:
    """VM 12: disk 0 the persistent image ``<prefix>-7`` with a disk snapshot and a backup
    checkpoint layer under it, disk 1 a volatile disk; a FULL backup of both and two increments
    (unaligned data, a zeroed range, the last cluster); the disks written since. The backups'
    states by increment."""
    disks = [docs.image_disk(0, 7, source=f"{cloud.prefix}-7", clone=False, persistent=True, size_mb=8),
             docs.volatile_disk(1, size_mb=4)]
    vm_xml = docs.vm_xml(VM_ID, disks=disks, state=8, lcm_state=LCM_RESTORE, deploy_id=f"one-{VM_ID}")
    cloud.oned.vms[VM_ID] = vm_xml
    data = {0: os.urandom(2 * MIB) + bytes(4 * MIB) + os.urandom(2 * MIB),
            1: b"volatile".ljust(4096, b"V") + bytes(SIZES[1] - 4096)}
    steps = [{0: [(5, os.urandom(70_000)), (SIZES[0] - 3000, os.urandom(3000)), (3 * MIB + 1, os.urandom(9))],
              1: [(MIB + 7, os.urandom(123_456))]},
             {0: [(MIB, MIB + 5), (7, b"increment two")],
              1: [(0, 4096), (SIZES[1] - 1, b"!")]}]
    states = make_chain(backups, vm_dir(tmp_path) / "backup", f"node1:{vm_dir(tmp_path)}", VM_ID, BACKUP_IMAGE,
                        vm_xml, data, steps)
    names = names_of(cloud)
    make_image(cloud, names[0], 8, os.urandom(MIB), 0)
    catalog(cloud).snapshot(names[0], "0")
    catalog(cloud).snapshot(names[0], "backup-2")
    cloud.cluster.write(names[0], 4 * MIB, os.urandom(MIB))
    make_image(cloud, names[1], 4, os.urandom(8192), 0)
    return states


def restore(cloud: Cloud, backups: RsyncBackups, tmp_path: Path, inc: int = -1, disk: int = -1,
            env: dict[str, str] | None = None, image: int = BACKUP_IMAGE) -> Result:
    return cloud.run("tm/restore", f"node1:{vm_dir(tmp_path)}", str(VM_ID), str(image), str(inc), str(disk),
                     env=env, remotes=backups.remotes)


def state(cloud: Cloud) -> dict[str, tuple[int, int, tuple[int, int] | None, bytes]]:
    """Every layer of the cloud's own: inode, size, parent and its whole data."""
    return {i.name: (i.num, i.size, i.parent_key, cloud.cluster.read(i.name, 0, i.size))
            for i in cloud.own_inodes().values()}


def heads(cloud: Cloud) -> dict[str, Inode]:
    return {i.name: i for i in cloud.own_inodes().values()}


def test_in_place_restore_of_two_disks_from_a_chain(cloud: Cloud, backups: RsyncBackups, tmp_path: Path,
                                                    staging: Path) -> None:
    states = setup_vm(cloud, backups, tmp_path)
    names = names_of(cloud)
    before = heads(cloud)
    for inc, expected in ((1, states[1]), (-1, states[2])):
        result = restore(cloud, backups, tmp_path, inc)
        assert (result.rc, result.stdout, result.reason) == (0, "", ""), result.stderr
        layers = heads(cloud)
        assert set(layers) == set(names.values())  # snapshot, checkpoint, .old, .restore: all gone
        for disk, name in names.items():
            assert layers[name].size == SIZES[disk] and layers[name].parent_key is None
            assert layers[name].num != before[name].num
            assert cloud.cluster.read(name, 0, SIZES[disk]) == expected[disk]
        assert os.listdir(staging) == [] and os.listdir(backups.tmp_dir) == []
        before = layers


@FRONTEND_ONLY
def test_restore_of_one_disk_leaves_the_other_alone(cloud: Cloud, backups: RsyncBackups, tmp_path: Path) -> None:
    states = setup_vm(cloud, backups, tmp_path)
    names = names_of(cloud)
    before = state(cloud)
    result = restore(cloud, backups, tmp_path, -1, 1)
    assert result.rc == 0, result.stderr
    after = state(cloud)
    assert {k: v for k, v in after.items() if k != names[1]} == {k: v for k, v in before.items() if k != names[1]}
    assert after[names[1]][0] != before[names[1]][0] and after[names[1]][3] == states[2][1]


def test_a_download_failing_half_way_changes_nothing(cloud: Cloud, backups: RsyncBackups, tmp_path: Path,
                                                     staging: Path) -> None:
    """Disk 0 is written into its new image, disk 1's download breaks: both disks keep their
    layers, inodes and bytes, and no new image is left."""
    setup_vm(cloud, backups, tmp_path)
    before = state(cloud)
    result = restore(cloud, backups, tmp_path, env={"ONEVITA_TEST_DOWNLOAD_FAIL": "1:100000"})
    assert result.rc == 1
    url = backups.ls(BACKUP_IMAGE)["1"]
    assert result.reason == f"cannot download {url}: downloader.sh exited with status 255: Error copying"
    assert state(cloud) == before
    assert os.listdir(staging) == []


@FRONTEND_ONLY
def test_a_retry_finishes_what_a_run_left_after_the_swap(cloud: Cloud, backups: RsyncBackups,
                                                         tmp_path: Path) -> None:
    """As if a run died after its swap: ``NAME.old`` with its snapshot layers beside a new
    ``NAME``, and a ``.restore`` of an earlier failed run. The retry removes them and restores."""
    states = setup_vm(cloud, backups, tmp_path)
    names = names_of(cloud)
    cat = catalog(cloud)
    cat.rename_many({names[0]: f"{names[0]}.old"})
    make_image(cloud, names[0], 8, b"restored earlier", 0)
    make_image(cloud, f"{names[1]}.restore", 4, b"half", 0)
    result = restore(cloud, backups, tmp_path)
    assert result.rc == 0, result.stderr
    assert set(heads(cloud)) == set(names.values())
    for disk, name in names.items():
        assert cloud.cluster.read(name, 0, SIZES[disk]) == states[2][disk]


def test_bad_requests_change_nothing(cloud: Cloud, backups: RsyncBackups, tmp_path: Path) -> None:
    setup_vm(cloud, backups, tmp_path)
    before = state(cloud)
    cloud.oned.images[301] = docs.image_xml(301, name="os", source=f"{cloud.prefix}-9", size_mb=8, ds_id=101,
                                            persistent=False)
    cases = [
        (dict(image=301), "image 301 is not a backup"),
        (dict(disk=5), f"backup image {BACKUP_IMAGE} has no disk 5 of VM {VM_ID}"),
        (dict(inc=-2), "increment id and disk id must be -1 or more, got -2 and -1"),
    ]
    for kwargs, reason in cases:
        result = restore(cloud, backups, tmp_path, **kwargs)  # type: ignore[arg-type]
        assert (result.rc, result.reason) == (1, reason), result.stderr
    result = cloud.run("tm/restore", f"node1:{vm_dir(tmp_path)}", str(VM_ID), str(BACKUP_IMAGE), "last", "-1",
                       remotes=backups.remotes)
    assert (result.rc, result.reason) == (1, "increment id must be an integer, got 'last'")
    assert state(cloud) == before


def with_vtpm(vm_xml: str) -> str:
    """The VM document with a vTPM (7.0+: TEMPLATE/TPM/MODEL)."""
    return vm_xml.replace("<TEMPLATE>", "<TEMPLATE><TPM><MODEL><![CDATA[tpm-crb]]></MODEL></TPM>", 1)


@FRONTEND_ONLY
def test_backups_by_prebackup_restore_in_place_with_the_vtpm(cloud: Cloud, backups: RsyncBackups,
                                                             tmp_path: Path) -> None:
    """End to end with onevita's own backups: prebackup → the datastore's backup → postbackup,
    three times (FULL, two increments), then tm/restore of the last: disks and vTPM state as
    they were at that backup."""
    names = names_of(cloud)
    make_image(cloud, names[0], 8, os.urandom(MIB), 0)
    make_image(cloud, names[1], 4, b"volatile".ljust(4096, b"V"), 0)
    disks = [docs.image_disk(0, 7, source=names[0], clone=False, persistent=True, size_mb=8),
             docs.volatile_disk(1, size_mb=4)]
    tpm_file = vm_dir(tmp_path) / "tpm" / "tpm2-00.permall"
    tpm_file.parent.mkdir(parents=True)
    location, args = f"node1:{vm_dir(tmp_path)}", ("0:1", f"one-{VM_ID}", "-", str(VM_ID), "100")
    at_backup: dict[str, bytes] = {}
    for k in range(3):
        cloud.cluster.write(names[k % 2], k * MIB + 5, os.urandom(20_000 + k))
        tpm_file.write_bytes(f"vtpm state {k}".encode())
        vm_xml = with_vtpm(docs.vm_xml(VM_ID, disks=disks, state=8, lcm_state=70, deploy_id=f"one-{VM_ID}",
                                       backup_config={"MODE": "INCREMENT", "LAST_INCREMENT_ID": str(k - 1),
                                                      "BACKUP_VOLATILE": "YES"}))
        cloud.oned.vms[VM_ID] = vm_xml
        cloud.ok("tm/prebackup", location, *args, stdin=vm_xml.encode(), remotes=backups.remotes)
        assert (vm_dir(tmp_path) / "backup" / "disk.tpm.0").exists()
        backup_id, size_mb = backups.ship(location, VM_ID, vm_xml, "0:1")
        backups.record(BACKUP_IMAGE, VM_ID, backup_id, size_mb, full=k == 0)
        cloud.ok("tm/postbackup", location, *args, stdin=vm_xml.encode(), remotes=backups.remotes)
        at_backup = {name: cloud.cluster.read(name, 0, SIZES[d]) for d, name in names.items()}
    for name in names.values():
        cloud.cluster.write(name, 0, os.urandom(8192))
    tpm_file.write_bytes(b"changed since")
    cloud.oned.vms[VM_ID] = with_vtpm(docs.vm_xml(VM_ID, disks=disks, state=8, lcm_state=LCM_RESTORE,
                                                  deploy_id=f"one-{VM_ID}"))
    result = restore(cloud, backups, tmp_path)
    assert (result.rc, result.reason) == (0, ""), result.stderr
    assert {name: cloud.cluster.read(name, 0, SIZES[d]) for d, name in names.items()} == at_backup
    assert set(heads(cloud)) == set(names.values())  # the checkpoints went with the old heads
    assert tpm_file.read_bytes() == b"vtpm state 2"
