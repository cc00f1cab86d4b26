"""libvitastor_client through cffi: the simulated library (libvitastor_client_sim.c) on a
simulated cluster, and in real-cluster mode the real library on the real cluster, held to the
same expectations, which pins the simulation to what the real library does. Both see the same
images and bytes as ``vitastor-cli dd``, in both directions and through snapshot chains, and keep
the same rules (readiness, EROFS, EINVAL, bitmaps, whole-object deletes, exit(1) and its words).

Only what is the simulation's own runs simulated alone: its build, and a fake etcd's replies
(the real library also needs OSDs and an etcd watch)."""

from __future__ import annotations

import base64
import json
import random
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from tests.harness._process import free_ports
from tests.sim.build_sim_lib import build
from tests.sim.cluster import SimCluster, real_conf
from tests.sim.libclient import Client, ffi, load, real_library

KIB, MIB = 1 << 10, 1 << 20
OBJECT = 128 * KIB
simulated_only = pytest.mark.skipif(bool(real_conf()), reason="the simulated library's own internals")

# loads the library in a child process, for the cases where it must exit(1); prints the
# CLOCK_MONOTONIC time just before vitastor_c_create_uring_json
CHILD = """
import sys, time
from cffi import FFI
ffi = FFI()
ffi.cdef("typedef struct vitastor_c vitastor_c; vitastor_c *vitastor_c_create_uring_json(const char **o, int n);")
lib = ffi.dlopen(sys.argv[1])
args = [ffi.new("char[]", a.encode()) for a in sys.argv[2:]]
print(time.monotonic(), flush=True)
lib.vitastor_c_create_uring_json(ffi.new("char *[]", args), len(args))
print("created")
"""


