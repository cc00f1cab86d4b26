"""Moving image data through libvitastor_client: file → image, image → file, image → image.

The copy loops are C (``csrc/onevita_vitastor.c``, ``libonevita_vitastor.so`` next to this
module), reached through an ABI-mode cffi module (``_ffi``) that only this module imports,
and only when an action moves data: metadata actions run without libvitastor_client.

The library can ``exit(1)`` inside its caller (an unreachable etcd, see vitastor-internals.md
§0.3), so etcd is checked first and every copy runs in a forked child: a dying library becomes
an ``OnevitaError`` with its last messages, and the driver still reports the failure. The
child's output comes back through a pipe: log lines (``INFO:``...) pass to oned.log, other
lines (the library's own messages) are logged as ``INFO`` and quoted if the child dies.

Holes (SEEK_DATA on files, the allocation bitmap through the parent chain on images) and
4 KiB granules of zeros are not written, so targets must read as zeros where nothing is
written: a new image, or a file the export empties first. ``sparse=False`` writes zeros too.
"""

from __future__ import annotations

import collections
import errno
import os
import stat
import struct
import sys
import time
from contextlib import contextmanager
from importlib import import_module
from pathlib import Path
from typing import Any, Callable, Deque, Iterator, List, Tuple, Union

import orjson

from .. import log
from ..errors import ClusterUnreachable, ConfigError, ImageNotFound, OnevitaError, by_kind
from .config import VitastorConfig
from .etcd import Etcd

__all__ = ["MIN_VERSION", "Extents", "copy_image", "export_changes", "export_to_file", "find_library",
           "import_fd", "import_file", "library_version"]

MIN_VERSION = (1, 11)
LIBRARY_ENV = "ONEVITA_LIBVITASTOR"
SONAME = "libvitastor_client.so.0"
LIBRARY_NAMES = ("libvitastor_client.so", SONAME)
LIBRARY_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib",
                "/usr/local/lib64", "/usr/local/lib")
_LDCONFIG_ABI = {"x86_64": "x86-64", "aarch64": "AArch64"}  # how ldconfig -p flags 64-bit builds
HELPER = Path(__file__).resolve().parent / "_lib" / "libonevita_vitastor.so"
ERR_SIZE = 1024
PROGRESS_SECONDS = 5.0
PROGRESS_STEP = 0.1
LOG_PREFIXES = (b"ERROR:", b"INFO:", b"WARN:", b"DEBUG:")
MIB = 1 << 20

PathOrFd = Union[str, "os.PathLike[str]", int]
Job = Callable[["_Session"], int]


