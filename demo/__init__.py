"""A small cloud to run onevita in, and a VM disk lifecycle through the real driver entry points.

``World`` starts what the tests start (Debian's etcd, a real sshd whose host aliases node1,
node2, bridge1, bridge2 and one-fe all lead to this machine, the oned XML-RPC stand-in, the
built remotes copied to the "hosts" with ``rsync -L``) plus a UDP socket standing in for
monitord; like the tests, it runs every action as the unprivileged action user, which owns its
directory. ``lifecycle`` runs one VM's disks from clone to delete, as oned would call the driver,
on a simulated Vitastor cluster. ``python -m demo`` shows it; ``python -m bench.actions`` times it.
"""

from __future__ import annotations

import base64
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
import zlib
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional

# a real cluster only when asked for (World(real=True), the benchmarks): the demo's own cloud is
# always simulated, whatever the environment says
REAL_CONF = os.environ.pop("ONEVITA_TEST_VITASTOR_CONF", None)
REAL_CLI = os.environ.pop("ONEVITA_TEST_VITASTOR_CLI", None) or "vitastor-cli"
REAL_POOL = os.environ.get("ONEVITA_TEST_POOL", "testpool")

from tests.cloud import IMAGE_DS, REMOTES, ROOT, SYSTEM_DS, Cloud, Result, action_env  # noqa: E402
from tests.harness import documents as docs  # noqa: E402
from tests.harness.etcd_server import EtcdServer  # noqa: E402
from tests.harness.oned import OnedStandIn  # noqa: E402
from tests.harness.sshd import Sshd  # noqa: E402
from tests.harness.user import PATH, ActionUser  # noqa: E402
from tests.sim.build_sim_lib import build as build_sim_library  # noqa: E402
from tests.sim.cluster import SIM_CLI, SimCluster  # noqa: E402

__all__ = ["MODES", "REAL_CONF", "REAL_POOL", "VM_ID", "Lifecycle", "StepFailed", "World", "cluster_env"]

MIB = 1 << 20
MODES = ("ssh", "frontend")
VM_ID = 12
HOSTS = ("node1", "node2", "bridge1", "bridge2", "one-fe")
BASE = b"one-5 as uploaded".ljust(4096, b".")
WRITTEN = b"written by the VM after snapshot 0".ljust(4096, b"!")


class StepFailed(Exception):
    """A driver action exited non-zero."""

    def __init__(self, label: str, result: Result) -> None:
        super().__init__(f"{label} failed (exit {result.rc}): {result.reason}")
        self.label = label
        self.result = result


def ensure_built() -> Path:
    """dist/remotes (or $ONEVITA_DIST/remotes), built if missing."""
    if not (REMOTES / "onevita" / "onevita.pyz").exists():
        subprocess.run([sys.executable, str(ROOT / "build.py"), "--dist", str(REMOTES.parent)], check=True)
    return REMOTES


@contextmanager
def cluster_env(real: bool) -> Iterator[None]:
    """ONEVITA_TEST_VITASTOR_* set (a real cluster) or not (simulated) while a SimCluster is made."""
    if real:
        os.environ.update(ONEVITA_TEST_VITASTOR_CONF=str(REAL_CONF), ONEVITA_TEST_VITASTOR_CLI=REAL_CLI)
    try:
        yield
    finally:
        os.environ.pop("ONEVITA_TEST_VITASTOR_CONF", None)
        os.environ.pop("ONEVITA_TEST_VITASTOR_CLI", None)