def noise(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


@pytest.fixture()
def library(sim_libvitastor: Path, cluster: SimCluster) -> str:
    """The library of the test's cluster: the simulated one, or the system's for a real cluster."""
    return str(sim_libvitastor) if cluster.simulated else real_library()


@pytest.fixture()
def lib(library: str) -> Any:
    return load(library)


@pytest.fixture()
def client(lib: Any, cluster: SimCluster) -> Iterator[Client]:
    """A client of the test's cluster; the simulated one re-reads etcd on every event-loop run,
    as the real one follows it through its watch."""
    with Client(lib, cluster.config_path, sim_meta_refresh_ms="0") as c:
        yield c


@pytest.fixture()
def img(image_prefix: str) -> str:
    """The test's image name (under its own prefix)."""
    return f"{image_prefix}-img"


def create(cluster: SimCluster, name: str, size: int = MIB) -> int:
    cat = cluster.catalog()
    return cat.create(name, size, cat.pool(None)).num


def eventually(client: Client, check: Callable[[], bool], seconds: float = 10) -> bool:
    """Run the client's event loop until ``check()`` holds (the real client learns etcd changes
    from its watch, a moment later; the simulated one re-reads at once)."""
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        client.lib.vitastor_c_uring_handle_events(client.cli)
        time.sleep(0.01)
    return True


def known(client: Client, cluster: SimCluster, name: str) -> int:
    """``name``'s inode number as the client resolves it, once it agrees with etcd's."""
    expected = cluster.catalog().get(name).num
    assert eventually(client, lambda: client.num(name) == expected)
    return expected


@simulated_only
def test_build_is_warning_free(tmp_path: Path) -> None:
    build(tmp_path, extra_flags=("-Werror", "-Wpedantic", "-Wshadow"))


def exported(library: str) -> set[str]:
    names = subprocess.run(["nm", "-D", "--defined-only", library], capture_output=True, text=True,
                           check=True).stdout.split()
    return {n for n in names if n.startswith("vitastor_")}


def test_exports_the_whole_c_api(sim_libvitastor: Path, library: str) -> None:
    """The vitastor_c_* functions of 3.0.8's libvitastor_client, the real library's own set."""
    names = exported(str(sim_libvitastor))
    assert len(names) == 32
    assert {"vitastor_c_create_uring_json", "vitastor_c_read_bitmap", "vitastor_c_watch_inode"} <= names
    assert exported(library) == names


def test_version_buffer_and_readiness(lib: Any, cluster: SimCluster) -> None:
    """Not ready until the event loop loaded the configuration; the version goes into a buffer
    that can hold it, a shorter one is left alone."""
    with Client(lib, cluster.config_path) as c:
        assert ffi.string(c.version) == b"3.0.8"
        # a real client may have loaded its configuration inside create already, or not; the
        # simulated one never has, so that callers wait for it (on_ready) either way
        assert lib.vitastor_c_is_ready(c.cli) == 0 or not cluster.simulated
        c.wait_ready()
        assert lib.vitastor_c_is_ready(c.cli) == 1
        assert c._wait(lambda cb: lib.vitastor_c_sync(c.cli, cb, ffi.NULL), "VitastorIOHandler") == (0,)
        assert lib.vitastor_c_uring_has_work(c.cli) == 0
        fd = lib.vitastor_c_uring_register_eventfd(c.cli)
        assert fd >= 0 and lib.vitastor_c_uring_register_eventfd(c.cli) == fd
        Path(f"/proc/self/fd/{fd}").stat()
    short = ffi.new("char[]", b"abc")
    opts = [ffi.new("char[]", s) for s in (b"config_path", str(cluster.config_path).encode(),
                                           b"__version_check_buffer")]
    cli = lib.vitastor_c_create_uring_json(ffi.new("char *[]", [*opts, short]), 4)
    lib.vitastor_c_destroy(cli)
    assert ffi.string(short) == b"abc"


def test_watch_metadata(client: Client, cluster: SimCluster, lib: Any, img: str) -> None:
    num = create(cluster, img, 2 * MIB)
    handle = client.watch(img)
    assert eventually(client, lambda: lib.vitastor_c_inode_get_num(handle) == num)
    assert lib.vitastor_c_inode_get_size(handle) == 2 * MIB
    assert lib.vitastor_c_inode_get_readonly(handle) == 0
    assert lib.vitastor_c_inode_get_parent_id(handle) == 0
    assert lib.vitastor_c_inode_get_mod_revision(handle) == cluster.catalog().get(img).mod_revision > 0
    assert lib.vitastor_c_inode_get_meta(handle) == ffi.NULL
    assert lib.vitastor_c_inode_get_block_size(client.cli, num) == 128 * KIB
    assert lib.vitastor_c_inode_get_bitmap_granularity(client.cli, num) == 4096
    assert lib.vitastor_c_inode_get_immediate_commit(client.cli, num) == 2
    assert lib.vitastor_c_inode_get_block_size(client.cli, 7 << 48 | 1) == 0  # unknown pool

    # the handle follows the name: after a snapshot, num is the new head (after pumping events)
    snap = cluster.catalog().snapshot(img, "s1")
    head = cluster.catalog().get(img)
    assert eventually(client, lambda: lib.vitastor_c_inode_get_num(handle) == head.num != num)
    assert lib.vitastor_c_inode_get_parent_id(handle) == snap.num == num
    snap_handle = client.watch(f"{img}@s1")
    assert lib.vitastor_c_inode_get_num(snap_handle) == num
    assert lib.vitastor_c_inode_get_readonly(snap_handle) == 1
    lib.vitastor_c_close_watch(client.cli, snap_handle)
    lib.vitastor_c_close_watch(client.cli, handle)


def test_unknown_image_has_num_zero(client: Client, lib: Any, image_prefix: str) -> None:
    handle = client.watch(f"{image_prefix}-no-such-image")
    assert handle != ffi.NULL
    assert lib.vitastor_c_inode_get_num(handle) == 0
    assert lib.vitastor_c_inode_get_size(handle) == 0
    lib.vitastor_c_close_watch(client.cli, handle)


def test_python_writes_c_reads_through_a_snapshot_chain(client: Client, cluster: SimCluster, img: str) -> None:
    create(cluster, img, MIB)
    base = noise(1, 512 * KIB)
    cluster.write(img, 0, base)
    cluster.catalog().snapshot(img, "s1")
    top = noise(2, 64 * KIB)
    cluster.write(img, 100 * KIB, top)                # into the new head
    cluster.write(img, 300 * KIB, bytes(8 * KIB))     # written zeros hide the parent's data
    cluster.catalog().snapshot(img, "s2")
    cluster.write(img, 900 * KIB, b"tail")            # a partial granule: read-modify-written

    expected = bytearray(MIB)
    expected[:len(base)] = base
    expected[100 * KIB:164 * KIB] = top
    expected[300 * KIB:308 * KIB] = bytes(8 * KIB)
    expected[900 * KIB:900 * KIB + 4] = b"tail"
    assert cluster.read(img, 0, MIB) == bytes(expected)

    head = known(client, cluster, img)
    assert client.read(head, 0, MIB) == (MIB, bytes(expected))
    assert client.read(head, 0, MIB, pieces=3) == (MIB, bytes(expected))  # several iovecs
    assert client.read(known(client, cluster, f"{img}@s1"), 0, MIB) == (MIB, base + bytes(MIB - len(base)))
    assert client.read(head, 64 * MIB, 8 * KIB) == (8 * KIB, bytes(8 * KIB))  # past the end: zeros


def test_c_writes_python_reads(client: Client, cluster: SimCluster, img: str) -> None:
    create(cluster, img, MIB)
    cluster.write(img, 0, noise(3, 256 * KIB))
    cluster.catalog().snapshot(img, "s1")
    head = known(client, cluster, img)
    data = noise(4, 40 * KIB)
    assert client.write(head, 200 * KIB, data) == len(data)
    assert client.write(head, 600 * KIB, bytes(4 * KIB)) == 4 * KIB
    expected = bytearray(cluster.read(f"{img}@s1", 0, MIB))
    expected[200 * KIB:240 * KIB] = data
    expected[600 * KIB:604 * KIB] = bytes(4 * KIB)
    assert cluster.read(img, 0, MIB) == bytes(expected)
    assert client.read(head, 0, MIB)[1] == bytes(expected)
    assert cluster.allocated(img) == 44 * KIB  # only the granules written, zeros included


def test_read_bitmap(client: Client, cluster: SimCluster, img: str) -> None:
    create(cluster, img, MIB)
    cluster.write(img, 0, noise(5, 16 * KIB))         # granules 0-3
    cluster.catalog().snapshot(img, "s1")
    cluster.write(img, 8 * KIB, noise(6, 4 * KIB))    # granule 2
    cluster.write(img, 40 * KIB, bytes(4 * KIB))      # granule 10 (zeros are written too)
    head = known(client, cluster, img)

    own = [0] * 32
    own[2] = own[10] = 1
    chain = [1, 1, 1, 1] + [0] * 28
    chain[10] = 1
    assert client.bitmap(head, 0, 128 * KIB, with_parents=False) == (32, own)
    assert client.bitmap(head, 0, 128 * KIB, with_parents=True) == (32, chain)
    assert client.bitmap(head, 8 * KIB, 8 * KIB, with_parents=False) == (2, [1, 0])
    assert client.bitmap(head, 512 * KIB, 4 * KIB, with_parents=True) == (1, [0])
    assert client.bitmap(head, 0, 0, with_parents=True) == (-22, [])


def test_readonly_layer_is_erofs(client: Client, cluster: SimCluster, img: str) -> None:
    create(cluster, img, MIB)
    cluster.write(img, 0, noise(7, 8 * KIB))
    snap = cluster.catalog().snapshot(img, "s1")
    assert known(client, cluster, f"{img}@s1") == snap.num
    assert client.write(snap.num, 0, bytes(4 * KIB)) == -30
    assert client.delete(snap.num, 0, OBJECT) == -30
    assert client.delete(snap.num, 0, 0) == -30
    assert client.read(snap.num, 0, 8 * KIB)[1] == noise(7, 8 * KIB)


def test_misaligned_io_is_einval(client: Client, cluster: SimCluster, img: str) -> None:
    """check_rw: the pool must be known and offset and length granule-aligned; a zero length is
    EINVAL for writes and bitmaps only."""
    num = create(cluster, img, MIB)
    assert client.write(num, 512, bytes(4 * KIB)) == -22
    assert client.write(num, 0, bytes(100)) == -22
    assert client.write(num, 0, bytes(4 * KIB), length=0) == -22
    assert client.read(num, 100, 4 * KIB)[0] == -22
    assert client.read(num, 0, 1000)[0] == -22
    assert client.read(num, 0, 0)[0] == 0
    assert client.bitmap(num, 2048, 4 * KIB, with_parents=False)[0] == -22
    assert client.delete(num, 2048, 0) == -22
    assert client.write(9 << 48 | 1, 0, bytes(4 * KIB)) == -22  # unknown pool
    assert client.read(5, 0, 4 * KIB)[0] == -22                 # pool 0
    assert cluster.allocated(img) == 0


def test_the_inode_number_in_a_pool_is_not_checked(client: Client, cluster: SimCluster, img: str) -> None:
    """Inode 0 of a known pool, which no image has, is written and read like any other."""
    zero = create(cluster, img) >> 48 << 48
    try:
        assert client.write(zero, 0, b"z" * 4096) == 4096
        assert client.read(zero, 0, 4096) == (4096, b"z" * 4096)
    finally:
        assert client.delete(zero, 0, OBJECT) == OBJECT
    assert client.read(zero, 0, 4096) == (4096, bytes(4096))


def test_delete_removes_whole_objects(client: Client, cluster: SimCluster, image_prefix: str, img: str) -> None:
    num = create(cluster, img, MIB)
    data = noise(8, 4 * OBJECT)
    assert client.write(num, 0, data) == len(data)
    assert client.delete(num, OBJECT + 4 * KIB, 4 * KIB) == 4 * KIB   # the whole second object goes
    assert client.delete(num, 3 * OBJECT + 8 * KIB, 0) == 0          # length 0: the object at the offset
    expected = data[:OBJECT] + bytes(OBJECT) + data[2 * OBJECT:3 * OBJECT] + bytes(OBJECT)
    assert client.read(num, 0, 4 * OBJECT)[1] == expected
    assert cluster.read(img, 0, 4 * OBJECT) == expected
    assert cluster.allocated(img) == 2 * OBJECT
    assert client.delete(create(cluster, f"{image_prefix}-empty"), 0, OBJECT) == OBJECT  # no data: nothing to do


def test_inode_created_after_the_client_is_found(client: Client, cluster: SimCluster, img: str) -> None:
    """An image made after the client started is read through its parent once the client has
    heard of it (at once when simulated, from the etcd watch on a real cluster)."""
    create(cluster, img, MIB)
    cluster.write(img, 0, noise(9, 8 * KIB))
    snap = cluster.catalog().snapshot(img, "s1")
    head = cluster.catalog().get(img).num  # not looked up through the client
    assert head != snap.num
    assert eventually(client, lambda: client.read(head, 0, 8 * KIB)[1] == noise(9, 8 * KIB))


def _child(library: str, *options: str) -> tuple[subprocess.CompletedProcess[str], float]:
    """The library's create in a child process: its result, and the seconds from just before
    the call to the child's end."""
    proc = subprocess.run([sys.executable, "-c", CHILD, library, *options], capture_output=True,
                          text=True, timeout=60, check=False)
    ended = time.monotonic()
    lines = proc.stdout.splitlines()
    return proc, ended - float(lines[0]) if lines else 0.0


def test_no_etcd_address_exits(library: str, tmp_path: Path) -> None:
    conf = tmp_path / "vitastor.conf"
    conf.write_text('{"etcd_prefix": "/x"}')
    proc, _ = _child(library, "config_path", str(conf))
    assert (proc.returncode, proc.stderr) == (1, "etcd_address is missing in Vitastor configuration\n")
    assert "created" not in proc.stdout


def test_unreachable_etcd_exits_without_pausing(library: str, tmp_path: Path) -> None:
    """max_etcd_attempts tries, retried at once: a refused connection fails in a moment."""
    (port,) = free_ports(1)
    proc, seconds = _child(library, "config_path", str(tmp_path / "missing.conf"), "etcd_address", f"127.0.0.1:{port}")
    assert (proc.returncode, proc.stderr) == (1, "Error reading configuration from etcd: connect: Connection refused\n")
    assert "created" not in proc.stdout
    assert seconds < 0.5


def test_options_override_the_file(lib: Any, cluster: SimCluster, tmp_path: Path, img: str) -> None:
    """A vitastor.conf pointing nowhere, fixed by the options (etcd_address with http:// and an
    explicit /v3); unknown options are ignored."""
    num = create(cluster, img, MIB)
    conf = tmp_path / "other.conf"
    conf.write_text('{"etcd_address": "127.0.0.1:1", "etcd_prefix": "/nothing"}')
    address = cluster.config.etcd_address[0].removeprefix("http://").removesuffix("/v3")
    options = {"etcd_address": f"http://{address}/v3", "etcd_prefix": cluster.config.etcd_prefix,
               "unknown_key": "ignored"}
    if cluster.data_dir is not None:
        options["sim_data_dir"] = str(cluster.data_dir)
    with Client(lib, conf, **options) as c:
        assert c.num(img) == num
        assert c.write(num, 0, b"x" * 4096) == 4096
        assert cluster.read(img, 0, 4) == b"xxxx"


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


@simulated_only
def test_chunked_replies_numeric_revisions_and_address_forms(sim_libvitastor: Path, tmp_path: Path) -> None:
    lib = load(sim_libvitastor)
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