def _from_dynamic_linker() -> str | None:
    """Where the dynamic linker finds the soname: LD_LIBRARY_PATH, then its cache
    (``ldconfig -p``; Vitastor's own ``make install`` puts the library in
    /usr/local/lib/<triplet>, which only the cache knows)."""
    for directory in filter(None, os.environ.get("LD_LIBRARY_PATH", "").split(":")):
        if os.path.isfile(os.path.join(directory, SONAME)):
            return os.path.join(directory, SONAME)
    import subprocess

    try:
        listing = subprocess.run(["/sbin/ldconfig", "-p"], capture_output=True, text=True, timeout=10,
                                 check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    abi = _LDCONFIG_ABI.get(os.uname().machine, "")  # a 32-bit build in the cache is not ours
    for line in listing.splitlines():
        name, _, rest = line.strip().partition(" (")
        flags, _, path = rest.partition(") => ")
        if name == SONAME and abi in flags and os.path.isfile(path):
            return path
    return None


def find_library() -> str:
    """The libvitastor_client to load: ``$ONEVITA_LIBVITASTOR``, else what the dynamic linker
    finds for its soname, else the usual library dirs."""
    configured = os.environ.get(LIBRARY_ENV)
    if configured:
        if not os.path.isfile(configured):
            raise ConfigError(f"{LIBRARY_ENV}={configured}: no such file")
        return configured
    found = _from_dynamic_linker()
    if found:
        return found
    for directory in LIBRARY_DIRS:
        for name in LIBRARY_NAMES:
            candidate = os.path.join(directory, name)
            if os.path.isfile(candidate):
                return candidate
    raise ConfigError(f"libvitastor_client.so not found (not known to the dynamic linker as {SONAME}, "
                      "nor in " + ", ".join(LIBRARY_DIRS) +
                      f"): install the vitastor-client package, or set {LIBRARY_ENV}")


_loaded: list[tuple[Any, Any]] = []


def _helper() -> tuple[Any, Any]:
    """(ffi, lib) of onevita's C helper, loaded once and kept: a lib object that goes away
    unloads the .so under any function taken from it. Does not load libvitastor_client yet."""
    if _loaded:
        return _loaded[0]
    try:
        ffi = import_module("onevita.vitastor._ffi").ffi
    except ImportError as e:
        raise OnevitaError(f"onevita's data-plane binding is missing ({e}): rebuild onevita "
                           "with build.py") from e
    try:
        _loaded.append((ffi, ffi.dlopen(str(HELPER))))
        return _loaded[0]
    except OSError as e:
        raise OnevitaError(f"cannot load onevita's data-plane helper {HELPER}: {e}") from e


def _parse_version(text: str) -> tuple[int, ...]:
    parts = []
    for part in text.split("."):
        digits = "".join(ch for ch in part if ch.isdigit()) if part[:1].isdigit() else ""
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def _check_etcd(conf: VitastorConfig) -> None:
    """Refuse to start the library when etcd does not answer: it would exit(1) in our process."""
    etcd = Etcd(conf.etcd_address)
    try:
        etcd.status()
    except ClusterUnreachable as e:
        raise ClusterUnreachable(f"Vitastor cluster of {conf.path} is unreachable, "
                                 f"not starting libvitastor_client: {e}") from e
    finally:
        etcd.close()


class _Progress:
    """The C progress callback: an INFO line at most every 5 s or 10 %."""

    def __init__(self, what: str, enabled: bool) -> None:
        self.what, self.enabled = what, enabled
        self.last_time, self.last_done = time.monotonic(), 0

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled or not total or done >= total:
            return
        now = time.monotonic()
        if now - self.last_time < PROGRESS_SECONDS and done - self.last_done < PROGRESS_STEP * total:
            return
        self.last_time, self.last_done = now, done
        log.info(f"{self.what}: {100 * done // total}% ({done // MIB} of {total // MIB} MiB)")


class _Image:
    """An open image: its C handle and what the client knows of it."""

    def __init__(self, handle: Any, size: int, num: int, readonly: bool, block_size: int,
                 granularity: int) -> None:
        self.handle, self.size, self.num = handle, size, num
        self.readonly, self.block_size, self.granularity = readonly, block_size, granularity


class _Session:
    """libvitastor_client loaded and connected (in the forked child only)."""

    def __init__(self, ffi: Any, lib: Any, path: str, conf: VitastorConfig) -> None:
        self.ffi, self.lib = ffi, lib
        options = {"config_path": conf.path, "etcd_address": ",".join(conf.etcd_address),
                   "etcd_prefix": conf.etcd_prefix}
        strings = [ffi.new("char[]", s.encode()) for kv in options.items() for s in kv]
        client = ffi.new("ov_client **")
        version = ffi.new("char[]", 64)
        err = ffi.new("char[]", ERR_SIZE)
        rc = lib.ov_client_open(path.encode(), ffi.new("const char *[]", strings), len(strings), client,
                                version, 64, err, ERR_SIZE)
        if rc < 0:
            message = ffi.string(err).decode(errors="replace")
            raise (ConfigError if rc in (-errno.ENOENT, -errno.ENOSYS) else OnevitaError)(message)
        self.client = client[0]
        self.version = ffi.string(version).decode(errors="replace")
        try:
            self._check_version(path)
        except OnevitaError:
            self.close()
            raise

    def _check_version(self, path: str) -> None:
        if not self.version:  # before 2.2.3 the library does not report its version
            if not self.lib.ov_client_has_symbol(self.client, b"vitastor_c_delete"):  # 1.11.0 added it
                raise ConfigError(f"libvitastor_client at {path} is too old: onevita needs Vitastor "
                                  f"{'.'.join(map(str, MIN_VERSION))} or newer")
            return
        if _parse_version(self.version) < MIN_VERSION:
            raise ConfigError(f"libvitastor_client at {path} is version {self.version}: onevita needs "
                              f"Vitastor {'.'.join(map(str, MIN_VERSION))} or newer")

    def close(self) -> None:
        self.lib.ov_client_close(self.client)

    @contextmanager
    def image(self, name: str) -> Iterator[_Image]:
        """The open image ``name``, closed again when the block ends."""
        image = self._open_image(name)
        try:
            yield image
        finally:
            self.lib.ov_image_close(self.client, image.handle)

    def _open_image(self, name: str) -> _Image:
        handle, info = self.ffi.new("ov_image **"), self.ffi.new("ov_image_info *")
        err = self.ffi.new("char[]", ERR_SIZE)
        rc = self.lib.ov_image_open(self.client, name.encode(), handle, info, err, ERR_SIZE)
        if rc < 0:
            message = self.ffi.string(err).decode(errors="replace")
            raise (ImageNotFound if rc == -errno.ENOENT else OnevitaError)(message)
        return _Image(handle[0], int(info.size), int(info.num), bool(info.readonly), int(info.block_size),
                      int(info.granularity))

    def copy(self, func: str, what: str, progress: bool, *args: Any) -> int:
        """Call one of the C copy loops; raise with its message on failure."""
        meter = _Progress(what, progress)
        callback = self.ffi.callback("ov_progress_fn", lambda _opaque, done, total: meter(done, total))
        err = self.ffi.new("char[]", ERR_SIZE)
        written = int(getattr(self.lib, func)(self.client, *args, callback, self.ffi.NULL, err, ERR_SIZE))
        if written < 0:
            raise OnevitaError(f"{what} failed: {self.ffi.string(err).decode(errors='replace')}")
        return written


def _child(ffi: Any, lib: Any, path: str, conf: VitastorConfig, job: Job) -> bytes:
    """Run ``job`` with a connected session; the JSON reply for the parent."""
    try:
        session = _Session(ffi, lib, path, conf)
        try:
            reply: dict[str, Any] = {"result": job(session)}
        finally:
            session.close()
    except OnevitaError as e:
        reply = {"error": {"kind": type(e).__name__, "message": str(e)}}
    except BaseException as e:  # reported to the parent, which raises it as an OnevitaError
        reply = {"error": {"kind": "OnevitaError", "message": f"{type(e).__name__}: {e}"}}
    return orjson.dumps(reply)


def _relay(fd: int) -> list[str]:
    """Pass the child's log lines on as they come; return its other lines (the last 20)."""
    other: Deque[str] = collections.deque(maxlen=20)
    pending = b""
    with os.fdopen(fd, "rb", buffering=0) as stream:
        while True:
            chunk = stream.read(65536)
            lines = (pending + chunk).split(b"\n")
            pending = lines.pop() if chunk else b""
            for line in lines:
                if line.startswith(LOG_PREFIXES):
                    sys.stderr.buffer.write(line + b"\n")
                    sys.stderr.flush()
                elif line.strip():
                    text = line.decode(errors="replace").strip()
                    other.append(text)
                    log.info(f"libvitastor_client: {text}")
            if not chunk:
                return list(other)


def _read_all(fd: int) -> bytes:
    with os.fdopen(fd, "rb") as stream:
        return stream.read()


def _close_fds_except(keep: set[int]) -> None:
    """Close every descriptor above 2 but ``keep``: the child must not hold, say, the write end
    of the pipe it reads, or the parent's would never see EOF."""
    low = 3
    for fd in sorted(fd for fd in keep if fd >= low):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, max(os.sysconf("SC_OPEN_MAX"), low))


