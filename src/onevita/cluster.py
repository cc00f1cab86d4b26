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
from .run import run, scripts_remote_dir, ssh_argv

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
    "remove_vm_dir": "onevita.hostfs:remove_vm_dir",
    "make_vm_dir": "onevita.hostfs:make_vm_dir",
    "vm_dir_exists": "onevita.hostfs:vm_dir_exists",
    "fsfreeze": "onevita.libvirt:fsfreeze",
    "fsthaw": "onevita.libvirt:fsthaw",
}
LOG_PREFIXES = (b"ERROR:", b"INFO:", b"WARN:", b"DEBUG:")


def _job(name: str) -> Callable[..., Any]:
    if name not in JOBS:
        raise BadRequest(f"unknown Vitastor job {name!r}")
    module, _, func = JOBS[name].partition(":")
    return getattr(import_module(module), func)  # type: ignore[no-any-return]


def run_job(host: str | None, job: str, **params: Any) -> Any:
    """Run ``job(**params)`` here (``host`` None) or on ``host``, and return its result."""
    if host is None:
        return _job(job)(**params)
    remote = [f"{scripts_remote_dir()}/onevita/onevita", "host-job"]
    proc = run(ssh_argv(host, remote), input=orjson.dumps({"job": job, "params": params}), check=False)
    reason = []
    for line in proc.stderr.splitlines():
        if line.startswith(LOG_PREFIXES):
            sys.stderr.buffer.write(line + b"\n")
        elif line.strip():
            reason.append(line.decode(errors="replace").strip())
    sys.stderr.flush()
    try:
        reply = orjson.loads(proc.stdout)
    except orjson.JSONDecodeError:
        raise RemoteError(f"{job} on {host} failed (exit {proc.returncode}): "
                          + (" ".join(reason) or "no reply")) from None
    if "error" in reply:
        raise by_kind(reply["error"].get("kind", ""))(reply["error"].get("message", "remote job failed"))
    return reply.get("result")


def host_job() -> int:
    """The host side: read ``{"job", "params"}`` on stdin, run it, write ``{"result"}`` or ``{"error"}``."""
    try:
        request = orjson.loads(sys.stdin.buffer.read())
        if not isinstance(request, dict) or not isinstance(request.get("params", {}), dict):
            raise BadRequest("host-job expects a JSON object with job and params")
        log.set_action(f"host-job/{request.get('job')}")
        result = _job(str(request.get("job")))(**request.get("params", {}))
    except OnevitaError as e:
        sys.stdout.buffer.write(orjson.dumps({"error": {"kind": type(e).__name__, "message": str(e)}}))
        return 1
    except (orjson.JSONDecodeError, TypeError) as e:
        sys.stdout.buffer.write(orjson.dumps({"error": {"kind": "BadRequest", "message": str(e)}}))
        return 1
    sys.stdout.buffer.write(orjson.dumps({"result": result}))
    return 0


def job_host(settings: VitastorSettings, host: str) -> str | None:
    """Where Vitastor jobs of this datastore run: ``host``, or here with VITASTOR_ON_FRONTEND."""
    return None if settings.on_frontend else host


def bridge(settings: VitastorSettings, object_id: int) -> str | None:
    """A BRIDGE_LIST host for jobs not tied to a VM's host (``get_destination_host``: id % N)."""
    if settings.on_frontend:
        return None
    if not settings.bridges:
        raise ConfigError("Datastore template missing 'BRIDGE_LIST' attribute.")
    return settings.bridges[object_id % len(settings.bridges)]
