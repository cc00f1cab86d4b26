"""The simulated libvitastor_client (libvitastor_client_sim.c) through cffi, against a real etcd:
it sees the same images and bytes as the Python stand-in (vitastor-cli dd), in both directions
and through snapshot chains, and keeps the real library's rules (EROFS, EINVAL, bitmaps, exit(1))."""

from __future__ import annotations

import base64
import json
import os
import random
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import pytest
from cffi import FFI

from tests.harness._process import free_ports
from tests.sim.build_sim_lib import build
from tests.sim.cluster import SimCluster

KIB, MIB = 1 << 10, 1 << 20
OBJECT = 128 * KIB

pytestmark = pytest.mark.skipif(bool(os.environ.get("ONEVITA_TEST_VITASTOR_CONF")),
                                reason="tests of the simulation itself (they expect an empty cluster)")

CDEF = """
typedef struct vitastor_c vitastor_c;
typedef void (*VitastorReadHandler)(void *opaque, long retval, uint64_t version);
typedef void (*VitastorIOHandler)(void *opaque, long retval);
typedef void (*VitastorReadBitmapHandler)(void *opaque, long retval, uint8_t *bitmap);
struct iovec { void *iov_base; size_t iov_len; };

vitastor_c *vitastor_c_create_uring_json(const char **options, int options_len);
void vitastor_c_destroy(vitastor_c *client);
int vitastor_c_is_ready(vitastor_c *client);
void vitastor_c_on_ready(vitastor_c *client, VitastorIOHandler cb, void *opaque);
void vitastor_c_uring_handle_events(vitastor_c *client);
void vitastor_c_uring_wait_events(vitastor_c *client);
int vitastor_c_uring_has_work(vitastor_c *client);
int vitastor_c_uring_register_eventfd(vitastor_c *client);
void vitastor_c_read(vitastor_c *client, uint64_t inode, uint64_t offset, uint64_t len,
    struct iovec *iov, int iovcnt, VitastorReadHandler cb, void *opaque);
void vitastor_c_write(vitastor_c *client, uint64_t inode, uint64_t offset, uint64_t len, uint64_t check_version,
    struct iovec *iov, int iovcnt, VitastorIOHandler cb, void *opaque);
void vitastor_c_delete(vitastor_c *client, uint64_t inode, uint64_t offset, uint64_t len, uint64_t check_version,
    VitastorIOHandler cb, void *opaque);
void vitastor_c_read_bitmap(vitastor_c *client, uint64_t inode, uint64_t offset, uint64_t len,
    int with_parents, VitastorReadBitmapHandler cb, void *opaque);
void vitastor_c_sync(vitastor_c *client, VitastorIOHandler cb, void *opaque);
void vitastor_c_watch_inode(vitastor_c *client, char *image, VitastorIOHandler cb, void *opaque);
void vitastor_c_close_watch(vitastor_c *client, void *handle);
uint64_t vitastor_c_inode_get_size(void *handle);
uint64_t vitastor_c_inode_get_num(void *handle);
uint64_t vitastor_c_inode_get_parent_id(void *handle);
char *vitastor_c_inode_get_meta(void *handle);
uint64_t vitastor_c_inode_get_mod_revision(void *handle);
int vitastor_c_inode_get_readonly(void *handle);
uint32_t vitastor_c_inode_get_block_size(vitastor_c *client, uint64_t inode_num);
uint32_t vitastor_c_inode_get_bitmap_granularity(vitastor_c *client, uint64_t inode_num);
uint32_t vitastor_c_inode_get_immediate_commit(vitastor_c *client, uint64_t inode_num);
void free(void *ptr);
"""

# loads the library in a child process: for the cases where it must exit(1)
CHILD = """
import sys
from cffi import FFI
ffi = FFI()
ffi.cdef("typedef struct vitastor_c vitastor_c; vitastor_c *vitastor_c_create_uring_json(const char **o, int n);")
lib = ffi.dlopen(sys.argv[1])
args = [ffi.new("char[]", a.encode()) for a in sys.argv[2:]]
lib.vitastor_c_create_uring_json(ffi.new("char *[]", args), len(args))
print("created")
"""

