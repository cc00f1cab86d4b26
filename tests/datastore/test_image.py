"""datastore/rm, clone and stat through their dist/remotes links, in both job modes."""

from __future__ import annotations

import http.server
import subprocess
import threading
from pathlib import Path
from typing import Iterator

import orjson
import pytest

from tests.cloud import Cloud
from tests.datastore.util import MIB, catalog, etcd_value, image_data, make_image, names, snapshot

A, B, C = b"A" * 8192, b"B" * 4096, b"C" * 4096


# rm -------------------------------------------------------------------------------------------
class TestRm:
    def test_rm_removes_the_image_and_every_snapshot_layer(self, cloud: Cloud) -> None:
        src = f"{cloud.prefix}-7"
        make_image(cloud, src, data=A)
        snapshot(cloud, src, 0)
        cloud.cluster.write(src, 0, B)
        snapshot(cloud, src, 1)
        cloud.cluster.write(src, 4096, C)
        make_image(cloud, f"{cloud.prefix}-70", data=B)  # a neighbour whose name starts alike
        assert names(cloud) == {src, f"{src}@0", f"{src}@1", f"{cloud.prefix}-70"}
        cloud.ok("datastore/rm", "7", stdin=image_data(cloud, 7, source=src))
        assert names(cloud) == {f"{cloud.prefix}-70"}
        assert etcd_value(cloud, f"/index/image/{src}") is None
        assert etcd_value(cloud, f"/index/image/{src}@0") is None
        assert cloud.cluster.read(f"{cloud.prefix}-70", 0, 4096) == B

    def test_outside_child_of_a_snapshot_keeps_its_bytes(self, cloud: Cloud) -> None:
        """An image cloned from ``src@0`` (another image, not one of src's layers) survives the
        removal of src with all the data it read through the snapshot."""
        src, other = f"{cloud.prefix}-7", f"{cloud.prefix}-8"
        make_image(cloud, src, data=A)
        snapshot(cloud, src, 0)
        cloud.cluster.write(src, 0, B)
        make_image(cloud, other, parent=f"{src}@0", data=C, offset=8192)
        expected = A + C
        assert cloud.cluster.read(other, 0, 3 * 4096) == expected
        cloud.ok("datastore/rm", "7", stdin=image_data(cloud, 7, source=src))
        assert names(cloud) == {other}
        assert cloud.cluster.read(other, 0, 3 * 4096) == expected
        assert catalog(cloud).get(other).parent_id == 0

    def test_rm_of_a_missing_image_is_success(self, cloud: Cloud) -> None:
        """oned retrying a delete that already happened."""
        src = f"{cloud.prefix}-7"
        result = cloud.ok("datastore/rm", "7", stdin=image_data(cloud, 7, source=src))
        assert result.stdout == ""
        assert f"{src} does not exist, nothing to delete" in result.stderr

    def test_rm_twice(self, cloud: Cloud) -> None:
        src = f"{cloud.prefix}-7"
        make_image(cloud, src, data=A)
        snapshot(cloud, src, 0)
        cloud.ok("datastore/rm", "7", stdin=image_data(cloud, 7, source=src))
        cloud.ok("datastore/rm", "7", stdin=image_data(cloud, 7, source=src))
        assert names(cloud) == set()

    def test_rm_without_source_does_nothing(self, cloud: Cloud) -> None:
        make_image(cloud, f"{cloud.prefix}-7")
        result = cloud.ok("datastore/rm", "7", stdin=image_data(cloud, 7, source=""))
        assert "image 7 has no SOURCE, nothing to remove" in result.stderr
        assert names(cloud) == {f"{cloud.prefix}-7"}

    def test_rm_refuses_a_malicious_source(self, cloud: Cloud) -> None:
        result = cloud.run("datastore/rm", "7", stdin=image_data(cloud, 7, source="one-7;rm -rf /"))
        assert (result.rc, result.reason) == (1, "invalid Vitastor image name 'one-7;rm -rf /'")


