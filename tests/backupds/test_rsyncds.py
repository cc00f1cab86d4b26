"""The test-local rsync backup datastore itself: layout, output formats, chain reassembly and
KEEP_LAST flattening, checked with QEMU's tools and byte for byte (it is the yardstick the
backup and restore tests measure onevita with, so it is held to the rsync driver's contract)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.backupds import (
    BACKUP_DS,
    RsyncBackups,
    apply_writes,
    backup_remotes_fixture,  # noqa: F401 (fixture)
    backups_fixture,  # noqa: F401 (fixture)
    qcow2_full,
    qcow2_increment,
    stage_backup,
)
from tests.harness import documents as docs

pytestmark = pytest.mark.parametrize("cloud", ["frontend"], indirect=True)  # no Vitastor job runs here

VM_ID, IMAGE_ID = 12, 300
MIB = 1 << 20
SIZE = 4 * MIB


def raw_of(qcow2: bytes, tmp_path: Path) -> bytes:
    src, out = tmp_path / "check.qcow2", tmp_path / "check.raw"
    src.write_bytes(qcow2)
    subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", str(src), str(out)], check=True)
    data = out.read_bytes()
    src.unlink()
    out.unlink()
    return data


def chain(backups: RsyncBackups, tmp_path: Path, steps: list[list[tuple[int, object]]]) -> list[bytes]:
    """A FULL backup of two disks and one increment per entry of ``steps`` (the same writes on
    both disks, disk 1 shifted by one byte), shipped and recorded; the disks' state after each."""
    vm_xml = docs.vm_xml(VM_ID, disks=[docs.volatile_disk(0, size_mb=4), docs.volatile_disk(1, size_mb=4)])
    vm_dir = tmp_path / "datastores" / "100" / str(VM_ID)
    stage = vm_dir / "backup"
    states = [bytearray(os.urandom(SIZE // 2) + bytes(SIZE // 2)), bytearray(SIZE)]
    states[1][MIB:MIB + 5] = b"disk1"
    history = [bytes(states[0])]
    for k, writes in enumerate([[], *steps]):
        files: dict[str, object] = {}
        for disk in (0, 1):
            out = tmp_path / f"disk.{disk}.{k}"
            if k == 0:
                qcow2_full(bytes(states[disk]), out)
            else:
                shifted = [(off + disk, what) for off, what in writes]
                qcow2_increment(bytes(states[disk]), shifted, out)  # type: ignore[arg-type]
                apply_writes(states[disk], shifted)  # type: ignore[arg-type]
            files[f"disk.{disk}.{k}"] = out
        stage_backup(stage, vm_xml, files)  # type: ignore[arg-type]
        backup_id, size_mb = backups.ship(f"node1:{vm_dir}", VM_ID, vm_xml, "0:1")
        backups.record(IMAGE_ID, VM_ID, backup_id, size_mb, full=k == 0)
        history.append(bytes(states[0]))
    return history[1:]


STEPS = [
    [(100, os.urandom(5000)), (SIZE - 7000, os.urandom(6999)), (3 * MIB + 1, os.urandom(70_000))],
    [(200_000, 300_000), (SIZE // 2 + 12345, os.urandom(100)), (0, b"Z" * 10)],  # zeroed range, then data
]


def test_backup_layout_and_output(backups: RsyncBackups, tmp_path: Path) -> None:
    chain(backups, tmp_path, [])
    (directory,) = backups.directories(VM_ID)
    assert re.fullmatch(r"[0-9a-f]{6}", directory)
    files = sorted(p.name for p in (backups.base / str(VM_ID) / directory).iterdir())
    assert files == ["disk.0.0", "disk.1.0", "vm.xml"]


def test_ls_lists_the_last_directory_with_the_chain(backups: RsyncBackups, tmp_path: Path) -> None:
    chain(backups, tmp_path, STEPS)
    dirs = [c[1] for c in backups.increments[IMAGE_ID]]
    listing = backups.ls(IMAGE_ID, -1)
    whole = ",".join(f"{n}:{d}" for n, d in enumerate(dirs))
    # the files named are the full backup's, as rsync/ls names them (the downloader reads the chain)
    assert listing == {str(d): f"rsync://{BACKUP_DS}//{whole}{backups.base}/{VM_ID}/{dirs[0]}/disk.{d}.0"
                       for d in (0, 1)}
    assert backups.ls(IMAGE_ID, 1)["0"].startswith(f"rsync://{BACKUP_DS}//0:{dirs[0]},1:{dirs[1]}/")


def test_downloader_reassembles_every_prefix_of_the_chain(backups: RsyncBackups, tmp_path: Path) -> None:
    states = chain(backups, tmp_path, STEPS)
    for inc in (2, 1, 0):
        assert raw_of(_bytes(backups, IMAGE_ID, inc), tmp_path) == states[inc]
    assert list(backups.tmp_dir.iterdir()) == []  # the downloader's temporary files are gone


def _bytes(backups: RsyncBackups, image_id: int, inc: int) -> bytes:
    proc = backups.cloud.process([str(backups.remotes / "datastore/downloader.sh"), "--nodecomp",
                                  backups.ls(image_id, inc)["0"], "-"])
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_single_full_backup_is_the_file_as_is(backups: RsyncBackups, tmp_path: Path) -> None:
    chain(backups, tmp_path, [])
    (directory,) = backups.directories(VM_ID)
    assert _bytes(backups, IMAGE_ID, -1) == (backups.base / str(VM_ID) / directory / "disk.0.0").read_bytes()


def test_injected_failure_stops_the_download(backups: RsyncBackups, tmp_path: Path) -> None:
    chain(backups, tmp_path, [])
    result = backups.download(backups.ls(IMAGE_ID)["0"], env={"ONEVITA_TEST_DOWNLOAD_FAIL": "0:1000"})
    assert (result.rc, result.stderr) == (255, "Error copying\n")


def test_keep_last_flatten_keeps_the_data(backups: RsyncBackups, tmp_path: Path) -> None:
    states = chain(backups, tmp_path, [*STEPS, [(5, os.urandom(9))]])
    dirs = [c[1] for c in backups.increments[IMAGE_ID]]
    out = backups.flatten(IMAGE_ID, 2)
    assert re.fullmatch(rf"[0-9]+ 2:{dirs[2]},3:{dirs[3]}", out)
    assert backups.directories(VM_ID) == sorted(dirs[2:])
    assert sorted(p.name for p in (backups.base / str(VM_ID) / dirs[2]).iterdir()) == [
        "disk.0.2", "disk.1.2", "vm.xml"]
    merged = backups.base / str(VM_ID) / dirs[2] / "disk.0.2"
    assert raw_of(merged.read_bytes(), tmp_path) == states[2]
    assert raw_of(_bytes(backups, IMAGE_ID, 3), tmp_path) == states[3]
