"""OpenNebula's remotes trees as its install.sh lays them out, per version (``<version>.txt``,
written by ``make_lists.py`` from install.sh's file lists).

Only the names are OpenNebula's: every file is a stand-in that fails loudly when run, so a test
that relies on a script must put a recorder of its own at that path first, and a test that
calls a script no installed OpenNebula has finds nothing there.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["VERSIONS", "lay_remotes", "remotes_files"]

HERE = Path(__file__).resolve().parent
VERSIONS = ["6.8", "6.10", "7.0", "7.2", "7.4"]
STAND_IN = """#!/bin/sh
echo "stand-in for OpenNebula's {path}: no test expected it to run" >&2
exit 99
"""


def remotes_files(version: str) -> list[str]:
    """The remotes-relative paths install.sh creates for ``version``'s tm, datastore and vmm."""
    lines = (HERE / f"{version}.txt").read_text().splitlines()
    return [line for line in lines if line and not line.startswith("#")]


def lay_remotes(version: str, remotes: Path) -> None:
    """``version``'s remotes files under ``remotes``, each an executable stand-in."""
    for relative in remotes_files(version):
        path = remotes / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(STAND_IN.format(path=relative))
        path.chmod(0o755)