class World:
    """etcd, sshd, the oned stand-in and a monitord socket in a temporary directory; clouds on
    a simulated cluster, or with ``real`` on the one ONEVITA_TEST_VITASTOR_CONF names (with its
    vitastor-cli and the system's libvitastor_client)."""

    def __init__(self, keep: bool = False, real: bool = False) -> None:
        if real and not REAL_CONF:
            raise RuntimeError("a real cluster needs ONEVITA_TEST_VITASTOR_CONF "
                               "(and ONEVITA_TEST_VITASTOR_CLI)")
        self.keep = keep
        self.real = real
        self.libvitastor: Optional[str] = None  # ONEVITA_LIBVITASTOR: the simulated library
        self.user = ActionUser.lookup()
        self.base = Path(tempfile.mkdtemp(prefix="onevita-demo-"))
        self._stack = ExitStack()
        self.monitord = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.etcd: EtcdServer
        self.sshd: Sshd
        self.oned: OnedStandIn

    def __enter__(self) -> World:
        try:
            self._start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _start(self) -> None:
        remotes = ensure_built()
        subprocess.run(["rsync", "-aL", f"{remotes}/", str(self.base / "host-remotes")], check=True)
        (self.base / "shiv").mkdir()
        (self.base / "one" / "etc").mkdir(parents=True)
        self.monitord.bind(("127.0.0.1", 0))
        self.monitord.settimeout(5)
        (self.base / "one" / "etc" / "monitord.conf").write_text(
            f'NETWORK = [\n    ADDRESS = "127.0.0.1",\n    PORT = {self.monitord.getsockname()[1]},\n'
            '    MONITOR_ADDRESS = "auto"\n]\n')
        if not self.real:
            self.libvitastor = str(build_sim_library(self.base / "lib"))
        self.user.give(self.base)
        self.etcd = self._stack.enter_context(EtcdServer(self.base / "etcd"))
        cli = REAL_CLI if self.real else SIM_CLI
        env = {"PATH": PATH, "SHIV_ROOT": str(self.base / "shiv"), "ONEVITA_VITASTOR_CLI": cli}
        if self.libvitastor:
            env["ONEVITA_LIBVITASTOR"] = self.libvitastor
        self.sshd = self._stack.enter_context(Sshd(self.base / "sshd", user=self.user, env=env,
                                                   aliases=HOSTS))
        self.oned = self._stack.enter_context(OnedStandIn())
        auth = self.base / "one_auth"
        auth.write_text(self.oned.session + "\n")
        self.env = action_env(oned=self.oned, user=self.user, ssh_config=self.sshd.config_path,
                              host_remotes=self.base / "host-remotes", auth_file=auth,
                              one_location=self.base / "one", shiv_root=self.base / "shiv",
                              vitastor_cli=cli, libvitastor=self.libvitastor)
        # the first run of a build extracts the zipapp into shiv's cache, once per machine
        subprocess.run([str(remotes / "onevita" / "onevita"), "noop"], env=self.env, check=True,
                       **self.user.credentials())

    def __exit__(self, *exc_info: object) -> None:
        self._stack.close()
        self.monitord.close()
        if not self.keep:
            shutil.rmtree(self.base, ignore_errors=True)

    def cloud(self, mode: str, name: str) -> Cloud:
        """A fresh cluster (its own etcd prefix and data) and datastores 100/101 in ``mode``;
        ``<base>/<name>`` is its working directory, given to the action user before each action.
        On a real cluster its images get a prefix of their own instead."""
        self.oned.reset()
        with cluster_env(self.real):
            cluster = SimCluster(self.etcd.url, self.base / name / "cluster", prefix=f"/vitastor-{name}")
        prefix, pool = (f"b{uuid.uuid4().hex[:6]}", REAL_POOL) if self.real else ("one", "testpool")
        cloud = Cloud(oned=self.oned, cluster=cluster, env=dict(self.env), mode=mode, user=self.user,
                      workdir=self.base / name, prefix=prefix, pool=pool)
        cloud.add_datastores()
        return cloud

    def receive_monitor(self) -> list[str]:
        """The decoded lines of the next message sent to monitord."""
        data, _ = self.monitord.recvfrom(65536)
        _type, _result, _oid, _ts, payload = data.decode().split(" ", 4)
        return zlib.decompress(base64.b64decode(payload)).decode().splitlines()


