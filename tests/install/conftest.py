"""An OpenNebula front-end's files under a scratch root, and the built zipapp's admin commands."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.cloud import REMOTES, write_oned_config
from tests.conftest import library
from tests.harness import documents as docs
from tests.harness.oned import OnedStandIn
from tests.harness.sshd import Sshd
from tests.onetrees import VERSIONS, lay_remotes
from tests.sim.cluster import SimCluster

ONEFILES = Path(__file__).resolve().parent / "onefiles"
ZIPAPP = REMOTES.parent / "onevita.pyz"


@dataclass
class FrontEnd:
    """A scratch root holding one OpenNebula version's oned.conf, vmm_execrc and downloader.sh."""

    root: Path
    env: dict[str, str]
    one_location: str | None = None  # a self-contained install under root/ONE_LOCATION

    @property
    def etc(self) -> Path:
        return self.root / (f"{self.one_location.strip('/')}/etc" if self.one_location else "etc/one")

    @property
    def var(self) -> Path:
        return self.root / (f"{self.one_location.strip('/')}/var" if self.one_location else "var/lib/one")

    @property
    def oned_conf(self) -> Path:
        return self.etc / "oned.conf"

    @property
    def vmm_execrc(self) -> Path:
        return self.etc / "vmm_exec/vmm_execrc"

    @property
    def downloader(self) -> Path:
        return self.remotes / "datastore/downloader.sh"

    @property
    def remotes(self) -> Path:
        return self.var / "remotes"

    def files(self) -> dict[str, bytes]:
        """Every regular file and link under the root (links as their target), for comparisons."""
        found = {}
        for path in sorted(self.root.rglob("*")):
            key = str(path.relative_to(self.root))
            if path.is_symlink():
                found[key] = b"-> " + os.readlink(path).encode()
            elif path.is_file():
                found[key] = path.read_bytes()
        return found

    def onevita(self, *args: str, root: bool = True) -> subprocess.CompletedProcess[str]:
        """``python3 onevita.pyz COMMAND --root ROOT ...``, as an admin or a package script runs it."""
        command, *rest = args
        extra = ["--root", str(self.root)] if root else []
        if self.one_location:
            extra += ["--one-location", self.one_location]
        return subprocess.run(["/usr/bin/python3", str(ZIPAPP), command, *extra, *rest], capture_output=True,
                              text=True, env=self.env, timeout=120)


def frontend_env(oned: OnedStandIn, tmp_path: Path, world: Path) -> dict[str, str]:
    auth = tmp_path / "one_auth"
    auth.write_text(oned.session + "\n")
    return {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"), "ONE_XMLRPC": oned.endpoint,
            "ONE_AUTH": str(auth), "SHIV_ROOT": str(world / "shiv")}


def make_frontend(version: str, root: Path, env: dict[str, str], one_location: str | None = None) -> FrontEnd:
    """One version's files under ``root`` where a package-installed OpenNebula keeps them (or a
    self-contained one under ``one_location``): oned.conf, vmm_execrc, and the tm, datastore and
    vmm remotes files its install.sh lays out (stand-ins; downloader.sh a real-shaped copy)."""
    frontend = FrontEnd(root, env, one_location)
    lay_remotes(version, frontend.remotes)
    for source, target in (("oned.conf", frontend.oned_conf), ("vmm_execrc", frontend.vmm_execrc),
                           ("downloader.sh", frontend.downloader)):
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ONEFILES / version / source, target)
    return frontend


def vitastor_site(oned: OnedStandIn, cluster: SimCluster, sshd: Sshd, world: Path, tmp_path: Path,
                  sim_libvitastor: Path) -> FrontEnd:
    """A 7.0 front-end whose oned knows a Vitastor image datastore (101) on the test's cluster,
    bridged by node1, with the session's host copy as SCRIPTS_REMOTE_DIR."""
    env = frontend_env(oned, tmp_path, world)
    env["ONEVITA_SSH_CONFIG"] = str(sshd.config_path)
    lib = library(sim_libvitastor)
    if lib:
        env["ONEVITA_LIBVITASTOR"] = lib
    oned.datastores[101] = docs.datastore_xml(101, name="vitastor-images", ds_type=0, template={
        "VITASTOR_CONF": str(cluster.config_path), "POOL_NAME": "testpool", "BRIDGE_LIST": "node1"})
    frontend = make_frontend("7.0", tmp_path / "root", env)
    write_oned_config(frontend.root / "var/lib/one", SCRIPTS_REMOTE_DIR=str(world / "host-remotes"))
    return frontend


@pytest.fixture(params=VERSIONS)
def frontend(request: pytest.FixtureRequest, oned: OnedStandIn, tmp_path: Path, world: Path) -> FrontEnd:
    """A front-end of each OpenNebula version."""
    return make_frontend(request.param, tmp_path / "root", frontend_env(oned, tmp_path, world))


@pytest.fixture()
def frontend_70(oned: OnedStandIn, tmp_path: Path, world: Path) -> FrontEnd:
    """One front-end (7.0) for the tests that are not about version differences."""
    return make_frontend("7.0", tmp_path / "root", frontend_env(oned, tmp_path, world))
