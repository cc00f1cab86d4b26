"""Checks of a formatted image read back from the cluster, with the tools' own signatures, and
datastore.conf for the front-end of the test's dist/remotes (shared by the mkimage, mkswap and
mkfs tests)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from tests.cloud import REMOTES, Cloud
from tests.harness.user import PATH

EXT_MAGIC = (1080, b"\x53\xef")  # s_magic 0xEF53, little-endian, in the superblock at 1024
SWAP_MAGIC = (4086, b"SWAPSPACE2")  # the last 10 bytes of the first 4 KiB page
SWAP_LABEL = (1052, 16)  # volume_name after bootbits, version, last_page, nr_badpages, uuid
XFS_MAGIC = (0, b"XFSB")
PROBED = 1 << 20  # blkid finds every signature the tests make in the first MiB


def has(cloud: Cloud, name: str, signature: tuple[int, bytes]) -> bool:
    """Whether image ``name`` holds ``signature`` (offset, bytes)."""
    offset, data = signature
    return cloud.cluster.read(name, offset, len(data)) == data


def swap_label(cloud: Cloud, name: str) -> bytes:
    offset, length = SWAP_LABEL
    return cloud.cluster.read(name, offset, length).rstrip(b"\0")


def dumpe2fs(cloud: Cloud, name: str, size: int, tmp_path: Path) -> dict[str, str]:
    """``dumpe2fs -h`` of the image exported to a file: the superblock's fields."""
    path = tmp_path / f"{name}.raw"
    path.write_bytes(cloud.cluster.read(name, 0, size))
    out = subprocess.run(["/usr/sbin/dumpe2fs", "-h", str(path)], capture_output=True, check=True).stdout
    path.unlink()
    fields = (line.partition(":") for line in out.decode().splitlines())
    return {key.strip(): value.strip() for key, sep, value in fields if sep}


def as_oneadmin(cloud: Cloud) -> None:
    """The premise of a test of what oned gets on a real front-end or host: the action runs as an
    unprivileged user with Debian's PATH for such users, which lacks the sbin directories where
    mkfs, the ``mkfs.<fs>`` it runs itself, and mkswap live."""
    assert cloud.user.uid != 0 and cloud.env["PATH"] == PATH
    assert not any(directory.endswith("/sbin") for directory in PATH.split(":"))


def blkid(cloud: Cloud, name: str, size: int, tmp_path: Path) -> dict[str, str]:
    """``blkid -p`` (superblock probing) of the image's first MiB read back into a sparse file of
    the image's ``size``: TYPE, LABEL, ..."""
    path = tmp_path / f"{name}.head"
    with open(path, "wb") as f:
        f.write(cloud.cluster.read(name, 0, PROBED))
        f.truncate(size)
    out = subprocess.run(["/usr/sbin/blkid", "-p", "-o", "export", str(path)], capture_output=True, text=True,
                         check=True).stdout
    path.unlink()
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


@pytest.fixture()
def datastore_conf() -> Iterator[Path]:
    """``<remotes>/etc/datastore/datastore.conf`` of the front-end, removed afterwards."""
    etc = REMOTES / "etc"
    made = not etc.exists()
    path = etc / "datastore" / "datastore.conf"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)
        if made:
            shutil.rmtree(etc)
