"""onevita.qemu_nbd against the real qemu-nbd: what it writes is what ``qemu-img map`` and a
backing chain see (data, allocated zeros, holes), and what it reads is the image's bytes."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from onevita.qemu_nbd import NbdError, served

MIB = 1 << 20


def qcow2(path: Path, size: int, backing: Path | None = None) -> Path:
    extra = ["-b", str(backing), "-F", "qcow2"] if backing else []
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", "compat=1.1", *extra, str(path), str(size)],
                   check=True)
    return path


def allocation(path: Path) -> list[tuple[int, int, bool, bool]]:
    """(start, length, present, zero) of the top layer only."""
    out = subprocess.run(["qemu-img", "map", "--output=json", str(path)], check=True, capture_output=True).stdout
    return [(e["start"], e["length"], e["present"], e["zero"]) for e in json.loads(out) if e["depth"] == 0]


def test_written_zeroes_stay_allocated_and_hide_the_backing_file(tmp_path: Path) -> None:
    base = qcow2(tmp_path / "base.qcow2", 4 * MIB)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 4M", str(base)], check=True,
                   capture_output=True)
    top = qcow2(tmp_path / "top.qcow2", 4 * MIB)
    with served(str(top), "qcow2", readonly=False) as nbd:
        assert (nbd.size, nbd.readonly) == (4 * MIB, False)
        nbd.write(MIB, b"\x22" * 65536)
        nbd.write_zeroes(2 * MIB, 65536)
    assert allocation(top) == [(0, MIB, False, True), (MIB, 65536, True, False),
                               (MIB + 65536, MIB - 65536, False, True), (2 * MIB, 65536, True, True),
                               (2 * MIB + 65536, 2 * MIB - 65536, False, True)]
    subprocess.run(["qemu-img", "rebase", "-u", "-F", "qcow2", "-b", str(base), str(top)], check=True)
    with served(str(top), "qcow2", readonly=True) as nbd:
        data = nbd.read(0, nbd.size)
    expected = bytearray(b"\x11" * 4 * MIB)
    expected[MIB:MIB + 65536] = b"\x22" * 65536
    expected[2 * MIB:2 * MIB + 65536] = bytes(65536)
    assert data == bytes(expected)


def test_a_file_qemu_nbd_cannot_open_fails_with_its_reason(tmp_path: Path) -> None:
    bad = tmp_path / "bad.qcow2"
    bad.write_bytes(b"not a qcow2 image" * 100)
    with pytest.raises(NbdError, match=r"qemu-nbd exited with status 1 serving .*bad.qcow2: .*qcow2"), \
            served(str(bad), "qcow2", readonly=True):
        pass


def test_writes_to_a_read_only_export_are_refused(tmp_path: Path) -> None:
    image = qcow2(tmp_path / "ro.qcow2", MIB)
    with served(str(image), "qcow2", readonly=True) as nbd:
        assert nbd.readonly
        with pytest.raises(NbdError, match="write at offset 0 failed in qemu-nbd: Invalid argument"):
            nbd.write(0, bytes(4096))
