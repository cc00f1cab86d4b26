"""Where Vitastor jobs run: in this process, or on a host over one ssh call.

By default a job runs like the bash driver's ``ssh_exec_and_log``: on the VM's host (TM) or a
BRIDGE_LIST host (DS), which reach the storage network. The request goes as JSON on stdin to
``<SCRIPTS_REMOTE_DIR>/onevita/onevita host-job`` and the reply comes back as JSON on stdout;
the host's log lines are passed through to oned.log. With ``VITASTOR_ON_FRONTEND=YES`` on the
datastore the front-end runs the job itself.

Only the jobs named in ``JOBS`` can be requested, with JSON scalars as parameters. A job that
takes image data (``stream=``) gets it after the request: the request is then one JSON line and
the data follows as frames (4-byte big-endian length, bytes; length 0 ends it), so the host can
tell a complete stream from one the front-end gave up on (a checksum mismatch found at the end,
a download that broke) and never keeps a half-written image.
"""

from __future__ import annotations

import contextlib
import struct
import sys
import threading
from importlib import import_module
from typing import IO, TYPE_CHECKING, Any, Callable

import orjson

from . import log
from .errors import BadRequest, ConfigError, OnevitaError, RemoteError, by_kind
from .one.location import scripts_remote_dir
from .one.model import VitastorSettings
from .run import CommandFailed, run, ssh_argv, ssh_failure

if TYPE_CHECKING:
    from .datastore.source import Reader

__all__ = ["JOBS", "FramedReader", "StreamEnded", "bridge", "host_job", "job_host", "pass_logs", "run_job"]

JOBS = {
    "clone": "onevita.vitastor.jobs:clone",
    "delete": "onevita.vitastor.jobs:delete",
    "resize": "onevita.vitastor.jobs:resize",
    "snapshot_create": "onevita.vitastor.jobs:snapshot_create",
    "snapshot_delete": "onevita.vitastor.jobs:snapshot_delete",
    "snapshot_revert": "onevita.vitastor.jobs:snapshot_revert",
    "snapshot_flatten": "onevita.vitastor.jobs:snapshot_flatten",
    "copy_to_new": "onevita.vitastor.copy_jobs:copy_to_new",
    "copy_into": "onevita.vitastor.copy_jobs:copy_into",
    "md5": "onevita.vitastor.copy_jobs:md5",
    "pool_usage": "onevita.vitastor.jobs:pool_usage",
    "vm_disk_usage": "onevita.vitastor.jobs:vm_disk_usage",
    "exists": "onevita.vitastor.jobs:exists",
    "import_image": "onevita.vitastor.jobs:import_image",
    "restore_disk": "onevita.vitastor.restore_jobs:restore_disk",
    "restore_swap": "onevita.vitastor.restore_jobs:restore_swap",
    "make_empty": "onevita.vitastor.volatile:make_empty",
    "fsfreeze": "onevita.libvirt:fsfreeze",
    "fsthaw": "onevita.libvirt:fsthaw",
    "suspend": "onevita.libvirt:suspend",
    "resume": "onevita.libvirt:resume",
    "checkpoint_save": "onevita.vmm.checkpoint:save_on_host",
    "checkpoint_restore": "onevita.vmm.checkpoint:restore_on_host",
    "backup_write": "onevita.vitastor.backup_jobs:backup_write",
    "tpm_save": "onevita.vmm.vtpm:save_state",
    "tpm_restore": "onevita.vmm.vtpm:restore_state",
    "backup_checkpoint": "onevita.vitastor.backup_jobs:backup_checkpoint",
    "backup_prune": "onevita.vitastor.backup_jobs:backup_prune",
    "backup_clean": "onevita.vitastor.backup_jobs:backup_clean",
}
LOG_PREFIXES = (b"ERROR:", b"INFO:", b"WARN:", b"DEBUG:")
FRAME = struct.Struct(">I")
FRAME_MAX = 1 << 24  # a longer frame is a corrupt stream, not data


class StreamEnded(OnevitaError):
    """The image data from the front-end stopped before its end mark."""


