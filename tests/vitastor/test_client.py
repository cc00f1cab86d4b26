"""The data plane: the C copy loops through libvitastor_client, on the simulated library."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from onevita.errors import ClusterUnreachable, ConfigError, ImageNotFound, OnevitaError
from onevita.vitastor.config import read_config
from tests.sim.cluster import SimCluster

try:  # the stand-in for libvitastor_client, built once per session
    from tests.sim.conftest import sim_libvitastor  # noqa: F401
except ImportError:
    @pytest.fixture(scope="session")
    def sim_libvitastor() -> str:
        pytest.skip("tests/sim has no libvitastor_client stand-in yet")

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "onevita" / "vitastor"
MIB = 1 << 20
BLOCK = 128 << 10

FAKE_LIBRARY = r"""
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
typedef void cb_t(void *, long);
void *vitastor_c_create_uring_json(const char **options, int n) {
    for (int i = 0; i + 1 < n; i += 2)
        if (!strcmp(options[i], "__version_check_buffer")) strcpy((char *)options[i + 1], VERSION);
#ifdef EXIT_IN_CREATE
    fprintf(stderr, "Failed to connect to etcd: simulated\n");
    exit(1);
#endif
    return malloc(1);
}
void vitastor_c_destroy(void *c) { free(c); }
void vitastor_c_uring_handle_events(void *c) { (void)c; }
void vitastor_c_uring_wait_events(void *c) { (void)c; }
void vitastor_c_read(void) {}
void vitastor_c_write(void) {}
void vitastor_c_read_bitmap(void) {}
void vitastor_c_sync(void) {}
void vitastor_c_watch_inode(void *c, char *name, cb_t *cb, void *opaque) { (void)c; (void)name; cb(opaque, 0); }
void vitastor_c_close_watch(void) {}
uint64_t vitastor_c_inode_get_size(void *h) { (void)h; return 0; }
uint64_t vitastor_c_inode_get_num(void *h) { (void)h; return 0; }
int vitastor_c_inode_get_readonly(void *h) { (void)h; return 0; }
uint32_t vitastor_c_inode_get_block_size(void *c, uint64_t n) { (void)c; (void)n; return 0; }
uint32_t vitastor_c_inode_get_bitmap_granularity(void *c, uint64_t n) { (void)c; (void)n; return 0; }
"""


@pytest.fixture(scope="session", autouse=True)
def binding() -> None:
    """The helper .so and the cffi module in src/ (build.py --inplace), rebuilt when csrc/ is newer."""
    built = [PACKAGE / "_ffi.py", PACKAGE / "_lib" / "libonevita_vitastor.so"]
    sources = list((ROOT / "csrc").iterdir())
    if not all(p.exists() for p in built) or (
            max(p.stat().st_mtime for p in sources) > min(p.stat().st_mtime for p in built)):
        subprocess.run([sys.executable, str(ROOT / "build.py"), "--inplace"], check=True)


@pytest.fixture()
def sim(sim_libvitastor: str, monkeypatch: pytest.MonkeyPatch, cluster: SimCluster) -> SimCluster:
    """The test's cluster with its libvitastor_client: the stand-in library on a simulated
    cluster, the system's (as the actions load it) on a real one."""
    if cluster.simulated:
        monkeypatch.setenv("ONEVITA_LIBVITASTOR", str(sim_libvitastor))
    else:
        monkeypatch.delenv("ONEVITA_LIBVITASTOR", raising=False)
    return cluster


@pytest.fixture()
def img(image_prefix: str) -> str:
    """The name of the test's image (under its own prefix)."""
    return f"{image_prefix}-img"


def fake_library(tmp_path: Path, version: str, *, exits: bool = False) -> str:
    """A tiny libvitastor_client look-alike reporting ``version`` (and exiting in create)."""
    source, library = tmp_path / "fake.c", tmp_path / f"libfake-{version}-{int(exits)}.so"
    source.write_text(FAKE_LIBRARY)
    defines = [f'-DVERSION="{version}"', *(["-DEXIT_IN_CREATE"] if exits else [])]
    subprocess.run(["gcc", "-shared", "-fPIC", *defines, "-o", str(library), str(source)], check=True)
    return str(library)


def create(cluster: SimCluster, name: str, size: int) -> None:
    catalog = cluster.catalog()
    catalog.create(name, size, catalog.pool("testpool"))


