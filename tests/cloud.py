"""A small OpenNebula cloud around the driver for tests and the demo: oned's XML-RPC stand-in
with realistic documents, a Vitastor cluster (simulated, or real when pointed at one), hosts
reached over a real sshd, and a runner that calls the driver through its dist/remotes links as
oned does: as an unprivileged user (oneadmin's stand-in) with Debian's PATH for such users."""

from __future__ import annotations

import base64
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from onevita.actions import DRIVER_DIRS
from onevita.vitastor.catalog import Inode
from tests.captures import plugin as captures
from tests.harness import documents as docs
from tests.harness.oned import OnedStandIn
from tests.harness.user import ActionUser
from tests.sim.cluster import SimCluster

ROOT = Path(__file__).resolve().parent.parent
# ONEVITA_DIST lets several builds coexist (python3 build.py --dist DIR)
REMOTES = Path(os.environ.get("ONEVITA_DIST", ROOT / "dist")) / "remotes"
SYSTEM_DS, IMAGE_DS = 100, 101
LOG_PREFIXES = ("ERROR:", "INFO:", "WARN:", "DEBUG:")


@dataclass
class Result:
    """What a driver action did: exit code, stdout, stderr, and its wall time."""

    argv: list[str]
    rc: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def reason(self) -> str:
        """The failure reason as oned sees it: the stderr lines that are not log lines."""
        return "".join(line.strip() for line in self.stderr.splitlines()
                       if line.strip() and not line.startswith(LOG_PREFIXES))

    @property
    def errors(self) -> list[str]:
        """The ``ERROR:`` lines, which oned writes to its log."""
        return [line for line in self.stderr.splitlines() if line.startswith("ERROR:")]


