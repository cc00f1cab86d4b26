"""``onevita doctor``: check an OpenNebula front-end or host for everything onevita needs.

Each check prints one line, ``OK``, ``WARN`` or ``FAIL`` and what to do about it; the command
fails when any check fails. It reads and asks, and changes nothing: the first thing to run
when "Datastore driver 'vitastor' not available" or an image copy fails.
"""

from __future__ import annotations

import argparse
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..cluster import UNAVAILABLE_HOST_STATES
from ..errors import ConfigError, OnevitaError
from ..one.location import scripts_remote_dir
from ..one.model import Datastore, parse_host_states
from ..one.xmlrpc import connect_as_admin, oned
from ..run import run_on
from ..vitastor import client
from ..vitastor.config import DEFAULT_CONFIG_PATH, read_config
from ..vitastor.jobs import open_catalog
from . import apparmor, remotes_tree
from .command import config_files, vitastor_datastores
from .layout import Layout, layout_arguments

__all__ = ["doctor"]


@dataclass(frozen=True)
class Finding:
    """One check's outcome."""

    level: str  # INFO, OK, WARN or FAIL
    text: str


def _ok(text: str) -> Finding:
    return Finding("OK", text)


def _fail(text: str) -> Finding:
    return Finding("FAIL", text)


def check_config_files(layout: Layout, conf_paths: list[str]) -> Iterator[Finding]:
    """oned.conf, vmm_execrc, downloader.sh and AppArmor hold what install puts there."""
    for config in config_files(layout, conf_paths, apparmor.in_use(str(layout.root))):
        if not config.path.exists() and not config.may_be_missing:
            yield _fail(f"{config.path} is missing")
            continue
        problems = config.check(config.path.read_text() if config.path.exists() else "")
        if problems:
            yield from (_fail(f"{config.label}: {p} (run onevita install)") for p in problems)
        else:
            yield _ok(f"{config.label}: configured for Vitastor")


def check_remotes(layout: Layout) -> Iterator[Finding]:
    """The zipapp, the launcher and every action link are in the front-end's remotes tree."""
    if not (layout.remotes / remotes_tree.ZIPAPP).exists():
        yield _fail(f"{layout.remotes / remotes_tree.ZIPAPP} is missing (run onevita install)")
        return
    links = remotes_tree.action_links()
    wrong = [path for path, target in links.items() if _readlink(layout.remotes / path) != target]
    if wrong:
        yield _fail(f"remotes: {len(wrong)} action links missing or not onevita's, e.g. {wrong[0]} "
                    "(run onevita install)")
    else:
        yield _ok(f"remotes: onevita and its {len(links)} action links in {layout.remotes}")


def _readlink(path: Path) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return ""


def check_hosts_synced(layout: Layout) -> Iterator[Finding]:
    """Every usable host has the front-end's zipapp (``onehost sync`` copies it)."""
    local = hashlib.sha256((layout.remotes / remotes_tree.ZIPAPP).read_bytes()).hexdigest()
    remote_pyz = os.path.join(scripts_remote_dir(str(layout.remotes.parent)), remotes_tree.ZIPAPP)
    for host, state in sorted(parse_host_states(oned().hostpool_info()).items()):
        if state in UNAVAILABLE_HOST_STATES:
            yield Finding("WARN", f"host {host}: not checked, its state is off, error or disabled")
            continue
        try:
            found = run_on(host, 'sha256sum "$1" 2>/dev/null || true', remote_pyz, what="checking remotes")
        except OnevitaError as e:
            yield _fail(f"host {host}: {e}")
            continue
        if found.split(" ")[0] == local:
            yield _ok(f"host {host}: remotes in sync")
        else:
            yield _fail(f"host {host}: {remote_pyz} is missing or differs (run onehost sync -f)")


def check_datastore(datastore: Datastore) -> Iterator[Finding]:
    """A Vitastor datastore's settings, its cluster's etcd and its pool."""
    what = f"datastore {datastore.id} ({datastore.name})"
    try:
        settings = datastore.vitastor()
        catalog = open_catalog(settings.conf)
        catalog.load()
        pool = catalog.pool(settings.pool)
    except OnevitaError as e:
        yield _fail(f"{what}: {e}")
        return
    yield _ok(f"{what}: etcd of {settings.conf or DEFAULT_CONFIG_PATH} answers, pool {pool.name} exists")


def check_library(conf: str | None) -> Iterator[Finding]:
    """libvitastor_client is installed, and new enough when the cluster of ``conf`` answers."""
    try:
        path = client.find_library()
    except ConfigError as e:
        yield _fail(f"libvitastor_client: {e}")
        return
    try:
        version = client.library_version(read_config(conf))
    except ConfigError as e:
        yield _fail(f"libvitastor_client at {path}: {e}")
        return
    except OnevitaError as e:
        yield Finding("WARN", f"libvitastor_client at {path}: version not checked: {e}")
        return
    yield _ok(f"libvitastor_client: {path}, version {version or 'older than 2.2.3, at least 1.11'}")


def isolation_reminder() -> Finding:
    """What doctor cannot see from here: whether VMs can reach the storage network."""
    return Finding("WARN", "Vitastor has no authentication: VMs must not reach the storage network. "
                   "Separate them by VLAN, or on bridged hosts see "
                   "'onevita firewall --vm-net VM_SUBNET --host-net HOST_SUBNET'")


def findings(layout: Layout, hosts: bool) -> Iterator[Finding]:
    """Every check for this machine: a front-end when oned.conf is here, else a host."""
    frontend = layout.oned_conf.exists()
    datastores: list[Datastore] = []
    if frontend:
        yield Finding("INFO", f"OpenNebula credentials: {connect_as_admin(layout.admin_homes())}")
        try:
            datastores = vitastor_datastores()
        except (OnevitaError, OSError) as e:
            yield _fail(f"oned: cannot list datastores: {e}")
    confs = sorted({d.template.get("VITASTOR_CONF") or DEFAULT_CONFIG_PATH for d in datastores}
                   or {DEFAULT_CONFIG_PATH})
    if frontend:
        yield from check_config_files(layout, confs)
        yield from check_remotes(layout)
        if hosts and (layout.remotes / remotes_tree.ZIPAPP).exists():
            yield from check_hosts_synced(layout)
        for datastore in datastores:
            yield from check_datastore(datastore)
    yield from check_library(confs[0])
    yield isolation_reminder()


def doctor(*argv: str) -> int:
    """Print every check; fail when one fails."""
    parser = argparse.ArgumentParser(prog="onevita doctor", description=__doc__.splitlines()[0])
    layout_arguments(parser)
    parser.add_argument("--hosts", action="store_true", help="also check every host's remotes over ssh")
    args = parser.parse_args(argv)
    failed = 0
    for finding in findings(Layout.of(args.root, args.one_location), args.hosts):
        print(f"{finding.level:4} {finding.text}")
        failed += finding.level == "FAIL"
    if failed:
        raise ConfigError(f"onevita doctor: {failed} check(s) failed")
    return 0