ffi = FFI()
ffi.cdef(CDEF)


def noise(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


class Client:
    """A vitastor_c client of the simulated library, with blocking helpers (callbacks run inside
    the submitting call, as in the real library since 2.0)."""

    def __init__(self, lib: Any, config_path: Path, **options: str) -> None:
        self.lib = lib
        self.version = ffi.new("char[]", b"." * 31)
        pairs = [("config_path", str(config_path)), *options.items()]
        # every string must outlive the call: ffi.new("char *[]", ...) does not keep its items alive
        keep = [ffi.new("char[]", s.encode()) for kv in pairs for s in kv]
        keep += [ffi.new("char[]", b"__version_check_buffer"), self.version]
        argv = ffi.new("char *[]", keep)
        self.cli = lib.vitastor_c_create_uring_json(ffi.cast("const char **", argv), len(argv))
        assert self.cli != ffi.NULL

    def close(self) -> None:
        self.lib.vitastor_c_destroy(self.cli)

    def _wait(self, submit: Any, ctype: str, **kw: Any) -> tuple[Any, ...]:
        result: list[tuple[Any, ...]] = []

        def done(_opaque: Any, *args: Any) -> None:
            result.append(args)

        cb = ffi.callback(ctype, done)
        submit(cb)
        while not result:  # the simulated library never gets here; a real one would
            self.lib.vitastor_c_uring_handle_events(self.cli)
            if not result:
                self.lib.vitastor_c_uring_wait_events(self.cli)
        return result[0]

    def watch(self, name: str) -> Any:
        (handle,) = self._wait(lambda cb: self.lib.vitastor_c_watch_inode(self.cli, ffi.new("char[]", name.encode()),
                                                                          cb, ffi.NULL), "VitastorIOHandler")
        return ffi.cast("void *", handle)

    def num(self, name: str) -> int:
        handle = self.watch(name)
        try:
            return int(self.lib.vitastor_c_inode_get_num(handle))
        finally:
            self.lib.vitastor_c_close_watch(self.cli, handle)

    def read(self, inode: int, offset: int, length: int, pieces: int = 1) -> tuple[int, bytes]:
        sizes = [length // pieces] * (pieces - 1) + [length - length // pieces * (pieces - 1)]
        bufs = [ffi.new("uint8_t[]", max(size, 1)) for size in sizes]
        iov = ffi.new("struct iovec[]", [{"iov_base": b, "iov_len": s} for b, s in zip(bufs, sizes)])
        rc, _version = self._wait(lambda cb: self.lib.vitastor_c_read(self.cli, inode, offset, length, iov, pieces,
                                                                      cb, ffi.NULL), "VitastorReadHandler")
        return rc, b"".join(ffi.buffer(b, s)[:] for b, s in zip(bufs, sizes))

    def write(self, inode: int, offset: int, data: bytes, length: int | None = None) -> int:
        buf = ffi.from_buffer(data)
        iov = ffi.new("struct iovec *", {"iov_base": buf, "iov_len": len(data)})
        (rc,) = self._wait(lambda cb: self.lib.vitastor_c_write(
            self.cli, inode, offset, len(data) if length is None else length, 0, iov, 1, cb, ffi.NULL),
            "VitastorIOHandler")
        return int(rc)

    def delete(self, inode: int, offset: int, length: int) -> int:
        (rc,) = self._wait(lambda cb: self.lib.vitastor_c_delete(self.cli, inode, offset, length, 0, cb, ffi.NULL),
                           "VitastorIOHandler")
        return int(rc)

    def bitmap(self, inode: int, offset: int, length: int, with_parents: bool) -> tuple[int, list[int]]:
        rc, bitmap = self._wait(lambda cb: self.lib.vitastor_c_read_bitmap(
            self.cli, inode, offset, length, int(with_parents), cb, ffi.NULL), "VitastorReadBitmapHandler")
        if rc < 0:
            assert bitmap == ffi.NULL
            return rc, []
        raw = ffi.buffer(bitmap, (rc + 7) // 8)[:]
        self.lib.free(bitmap)
        return rc, [(raw[i // 8] >> (i % 8)) & 1 for i in range(rc)]


@pytest.fixture(scope="module")
def lib(sim_libvitastor: Path) -> Any:
    return ffi.dlopen(str(sim_libvitastor))


@pytest.fixture()
def cluster(etcd: str, tmp_path: Path) -> SimCluster:
    return SimCluster(etcd, tmp_path / "cluster")


@pytest.fixture()
def client(lib: Any, cluster: SimCluster) -> Iterator[Client]:
    c = Client(lib, cluster.config_path, sim_meta_refresh_ms="0")
    yield c
    c.close()


def create(cluster: SimCluster, name: str, size: int = MIB) -> int:
    cat = cluster.catalog()
    return cat.create(name, size, cat.pool(None)).num


def test_build_is_warning_free(tmp_path: Path) -> None:
    build(tmp_path, extra_flags=("-Werror", "-Wpedantic", "-Wshadow"))


def test_exports_the_whole_c_api(sim_libvitastor: Path) -> None:
    names = subprocess.run(["nm", "-D", "--defined-only", str(sim_libvitastor)], capture_output=True,
                           text=True, check=True).stdout.split()
    exported = {n for n in names if n.startswith("vitastor_")}
    assert len(exported) == 32  # the vitastor_c_* functions of 3.0.8's libvitastor_client
    assert {"vitastor_c_create_uring_json", "vitastor_c_read_bitmap", "vitastor_c_watch_inode"} <= exported


def test_version_buffer_and_readiness(lib: Any, cluster: SimCluster) -> None:
    c = Client(lib, cluster.config_path)
    try:
        assert ffi.string(c.version) == b"3.0.8"
        assert lib.vitastor_c_is_ready(c.cli) == 1
        assert c._wait(lambda cb: lib.vitastor_c_on_ready(c.cli, cb, ffi.NULL), "VitastorIOHandler") == (0,)
        assert c._wait(lambda cb: lib.vitastor_c_sync(c.cli, cb, ffi.NULL), "VitastorIOHandler") == (0,)
        assert lib.vitastor_c_uring_has_work(c.cli) == 0
        fd = lib.vitastor_c_uring_register_eventfd(c.cli)
        assert fd >= 0 and lib.vitastor_c_uring_register_eventfd(c.cli) == fd
        os.fstat(fd)
    finally:
        c.close()
    # a buffer too short for the version is left alone, like the real library does
    short = ffi.new("char[]", b"abc")
    opts = [ffi.new("char[]", s) for s in (b"config_path", str(cluster.config_path).encode(),
                                           b"__version_check_buffer")]
    cli = lib.vitastor_c_create_uring_json(ffi.new("char *[]", [*opts, short]), 4)
    lib.vitastor_c_destroy(cli)
    assert ffi.string(short) == b"abc"


def test_watch_metadata(client: Client, cluster: SimCluster, lib: Any) -> None:
    num = create(cluster, "img", 2 * MIB)
    handle = client.watch("img")
    assert lib.vitastor_c_inode_get_num(handle) == num == (1 << 48) | 1
    assert lib.vitastor_c_inode_get_size(handle) == 2 * MIB
    assert lib.vitastor_c_inode_get_readonly(handle) == 0
    assert lib.vitastor_c_inode_get_parent_id(handle) == 0
    assert lib.vitastor_c_inode_get_mod_revision(handle) == cluster.catalog().get("img").mod_revision > 0
    assert lib.vitastor_c_inode_get_meta(handle) == ffi.NULL
    assert lib.vitastor_c_inode_get_block_size(client.cli, num) == 128 * KIB
    assert lib.vitastor_c_inode_get_bitmap_granularity(client.cli, num) == 4096
    assert lib.vitastor_c_inode_get_immediate_commit(client.cli, num) == 2
    assert lib.vitastor_c_inode_get_block_size(client.cli, 7 << 48 | 1) == 0  # unknown pool

    # the handle follows the name: after a snapshot, num is the new head (after pumping events)
    snap = cluster.catalog().snapshot("img", "s1")
    lib.vitastor_c_uring_handle_events(client.cli)
    head = cluster.catalog().get("img")
    assert lib.vitastor_c_inode_get_num(handle) == head.num != num
    assert lib.vitastor_c_inode_get_parent_id(handle) == snap.num == num
    snap_handle = client.watch("img@s1")
    assert lib.vitastor_c_inode_get_readonly(snap_handle) == 1
    lib.vitastor_c_close_watch(client.cli, snap_handle)
    lib.vitastor_c_close_watch(client.cli, handle)


def test_unknown_image_has_num_zero(client: Client, lib: Any) -> None:
    handle = client.watch("no-such-image")
    assert handle != ffi.NULL
    assert lib.vitastor_c_inode_get_num(handle) == 0
    assert lib.vitastor_c_inode_get_size(handle) == 0
    lib.vitastor_c_close_watch(client.cli, handle)


def test_python_writes_c_reads_through_a_snapshot_chain(client: Client, cluster: SimCluster) -> None:
    create(cluster, "img", MIB)
    base = noise(1, 512 * KIB)
    cluster.write("img", 0, base)
    cluster.catalog().snapshot("img", "s1")
    top = noise(2, 64 * KIB)
    cluster.write("img", 100 * KIB, top)                # into the new head
    cluster.write("img", 300 * KIB, bytes(8 * KIB))     # written zeros hide the parent's data
    cluster.catalog().snapshot("img", "s2")
    cluster.write("img", 900 * KIB, b"tail")            # a partial granule: read-modify-written

    expected = bytearray(MIB)
    expected[:len(base)] = base
    expected[100 * KIB:164 * KIB] = top
    expected[300 * KIB:308 * KIB] = bytes(8 * KIB)
    expected[900 * KIB:900 * KIB + 4] = b"tail"
    assert cluster.read("img", 0, MIB) == bytes(expected)

    head = client.num("img")
    assert client.read(head, 0, MIB) == (MIB, bytes(expected))
    assert client.read(head, 0, MIB, pieces=3) == (MIB, bytes(expected))  # several iovecs
    assert client.read(client.num("img@s1"), 0, MIB) == (MIB, base + bytes(MIB - len(base)))
    assert client.read(head, 64 * MIB, 8 * KIB) == (8 * KIB, bytes(8 * KIB))  # past the end: zeros


def test_c_writes_python_reads(client: Client, cluster: SimCluster) -> None:
    create(cluster, "img", MIB)
    cluster.write("img", 0, noise(3, 256 * KIB))
    cluster.catalog().snapshot("img", "s1")
    head = client.num("img")
    data = noise(4, 40 * KIB)
    assert client.write(head, 200 * KIB, data) == len(data)
    assert client.write(head, 600 * KIB, bytes(4 * KIB)) == 4 * KIB
    expected = bytearray(cluster.read("img@s1", 0, MIB))
    expected[200 * KIB:240 * KIB] = data
    expected[600 * KIB:604 * KIB] = bytes(4 * KIB)
    assert cluster.read("img", 0, MIB) == bytes(expected)
    assert client.read(head, 0, MIB)[1] == bytes(expected)
    assert cluster.allocated("img") == 44 * KIB  # only the granules written, zeros included


def test_read_bitmap(client: Client, cluster: SimCluster) -> None:
    create(cluster, "img", MIB)
    cluster.write("img", 0, noise(5, 16 * KIB))         # granules 0-3
    cluster.catalog().snapshot("img", "s1")
    cluster.write("img", 8 * KIB, noise(6, 4 * KIB))    # granule 2
    cluster.write("img", 40 * KIB, bytes(4 * KIB))      # granule 10 (zeros are written too)
    head = client.num("img")

    own = [0] * 32
    own[2] = own[10] = 1
    chain = [1, 1, 1, 1] + [0] * 28
    chain[10] = 1
    assert client.bitmap(head, 0, 128 * KIB, with_parents=False) == (32, own)
    assert client.bitmap(head, 0, 128 * KIB, with_parents=True) == (32, chain)
    assert client.bitmap(head, 8 * KIB, 8 * KIB, with_parents=False) == (2, [1, 0])
    assert client.bitmap(head, 512 * KIB, 4 * KIB, with_parents=True) == (1, [0])
    assert client.bitmap(head, 0, 0, with_parents=True) == (-22, [])


def test_readonly_layer_is_erofs(client: Client, cluster: SimCluster) -> None:
    create(cluster, "img", MIB)
    cluster.write("img", 0, noise(7, 8 * KIB))
    snap = cluster.catalog().snapshot("img", "s1")
    assert client.write(snap.num, 0, bytes(4 * KIB)) == -30
    assert client.delete(snap.num, 0, OBJECT) == -30
    assert client.read(snap.num, 0, 8 * KIB)[1] == noise(7, 8 * KIB)


def test_misaligned_io_is_einval(client: Client, cluster: SimCluster) -> None:
    num = create(cluster, "img", MIB)
    assert client.write(num, 512, bytes(4 * KIB)) == -22
    assert client.write(num, 0, bytes(100)) == -22
    assert client.write(num, 0, bytes(4 * KIB), length=0) == -22
    assert client.read(num, 100, 4 * KIB)[0] == -22
    assert client.read(num, 0, 1000)[0] == -22
    assert client.bitmap(num, 2048, 4 * KIB, with_parents=False)[0] == -22
    assert client.delete(num, 0, 0) == -22
    assert client.write(9 << 48 | 1, 0, bytes(4 * KIB)) == -22  # unknown pool
    assert client.write(1 << 48, 0, bytes(4 * KIB)) == -22      # inode 0
    assert cluster.allocated("img") == 0


def test_delete_removes_whole_objects(client: Client, cluster: SimCluster) -> None:
    num = create(cluster, "img", MIB)
    data = noise(8, 3 * OBJECT)
    assert client.write(num, 0, data) == len(data)
    assert client.delete(num, OBJECT + 4 * KIB, 4 * KIB) == 4 * KIB   # the whole second object goes
    expected = data[:OBJECT] + bytes(OBJECT) + data[2 * OBJECT:]
    assert client.read(num, 0, 3 * OBJECT)[1] == expected
    assert cluster.read("img", 0, 3 * OBJECT) == expected
    assert cluster.allocated("img") == 2 * OBJECT
    assert client.delete(create(cluster, "empty"), 0, OBJECT) == OBJECT  # no data file: nothing to do


def test_inode_created_after_the_client_is_found(client: Client, cluster: SimCluster) -> None:
    create(cluster, "img", MIB)
    cluster.write("img", 0, noise(9, 8 * KIB))
    snap = cluster.catalog().snapshot("img", "s1")
    head = cluster.catalog().get("img").num  # not looked up through the client
    assert head != snap.num
    assert client.read(head, 0, 8 * KIB)[1] == noise(9, 8 * KIB)


def _child(lib_path: Path, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", CHILD, str(lib_path), *options], capture_output=True,
                          text=True, timeout=60, check=False)


def test_no_etcd_address_exits(sim_libvitastor: Path, tmp_path: Path) -> None:
    conf = tmp_path / "vitastor.conf"
    conf.write_text('{"etcd_prefix": "/x"}')
    proc = _child(sim_libvitastor, "config_path", str(conf))
    assert proc.returncode == 1
    assert "etcd_address" in proc.stderr
    assert "created" not in proc.stdout


def test_unreachable_etcd_exits(sim_libvitastor: Path, tmp_path: Path) -> None:
    (port,) = free_ports(1)
    started = time.monotonic()
    proc = _child(sim_libvitastor, "config_path", str(tmp_path / "missing.conf"),
                  "etcd_address", f"127.0.0.1:{port}")
    assert proc.returncode == 1
    assert "etcd" in proc.stderr
    assert time.monotonic() - started > 1  # retried first


def test_options_override_the_file(lib: Any, cluster: SimCluster, etcd: str, tmp_path: Path) -> None:
    num = create(cluster, "img", MIB)
    # a file pointing nowhere, fixed by the options (etcd_address with http:// and an explicit /v3)
    conf = tmp_path / "other.conf"
    conf.write_text('{"etcd_address": "127.0.0.1:1", "etcd_prefix": "/nothing"}')
    c = Client(lib, conf, etcd_address=f"{etcd}/v3", etcd_prefix=cluster.config.etcd_prefix,
               sim_data_dir=str(cluster.data_dir), unknown_key="ignored")
    try:
        assert c.num("img") == num
        assert c.write(num, 0, b"x" * 4096) == 4096
        assert cluster.read("img", 0, 4) == b"xxxx"
    finally:
        c.close()


class _FakeEtcd(BaseHTTPRequestHandler):
    """Answers every txn like antietcd would (revisions as numbers), in a chunked HTTP reply."""

    protocol_version = "HTTP/1.1"
    requests: list[tuple[str, str, dict[str, Any]]] = []
    reply: dict[str, Any] = {}

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append((self.path, self.headers["Content-Type"], body))
        data = json.dumps(self.reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for i in range(0, len(data), 7):
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data[i:i + 7]), data[i:i + 7]))
        self.wfile.write(b"0\r\n\r\n")

    def log_message(self, *args: Any) -> None:
        pass


def _kv(key: str, value: Any, rev: int) -> dict[str, Any]:
    return {"key": base64.b64encode(key.encode()).decode(), "mod_revision": rev,
            "value": base64.b64encode(json.dumps(value).encode()).decode()}


def test_chunked_replies_numeric_revisions_and_address_forms(lib: Any, tmp_path: Path) -> None:
    _FakeEtcd.requests = []
    _FakeEtcd.reply = {"header": {"revision": 9}, "succeeded": True, "responses": [
        {"response_range": {"kvs": [_kv("/pfx/config/global", {"block_size": 1 << 20}, 2)]}},
        {"response_range": {"kvs": [_kv("/pfx/config/pools", {"3": {"name": "ec", "scheme": "ec", "pg_size": 3,
                                                                     "parity_chunks": 1, "immediate_commit": "none"},
                                                               "x": {"name": "bad id"}}, 3)]}},
        {"response_range": {"kvs": [
            _kv("/pfx/config/inode/3/5", {"name": "ünïcode \u2028", "size": 1 << 40, "parent_id": 4,
                                          "parent_pool": 1, "readonly": True}, 7),
            _kv("/pfx/config/inode/3/6", "not an object: deleted", 8),
            _kv("/pfx/config/inode/0/1", {"name": "bad key"}, 8)]}}]}
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeEtcd)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        conf = tmp_path / "vitastor.conf"
        conf.write_text(json.dumps({"etcd_address": ["127.0.0.1:1/bad", f"http://127.0.0.1:{server.server_port}/api"],
                                    "etcd_prefix": "pfx"}))
        c = Client(lib, conf)
        try:
            handle = c.watch("ünïcode \u2028")
            assert lib.vitastor_c_inode_get_num(handle) == 3 << 48 | 5
            assert lib.vitastor_c_inode_get_size(handle) == 1 << 40
            assert lib.vitastor_c_inode_get_parent_id(handle) == 1 << 48 | 4
            assert lib.vitastor_c_inode_get_readonly(handle) == 1
            assert lib.vitastor_c_inode_get_mod_revision(handle) == 7
            assert lib.vitastor_c_inode_get_block_size(c.cli, 3 << 48 | 5) == 2 << 20  # global block_size x 2 data chunks
            assert lib.vitastor_c_inode_get_immediate_commit(c.cli, 3 << 48 | 5) == 0
            assert c.num("bad key") == 0
            lib.vitastor_c_close_watch(c.cli, handle)
        finally:
            c.close()
    finally:
        server.shutdown()
        server.server_close()
    path, ctype, body = _FakeEtcd.requests[0]
    assert (path, ctype) == ("/api/kv/txn", "application/json")
    assert [base64.b64decode(op["request_range"]["key"]).decode() for op in body["success"]] == [
        "/pfx/config/global", "/pfx/config/pools", "/pfx/config/inode/"]
    assert base64.b64decode(body["success"][2]["request_range"]["range_end"]) == b"/pfx/config/inode0"
