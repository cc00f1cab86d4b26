"""onevita.datastore.source in isolation: paths, decompression, checksums, throttling, formats."""

from __future__ import annotations

import gzip
import hashlib
import lzma
from pathlib import Path

import pytest

from onevita.datastore import source
from onevita.datastore.source import ChecksumMismatch, detect_format, open_source, parse_bandwidth
from onevita.errors import BadRequest, OnevitaError

DATA = b"".join(bytes([i]) * 4096 for i in range(200))


def read_all(src: source.ImageSource) -> bytes:
    parts = []
    while True:
        part = src.read(65536)
        if not part:
            return b"".join(parts)
        parts.append(part)


@pytest.fixture(autouse=True)
def one_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No ONE_LOCATION; HOME somewhere the test files are not."""
    monkeypatch.delenv("ONE_LOCATION", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


class TestBandwidth:
    @pytest.mark.parametrize(("value", "limit"), [("", None), ("0", None), ("1000", 1000), ("1K", 1024),
                                                  ("10m", 10 << 20), ("2G", 2 << 30)])
    def test_units(self, value: str, limit: int | None) -> None:
        assert parse_bandwidth(value) == limit

    def test_garbage_is_refused(self) -> None:
        with pytest.raises(BadRequest, match="LIMIT_TRANSFER_BW must be bytes per second"):
            parse_bandwidth("fast")


class TestFormat:
    @pytest.mark.parametrize(("head", "fmt"), [
        (b"QFI\xfb\x00\x00\x00\x03", "qcow2"), (b"KDMV\x01", "vmdk"), (b"# Disk DescriptorFile\n", "vmdk"),
        (b"<<< Oracle VM VirtualBox Disk Image >>>\n".ljust(64, b"\0") + b"\x7f\x10\xda\xbe", "vdi"),
        (b"vhdxfile", "vhdx"), (b"conectix", "vpc"), (b"\xeb\x63\x90" + bytes(509), "raw"), (b"", "raw")])
    def test_magic(self, head: bytes, fmt: str) -> None:
        assert detect_format(head) == fmt


class FakeClock:
    """``time`` for the throttle: sleeping moves the clock."""

    def __init__(self) -> None:
        self.now, self.slept = 0.0, [0.0]

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class TestLocal:
    def test_plain_file(self, tmp_path: Path) -> None:
        (tmp_path / "disk").write_bytes(DATA)
        with open_source(str(tmp_path / "disk")) as src:
            assert (src.format, src.compression) == ("raw", "")
            assert read_all(src) == DATA

    @pytest.mark.parametrize("compress", [gzip.compress, lzma.compress])
    def test_compressed_file(self, tmp_path: Path, compress: object) -> None:
        (tmp_path / "disk").write_bytes(compress(DATA))  # type: ignore[operator]
        with open_source(str(tmp_path / "disk")) as src:
            assert read_all(src) == DATA

    def test_concatenated_gzip_members(self, tmp_path: Path) -> None:
        (tmp_path / "disk").write_bytes(gzip.compress(DATA[:4096]) + gzip.compress(DATA[4096:]))
        with open_source(str(tmp_path / "disk")) as src:
            assert read_all(src) == DATA

    def test_format_is_seen_through_compression(self, tmp_path: Path) -> None:
        (tmp_path / "disk").write_bytes(gzip.compress(b"QFI\xfb" + DATA))
        with open_source(str(tmp_path / "disk")) as src:
            assert (src.format, src.compression) == ("qcow2", "gzip")

    def test_truncated_gzip_fails(self, tmp_path: Path) -> None:
        packed = gzip.compress(DATA)
        (tmp_path / "disk").write_bytes(packed[:len(packed) // 2])
        with open_source(str(tmp_path / "disk")) as src, pytest.raises(
                OnevitaError, match=r"cannot decompress .*disk \(gzip\): Compressed file ended"):
            read_all(src)

    def test_no_decompress(self, tmp_path: Path) -> None:
        packed = gzip.compress(DATA)
        (tmp_path / "disk").write_bytes(packed)
        with open_source(str(tmp_path / "disk"), decompress=False) as src:
            assert read_all(src) == packed

    def test_checksums_are_of_the_fetched_bytes(self, tmp_path: Path) -> None:
        packed = gzip.compress(DATA)
        (tmp_path / "disk").write_bytes(packed)
        md5, sha1 = hashlib.md5(packed).hexdigest(), hashlib.sha1(packed).hexdigest()  # noqa: S324
        with open_source(str(tmp_path / "disk"), md5=md5.upper(), sha1=sha1) as src:
            assert read_all(src) == DATA

    def test_mismatch_is_raised_at_the_end(self, tmp_path: Path) -> None:
        (tmp_path / "disk").write_bytes(DATA)
        with open_source(str(tmp_path / "disk"), sha1="0" * 40) as src:
            assert DATA.startswith(src.read(4096))
            with pytest.raises(ChecksumMismatch, match="^checksum mismatch: SHA1 of "):
                read_all(src)

    def test_throttled(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """At 100 KiB/s, 800 KiB take 8 s, in sleeps of about an eighth of a second."""
        clock = FakeClock()
        monkeypatch.setattr(source, "time", clock)
        (tmp_path / "disk").write_bytes(DATA)
        with open_source(str(tmp_path / "disk"), limit=100 << 10) as src:
            assert read_all(src) == DATA
        assert clock.now == pytest.approx(8.0)
        assert max(clock.slept) <= 0.125

    def test_restricted(self, tmp_path: Path) -> None:
        (tmp_path / "disk").write_bytes(DATA)
        with pytest.raises(OnevitaError, match="^Not allowed to copy images from /var/lib/one/ /etc/one/ "):
            open_source(str(tmp_path / "disk"), restricted=f"{tmp_path}/")
        with open_source(str(tmp_path / "disk"), restricted=f"{tmp_path}/", safe=f"{tmp_path}/") as src:
            assert read_all(src) == DATA

    def test_home_is_restricted(self, tmp_path: Path) -> None:
        (tmp_path / "home").mkdir()
        (tmp_path / "home" / "disk").write_bytes(DATA)
        (tmp_path / "link").symlink_to(tmp_path / "home" / "disk")
        with pytest.raises(OnevitaError, match="Not allowed"):
            open_source(str(tmp_path / "link"))

    def test_relative_path_is_refused(self) -> None:
        with pytest.raises(BadRequest, match="unsupported image PATH 'disk.img'"):
            open_source("disk.img")
