"""Where Vitastor jobs run: in this process, or on a host over one ssh call.

By default a job runs like the bash driver's ``ssh_exec_and_log``: on the VM's host (TM) or a
BRIDGE_LIST host (DS), which reach the storage network. The request goes as JSON on stdin to
``<SCRIPTS_REMOTE_DIR>/onevita/onevita host-job`` and the reply comes back as JSON on stdout;
the host's log lines are passed through to oned.log. With ``VITASTOR_ON_FRONTEND=YES`` on the
datastore the front-end runs the job itself.

Only the jobs named in ``JOBS`` can be requested, with JSON scalars as parameters.
"""

from __future__ import annotations

import sys
from importlib import import_module
from typing import Any, Callable

import orjson

from . import log
from .errors import BadRequest, ConfigError, OnevitaError, RemoteError, by_kind
from .one.model import VitastorSettings
from .run import run, scripts_remote_dir, ssh_argv, ssh_failure

__all__ = ["JOBS", "bridge", "host_job", "job_host", "run_job"]

JOBS = {
    "clone": "onevita.vitastor.jobs:clone",
    "delete": "onevita.vitastor.jobs:delete",
    "resize": "onevita.vitastor.jobs:resize",
    "snapshot_create": "onevita.vitastor.jobs:snapshot_create",
    "snapshot_delete": "onevita.vitastor.jobs:snapshot_delete",
    "snapshot_revert": "onevita.vitastor.jobs:snapshot_revert",
    "snapshot_flatten": "onevita.vitastor.jobs:snapshot_flatten",
    "flatten_copy": "onevita.vitastor.jobs:flatten_copy",
    "pool_usage": "onevita.vitastor.jobs:pool_usage",
    "vm_disk_usage": "onevita.vitastor.jobs:vm_disk_usage",
    "exists": "onevita.vitastor.jobs:exists",
    "fsfreeze": "onevita.libvirt:fsfreeze",
    "fsthaw": "onevita.libvirt:fsthaw",
}
LOG_PREFIXES = (b"ERROR:", b"INFO:", b"WARN:", b"DEBUG:")


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


def run_job(host: str | None, job: str, **params: Any) -> Any:
    """Run ``job(**params)`` here (``host`` None) or on ``host``, and return its result."""
    if host is None:
        return _job(job)(**params)
    launcher = f"{scripts_remote_dir()}/onevita/onevita"
    proc = run(ssh_argv(host, [launcher, "host-job"]), input=orjson.dumps({"job": job, "params": params}),
               check=False)
    reason = []
    for line in proc.stderr.splitlines():
        if line.startswith(LOG_PREFIXES):
            sys.stderr.buffer.write(line + b"\n")
        elif line.strip():
            reason.append(line.decode(errors="replace").strip())
    sys.stderr.flush()
    reply = _reply(proc.stdout)
    if reply is None:
        detail = " ".join(reason)
        if proc.returncode in (126, 127):  # the shell found no runnable launcher
            raise RemoteError(f"cannot run {launcher} on {host} ({detail or f'exit {proc.returncode}'}): "
                              "copy the driver to the hosts with 'onehost sync --force'")
        raise RemoteError(ssh_failure(host, proc.returncode, detail or "no reply", f"onevita job {job}"))
    if "error" in reply:
        error = reply["error"] if isinstance(reply["error"], dict) else {}
        kind, message = str(error.get("kind", "")), str(error.get("message") or "remote job failed")
        if kind == "InternalError":
            raise OnevitaError(f"internal error in onevita job {job} on {host}: {message}")
        raise by_kind(kind)(message)
    return reply.get("result")


def host_job() -> int:
    """The host side: read ``{"job", "params"}`` on stdin, run it, write ``{"result"}`` or ``{"error"}``.
    An unexpected exception is logged with its traceback and reported as ``InternalError``."""
    try:
        request = orjson.loads(sys.stdin.buffer.read())
        if not isinstance(request, dict) or not isinstance(request.get("params", {}), dict):
            raise BadRequest("host-job expects a JSON object with job and params")
        log.set_action(f"host-job/{request.get('job')}")
        func = _job(str(request.get("job")))
        try:
            result = func(**request.get("params", {}))
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