# clone ----------------------------------------------------------------------------------------
class TestClone:
    def test_clone_is_an_independent_copy(self, cloud: Cloud) -> None:
        """The new image ``<prefix>-<id>`` has the source's bytes (from every layer of its chain),
        its size, and no parent; the source is untouched."""
        src, new = f"{cloud.prefix}-5", f"{cloud.prefix}-9"
        make_image(cloud, src, size_mb=32, data=A)
        snapshot(cloud, src, 0)
        cloud.cluster.write(src, 4096, C)
        before = catalog(cloud).get(src)
        result = cloud.ok("datastore/clone", "9", stdin=image_data(cloud, 9, path=src, persistent=False))
        assert result.stdout == f"{new} raw\n"
        cat = catalog(cloud)
        copy = cat.get(new)
        assert (copy.parent_id, copy.size, copy.readonly) == (0, 32 * MIB, False)
        assert cat.get(src) == before
        assert cloud.cluster.read(new, 0, 3 * 4096) == b"A" * 4096 + C + bytes(4096)
        if cloud.cluster.simulated:
            assert cloud.cluster.allocated(new) == 8192  # the data was copied, not read through
        # no parent_id; meta names the source, so a retry knows the copy is its own
        assert etcd_value(cloud, f"/config/inode/{copy.pool_id}/{copy.id}") == (
            '{"meta": {"onevita_copy_of": "%s"}, "name": "%s", "size": %d}' % (src, new, 32 * MIB)).encode()
        assert orjson.loads(etcd_value(cloud, f"/index/image/{new}") or b"") == {
            "id": copy.id, "pool_id": copy.pool_id}
        # independent: writing the source no longer shows through
        cloud.cluster.write(src, 0, B)
        assert cloud.cluster.read(new, 0, 4096) == b"A" * 4096

    def test_clone_retry_is_success_and_changes_nothing(self, cloud: Cloud) -> None:
        src, new = f"{cloud.prefix}-5", f"{cloud.prefix}-9"
        make_image(cloud, src, data=A)
        stdin = image_data(cloud, 9, path=src, persistent=False)
        cloud.ok("datastore/clone", "9", stdin=stdin)
        before = catalog(cloud).inodes
        result = cloud.ok("datastore/clone", "9", stdin=stdin)
        assert result.stdout == f"{new} raw\n"
        assert catalog(cloud).inodes == before
        assert cloud.cluster.read(new, 0, 8192) == A

    def test_clone_finishes_an_interrupted_copy(self, cloud: Cloud) -> None:
        """A child of the source left by a run stopped before flatten is flattened, not duplicated."""
        src, new = f"{cloud.prefix}-5", f"{cloud.prefix}-9"
        make_image(cloud, src, data=A)
        make_image(cloud, new, parent=src)
        cloud.ok("datastore/clone", "9", stdin=image_data(cloud, 9, path=src, persistent=False))
        assert catalog(cloud).get(new).parent_id == 0
        assert cloud.cluster.read(new, 0, 8192) == A
        assert names(cloud) == {src, new}

    def test_clone_onto_a_foreign_image_fails(self, cloud: Cloud) -> None:
        src, new = f"{cloud.prefix}-5", f"{cloud.prefix}-9"
        make_image(cloud, src, data=A)
        make_image(cloud, new, data=B)
        result = cloud.run("datastore/clone", "9", stdin=image_data(cloud, 9, path=src, persistent=False))
        assert result.rc == 1
        assert result.reason == f"Vitastor image {new} already exists and is not a copy of {src}"
        assert cloud.cluster.read(new, 0, 4096) == B

    def test_clone_of_a_missing_image_fails(self, cloud: Cloud) -> None:
        src = f"{cloud.prefix}-5"
        result = cloud.run("datastore/clone", "9", stdin=image_data(cloud, 9, path=src, persistent=False))
        assert (result.rc, result.stdout, result.reason) == (1, "", f"Vitastor image {src} does not exist")
        assert names(cloud) == set()


# stat -----------------------------------------------------------------------------------------
def qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True)


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


class TestStat:
    def stat(self, cloud: Cloud, path: str) -> str:
        result = cloud.ok("datastore/stat", "3", stdin=image_data(cloud, -1, path=path, persistent=False))
        return result.stdout

    def test_raw_file(self, cloud: Cloud, tmp_path: Path) -> None:
        qemu_img("create", "-f", "raw", str(tmp_path / "disk.raw"), "10M")
        assert self.stat(cloud, str(tmp_path / "disk.raw")) == "10\n"

    def test_size_is_rounded_up_to_whole_mb(self, cloud: Cloud, tmp_path: Path) -> None:
        qemu_img("create", "-f", "raw", str(tmp_path / "disk.raw"), "1537K")
        assert self.stat(cloud, str(tmp_path / "disk.raw")) == "2\n"

    def test_qcow2_file_reports_its_virtual_size(self, cloud: Cloud, tmp_path: Path) -> None:
        raw, qcow2 = tmp_path / "disk.raw", tmp_path / "disk.qcow2"
        qemu_img("create", "-f", "raw", str(raw), "300M")
        qemu_img("convert", "-f", "raw", "-O", "qcow2", str(raw), str(qcow2))
        assert qcow2.stat().st_size < MIB  # the file is small; its virtual size is not
        assert self.stat(cloud, str(qcow2)) == "300\n"

    def test_http_url_content_length(self, cloud: Cloud, http_url: str) -> None:
        assert self.stat(cloud, f"{http_url}/{5 * MIB + 1}") == "6\n"
        assert self.stat(cloud, f"{http_url}/{7 * MIB}") == "7\n"

    def test_http_url_without_content_length_fails(self, cloud: Cloud, http_url: str) -> None:
        result = cloud.run("datastore/stat", "3", stdin=image_data(cloud, -1, path=f"{http_url}/none"))
        assert (result.rc, result.reason) == (1, f"{http_url}/none does not report its size (no Content-Length)")

    @pytest.mark.parametrize("path", ["ftp://example.com/disk.img", "disk.img", "vitastor://bridge1/one-5"])
    def test_unsupported_path(self, cloud: Cloud, path: str) -> None:
        result = cloud.run("datastore/stat", "3", stdin=image_data(cloud, -1, path=path))
        assert (result.rc, result.stdout, result.reason) == (1, "", f"unsupported image PATH {path!r}")
        assert result.errors

    def test_missing_file(self, cloud: Cloud, tmp_path: Path) -> None:
        path = str(tmp_path / "nothing.img")
        result = cloud.run("datastore/stat", "3", stdin=image_data(cloud, -1, path=path))
        assert result.rc == 1
        assert result.reason.startswith(f"cannot read image {path}: ")

    def test_no_path(self, cloud: Cloud) -> None:
        result = cloud.run("datastore/stat", "3", stdin=image_data(cloud, -1, path=""))
        assert (result.rc, result.reason) == (1, "stat needs IMAGE/PATH")