def _run(conf: VitastorConfig, what: str, job: Job, fds: tuple[int, ...] = ()) -> int:
    """Run ``job`` in a forked child with libvitastor_client loaded; its result, or its error.
    The child keeps only ``fds`` (and 0-2) of this process's descriptors."""
    path = find_library()
    ffi, lib = _helper()
    _check_etcd(conf)
    sys.stdout.flush()
    sys.stderr.flush()
    out_r, out_w = os.pipe()
    reply_r, reply_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        try:
            os.close(out_r)
            os.close(reply_r)
            os.dup2(out_w, 1)
            os.dup2(out_w, 2)
            os.close(out_w)
            _close_fds_except({reply_w, *fds})
            sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115 (whatever they were, now the pipe)
            sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
            reply = _child(ffi, lib, path, conf, job)
            sys.stdout.flush()
            sys.stderr.flush()
            os.write(reply_w, reply)
        finally:
            os._exit(0)
    os.close(out_w)
    os.close(reply_w)
    reaped = False
    try:
        other = _relay(out_r)
        data = _read_all(reply_r)
        _, status = os.waitpid(pid, 0)
        reaped = True
    finally:
        if not reaped:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
    if not data:
        how = (f"exited with status {os.WEXITSTATUS(status)}" if os.WIFEXITED(status)
               else f"was killed by signal {os.WTERMSIG(status)}")
        detail = f": {' / '.join(other[-5:])}" if other else ""
        raise OnevitaError(f"Vitastor client library {how} during {what}{detail}")
    reply = orjson.loads(data)
    if "error" in reply:
        raise by_kind(reply["error"]["kind"])(reply["error"]["message"])
    return int(reply["result"])