def sample(size: int) -> bytes:
    """Random data with a hole, zero blocks and a zero granule inside data, ``size`` bytes."""
    data = bytearray(os.urandom(size))
    data[BLOCK:3 * BLOCK] = bytes(2 * BLOCK)            # two whole zero blocks
    data[5 * BLOCK + 4096:5 * BLOCK + 8192] = bytes(4096)  # one zero granule among data
    data[8 * BLOCK:size // 2] = bytes(size // 2 - 8 * BLOCK)
    return bytes(data)


def write_sparse(path: Path, data: bytes) -> None:
    """``data`` as a sparse file: runs of zeros of 64 KiB and more stay holes."""
    with open(path, "wb") as f:
        step = 64 << 10
        for offset in range(0, len(data), step):
            chunk = data[offset:offset + step]
            if chunk.count(0) != len(chunk):
                f.seek(offset)
                f.write(chunk)
        f.truncate(len(data))


def feed(fd: int, data: bytes) -> None:
    """Write all of ``data`` to the pipe ``fd``, then close it: a write into a pipe may take
    only part of the data (on a real cluster one of 3 MiB stopped at 64 KiB now and then)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    os.close(fd)


def nonzero_granules(data: bytes) -> int:
    return sum(1 for o in range(0, len(data), 4096) if data[o:o + 4096].count(0) != len(data[o:o + 4096]))


def nonzero_bytes(data: bytes) -> int:
    return sum(len(data[o:o + 4096]) for o in range(0, len(data), 4096) if data[o:o + 4096].count(0) != len(data[o:o + 4096]))


def round_up(value: int, align: int = 4096) -> int:
    return -(-value // align) * align


class TestBinding:
    def test_one_trivial_call_through_the_binding(self) -> None:
        """The ABI-mode module loads the helper .so and calls into it (argon2-cffi's smoke test)."""
        from onevita.vitastor import client

        _ffi, lib = client._helper()
        assert lib.ov_abi_version() == 1

    def test_metadata_modules_do_not_load_the_binding(self) -> None:
        code = ("import sys, onevita.vitastor.catalog, onevita.vitastor.jobs; "
                "print('onevita.vitastor._ffi' in sys.modules or 'onevita.vitastor.client' in sys.modules)")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        assert out.stdout.strip() == "False"


class TestFindLibrary:
    """libvitastor_client is found as the dynamic linker finds its soname, then in the usual
    folders; ONEVITA_LIBVITASTOR overrides both."""

    @staticmethod
    def soname_copy(sim_libvitastor: Path, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        target = directory / "libvitastor_client.so.0"
        target.write_bytes(Path(sim_libvitastor).read_bytes())
        return target

    def test_ld_library_path(self, sim_libvitastor: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        from onevita.vitastor.client import find_library

        target = self.soname_copy(sim_libvitastor, tmp_path / "lib")
        monkeypatch.delenv("ONEVITA_LIBVITASTOR", raising=False)
        monkeypatch.setenv("LD_LIBRARY_PATH", f"/nonexistent:{target.parent}")
        assert find_library() == str(target)
        monkeypatch.setenv("ONEVITA_LIBVITASTOR", str(sim_libvitastor))
        assert find_library() == str(sim_libvitastor)

    def test_only_in_the_dynamic_linkers_cache(self, sim_libvitastor: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
        """Where Vitastor's own make install puts it (/usr/local/lib/<triplet>), which no fixed
        folder list has: a folder known to the machine's ld.so.cache only."""
        from onevita.vitastor.client import _from_dynamic_linker, find_library

        if os.geteuid() != 0:
            pytest.skip("needs root to add a folder to ld.so.conf.d")
        monkeypatch.delenv("ONEVITA_LIBVITASTOR", raising=False)
        monkeypatch.delenv("LD_LIBRARY_PATH", raising=False)
        installed = _from_dynamic_linker()
        if installed is not None:  # the real cluster kit's make install: found the same way
            assert find_library() == installed
            pytest.skip(f"this machine's ld.so.cache already has {installed}")
        target = self.soname_copy(sim_libvitastor, tmp_path / "x86_64-linux-gnu")
        conf = Path(f"/etc/ld.so.conf.d/onevita-test-{os.getpid()}.conf")
        conf.write_text(f"{target.parent}\n")
        try:
            subprocess.run(["/sbin/ldconfig"], check=True)
            assert find_library() == str(target)
        finally:
            conf.unlink()
            subprocess.run(["/sbin/ldconfig"], check=True)
        assert _from_dynamic_linker() is None


class TestRoundTrip:
    @pytest.mark.parametrize("queue_depth", [1, 32])
    def test_file_image_file_is_byte_exact_and_sparse(self, sim: SimCluster, img: str, tmp_path: Path,
                                                      queue_depth: int) -> None:
        """An unaligned sparse file goes in and comes back byte for byte; holes and zero
        granules are written neither into the image nor into the exported file."""
        from onevita.vitastor import client

        data = sample(4 * MIB + 1234)
        source, target = tmp_path / "in.raw", tmp_path / "out.raw"
        write_sparse(source, data)
        create(sim, img, round_up(len(data)))
        written = client.import_file(sim.config, source, img, queue_depth=queue_depth)
        assert written == nonzero_granules(data) * 4096
        assert sim.allocated(img) == written
        assert sim.read(img, 0, len(data)) == data
        assert client.export_to_file(sim.config, img, target, size=len(data),
                                     queue_depth=queue_depth) == nonzero_bytes(data)
        assert target.read_bytes() == data
        assert os.stat(target).st_blocks * 512 <= round_up(nonzero_granules(data) * 4096, BLOCK) + BLOCK

    def test_whole_image_export_ends_with_the_padding(self, sim: SimCluster, img: str, tmp_path: Path) -> None:
        from onevita.vitastor import client

        data = os.urandom(10000)
        (tmp_path / "in").write_bytes(data)
        create(sim, img, 3 * 4096)
        client.import_file(sim.config, tmp_path / "in", img, progress=False)
        client.export_to_file(sim.config, img, tmp_path / "out", progress=False)
        assert (tmp_path / "out").read_bytes() == data + bytes(3 * 4096 - len(data))

    def test_progress_reaches_the_log(self, sim: SimCluster, img: str, tmp_path: Path,
                                      capfd: pytest.CaptureFixture[str]) -> None:
        from onevita.vitastor import client

        (tmp_path / "in").write_bytes(os.urandom(2 * MIB))
        create(sim, img, 2 * MIB)
        client.import_file(sim.config, tmp_path / "in", img)
        lines = capfd.readouterr().err.splitlines()
        assert any(line.startswith("INFO:") and f"import into {img}: 50%" in line for line in lines)
        assert any(line.startswith("INFO:") and "done, 2097152 bytes written" in line for line in lines)


class TestStreams:
    def test_pipe_in_and_pipe_out(self, sim: SimCluster, img: str, tmp_path: Path) -> None:
        """A pipe is read sequentially (zero blocks still skipped) and an export to a pipe
        carries every byte, zeros included, in order."""
        from onevita.vitastor import client

        data = sample(3 * MIB + 512)
        create(sim, img, round_up(len(data)))
        read_end, write_end = os.pipe()
        feeder = threading.Thread(target=feed, args=(write_end, data))
        feeder.start()
        try:
            written = client.import_fd(sim.config, read_end, img, progress=False)
        finally:
            feeder.join()
            os.close(read_end)
        assert written == nonzero_granules(data) * 4096
        assert sim.allocated(img) == written

        read_end, write_end = os.pipe()
        chunks: list[bytes] = []

        def drain() -> None:
            while chunk := os.read(read_end, 1 << 20):
                chunks.append(chunk)

        reader = threading.Thread(target=drain)
        reader.start()
        try:
            assert client.export_to_file(sim.config, img, write_end, size=len(data), progress=False) == len(data)
        finally:
            os.close(write_end)
            reader.join()
            os.close(read_end)
        assert b"".join(chunks) == data


class TestCopyImage:
    def test_copy_through_a_snapshot_chain(self, sim: SimCluster, image_prefix: str) -> None:
        """The copy holds what the source reads through its parents, and only that."""
        from onevita.vitastor import client

        disk, copy = f"{image_prefix}-disk", f"{image_prefix}-copy"
        sim.write(disk, 0, os.urandom(BLOCK))
        sim.write(disk, 4 * BLOCK, os.urandom(8192))
        catalog = sim.catalog()
        catalog.modify(catalog.get(disk), size=1 * MIB)
        sim.catalog().snapshot(disk, "1")
        sim.write(disk, 4096, bytes(4096))  # zeros hiding the parent's data
        sim.write(disk, 6 * BLOCK, os.urandom(5000))
        create(sim, copy, 1 * MIB)
        written = client.copy_image(sim.config, disk, copy, progress=False)
        expected = sim.read(disk, 0, MIB)
        assert sim.read(copy, 0, MIB) == expected
        assert written == nonzero_granules(expected) * 4096 == sim.allocated(copy)

    def test_a_smaller_target_is_refused(self, sim: SimCluster, image_prefix: str) -> None:
        from onevita.vitastor import client

        big, small = f"{image_prefix}-big", f"{image_prefix}-small"
        sim.write(big, 0, os.urandom(2 * BLOCK))
        create(sim, small, BLOCK)
        with pytest.raises(OnevitaError, match=f"do not fit in Vitastor image {small}"):
            client.copy_image(sim.config, big, small, progress=False)
        assert sim.allocated(small) == 0

    def test_a_missing_image_is_image_not_found(self, sim: SimCluster, tmp_path: Path, image_prefix: str) -> None:
        from onevita.vitastor import client

        with pytest.raises(ImageNotFound, match=f"{image_prefix}-nothere does not exist"):
            client.export_to_file(sim.config, f"{image_prefix}-nothere", tmp_path / "out", progress=False)


class TestFailures:
    def test_missing_library(self, cluster: SimCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        from onevita.vitastor import client

        monkeypatch.setenv("ONEVITA_LIBVITASTOR", str(tmp_path / "libvitastor_client.so"))
        with pytest.raises(ConfigError, match="ONEVITA_LIBVITASTOR=.*: no such file"):
            client.copy_image(cluster.config, "a", "b")
        monkeypatch.delenv("ONEVITA_LIBVITASTOR")
        monkeypatch.setattr(client, "LIBRARY_DIRS", (str(tmp_path),))
        monkeypatch.setattr(client, "_from_dynamic_linker", lambda: None)  # a machine whose linker has none
        with pytest.raises(ConfigError, match="libvitastor_client.so not found .*vitastor-client"):
            client.copy_image(cluster.config, "a", "b")

    def test_too_old_library_is_refused(self, cluster: SimCluster, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
        from onevita.vitastor import client

        monkeypatch.setenv("ONEVITA_LIBVITASTOR", fake_library(tmp_path, "1.10.0"))
        with pytest.raises(ConfigError, match=r"version 1\.10\.0: onevita needs Vitastor 1\.11 or newer"):
            client.copy_image(cluster.config, "a", "b", progress=False)

    def test_unreachable_etcd_is_reported_before_the_library_starts(
            self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        from onevita.vitastor import client

        monkeypatch.setenv("ONEVITA_LIBVITASTOR", fake_library(tmp_path, "3.0.8", exits=True))
        conf_path = tmp_path / "vitastor.conf"
        conf_path.write_text('{"etcd_address": "127.0.0.1:1"}')
        with pytest.raises(ClusterUnreachable, match="not starting libvitastor_client"):
            client.copy_image(read_config(str(conf_path)), "a", "b", progress=False)

    def test_exit_inside_the_library_becomes_an_error(self, cluster: SimCluster, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
        """The library's exit(1) ends the forked child only; its last words are in the message."""
        from onevita.vitastor import client

        monkeypatch.setenv("ONEVITA_LIBVITASTOR", fake_library(tmp_path, "3.0.8", exits=True))
        with pytest.raises(OnevitaError, match="Vitastor client library exited with status 1 during copy of a "
                                               "to b: Failed to connect to etcd: simulated"):
            client.copy_image(cluster.config, "a", "b", progress=False)

    def test_a_file_larger_than_the_image_is_refused(self, sim: SimCluster, img: str, tmp_path: Path) -> None:
        from onevita.vitastor import client

        (tmp_path / "in").write_bytes(os.urandom(BLOCK + 1))
        create(sim, img, BLOCK)
        with pytest.raises(OnevitaError, match=f"131073 bytes do not fit in Vitastor image {img}"):
            client.import_file(sim.config, tmp_path / "in", img, progress=False)