class FramedReader:
    """The host side of a job's data stream: the frames' bytes, ``b""`` after the end mark,
    StreamEnded if stdin closes without one."""

    def __init__(self, inner: IO[bytes]) -> None:
        self.inner, self.left, self.ended = inner, 0, False

    def _exactly(self, size: int) -> bytes:
        data = self.inner.read(size)
        if len(data) != size:
            raise StreamEnded("the image data from the front-end stopped before its end")
        return data

    def read(self, size: int) -> bytes:
        while not self.left:
            if self.ended:
                return b""
            (self.left,) = FRAME.unpack(self._exactly(FRAME.size))
            if self.left > FRAME_MAX:
                raise StreamEnded(f"corrupt image data stream (frame of {self.left} bytes)")
            self.ended = not self.left
        data = self._exactly(min(size, self.left))
        self.left -= len(data)
        return data


def _job(name: str) -> Callable[..., Any]:
    if name not in JOBS:
        raise BadRequest(f"unknown onevita host job {name!r}")
    module, _, func = JOBS[name].partition(":")
    return getattr(import_module(module), func)  # type: ignore[no-any-return]


def _reply(stdout: bytes) -> Any:
    """The JSON reply: the whole of stdout, or its last line when something on the host (a
    login script) printed before it; None if there is none."""
    for text in (stdout, stdout.strip().rpartition(b"\n")[2]):
        try:
            reply = orjson.loads(text)
        except orjson.JSONDecodeError:
            continue
        if isinstance(reply, dict):
            return reply
    return None


def _drain(pipe: IO[bytes], into: list[bytes]) -> threading.Thread:
    """Read ``pipe`` to its end in a thread, so a host writing much to stderr cannot block
    while the front-end is still writing the data stream."""
    thread = threading.Thread(target=lambda: into.append(pipe.read()), daemon=True)
    thread.start()
    return thread


def _run_streaming(argv: list[str], request: bytes,
                   stream: Reader) -> tuple[int, bytes, bytes, Exception | None]:
    """Run ``argv`` with the request line and ``stream`` in frames on its stdin; exit code,
    stdout, stderr and the error reading ``stream`` if there was one (the missing end mark then
    makes the host drop what it wrote). Stops sending when the host stops reading: it failed,
    and its reply says why."""
    import subprocess

    from .datastore.source import CHUNK

    try:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except FileNotFoundError as e:
        raise CommandFailed(f"{argv[0]}: command not found") from e
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    out: list[bytes] = []
    err: list[bytes] = []
    readers = [_drain(proc.stdout, out), _drain(proc.stderr, err)]
    failure: Exception | None = None
    try:
        proc.stdin.write(request + b"\n")
        while True:
            try:
                data = stream.read(CHUNK)
            except Exception as e:  # raised by the caller once the host has cleaned up
                failure = e
                break
            proc.stdin.write(FRAME.pack(len(data)))
            proc.stdin.write(data)
            if not data:
                break
    except BrokenPipeError:
        pass
    finally:
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.close()
    for thread in readers:
        thread.join()
    return proc.wait(), b"".join(out), b"".join(err), failure


def run_job(host: str | None, job: str, *, stream: Reader | None = None, **params: Any) -> Any:
    """Run ``job(**params)`` here (``host`` None) or on ``host``, and return its result.
    ``stream`` (image data) goes to the job as its ``stream`` argument, over ssh after the
    request."""
    if host is None:
        func = _job(job)
        return func(**params) if stream is None else func(stream=stream, **params)
    argv = ssh_argv(host, [f"{scripts_remote_dir()}/onevita/onevita", "host-job"])
    if stream is None:
        proc = run(argv, input=orjson.dumps({"job": job, "params": params}), check=False)
        return _result(host, job, proc.returncode, proc.stdout, proc.stderr)
    request = orjson.dumps({"job": job, "params": params, "stream": True})
    returncode, stdout, stderr, failure = _run_streaming(argv, request, stream)
    if failure is not None:
        pass_logs(stderr)
        raise failure
    return _result(host, job, returncode, stdout, stderr)


def pass_logs(stderr: bytes) -> list[str]:
    """Write the host's log lines to our stderr (oned.log); return the other lines."""
    reason = []
    for line in stderr.splitlines():
        if line.startswith(LOG_PREFIXES):
            sys.stderr.buffer.write(line + b"\n")
        elif line.strip():
            reason.append(line.decode(errors="replace").strip())
    sys.stderr.flush()
    return reason


