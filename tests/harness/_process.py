"""Plumbing shared by the harness daemons: loopback ports, bounded waits, shutdown that cannot hang."""

from __future__ import annotations

import socket
import subprocess
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Callable, Optional

POLL_INTERVAL = 0.05


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback TCP ports nobody listens on right now.

    All sockets stay bound until every port is picked, so the kernel cannot hand out the same port
    twice; a port can still be taken by someone else before the daemon binds it, which callers retry.
    """
    with ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
        return ports


def port_accepts(port: int) -> bool:
    """Whether something accepts TCP connections on ``127.0.0.1:port``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


def wait_until(ready: Callable[[], bool], timeout: float,
               proc: Optional[subprocess.Popen[bytes]] = None) -> bool:
    """Poll ``ready`` until it holds or ``timeout`` passes; give up at once if ``proc`` has exited.

    Stopping early on a dead process turns a crash at start-up into an immediate error with its log
    instead of a silent wait for the whole timeout.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return True
        if proc is not None and proc.poll() is not None:
            return False
        time.sleep(POLL_INTERVAL)
    return ready()


def stop_process(proc: Optional[subprocess.Popen[bytes]], timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout``, so a wedged daemon never hangs the test session."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def log_tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a daemon's log, for start-up error messages."""
    try:
        text = path.read_text(errors="replace")
    except OSError as e:
        return f"(no log at {path}: {e})"
    return "\n".join(text.splitlines()[-lines:])
