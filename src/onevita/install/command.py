"""``onevita install`` and ``onevita uninstall``: the remotes tree and OpenNebula's config files.

Install plans every edit in memory first (a file it cannot understand stops it before anything
is written), then writes each file in one rename after a backup, re-reads it and checks it with
the editor that made it. What it did is kept in a state file, which uninstall undoes record by
record, so edits the admin made in between survive and a second install changes nothing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import orjson

from ..errors import ConfigError, OnevitaError
from ..one.model import Datastore, parse_datastore_pool
from ..one.xmlrpc import connect_as_admin, oned
from ..vitastor.config import DEFAULT_CONFIG_PATH
from . import apparmor, downloader, oned_conf, remotes_tree, vmm_execrc
from .edits import Change
from .files import replace_file
from .layout import Layout, layout_arguments

__all__ = ["install", "uninstall"]

APPLIED = "OK, Vitastor OpenNebula patches successfully applied"
ALREADY = "OK, Vitastor OpenNebula patches are already applied"
REMOVED = "OK, Vitastor OpenNebula patches successfully removed"
NOTHING = "OK, no Vitastor OpenNebula patches to remove"


@dataclass(frozen=True)
class ConfigFile:
    """One file install edits, with the editor functions that know its syntax."""

    label: str
    path: Path
    apply: Callable[[str], tuple[str, list[Change]]]
    revert: Callable[[str, list[dict[str, Any]]], str]
    check: Callable[[str], list[str]]
    may_be_missing: bool = False


def config_files(layout: Layout, conf_paths: list[str], with_apparmor: bool) -> list[ConfigFile]:
    """The files install edits, in the order it edits them; AppArmor's only ``with_apparmor``
    (in use now, for install and doctor; always for uninstall: it may have been at install)."""
    files = [
        ConfigFile("oned.conf", layout.oned_conf, oned_conf.apply, oned_conf.revert, oned_conf.check),
        ConfigFile("vmm_execrc", layout.vmm_execrc, vmm_execrc.apply, vmm_execrc.revert, vmm_execrc.check),
        ConfigFile("downloader.sh", layout.downloader, downloader.apply, downloader.revert, downloader.check),
    ]
    if with_apparmor:
        files.append(ConfigFile(
            "AppArmor", layout.apparmor_libvirt_qemu,
            lambda text: apparmor.apply(text, conf_paths), apparmor.revert,
            lambda text: apparmor.check(text, conf_paths), may_be_missing=True))
    return files


def vitastor_datastores() -> list[Datastore]:
    """Every datastore oned knows whose transfer or datastore driver is vitastor."""
    pool = parse_datastore_pool(oned().datastorepool_info())
    return [datastore for datastore in pool if "vitastor" in (datastore.tm_mad, datastore.ds_mad)]


def vitastor_conf_paths() -> tuple[list[str], str | None]:
    """VITASTOR_CONF of every Vitastor datastore (and the default path), and a note when oned
    cannot be asked (a package installed before oned runs): install can be run again later."""
    paths = {DEFAULT_CONFIG_PATH}
    try:
        paths.update(datastore.vitastor().conf or DEFAULT_CONFIG_PATH for datastore in vitastor_datastores())
    except (OnevitaError, OSError) as e:
        note = f"note: datastores not read from oned ({e}); only {DEFAULT_CONFIG_PATH} is covered"
        return sorted(paths), note
    return sorted(paths), None


class State:
    """The undo records of every install run, per config file and for the remotes tree."""

    def __init__(self, path: Path) -> None:
        self.path = path
        data = orjson.loads(path.read_bytes()) if path.exists() else {}
        self.files: dict[str, list[dict[str, Any]]] = data.get("files", {})
        self.remotes: list[dict[str, Any]] = data.get("remotes", [])

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = {"files": self.files, "remotes": self.remotes}
        replace_file(self.path, orjson.dumps(data, option=orjson.OPT_INDENT_2))


def _read(config: ConfigFile) -> str:
    try:
        return config.path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if config.may_be_missing:
            return ""
        raise ConfigError(f"{config.path} not found: is OpenNebula installed here "
                          "(see --root and --one-location)?") from None


def _replace(path: Path, new: str, backups: Path) -> None:
    """Back the file up, then replace it in one rename keeping its mode and owner."""
    if path.exists():
        backups.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, backups / path.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        replace_file(path, new.encode())
        return
    info = path.stat()
    owner = (info.st_uid, info.st_gid) if os.geteuid() == 0 else None
    replace_file(path, new.encode(), info.st_mode & 0o7777, owner)


def _edit(config: ConfigFile, old: str, new: str, backups: Path) -> None:
    """Write an installed file, re-read it and check it; put the old text back if it fails."""
    _replace(config.path, new, backups)
    written = config.path.read_text(encoding="utf-8")
    problems = config.check(written) if written == new else [f"{config.path} reads back differently"]
    if problems:
        _replace(config.path, old, backups.with_name(backups.name + "-failed"))
        raise ConfigError(f"{config.path} failed its check after editing and was restored: "
                          f"{'; '.join(problems)}")


def _parse(command: str, argv: tuple[str, ...], dry_run: bool) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"onevita {command}")
    layout_arguments(parser)
    if dry_run:
        parser.add_argument("--dry-run", action="store_true", help="print what would change, write nothing")
    return parser.parse_args(argv)


def install(*argv: str) -> int:
    """Put onevita's remotes in place and configure OpenNebula for it; safe to run again."""
    args = _parse("install", argv, dry_run=True)
    layout = Layout.of(args.root, args.one_location)
    pyz = remotes_tree.running_zipapp()
    print(f"OpenNebula credentials: {connect_as_admin(layout.admin_homes())}")
    conf_paths, note = vitastor_conf_paths()
    planned = []
    for config in config_files(layout, conf_paths, apparmor.in_use(str(layout.root))):
        old = _read(config)
        new, changes = config.apply(old)
        planned.append((config, old, new, changes))
    if args.dry_run:
        for _config, _old, _new, changes in planned:
            for change in changes:
                print(f"would change: {change.summary}")
        print("dry run: nothing written")
        return 0
    state = State(layout.state_file)
    backups = layout.state_dir / "backups" / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    placed = remotes_tree.place(layout.remotes, pyz, layout.state_dir / "replaced")
    state.remotes += [change.undo for change in placed]
    state.save()
    done = remotes_tree.summarise(layout.remotes, placed)
    for config, old, new, changes in planned:
        if not changes:
            continue
        _edit(config, old, new, backups / config.label)
        state.files.setdefault(str(config.path), []).extend(change.undo for change in changes)
        state.save()
        done += [change.summary for change in changes]
    for line in done:
        print(line)
    if note:
        print(note)
    if done:
        print(f"backups of the edited files: {backups}")
        print("next: restart oned, then run 'onehost sync -f' to copy the remotes to the hosts")
    print(APPLIED if done else ALREADY)
    return 0


def uninstall(*argv: str) -> int:
    """Undo exactly what install recorded, newest first."""
    args = _parse("uninstall", argv, dry_run=False)
    layout = Layout.of(args.root, args.one_location)
    if not layout.state_file.exists():
        print(f"no install state in {layout.state_file}")
        print(NOTHING)
        return 0
    state = State(layout.state_file)
    editors = {str(c.path): c for c in config_files(layout, [], with_apparmor=True)}
    backups = layout.state_dir / "backups" / time.strftime("%Y%m%dT%H%M%SZ-uninstall", time.gmtime())
    done = []
    for path, undo in reversed(list(state.files.items())):
        config = editors[path]
        if config.path.exists():
            old = config.path.read_text(encoding="utf-8")
            new = config.revert(old, undo)
            if new != old:
                _replace(config.path, new, backups / config.label)
                done.append(f"{config.label}: restored {path}")
        else:  # OpenNebula removed before onevita: its files went with it
            done.append(f"{config.label}: {path} is gone, nothing to undo")
        del state.files[path]
        state.save()
    done += remotes_tree.remove(layout.remotes, state.remotes)
    layout.state_file.unlink()
    for line in done:
        print(line)
    print(REMOVED if done else NOTHING)
    return 0

