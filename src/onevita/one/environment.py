"""The PATH driver actions run with, extended the way OpenNebula's own driver scripts extend it.

oned runs every driver as oneadmin, whose PATH on Debian is the default for users other than
root (``/usr/local/bin:/usr/bin:/bin:/usr/local/games:/usr/games``): no /usr/sbin, no /sbin,
and ssh sessions on hosts get much the same. The system tools a storage driver needs live there
(mkfs and the ``mkfs.<fs>`` helpers it looks up itself through PATH, mkswap, ...), so OpenNebula's
scripts_common.sh puts /bin, /sbin and /usr/bin in front of PATH before running anything.
onevita does the same once, where every action and host job starts, so that every command it
runs, and every command those commands run, finds its tools as OpenNebula's scripts would.
"""

from __future__ import annotations

import os

__all__ = ["TOOL_DIRS", "tool_path", "use_tool_path"]

# scripts_common.sh's three, plus /usr/sbin, where merged-/usr and EL systems keep sbin tools
TOOL_DIRS = ("/bin", "/sbin", "/usr/bin", "/usr/sbin")


def tool_path(path: str | None) -> str:
    """``path`` (a PATH value, None when unset) with TOOL_DIRS in front and each directory once;
    empty entries, which would search the current directory, are dropped."""
    entries = [entry for entry in (path or "").split(os.pathsep) if entry]
    return os.pathsep.join(dict.fromkeys([*TOOL_DIRS, *entries]))


def use_tool_path() -> None:
    """Extend this process's PATH, which every child inherits."""
    os.environ["PATH"] = tool_path(os.environ.get("PATH"))
