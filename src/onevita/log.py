"""Log lines in the format one_tm / one_datastore forward to oned.log.

The driver framework matches ``^(ERROR|INFO|WARN|DEBUG):\\s+...`` on stderr and forwards such
lines as log messages; every other stderr line becomes the failure reason. So log output and
the reason must never be mixed up: log lines always carry their prefix, the reason never does.
"""

from __future__ import annotations

import sys

_action = "onevita"


def set_action(name: str) -> None:
    """Name the running action (e.g. ``tm/clone``) in every log line."""
    global _action
    _action = name


def _emit(severity: str, message: str) -> None:
    for line in message.splitlines() or [""]:
        sys.stderr.write(f"{severity}: {_action}: {line}\n")
    sys.stderr.flush()


def info(message: str) -> None:
    """An ``INFO:`` line for oned.log."""
    _emit("INFO", message)


def debug(message: str) -> None:
    """A ``DEBUG:`` line for oned.log."""
    _emit("DEBUG", message)


def error(message: str) -> None:
    """An ``ERROR:`` line for oned.log (the reason itself goes out through ``reason``)."""
    _emit("ERROR", message)


def warn(message: str) -> None:
    """A ``WARN:`` line (``WARNING:`` would be taken as failure text by the driver framework)."""
    _emit("WARN", message)


def reason(message: str) -> None:
    """The failure reason: plain stderr lines, which oned stores in the VM or image ERROR."""
    text = " ".join(line.strip() for line in message.splitlines() if line.strip())
    sys.stderr.write(text + "\n")
    sys.stderr.flush()
