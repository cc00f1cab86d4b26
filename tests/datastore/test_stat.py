"""datastore/stat through its dist/remotes link, in both job modes: the size in MB of the image
``cp`` would make of IMAGE/PATH (decompressed, virtual size of non-raw formats)."""

from __future__ import annotations

import bz2
import gzip
import http.server
import lzma
import os
import subprocess
import threading
from pathlib import Path
from typing import Callable, Iterator

import pytest

from tests.cloud import Cloud
from tests.datastore.util import MIB
from tests.harness import documents as docs

COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {"gzip": gzip.compress, "bzip2": bz2.compress,
                                                    "xz": lzma.compress}


def qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True)


def raw_data(size: int) -> bytes:
    """``size`` bytes: a little data at both ends, zeros between (compresses to almost nothing)."""
    data = bytearray(size)
    data[:4096] = b"\x01" * 4096
    data[-4096:] = b"\x02" * 4096
    return bytes(data)


class _Head(http.server.BaseHTTPRequestHandler):
    """Answers HEAD /<n> with Content-Length n, HEAD /none without one."""

    def do_HEAD(self) -> None:  # noqa: N802 (http.server's naming)
        self.send_response(200)
        if self.path != "/none":
            self.send_header("Content-Length", self.path.strip("/"))
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture()
def http_url() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Head)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def run_stat(cloud: Cloud, path: str, **ds: str) -> tuple[int, str, str]:
    """Run stat for IMAGE/PATH ``path`` (datastore attributes ``ds`` added); (rc, stdout, reason)."""
    if ds:
        cloud.add_datastores(**ds)
    result = cloud.run("datastore/stat", "3", stdin=cloud.action_data(image=docs.stat_image_xml(path)))
    return result.rc, result.stdout, result.reason


def stat(cloud: Cloud, path: str, **ds: str) -> str:
    rc, stdout, reason = run_stat(cloud, path, **ds)
    assert rc == 0, reason
    return stdout


class TestUncompressed:
    def test_raw_file(self, cloud: Cloud, tmp_path: Path) -> None:
        qemu_img("create", "-f", "raw", str(tmp_path / "disk.raw"), "10M")
        assert stat(cloud, str(tmp_path / "disk.raw")) == "10\n"

    def test_size_is_rounded_up_to_whole_mb(self, cloud: Cloud, tmp_path: Path) -> None:
        qemu_img("create", "-f", "raw", str(tmp_path / "disk.raw"), "1537K")
        assert stat(cloud, str(tmp_path / "disk.raw")) == "2\n"

    def test_qcow2_file_reports_its_virtual_size(self, cloud: Cloud, tmp_path: Path) -> None:
        raw, qcow2 = tmp_path / "disk.raw", tmp_path / "disk.qcow2"
        qemu_img("create", "-f", "raw", str(raw), "300M")
        qemu_img("convert", "-f", "raw", "-O", "qcow2", str(raw), str(qcow2))
        assert qcow2.stat().st_size < MIB  # the file is small; its virtual size is not
        assert stat(cloud, str(qcow2)) == "300\n"