def _result(host: str, job: str, returncode: int, stdout: bytes, stderr: bytes) -> Any:
    """The job's result from a host's reply, its log lines passed on; its error raised."""
    reason = pass_logs(stderr)
    reply = _reply(stdout)
    if reply is None:
        detail = " ".join(reason)
        if returncode in (126, 127):  # the shell found no runnable launcher
            launcher = f"{scripts_remote_dir()}/onevita/onevita"
            raise RemoteError(f"cannot run {launcher} on {host} ({detail or f'exit {returncode}'}): "
                              "copy the driver to the hosts with 'onehost sync --force'")
        raise RemoteError(ssh_failure(host, returncode, detail or "no reply", f"onevita job {job}"))
    if "error" in reply:
        error = reply["error"] if isinstance(reply["error"], dict) else {}
        kind, message = str(error.get("kind", "")), str(error.get("message") or "remote job failed")
        if kind == "InternalError":
            raise OnevitaError(f"internal error in onevita job {job} on {host}: {message}")
        raise by_kind(kind)(message)
    return reply.get("result")


def host_job() -> int:
    """The host side: read ``{"job", "params"}`` on stdin, run it, write ``{"result"}`` or ``{"error"}``.
    With ``"stream": true`` the request is the first line and the job reads the data after it.
    An unexpected exception is logged with its traceback and reported as ``InternalError``."""
    try:
        request = orjson.loads(sys.stdin.buffer.readline())  # an older front-end sends no newline
        if not isinstance(request, dict) or not isinstance(request.get("params", {}), dict):
            raise BadRequest("host-job expects a JSON object with job and params")
        log.set_action(f"host-job/{request.get('job')}")
        func = _job(str(request.get("job")))
        params = request.get("params", {})
        if request.get("stream"):
            params = {**params, "stream": FramedReader(sys.stdin.buffer)}
        try:
            result = func(**params)
        except TypeError as e:
            if e.__traceback__ is not None and e.__traceback__.tb_next is None:  # the call itself
                raise BadRequest(f"bad parameters for host job {request.get('job')!r}: {e}") from None
            raise
    except OnevitaError as e:
        return _error(type(e).__name__, str(e))
    except orjson.JSONDecodeError as e:
        return _error("BadRequest", f"host-job request is not JSON: {e}")
    except Exception as e:  # reported like __main__ does, but as a reply the front-end can read
        import traceback

        log.error(traceback.format_exc())
        return _error("InternalError", f"{type(e).__name__}: {e}")
    sys.stdout.buffer.write(orjson.dumps({"result": result}))
    return 0


def _error(kind: str, message: str) -> int:
    sys.stdout.buffer.write(orjson.dumps({"error": {"kind": kind, "message": message}}))
    return 1


def job_host(settings: VitastorSettings, host: str) -> str | None:
    """Where Vitastor jobs of this datastore run: ``host``, or here with VITASTOR_ON_FRONTEND."""
    return None if settings.on_frontend else host


# host states onehost list shows as off, err, dsbl (include/Host.h: ERROR, DISABLED,
# MONITORING_ERROR, MONITORING_DISABLED, OFFLINE)
UNAVAILABLE_HOST_STATES = {"3", "4", "5", "7", "8"}


def _unavailable_hosts() -> set[str]:
    """Hosts oned reports offline, in error or disabled; nothing if oned cannot say
    (``remove_off_hosts`` also keeps the list when ``onehost list`` fails)."""
    from .errors import OpenNebulaError
    from .one.model import parse_host_states
    from .one.xmlrpc import oned

    try:
        states = parse_host_states(oned().hostpool_info())
    except OpenNebulaError as e:
        log.warn(f"cannot read host states, using all of BRIDGE_LIST: {e}")
        return set()
    return {name for name, state in states.items() if state in UNAVAILABLE_HOST_STATES}


def bridge(settings: VitastorSettings, object_id: int) -> str | None:
    """A BRIDGE_LIST host for jobs not tied to a VM's host, like ``get_destination_host``:
    offline, error and disabled hosts left out, then ``id % N``."""
    if settings.on_frontend:
        return None
    if not settings.bridges:
        raise ConfigError("Datastore template missing 'BRIDGE_LIST' attribute.")
    unavailable = _unavailable_hosts()
    hosts = [h for h in settings.bridges if h not in unavailable]
    if not hosts:
        raise ConfigError("All hosts from 'BRIDGE_LIST' are offline, error or disabled")
    return hosts[object_id % len(hosts)]