@dataclass
class Lifecycle:
    """Image one-5 registered from a file (datastore/cp), one-7 an empty ext4 datablock
    (datastore/mkfs); VM 12 with disk 0, a clone of one-5, disk 1, the persistent one-7, and
    disk 2, a volatile ext4 disk (tm/mkimage), from clone to delete; then both images are
    deleted. ``show`` sees every step;
    a failed step raises StepFailed."""

    world: World
    cloud: Cloud
    root: Path
    show: Callable[[str, Result], None] = lambda label, result: None
    note: Callable[[str], None] = lambda text: None
    results: dict[str, Result] = field(default_factory=dict)

    def location(self, host: str) -> str:
        """The host's DATASTORE_LOCATION; every "host" is this machine, so each gets its own
        directory and moving the VM directory between hosts is visible."""
        return f"{self.root}/{host}/datastores/"

    def vm_dir(self, host: str) -> str:
        return f"{host}:{self.location(host)}/{SYSTEM_DS}/{VM_ID}"  # oned's double slash included

    def disk(self, host: str, disk_id: int) -> str:
        return f"{self.vm_dir(host)}/disk.{disk_id}"

    def step(self, label: str, action: str, *args: str, stdin: Optional[bytes] = None) -> Result:
        result = self.cloud.run(action, *args, stdin=stdin)
        self.results[label] = result
        self.show(label, result)
        if result.rc != 0:
            raise StepFailed(label, result)
        return result

    @property
    def p(self) -> str:
        """IMAGE_PREFIX of the cloud (``one`` on the simulated cluster)."""
        return self.cloud.prefix

    def add_vm(self, host: str) -> None:
        disks = [docs.image_disk(0, 5, source=f"{self.p}-5", clone=True, size_mb=128),
                 docs.image_disk(1, 7, source=f"{self.p}-7", clone=False, persistent=True, size_mb=64),
                 docs.volatile_disk(2, size_mb=64, fs="ext4")]
        self.cloud.add_vm(VM_ID, disks, host=host)

    def register_images(self) -> None:
        """``oneimage create``: one-5 from a sparse 64 MiB raw file (stat, then cp), one-7 an
        empty ext4 datablock (mkfs)."""
        upload = self.root / "one-5.raw"
        upload.parent.mkdir(parents=True, exist_ok=True)
        with open(upload, "wb") as f:
            f.truncate(64 * MIB)
            f.write(BASE)
        image = docs.image_xml(5, name="one-5", source="", size_mb=64, ds_id=IMAGE_DS, persistent=False,
                               path=str(upload))
        stat = self.step("datastore/stat", "datastore/stat", "0",
                         stdin=self.cloud.action_data(image=docs.stat_image_xml(str(upload))))
        self.note(f"stat says {stat.stdout.strip()} MB")
        self.step("datastore/cp", "datastore/cp", "5", stdin=self.cloud.action_data(image=image))
        datablock = docs.image_xml(7, name="one-7", source="", size_mb=64, ds_id=IMAGE_DS, persistent=True,
                                   fs="ext4")
        self.step("datastore/mkfs", "datastore/mkfs", "7", stdin=self.cloud.action_data(image=datablock))

    def prepare(self) -> None:
        """The VM directory deploy made on node1."""
        vm_dir = Path(self.location("node1")) / str(SYSTEM_DS) / str(VM_ID)
        vm_dir.mkdir(parents=True)
        (vm_dir / "deployment.0").write_text(f"<domain type='kvm'><name>one-{VM_ID}</name></domain>\n")
        self.add_vm("node1")

    def refresh_stats(self) -> None:
        """The statistics a Vitastor monitor writes (a real cluster's own monitor does it)."""
        if self.cloud.cluster.simulated:
            self.cloud.cluster.stats()

    def read0(self) -> bytes:
        return self.cloud.cluster.read(f"{self.p}-5-{VM_ID}-0", 0, len(BASE))

    def run(self) -> None:
        vm, ids, sysds = str(VM_ID), str(IMAGE_DS), str(SYSTEM_DS)
        self.register_images()
        self.prepare()
        self.step("tm/clone", "tm/clone", f"one-fe:{self.p}-5", self.disk("node1", 0), vm, ids)
        self.step("tm/ln", "tm/ln", f"one-fe:{self.p}-7", self.disk("node1", 1), vm, ids)
        self.step("tm/mkimage", "tm/mkimage", "64", "raw", self.disk("node1", 2), vm, sysds)
        magic = self.cloud.cluster.read(f"{self.p}-sys-{VM_ID}-2", 1024, 4096)[56:58]
        self.note(f"volatile disk 2 has an ext4 superblock: magic {magic.hex()} (53ef)")
        self.refresh_stats()
        self.step("datastore/monitor", "datastore/monitor", ids, stdin=self.cloud.action_data())
        self.step("tm/snap_create 0", "tm/snap_create", self.disk("node1", 0), "0", vm, ids)
        self.cloud.cluster.write(f"{self.p}-5-{VM_ID}-0", 0, WRITTEN)
        self.note(f"the VM writes: disk 0 reads {self.read0()[:34]!r}")
        self.step("tm/snap_create 1", "tm/snap_create", self.disk("node1", 0), "1", vm, ids)
        self.step("tm/snap_revert 0", "tm/snap_revert", self.disk("node1", 0), "0", vm, ids)
        after = self.read0()
        self.note(f"after the revert disk 0 reads {after[:17]!r} again")
        if after != BASE:
            raise AssertionError(f"snap_revert 0 did not bring back the data of snapshot 0: {after[:40]!r}")
        self.step("tm/resize", "tm/resize", self.disk("node1", 0), "256", vm, ids)
        self.cloud.cluster.write(f"{self.p}-5-{VM_ID}-0", 200 * MIB, bytes(range(256)) * (3 * MIB // 256))
        self.note("the VM writes 3 MiB at 200 MiB, past the old end of disk 0")
        self.step("tm/snap_delete 1", "tm/snap_delete", self.disk("node1", 0), "1", vm, ids)
        self.refresh_stats()
        monitor_data = self.cloud.action_data(ds_id=SYSTEM_DS, extra={
            "DATASTORE_LOCATION": self.location("node1"), "MONITOR_VM_DISKS": "1"})
        self.step("tm/monitor", "tm/monitor", sysds, stdin=monitor_data)
        for line in self.world.receive_monitor():
            vm_line, _, encoded = line.partition(',MONITOR="')
            decoded = base64.b64decode(encoded.rstrip('"]')).decode().replace("\n", " ")
            self.note(f"monitord got {vm_line},MONITOR=<base64 of: {decoded}>]")
        self.step("tm/mv VM dir", "tm/mv", self.vm_dir("node1"), self.vm_dir("node2"), vm, sysds)
        moved = Path(self.location("node2")) / sysds / vm
        self.note(f"node2 now has {sorted(p.name for p in moved.iterdir())}; VM 12 runs on node2")
        self.add_vm("node2")
        self.step("tm/mvds disk 1", "tm/mvds", self.disk("node2", 1), f"{self.p}-7", vm, ids)
        self.step("tm/delete disk 0", "tm/delete", self.disk("node2", 0), vm, ids)
        self.step("tm/delete disk 2", "tm/delete", self.disk("node2", 2), vm, sysds)
        self.step("tm/delete VM dir", "tm/delete", self.vm_dir("node2"), vm, sysds)
        if moved.exists():
            raise AssertionError(f"{moved} is still there after tm/delete")
        self.delete_images()

    def delete_images(self) -> None:
        """``oneimage delete`` of both images (datastore/rm), which ends the lifecycle."""
        for image_id, persistent in ((5, False), (7, True)):
            image = docs.image_xml(image_id, name=f"one-{image_id}", source=f"{self.p}-{image_id}",
                                   size_mb=64, ds_id=IMAGE_DS, persistent=persistent)
            self.step(f"datastore/rm {image_id}", "datastore/rm", str(image_id),
                      stdin=self.cloud.action_data(image=image))

    def leftovers(self) -> dict[str, str]:
        """Every image of the cloud's prefix in the cluster: name → size, parent."""
        catalog = self.cloud.cluster.catalog()
        images = {}
        ours = [i for i in catalog.inodes.values() if i.name.startswith(f"{self.p}-")]
        for inode in sorted(ours, key=lambda i: i.name):
            parent = catalog.parent(inode)
            images[inode.name] = f"{inode.size // MIB} MiB" + (f", parent {parent.name}" if parent else "")
        return images
