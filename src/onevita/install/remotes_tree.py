"""onevita's part of OpenNebula's remotes tree: the zipapp once, its launcher, one link per action.

build.py lays out ``dist/remotes`` with these functions and ``onevita install`` lays out the
live ``/var/lib/one/remotes`` with the same ones, from the zipapp it runs from, so a single
copied ``onevita.pyz`` is enough to install.
"""

from __future__ import annotations

import os
import shutil
import sys
import zipfile
from pathlib import Path
from typing import Any

import orjson

from ..actions import ACTIONS, DRIVER_DIRS
from ..errors import ConfigError
from .edits import Change
from .files import replace_file

__all__ = ["HOME", "LAUNCHER", "ZIPAPP", "action_links", "build_info", "launcher_text", "place", "remove",
           "running_zipapp", "summarise"]

HOME = "onevita"
ZIPAPP = f"{HOME}/onevita.pyz"
LAUNCHER = f"{HOME}/onevita"
BUILD_INFO = "build.json"


def action_links() -> dict[str, str]:
    """Every driver action's path under remotes → the relative link target (the launcher)."""
    links = {}
    for command in ACTIONS:
        family, _, action = command.partition("/")
        directory = DRIVER_DIRS[family]
        links[f"{directory}/{action}"] = "../" * (directory.count("/") + 1) + LAUNCHER
    return links


def launcher_text(build_id: str, pythons: list[str]) -> str:
    """The launcher with this build's id (shiv's cache name) and the Pythons it carries wheels for."""
    template = Path(__file__).resolve().parent.parent.joinpath("launcher.py").read_text()
    return template.replace("@BUILD_ID@", build_id).replace("@PYTHONS@", ",".join(pythons))


def build_info(pyz: Path) -> tuple[str, list[str]]:
    """(build id, target Pythons) of a built zipapp: shiv's environment.json and our build.json."""
    try:
        with zipfile.ZipFile(pyz) as archive:
            environment = orjson.loads(archive.read("environment.json"))
            info = orjson.loads(archive.read(f"site-packages/onevita/{BUILD_INFO}"))
    except (OSError, KeyError, zipfile.BadZipFile, orjson.JSONDecodeError) as e:
        raise ConfigError(f"{pyz} is not an onevita zipapp built by build.py: {e}") from e
    return str(environment["build_id"]), [str(v) for v in info["pythons"]]


def running_zipapp() -> Path:
    """The onevita.pyz this process runs from: through the remotes launcher, or run directly
    (``python3 onevita.pyz install``, ``/usr/bin/onevita`` → ``/usr/lib/onevita/onevita.pyz``)."""
    remotes = os.environ.get("ONEVITA_REMOTES")
    candidates = [Path(remotes, ZIPAPP)] if remotes else []
    candidates.append(Path(os.path.realpath(sys.argv[0])))
    for candidate in candidates:
        if candidate.is_file() and zipfile.is_zipfile(candidate):
            return candidate
    raise ConfigError("onevita install must run from the built zipapp (python3 onevita.pyz install)")


def _same_bytes(path: Path, data: bytes) -> bool:
    if not path.is_file() or path.is_symlink() or path.stat().st_size != len(data):
        return False
    return path.read_bytes() == data


def _own_like_remotes(remotes: Path, changes: list[Change]) -> None:
    """Give what ``place`` made the owner of the remotes tree (oneadmin in OpenNebula's
    packages), as the rest of the tree has; root running install would otherwise own it."""
    if os.geteuid() != 0:
        return
    owner = remotes.stat()
    for change in changes:
        path = remotes / change.undo["path"]
        os.chown(path, owner.st_uid, owner.st_gid, follow_symlinks=False)


def place(remotes: Path, pyz: Path, replaced_dir: Path) -> list[Change]:
    """Put the zipapp, the launcher and every action link under ``remotes``.

    A file already at a link's path (the bash driver's script) is moved to ``replaced_dir`` and
    comes back on uninstall. Returns one Change per thing placed; none when all is in place.
    """
    changes = []
    home = remotes / HOME
    if not home.is_dir():
        home.mkdir(parents=True)
        changes.append(Change(f"remotes: created {home}", {"op": "dir", "path": HOME}))
    build_id, pythons = build_info(pyz)
    for path, data, mode in ((ZIPAPP, pyz.read_bytes(), 0o644),
                             (LAUNCHER, launcher_text(build_id, pythons).encode(), 0o755)):
        if not _same_bytes(remotes / path, data):
            existed = (remotes / path).exists()
            replace_file(remotes / path, data, mode)  # oned never runs a half-copied file
            verb = "updated" if existed else "placed"
            changes.append(Change(f"remotes: {verb} {remotes / path} (build {build_id[:12]})",
                                  {"op": "file", "path": path}))
    for path, target in action_links().items():
        link = remotes / path
        if link.is_symlink() and os.readlink(link) == target:
            continue
        if not link.parent.is_dir():
            link.parent.mkdir(parents=True)
            changes.append(Change(f"remotes: created {link.parent}",
                                  {"op": "dir", "path": str(Path(path).parent)}))
        undo: dict[str, Any] = {"op": "link", "path": path}
        if link.is_symlink() or link.exists():
            kept = replaced_dir / path
            kept.parent.mkdir(parents=True, exist_ok=True)
            os.replace(link, kept)
            undo["replaced"] = str(kept)
        link.symlink_to(target)
        moved = f" (the previous file kept in {undo['replaced']})" if "replaced" in undo else ""
        changes.append(Change(f"remotes: linked {link} to the launcher{moved}", undo))
    _own_like_remotes(remotes, changes)
    return changes


def summarise(remotes: Path, changes: list[Change]) -> list[str]:
    """What ``place`` did, for the admin: plain new links counted per directory, the rest as is."""
    lines: list[str] = []
    linked: dict[str, int] = {}
    for change in changes:
        if change.undo.get("op") == "link" and "replaced" not in change.undo:
            directory = str(remotes / Path(change.undo["path"]).parent)
            linked[directory] = linked.get(directory, 0) + 1
        else:
            lines.append(change.summary)
    return lines + [f"remotes: linked {count} actions in {directory} to the launcher"
                    for directory, count in linked.items()]


def remove(remotes: Path, undo: list[dict[str, Any]]) -> list[str]:
    """Undo ``place``: links, files and directories it made, the replaced files put back."""
    done = []
    unlinked = 0
    for record in reversed(undo):
        path = remotes / record["path"]
        if record["op"] == "link":
            if path.is_symlink() and os.readlink(path) == action_links().get(record["path"]):
                path.unlink()
                unlinked += 1
            replaced = record.get("replaced")
            if replaced and Path(replaced).exists() and not path.exists():
                os.replace(replaced, path)
                done.append(f"remotes: restored {path}")
        elif record["op"] == "file" and path.exists():
            path.unlink()
            done.append(f"remotes: removed {path}")
        elif record["op"] == "dir" and path.is_dir():
            if record["path"] == HOME:
                shutil.rmtree(path)
            elif any(path.iterdir()):
                continue
            else:
                path.rmdir()
            done.append(f"remotes: removed {path}")
    if unlinked:
        done.insert(0, f"remotes: removed {unlinked} action links")
    return done