def _timed(what: str, progress: bool, call: Callable[[], int]) -> int:
    start = time.monotonic()
    written = call()
    if progress:
        seconds = max(time.monotonic() - start, 1e-6)
        log.info(f"{what}: done, {written} bytes written in {seconds:.1f} s")
    return written


def _stream_size(fd: int) -> int | None:
    """The byte size of a regular file or block device behind ``fd``; None for a pipe or socket."""
    mode = os.fstat(fd).st_mode
    if stat.S_ISREG(mode):
        return os.fstat(fd).st_size
    if stat.S_ISBLK(mode):
        return os.lseek(fd, 0, os.SEEK_END)
    return None


def import_fd(conf: VitastorConfig, fd: int, image: str, size: int | None = None, *, queue_depth: int = 32,
              sparse: bool = True, progress: bool = True) -> int:
    """Copy ``fd`` into the existing image ``image``: at most ``size`` bytes (default: the
    file's size, or for a pipe everything up to the image's size); a tail that is not a
    multiple of 4 KiB is padded with zeros. Regular files are read with their holes skipped,
    pipes sequentially. The image must hold the data (callers create or grow it first).
    Returns the bytes written."""
    what = f"import into {image}"

    def job(session: _Session) -> int:
        with session.image(image) as target:
            total = target.size if size is None else size
            return session.copy("ov_copy_fd_to_image", what, progress, fd, total, target.handle, queue_depth,
                                0 if sparse else 1)

    if size is None:
        size = _stream_size(fd)
    return _timed(what, progress, lambda: _run(conf, what, job, (fd,)))


