"""datastore/cp through its dist/remotes link, in both job modes: the image data fetched on the
front-end (a local file or an http URL), streamed to the job and written into the new image."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import http.server
import json
import lzma
import os
import subprocess
import threading
from pathlib import Path
from typing import Callable, Iterator

import pytest

from tests.cloud import Cloud
from tests.datastore.util import MIB, catalog, image_data, names

CHUNK = b"".join(bytes([i]) * 4096 for i in range(1, 17))  # 64 KiB of distinct granules


def sparse_raw(path: Path, size: int = 4 * MIB) -> bytes:
    """A raw file of ``size`` bytes, data at a few places and holes elsewhere; its bytes."""
    with open(path, "wb") as f:
        f.truncate(size)
        for offset in (0, MIB + 8192, size - len(CHUNK)):
            f.seek(offset)
            f.write(CHUNK)
    return path.read_bytes()


def cp(cloud: Cloud, path: str, *, size_mb: int = 4, template: dict[str, str] | None = None,
       **ds: str) -> tuple[int, str, str]:
    """Run cp 7 for IMAGE/PATH ``path``; (rc, stdout, reason)."""
    if ds:
        cloud.add_datastores(**ds)
    result = cloud.run("datastore/cp", "7", stdin=image_data(cloud, 7, path=path, size_mb=size_mb,
                                                             template=template or {}))
    return result.rc, result.stdout, result.reason


def staging_files(staging: Path) -> list[str]:
    return sorted(p.name for p in staging.iterdir())


def qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True)


class TestRaw:
    def test_raw_file_byte_exact_and_sparse(self, cloud: Cloud, tmp_path: Path, staging: Path) -> None:
        """The image has the file's bytes; holes are not written; nothing is staged."""
        data = sparse_raw(tmp_path / "disk.raw")
        rc, out, reason = cp(cloud, str(tmp_path / "disk.raw"))
        assert (rc, out, reason) == (0, f"{cloud.prefix}-7 raw\n", "")
        name = f"{cloud.prefix}-7"
        assert names(cloud) == {name}
        assert catalog(cloud).get(name).size == 4 * MIB
        assert cloud.cluster.read(name, 0, 4 * MIB) == data
        assert cloud.cluster.allocated(name) == 3 * len(CHUNK)
        assert staging_files(staging) == []

    def test_size_not_whole_mb_pads_with_zeros(self, cloud: Cloud, tmp_path: Path) -> None:
        (tmp_path / "disk.raw").write_bytes(b"x" * 5000)
        assert cp(cloud, str(tmp_path / "disk.raw"), size_mb=1)[0] == 0
        assert cloud.cluster.read(f"{cloud.prefix}-7", 0, 8192) == b"x" * 5000 + bytes(3192)

    def test_longer_than_size_fails_and_leaves_nothing(self, cloud: Cloud, tmp_path: Path) -> None:
        (tmp_path / "disk.raw").write_bytes(b"x" * (MIB + 1))
        rc, out, reason = cp(cloud, str(tmp_path / "disk.raw"), size_mb=1)
        assert (rc, out, reason) == (1, "", "the image data is longer than IMAGE/SIZE (1 MB)")
        assert names(cloud) == set()

    def test_existing_image_is_not_overwritten(self, cloud: Cloud, tmp_path: Path) -> None:
        """OpenNebula never reuses image ids: an image with the new name is someone else's."""
        sparse_raw(tmp_path / "disk.raw")
        cat = catalog(cloud)
        cat.create(f"{cloud.prefix}-7", MIB, cat.pool(cloud.pool))
        rc, _, reason = cp(cloud, str(tmp_path / "disk.raw"))
        assert (rc, reason) == (1, f"Vitastor image {cloud.prefix}-7 already exists; OpenNebula never "
                                   "reuses image ids, so it holds other data: remove it first")
        assert catalog(cloud).get(f"{cloud.prefix}-7").size == MIB

    def test_leftover_of_an_interrupted_import_is_replaced(self, cloud: Cloud, tmp_path: Path) -> None:
        data = sparse_raw(tmp_path / "disk.raw")
        cat = catalog(cloud)
        cat.create(f"{cloud.prefix}-7.importing", MIB, cat.pool(cloud.pool))
        assert cp(cloud, str(tmp_path / "disk.raw"))[0] == 0
        assert names(cloud) == {f"{cloud.prefix}-7"}
        assert cloud.cluster.read(f"{cloud.prefix}-7", 0, 4 * MIB) == data


COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {"gzip": gzip.compress, "bzip2": bz2.compress,
                                                    "xz": lzma.compress}


class TestCompressed:
    @pytest.mark.parametrize("kind", sorted(COMPRESSORS))
    def test_compressed_raw_is_decompressed(self, cloud: Cloud, tmp_path: Path, kind: str) -> None:
        data = sparse_raw(tmp_path / "disk.raw")
        (tmp_path / "disk.z").write_bytes(COMPRESSORS[kind](data))
        assert cp(cloud, str(tmp_path / "disk.z"))[0] == 0
        assert cloud.cluster.read(f"{cloud.prefix}-7", 0, 4 * MIB) == data

    def test_no_decompress_keeps_the_bytes(self, cloud: Cloud, tmp_path: Path) -> None:
        packed = gzip.compress(sparse_raw(tmp_path / "disk.raw"))
        (tmp_path / "disk.gz").write_bytes(packed)
        assert cp(cloud, str(tmp_path / "disk.gz"), NO_DECOMPRESS="yes")[0] == 0
        assert cloud.cluster.read(f"{cloud.prefix}-7", 0, len(packed)) == packed


class TestChecksum:
    @pytest.mark.parametrize("algo", ["MD5", "SHA1"])
    def test_right_checksum_of_the_compressed_file(self, cloud: Cloud, tmp_path: Path, algo: str) -> None:
        packed = gzip.compress(sparse_raw(tmp_path / "disk.raw"))
        (tmp_path / "disk.gz").write_bytes(packed)
        digest = hashlib.new(algo.lower(), packed).hexdigest()
        assert cp(cloud, str(tmp_path / "disk.gz"), template={algo: digest})[0] == 0

    @pytest.mark.parametrize("algo", ["MD5", "SHA1"])
    def test_wrong_checksum_fails_and_leaves_nothing(self, cloud: Cloud, tmp_path: Path, staging: Path,
                                                     algo: str) -> None:
        sparse_raw(tmp_path / "disk.raw")
        real = hashlib.new(algo.lower(), (tmp_path / "disk.raw").read_bytes()).hexdigest()
        wrong = "0" * len(real)
        rc, out, reason = cp(cloud, str(tmp_path / "disk.raw"), template={algo: wrong})
        assert (rc, out) == (1, "")
        assert reason == (f"checksum mismatch: {algo} of {tmp_path / 'disk.raw'} is {real}, "
                          f"the image template says {wrong}")
        assert names(cloud) == set()
        assert staging_files(staging) == []

    def test_wrong_checksum_of_a_qcow2_leaves_no_staging_file(self, cloud: Cloud, tmp_path: Path,
                                                              staging: Path) -> None:
        sparse_raw(tmp_path / "disk.raw")
        qemu_img("convert", "-f", "raw", "-O", "qcow2", str(tmp_path / "disk.raw"), str(tmp_path / "d.qcow2"))
        rc, _, reason = cp(cloud, str(tmp_path / "d.qcow2"), template={"MD5": "0" * 32})
        assert rc == 1 and reason.startswith("checksum mismatch: MD5 of ")
        assert names(cloud) == set()
        assert staging_files(staging) == []


