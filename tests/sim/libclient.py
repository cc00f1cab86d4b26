"""A small cffi client of libvitastor_client for the tests: the simulated library (tests/sim) or
the real one, loaded in the test process, with blocking helpers around its callbacks.

The tests of the simulated library run it against both (tests/sim/test_sim_lib.py), and on a
real cluster ``SimCluster.allocated`` counts a layer's own written granules through it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cffi import FFI

__all__ = ["Client", "ffi", "layer_allocation", "load", "real_library"]

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

ffi = FFI()
ffi.cdef(CDEF)
_loaded: dict[str, Any] = {}


def load(path: str | Path) -> Any:
    """The library at ``path``, opened once per process (the real one cannot be unloaded)."""
    key = str(path)
    if key not in _loaded:
        _loaded[key] = ffi.dlopen(key)
    return _loaded[key]


class Client:
    """A vitastor_c client with blocking helpers: each submits one request and runs the event
    loop until its callback ran (since 2.0 the real library may run it inside the submitting
    call, the simulated one always does)."""

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

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def wait_ready(self) -> None:
        """Run the event loop until the client has loaded the cluster's configuration."""
        assert self._wait(lambda cb: self.lib.vitastor_c_on_ready(self.cli, cb, ffi.NULL), "VitastorIOHandler") == (0,)

    def _wait(self, submit: Any, ctype: str, **kw: Any) -> tuple[Any, ...]:
        result: list[tuple[Any, ...]] = []

        def done(_opaque: Any, *args: Any) -> None:
            result.append(args)

        cb = ffi.callback(ctype, done)
        submit(cb)
        while not result:  # the simulated library never gets here; the real one does
            self.lib.vitastor_c_uring_handle_events(self.cli)
            if not result:
                self.lib.vitastor_c_uring_wait_events(self.cli)
        return result[0]

    def watch(self, name: str) -> Any:
        """A watch handle of image ``name``; the name is kept alive until the callback ran (the
        real library reads it only then, once the client is ready)."""
        keep = ffi.new("char[]", name.encode())
        (handle,) = self._wait(lambda cb: self.lib.vitastor_c_watch_inode(self.cli, keep, cb, ffi.NULL),
                               "VitastorIOHandler")
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

    def own_bytes(self, inode: int, size: int) -> int:
        """Bytes written in layer ``inode`` itself (not its parents) within its first ``size``
        bytes: its own allocation bitmap, one bit per granule, read 64 MiB at a time."""
        granule = int(self.lib.vitastor_c_inode_get_bitmap_granularity(self.cli, inode))
        end, step, total = -(-size // granule) * granule, 64 << 20, 0
        for offset in range(0, end, step):
            rc, bits = self.bitmap(inode, offset, min(step, end - offset), False)
            assert rc >= 0, f"read_bitmap of inode {inode:#x} at {offset}: {rc}"
            total += sum(bits) * granule
        return total


def real_library() -> str:
    """The system's libvitastor_client, found as onevita finds it (the one the actions load on a
    real cluster)."""
    from onevita.vitastor.client import find_library

    return find_library()


def layer_allocation(config_path: str | Path, inode: int, size: int) -> int:
    """On a real cluster: the bytes written in layer ``inode`` itself, through the real library
    (what a simulated cluster's layer files tell by their allocated granules)."""
    with Client(load(real_library()), Path(config_path)) as client:
        client.wait_ready()
        return client.own_bytes(inode, size)