def import_file(conf: VitastorConfig, path: str | os.PathLike[str], image: str, *, queue_depth: int = 32,
                sparse: bool = True, progress: bool = True) -> int:
    """Copy the file (or device, or FIFO) at ``path`` into the existing image ``image``; see
    ``import_fd``. Returns the bytes written."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise OnevitaError(f"cannot open {path}: {e.strerror}") from e
    try:
        return import_fd(conf, fd, image, queue_depth=queue_depth, sparse=sparse, progress=progress)
    finally:
        os.close(fd)


def export_to_file(conf: VitastorConfig, image: str, path_or_fd: PathOrFd, *, size: int | None = None,
                   queue_depth: int = 32, progress: bool = True) -> int:
    """Copy the image ``image`` (through its parent chain) to a file, device or pipe: the first
    ``size`` bytes (default: the whole image). A regular file is rewritten from offset 0 and
    left sparse where the image has holes or zeros; a pipe gets every byte in order.
    Returns the bytes written."""
    what = f"export of {image}"

    def job(session: _Session) -> int:
        with session.image(image) as source:
            total = source.size if size is None else size
            return session.copy("ov_copy_image_to_fd", what, progress, source.handle, total, fd,
                                queue_depth, 0)

    with _opened(path_or_fd) as fd:
        return _timed(what, progress, lambda: _run(conf, what, job, (fd,)))


class _opened:
    """A path opened for writing (closed afterwards), or an fd passed through as it is."""

    def __init__(self, path_or_fd: PathOrFd) -> None:
        self.path_or_fd, self.fd = path_or_fd, -1

    def __enter__(self) -> int:
        if isinstance(self.path_or_fd, int):
            return self.path_or_fd
        try:
            self.fd = os.open(self.path_or_fd, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise OnevitaError(f"cannot open {os.fspath(self.path_or_fd)}: {e.strerror}") from e
        return self.fd

    def __exit__(self, *exc: object) -> None:
        if self.fd >= 0:
            os.close(self.fd)


def copy_image(conf: VitastorConfig, src: str, dst: str, *, queue_depth: int = 32, sparse: bool = True,
               progress: bool = True) -> int:
    """Copy what image ``src`` reads (through its parent chain) into the existing image
    ``dst``, at least as large. Returns the bytes written."""
    what = f"copy of {src} to {dst}"

    def job(session: _Session) -> int:
        with session.image(src) as source, session.image(dst) as target:
            return session.copy("ov_copy_image_to_image", what, progress, source.handle, target.handle,
                                queue_depth, 0 if sparse else 1)

    return _timed(what, progress, lambda: _run(conf, what, job))


Extents = List[Tuple[int, int]]
EXTENT = struct.Struct(">QQ")
COUNT = struct.Struct(">Q")


def _written_by(session: _Session, layers: list[str], size: int) -> tuple[int, bytes]:
    """(granularity, bitmap): one bit per granule of [0, ``size``), LSB first, set where any of
    ``layers`` itself (not through its parents) holds written data; READ_BITMAP, no data read."""
    with session.image(layers[0]) as first:
        granularity: int = first.granularity
    nbytes = -(-size // granularity // 8)
    bitmap = session.ffi.new("uint8_t[]", nbytes + 8)
    for name in layers:
        with session.image(name) as layer:
            err = session.ffi.new("char[]", ERR_SIZE)
            rc = session.lib.ov_layer_bitmap(session.client, layer.handle, size, granularity, bitmap, 32, err,
                                             ERR_SIZE)
            if rc < 0:
                raise OnevitaError(session.ffi.string(err).decode(errors="replace"))
    return granularity, bytes(session.ffi.buffer(bitmap, nbytes))


def export_changes(conf: VitastorConfig, image: str, layers: list[str] | None,
                   to_extents: Callable[[bytes, int, int], Extents], fd: int, *, queue_depth: int = 32,
                   progress: bool = True) -> int:
    """In one library session: the granules that ``layers`` themselves wrote (None: all of
    ``image``), made (offset, length) extents by ``to_extents(bitmap, granularity, size)``, then what
    ``image`` reads (through its parents) in them, to the stream ``fd``: first the extents
    (their count, then each offset and length, 64-bit big-endian), then their data back to
    back. Returns the data bytes written."""
    what = f"export of the changed parts of {image}"

    def job(session: _Session) -> int:
        with session.image(image) as source:
            if layers is None:
                extents = [(0, source.size)]
            elif layers:
                granularity, bitmap = _written_by(session, layers, source.size)
                extents = to_extents(bitmap, granularity, source.size)
            else:
                extents = []
            header = COUNT.pack(len(extents)) + b"".join(EXTENT.pack(*extent) for extent in extents)
            while header:
                header = header[os.write(fd, header):]
            if not extents:
                return 0
            array = session.ffi.new("uint64_t[]", [v for extent in extents for v in extent])
            return session.copy("ov_copy_extents_to_fd", what, progress, source.handle, array, len(extents),
                                fd, queue_depth)

    return _timed(what, progress, lambda: _run(conf, what, job, (fd,)))


def library_version(conf: VitastorConfig) -> str:
    """The version libvitastor_client reports once connected to ``conf``'s cluster ("" before
    2.2.3, which does not report it); ConfigError when it is older than onevita supports."""
    read_fd, write_fd = os.pipe()

    def job(session: _Session) -> int:
        os.write(write_fd, session.version.encode())
        return 0

    try:
        _run(conf, "the library version check", job, (write_fd,))
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)
    return _read_all(read_fd).decode(errors="replace")  # closes read_fd