@dataclass
class Cloud:
    """One test's cloud: documents in the oned stand-in, one Vitastor cluster, one mode, and the
    user its actions run as, to whom ``workdir`` (the test's files: cluster data, staging and VM
    directories, images to import) is given before each action."""

    oned: OnedStandIn
    cluster: SimCluster
    env: dict[str, str]
    mode: str  # "ssh" (jobs on hosts, the default) or "frontend" (VITASTOR_ON_FRONTEND=YES)
    user: ActionUser
    workdir: Optional[Path] = None
    prefix: str = "one"
    pool: str = "testpool"
    history: list[Result] = field(default_factory=list)

    # documents -------------------------------------------------------------------------------
    def ds_template(self, **extra: str) -> dict[str, str]:
        """A Vitastor datastore template for this cloud's cluster and mode."""
        template = {"VITASTOR_CONF": str(self.cluster.config_path), "POOL_NAME": self.pool,
                    "IMAGE_PREFIX": self.prefix, "BRIDGE_LIST": "bridge1 bridge2", "DISK_TYPE": "FILE"}
        if self.mode == "frontend":
            template["VITASTOR_ON_FRONTEND"] = "YES"
        template.update(extra)
        return {k: v for k, v in template.items() if v is not None}

    def add_datastores(self, **extra: str) -> None:
        """The image datastore 101 and the system datastore 100, both Vitastor."""
        template = self.ds_template(**extra)
        self.oned.datastores[IMAGE_DS] = docs.datastore_xml(IMAGE_DS, name="vitastor-images", ds_type=0,
                                                            template=template)
        self.oned.datastores[SYSTEM_DS] = docs.datastore_xml(SYSTEM_DS, name="vitastor-system", ds_type=1,
                                                             ds_mad="-", template=template)

    def add_vm(self, vm_id: int, disks: list[dict[str, str]], **kwargs: Any) -> None:
        """A VM document with these disks."""
        self.oned.vms[vm_id] = docs.vm_xml(vm_id, disks=disks, **kwargs)

    def datastore_doc(self, ds_id: int) -> str:
        return self.oned.datastores[ds_id]

    # cluster state -------------------------------------------------------------------------
    def own_inodes(self) -> dict[tuple[int, int], Inode]:
        """This cloud's layers (named under its prefix) by (pool, id), freshly read: what its
        tests list and compare, since a real cluster also holds other tests' and users' images."""
        return self.cluster.own_inodes(self.prefix)

    def action_data(self, *, image: Optional[str] = None, ds_id: int = IMAGE_DS,
                    extra: Optional[dict[str, str]] = None) -> bytes:
        """The base64 DS_DRIVER_ACTION_DATA oned would send."""
        parts = [p for p in (image, self.oned.datastores[ds_id]) if p]
        return docs.encode_b64(docs.ds_driver_action_data(*parts, extra=extra)).encode()

    # running -------------------------------------------------------------------------------
    def process(self, argv: list[str], *, stdin: bytes = b"", env: Optional[dict[str, str]] = None,
                timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
        """Run ``argv`` as oned runs its drivers: as the action user, in this cloud's environment
        (``env`` added), after giving ``workdir`` to that user; output captured as bytes."""
        if self.workdir is not None:
            self.user.give(self.workdir)
        return subprocess.run(argv, input=stdin, capture_output=True, env={**self.env, **(env or {})},
                              cwd=str(ROOT), timeout=timeout, check=False, **self.user.credentials())

    def run(self, action: str, *args: str, stdin: Optional[bytes] = None,
            env: Optional[dict[str, str]] = None, remotes: Path = REMOTES) -> Result:
        """Run ``<family>/<action>`` through its link in ``remotes`` (dist/remotes, or a copy of
        it), like one_tm does."""
        family, _, name = action.partition("/")
        path = remotes / DRIVER_DIRS[family] / name
        argv = [str(path), *args]
        start = time.monotonic()
        proc = self.process(argv, stdin=stdin or b"", env=env)
        result = Result(argv, proc.returncode, proc.stdout.decode(), proc.stderr.decode(),
                        time.monotonic() - start)
        self.history.append(result)
        if result.rc == 0:
            captures.record(action, stdin or b"")
        return result

    def ok(self, action: str, *args: str, stdin: Optional[bytes] = None, remotes: Path = REMOTES) -> Result:
        """Run an action that must succeed."""
        result = self.run(action, *args, stdin=stdin, remotes=remotes)
        assert result.rc == 0, f"{action} {args} failed ({result.rc}):\n{result.stderr}"
        return result


def b64(text: str) -> bytes:
    return base64.b64encode(text.encode())


def write_oned_config(var_dir: Path, **settings: str) -> None:
    """``<var>/config`` as oned writes it at start (its effective oned.conf, ``KEY=VALUE`` lines),
    where OpenNebula's drivers, and onevita, read SCRIPTS_REMOTE_DIR and DATASTORE_LOCATION."""
    var_dir.mkdir(parents=True, exist_ok=True)
    defaults = {"DATASTORE_LOCATION": f"{var_dir}//datastores", "SCRIPTS_REMOTE_DIR": "/var/tmp/one"}
    lines = [f"{key}={value}" for key, value in {**defaults, **settings}.items()]
    (var_dir / "config").write_text("\n".join(lines) + "\n")


def action_env(*, oned: OnedStandIn, user: ActionUser, ssh_config: Path, host_remotes: Path, auth_file: Path,
               one_location: Path, shiv_root: Path, vitastor_cli: str,
               libvitastor: Optional[str] = None) -> dict[str, str]:
    """The environment one_tm/one_datastore would give the driver as ``user`` (its PATH and
    HOME), pointed at the test world (``libvitastor``: the libvitastor_client to load, when not
    the system's); oned's ``<ONE_LOCATION>/var/config`` names ``host_remotes`` as SCRIPTS_REMOTE_DIR."""
    write_oned_config(one_location / "var", SCRIPTS_REMOTE_DIR=str(host_remotes))
    env = {
        **user.environment(),
        "ONE_XMLRPC": oned.endpoint,
        "ONE_AUTH": str(auth_file),
        "ONE_LOCATION": str(one_location),
        "ONEVITA_SSH_CONFIG": str(ssh_config),
        "SHIV_ROOT": str(shiv_root),
        "ONEVITA_VITASTOR_CLI": vitastor_cli,
    }
    if libvitastor:
        env["ONEVITA_LIBVITASTOR"] = libvitastor
    return env