class TestCompressed:
    @pytest.mark.parametrize("compression", sorted(COMPRESSORS))
    def test_raw_reports_the_decompressed_size(self, cloud: Cloud, tmp_path: Path, compression: str) -> None:
        path = tmp_path / "disk.raw.z"
        path.write_bytes(COMPRESSORS[compression](raw_data(10 * MIB + 4096)))
        assert path.stat().st_size < MIB
        assert stat(cloud, str(path)) == "11\n"

    def test_multi_member_gzip_is_counted_whole(self, cloud: Cloud, tmp_path: Path) -> None:
        """The ISIZE trailer covers only the last member (and only modulo 2^32): not the answer."""
        path = tmp_path / "disk.raw.gz"
        path.write_bytes(gzip.compress(raw_data(6 * MIB)) + gzip.compress(raw_data(MIB)))
        assert stat(cloud, str(path)) == "7\n"

    @pytest.mark.parametrize("compression", ["gzip", "xz"])
    def test_compressed_qcow2_reports_its_virtual_size(self, cloud: Cloud, tmp_path: Path,
                                                       compression: str) -> None:
        raw, qcow2 = tmp_path / "disk.raw", tmp_path / "disk.qcow2"
        raw.write_bytes(raw_data(4 * MIB))
        qemu_img("convert", "-f", "raw", "-O", "qcow2", str(raw), str(qcow2))
        qemu_img("resize", "-f", "qcow2", str(qcow2), "300M")
        packed = tmp_path / "disk.qcow2.z"
        packed.write_bytes(COMPRESSORS[compression](qcow2.read_bytes()))
        staging = tmp_path / "staging"
        staging.mkdir()
        assert stat(cloud, str(packed), STAGING_DIR=str(staging)) == "300\n"
        assert list(staging.iterdir()) == []  # the decompressed copy is gone

    def test_no_decompress_reports_the_file_size(self, cloud: Cloud, tmp_path: Path) -> None:
        """With NO_DECOMPRESS=yes cp imports the compressed bytes as they are."""
        path = tmp_path / "disk.raw.gz"
        path.write_bytes(gzip.compress(raw_data(10 * MIB)))
        assert stat(cloud, str(path), NO_DECOMPRESS="yes") == "1\n"

    def test_corrupt_data_fails(self, cloud: Cloud, tmp_path: Path) -> None:
        path = tmp_path / "disk.raw.gz"
        path.write_bytes(gzip.compress(os.urandom(MIB))[:-4096])  # cut short
        rc, stdout, reason = run_stat(cloud, str(path))
        assert (rc, stdout) == (1, "")
        assert reason.startswith(f"cannot decompress {path} (gzip): ")


class TestRestricted:
    def test_restricted_dir_is_refused_like_cp(self, cloud: Cloud, tmp_path: Path) -> None:
        qemu_img("create", "-f", "raw", str(tmp_path / "disk.raw"), "10M")
        rc, stdout, reason = run_stat(cloud, str(tmp_path / "disk.raw"), RESTRICTED_DIRS=f"{tmp_path}/")
        one = cloud.env["ONE_LOCATION"]
        assert (rc, stdout) == (1, "")
        assert reason == f"Not allowed to copy images from {one}/var/ {one}/etc/ {cloud.env['HOME']}/ {tmp_path}/"

    def test_symlink_into_a_restricted_dir_is_refused(self, cloud: Cloud, tmp_path: Path) -> None:
        (tmp_path / "secret").mkdir()
        qemu_img("create", "-f", "raw", str(tmp_path / "secret" / "disk.raw"), "10M")
        (tmp_path / "link.raw").symlink_to(tmp_path / "secret" / "disk.raw")
        rc, _, reason = run_stat(cloud, str(tmp_path / "link.raw"), RESTRICTED_DIRS=f"{tmp_path}/secret/")
        assert rc == 1 and reason.startswith("Not allowed to copy images from ")

    def test_safe_dirs_win(self, cloud: Cloud, tmp_path: Path) -> None:
        qemu_img("create", "-f", "raw", str(tmp_path / "disk.raw"), "10M")
        assert stat(cloud, str(tmp_path / "disk.raw"), RESTRICTED_DIRS=f"{tmp_path}/",
                    SAFE_DIRS=f"{tmp_path}/") == "10\n"


class TestUrlAndErrors:
    def test_http_url_content_length(self, cloud: Cloud, http_url: str) -> None:
        assert stat(cloud, f"{http_url}/{5 * MIB + 1}") == "6\n"
        assert stat(cloud, f"{http_url}/{7 * MIB}") == "7\n"

    def test_http_url_without_content_length_fails(self, cloud: Cloud, http_url: str) -> None:
        rc, _, reason = run_stat(cloud, f"{http_url}/none")
        assert (rc, reason) == (1, f"{http_url}/none does not report its size (no Content-Length)")

    @pytest.mark.parametrize("path", ["ftp://example.com/disk.img", "disk.img", "vitastor://bridge1/one-5"])
    def test_unsupported_path(self, cloud: Cloud, path: str) -> None:
        rc, stdout, reason = run_stat(cloud, path)
        assert (rc, stdout, reason) == (1, "", f"unsupported image PATH {path!r}")
        assert cloud.history[-1].errors

    def test_missing_file(self, cloud: Cloud, tmp_path: Path) -> None:
        path = str(tmp_path / "nothing.img")
        rc, stdout, reason = run_stat(cloud, path)
        assert (rc, stdout, reason) == (1, "", f"cannot open {path}: No such file or directory")

    def test_no_path(self, cloud: Cloud) -> None:
        rc, _, reason = run_stat(cloud, "")
        assert (rc, reason) == (1, "stat needs IMAGE/PATH")
