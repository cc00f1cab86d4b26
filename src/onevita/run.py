"""Running commands: always argument lists, never a shell; ``shlex.join`` only where argv crosses ssh.

ssh joins its remote arguments into one string for the remote shell, so the remote argv is
quoted with ``shlex.join`` and contains only onevita's own paths and fixed words: everything
that comes from a template travels in the JSON request on stdin instead.
"""

from __future__ import annotations

import os
import shlex
from typing import TYPE_CHECKING, Sequence

from .errors import OnevitaError
from .names import check_host

if TYPE_CHECKING:
    import subprocess

__all__ = ["CommandFailed", "run", "run_on", "ssh_argv", "ssh_failure"]

class CommandFailed(OnevitaError):
    """A command exited non-zero."""


def run(argv: Sequence[str], *, input: bytes | None = None, check: bool = True,
        timeout: float | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run ``argv`` with captured output; CommandFailed (with its stderr) if it fails and ``check``."""
    import subprocess  # imported here: actions that run no command do not pay for it

    try:
        proc = subprocess.run(list(argv), input=input, capture_output=True, timeout=timeout, check=False)
    except FileNotFoundError as e:
        raise CommandFailed(f"{argv[0]}: command not found") from e
    except subprocess.TimeoutExpired as e:
        raise CommandFailed(f"{shlex.join(argv)}: timed out after {timeout} s") from e
    if check and proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip()
        raise CommandFailed(f"{shlex.join(argv)} failed (exit {proc.returncode}): {err}")
    return proc


def ssh_argv(host: str, remote_argv: Sequence[str]) -> list[str]:
    """``ssh [-F $ONEVITA_SSH_CONFIG] HOST 'quoted remote argv'``."""
    ssh = [os.environ.get("SSH", "ssh")]
    if os.environ.get("ONEVITA_SSH_CONFIG"):
        ssh += ["-F", os.environ["ONEVITA_SSH_CONFIG"]]
    return [*ssh, check_host(host), shlex.join(remote_argv)]


def ssh_failure(host: str, returncode: int, detail: str, what: str) -> str:
    """The reason for a command run on ``host`` over ssh that exited ``returncode``: ssh's own
    failures (exit 255: host down, key refused...) name the host; others name ``what`` failed."""
    detail = " ".join(line.strip() for line in detail.splitlines() if line.strip())
    if returncode == 255:
        return f"ssh to {host} failed: {detail or 'exit 255'}"
    return f"{what} on {host} failed (exit {returncode})" + (f": {detail}" if detail else "")


def run_on(host: str, script: str, *args: str, what: str) -> str:
    """Run the fixed shell ``script`` on ``host`` as ``sh -c SCRIPT sh ARGS...`` (values only
    as positional parameters, never pasted into it) and return its stdout; CommandFailed with
    ``what`` otherwise. Needs nothing of OpenNebula's remotes on the host, so it also works on
    a front-end that is not a hypervisor."""
    proc = run(ssh_argv(host, ["sh", "-c", script, "sh", *args]), check=False)
    if proc.returncode != 0:
        raise CommandFailed(ssh_failure(host, proc.returncode, proc.stderr.decode(errors="replace"), what))
    return proc.stdout.decode(errors="replace").strip()