class TestConverted:
    def test_qcow2_becomes_the_same_bytes(self, cloud: Cloud, tmp_path: Path, staging: Path) -> None:
        data = sparse_raw(tmp_path / "disk.raw", size=6 * MIB + 4096)
        qemu_img("convert", "-f", "raw", "-O", "qcow2", str(tmp_path / "disk.raw"), str(tmp_path / "d.qcow2"))
        rc, out, _ = cp(cloud, str(tmp_path / "d.qcow2"), size_mb=1)  # the virtual size counts
        assert (rc, out) == (0, f"{cloud.prefix}-7 raw\n")
        name = f"{cloud.prefix}-7"
        assert catalog(cloud).get(name).size == 6 * MIB + 4096
        assert cloud.cluster.read(name, 0, len(data)) == data
        assert cloud.cluster.allocated(name) == 3 * len(CHUNK)
        assert staging_files(staging) == []

    def test_gzipped_qcow2(self, cloud: Cloud, tmp_path: Path) -> None:
        data = sparse_raw(tmp_path / "disk.raw")
        qemu_img("convert", "-f", "raw", "-O", "qcow2", str(tmp_path / "disk.raw"), str(tmp_path / "d.qcow2"))
        (tmp_path / "d.qcow2.gz").write_bytes(gzip.compress((tmp_path / "d.qcow2").read_bytes()))
        assert cp(cloud, str(tmp_path / "d.qcow2.gz"))[0] == 0
        assert cloud.cluster.read(f"{cloud.prefix}-7", 0, len(data)) == data

    def test_truncated_qcow2_fails_clearly(self, cloud: Cloud, tmp_path: Path, staging: Path) -> None:
        sparse_raw(tmp_path / "disk.raw")
        qemu_img("convert", "-f", "raw", "-O", "qcow2", str(tmp_path / "disk.raw"), str(tmp_path / "d.qcow2"))
        whole = (tmp_path / "d.qcow2").read_bytes()
        (tmp_path / "d.qcow2").write_bytes(whole[:len(whole) // 2])
        rc, out, reason = cp(cloud, str(tmp_path / "d.qcow2"))
        assert (rc, out) == (1, "")
        assert reason.startswith("the qcow2 image is damaged (qemu-img check exit 2): ")
        assert names(cloud) == set()
        assert staging_files(staging) == []

    def test_garbage_after_a_qcow2_magic_fails_clearly(self, cloud: Cloud, tmp_path: Path) -> None:
        (tmp_path / "d.qcow2").write_bytes(b"QFI\xfb" + b"\xff" * 8188)
        rc, _, reason = cp(cloud, str(tmp_path / "d.qcow2"))
        assert rc == 1 and reason.startswith("cannot convert the qcow2 image to raw: qemu-img info ")
        assert names(cloud) == set()

    def test_qcow2_with_a_backing_file_is_refused(self, cloud: Cloud, tmp_path: Path, staging: Path) -> None:
        """qemu-img would read the backing file from the bridge host's disk."""
        secret = tmp_path / "secret.raw"
        secret.write_bytes(b"s" * 65536)
        qemu_img("create", "-f", "qcow2", "-b", str(secret), "-F", "raw", str(tmp_path / "d.qcow2"))
        rc, _, reason = cp(cloud, str(tmp_path / "d.qcow2"))
        assert (rc, reason) == (1, f"refusing the qcow2 image: it refers to other files ({secret})")
        assert names(cloud) == set()
        assert staging_files(staging) == []

    def test_full_staging_dir_fails_and_is_cleaned(self, cloud: Cloud, tmp_path: Path,
                                                   tiny_staging: Path) -> None:
        with open(tmp_path / "disk.raw", "wb") as f:
            f.write(os.urandom(3 * MIB))
        qemu_img("convert", "-f", "raw", "-O", "qcow2", str(tmp_path / "disk.raw"), str(tmp_path / "d.qcow2"))
        rc, _, reason = cp(cloud, str(tmp_path / "d.qcow2"))
        assert (rc, reason) == (1, f"cannot write the staging file in {tiny_staging}: No space left on device")
        assert names(cloud) == set()
        assert staging_files(tiny_staging) == []


class TestStagingAndFailures:
    def test_raw_larger_than_the_staging_space_imports(self, cloud: Cloud, tmp_path: Path,
                                                       tiny_staging: Path) -> None:
        """Raw data is never staged: a 3 MiB image imports with a 1 MiB STAGING_DIR."""
        data = os.urandom(3 * MIB)
        (tmp_path / "disk.raw").write_bytes(data)
        rc, out, reason = cp(cloud, str(tmp_path / "disk.raw"), size_mb=3)
        assert (rc, out, reason) == (0, f"{cloud.prefix}-7 raw\n", "")
        assert cloud.cluster.read(f"{cloud.prefix}-7", 0, 3 * MIB) == data
        assert staging_files(tiny_staging) == []

    def test_cluster_gone_mid_copy_leaves_no_image(self, cloud: Cloud, tmp_path: Path) -> None:
        """Writes start failing with EIO after 1 MiB (the simulated library's fault injection,
        an OSD going away): the action fails clearly and removes the half-written image."""
        if not cloud.cluster.simulated:
            pytest.skip("fault injection needs the simulated cluster")
        conf = json.loads(cloud.cluster.config_path.read_text())
        (tmp_path / "disk.raw").write_bytes(os.urandom(4 * MIB))
        cloud.cluster.config_path.write_text(json.dumps({**conf, "sim_fail_writes_after": MIB}))
        try:
            rc, out, reason = cp(cloud, str(tmp_path / "disk.raw"))
        finally:
            cloud.cluster.config_path.write_text(json.dumps(conf))
        assert (rc, out) == (1, "")
        assert reason == (f"import into {cloud.prefix}-7.importing failed: writing the image at offset 1048576: "
                          "Input/output error")
        assert names(cloud) == set()


class TestRestricted:
    def test_restricted_dir_is_refused(self, cloud: Cloud, tmp_path: Path) -> None:
        sparse_raw(tmp_path / "disk.raw")
        rc, _, reason = cp(cloud, str(tmp_path / "disk.raw"), RESTRICTED_DIRS=f"{tmp_path}/")
        one = cloud.env["ONE_LOCATION"]
        assert (rc, reason) == (1, f"Not allowed to copy images from {one}/var/ {one}/etc/ "
                                   f"{cloud.env['HOME']}/ {tmp_path}/")
        assert names(cloud) == set()

    def test_symlink_into_a_restricted_dir_is_refused(self, cloud: Cloud, tmp_path: Path) -> None:
        (tmp_path / "secret").mkdir()
        sparse_raw(tmp_path / "secret" / "disk.raw")
        (tmp_path / "link.raw").symlink_to(tmp_path / "secret" / "disk.raw")
        rc, _, reason = cp(cloud, str(tmp_path / "link.raw"), RESTRICTED_DIRS=f"{tmp_path}/secret/")
        assert rc == 1 and reason.startswith("Not allowed to copy images from ")

    def test_safe_dirs_win(self, cloud: Cloud, tmp_path: Path) -> None:
        data = sparse_raw(tmp_path / "disk.raw")
        rc, _, _ = cp(cloud, str(tmp_path / "disk.raw"), RESTRICTED_DIRS=f"{tmp_path}/",
                      SAFE_DIRS=f"{tmp_path}/")
        assert rc == 0
        assert cloud.cluster.read(f"{cloud.prefix}-7", 0, 4 * MIB) == data

    def test_missing_file(self, cloud: Cloud, tmp_path: Path) -> None:
        rc, _, reason = cp(cloud, str(tmp_path / "nothing.raw"))
        assert (rc, reason) == (1, f"cannot open {tmp_path / 'nothing.raw'}: No such file or directory")


class _Files(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture()
def web(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """An http server for the files in a directory; (base URL, directory)."""
    root = tmp_path / "www"
    root.mkdir()
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), lambda *a: _Files(*a, directory=str(root)))  # type: ignore[misc]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class TestHttp:
    def test_http_url(self, cloud: Cloud, web: tuple[str, Path]) -> None:
        url, root = web
        data = sparse_raw(root / "disk.raw")
        (root / "disk.xz").write_bytes(lzma.compress(data))
        assert cp(cloud, f"{url}/disk.xz")[0] == 0
        assert cloud.cluster.read(f"{cloud.prefix}-7", 0, 4 * MIB) == data

    def test_missing_url(self, cloud: Cloud, web: tuple[str, Path]) -> None:
        url, _ = web
        rc, _, reason = cp(cloud, f"{url}/nothing")
        assert (rc, reason) == (1, f"cannot download {url}/nothing: HTTP 404 File not found")
        assert names(cloud) == set()

    def test_unreachable_url(self, cloud: Cloud) -> None:
        rc, _, reason = cp(cloud, "http://127.0.0.1:9/disk.raw")
        assert (rc, reason) == (1, "cannot download http://127.0.0.1:9/disk.raw: [Errno 111] Connection refused")

    def test_unsupported_path(self, cloud: Cloud) -> None:
        rc, _, reason = cp(cloud, "ftp://example.com/disk.raw")
        assert (rc, reason) == (1, "unsupported image PATH 'ftp://example.com/disk.raw'")
