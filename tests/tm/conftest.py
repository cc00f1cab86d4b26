"""Helpers and fixtures of the TM action tests: cluster state through the catalog, which hosts
the driver reached over ssh, and a recording ``virsh`` for the live-snapshot freeze."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional

import pytest

from onevita.names import BACKUP_CHECKPOINT
from onevita.vitastor.catalog import Catalog, Inode
from onevita.vitastor.etcd import b64
from onevita.vitastor.jobs import open_catalog
from tests.cloud import Cloud
from tests.harness.sshd import Sshd
from tests.harness.user import HOST_PYTHON, ActionUser

MIB = 1 << 20


# cluster state ------------------------------------------------------------------------------
def catalog(cloud: Cloud) -> Catalog:
    """The cluster's catalog, freshly read."""
    return open_catalog(str(cloud.cluster.config_path))


def etcd_value(cloud: Cloud, key: str) -> bytes:
    """The raw bytes stored at ``<etcd_prefix><key>``."""
    cat = catalog(cloud)
    kv = cat.etcd.get(cat.prefix + key)
    assert kv is not None, key
    return kv.value


def make_image(cloud: Cloud, name: str, size_mb: int = 64, data: bytes = b"", offset: int = 0) -> Inode:
    """An image in the test pool (vitastor-cli create), with ``data`` written at ``offset``."""
    cat = catalog(cloud)
    inode = cat.create(name, size_mb * MIB, cat.pool(cloud.pool))
    if data:
        cloud.cluster.write(name, offset, data)
    return inode


def layers(cloud: Cloud, name: str) -> dict[str, Inode]:
    """``name`` and every layer named after it (``name@N``, ``name.revert``), by name."""
    return {i.name: i for i in cloud.own_inodes().values()
            if i.name == name or i.name.startswith((f"{name}@", f"{name}."))}


def parent_name(cat: Catalog, name: str) -> str | None:
    """The name of the layer ``name`` reads through to."""
    parent = cat.parent(cat.get(name))
    return parent.name if parent else None


def index_at(cloud: Cloud, name: str, revision: int) -> bool:
    """Whether ``/index/image/<name>`` existed at etcd ``revision`` (etcd keeps the history)."""
    cat = catalog(cloud)
    reply = cat.etcd.call("kv/range", {"key": b64(f"{cat.prefix}/index/image/{name}"), "revision": revision})
    return bool(reply.get("kvs"))


def etcd_revision(cloud: Cloud) -> int:
    """The cluster etcd's current revision."""
    reply = catalog(cloud).etcd.call("kv/range", {"key": b64("\0")})
    return int(reply["header"]["revision"])


def chain(cloud: Cloud, name: str) -> list[str]:
    """``name`` and the layers it reads through, nearest first."""
    cat = catalog(cloud)
    head = cat.get(name)
    return [head.name, *(i.name for i in cat.ancestors(head))]


# backup checkpoints -------------------------------------------------------------------------
def checkpoint(cloud: Cloud, name: str, increment: int) -> Inode:
    """A backup checkpoint, taken as the backup jobs take it (``Catalog.snapshot``): the data
    stays in the old inode, now the readonly ``name@backup-<increment>``; ``name`` a new child."""
    return catalog(cloud).snapshot(name, f"{BACKUP_CHECKPOINT}{increment}")


GRANULE = 4096
# Snapshots and backup checkpoints taken in turn: (first granule, data written there, layer then
# taken). Each layer holds different granules, and the layers under a checkpoint hold more than
# it (8 KiB against 4 KiB), so vitastor-cli rm's "inverse" shortcut merges a checkpoint into a
# removed snapshot under it once the statistics show that. The chain ends as
# <base> <- @0 <- @backup-3 <- @1 <- @backup-4 <- NAME, NAME holding one granule of its own.
INTERLEAVED: list[tuple[int, bytes, Optional[str]]] = [
    (0, b"A" * 2 * GRANULE, "0"), (1, b"B" * GRANULE, "backup-3"), (1, b"C" * 2 * GRANULE, "1"),
    (0, b"D" * GRANULE, "backup-4"), (2, b"E" * GRANULE, None)]
INTERLEAVED_SPAN = 3 * GRANULE


def interleave(cloud: Cloud, name: str, snapshot: Callable[[int], object]) -> dict[str, bytes]:
    """Write and take the layers of INTERLEAVED on ``name``: snapshots with ``snapshot(id)``
    (an action, or the catalog), checkpoints with ``checkpoint``. Returns what the first
    INTERLEAVED_SPAN bytes of each layer taken, and of ``name`` at the end, read: by layer name."""
    state = bytearray(cloud.cluster.read(name, 0, INTERLEAVED_SPAN))
    expected = {}
    for granule, data, layer in INTERLEAVED:
        cloud.cluster.write(name, granule * GRANULE, data)
        state[granule * GRANULE:granule * GRANULE + len(data)] = data
        if layer is None:
            continue
        if layer.startswith(BACKUP_CHECKPOINT):
            checkpoint(cloud, name, int(layer[len(BACKUP_CHECKPOINT):]))
        else:
            snapshot(int(layer))
        expected[f"{name}@{layer}"] = bytes(state)
    expected[name] = bytes(state)
    return expected


def contents(cloud: Cloud, names: Iterable[str]) -> dict[str, bytes]:
    """The first INTERLEAVED_SPAN bytes each of ``names`` reads, by name."""
    return {name: cloud.cluster.read(name, 0, INTERLEAVED_SPAN) for name in names}


def disk_path(vm_id: int = 12, disk_id: int = 0, host: str = "node1") -> str:
    """``host:<sysdir>/disk.N`` as oned writes it (double slash included)."""
    return f"{host}:/var/lib/one//datastores/100/{vm_id}/disk.{disk_id}"


# ssh ----------------------------------------------------------------------------------------
SSH_RECORDER = """#!/bin/sh
# The driver runs ssh -F CONFIG HOST COMMAND: record HOST, then do the real call.
printf '%s\\n' "$3" >> "$0.log"
exec ssh "$@"
"""


@pytest.fixture()
def ssh_hosts(cloud: Cloud, tmp_path: Path) -> Callable[[], list[str]]:
    """Reads the hosts the driver ssh-ed to so far, in order (``$SSH`` is a recording wrapper)."""
    wrapper = tmp_path / "ssh"
    wrapper.write_text(SSH_RECORDER)
    wrapper.chmod(0o755)
    cloud.env["SSH"] = str(wrapper)
    log = tmp_path / "ssh.log"
    return lambda: log.read_text().split() if log.exists() else []


# virsh --------------------------------------------------------------------------------------
FAKE_VIRSH = '''#!{python}
"""A recording virsh for the tests: libvirt and a guest agent cannot run here.

Appends "<etcd revision> <argv>" to virsh.log beside it, so tests see the calls in order with
the cluster's etcd revision at the time (the snapshot is an etcd transaction: freeze must come
before it, thaw after). Domains listed in "agentless" have no guest agent: domfsfreeze and
domfsthaw fail as libvirt does.
"""
import json
import sys
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent


def revision():
    url = (HERE / "etcd").read_text().strip() + "/kv/range"
    request = urllib.request.Request(url, data=json.dumps({{"key": "AA=="}}).encode(),
                                     headers={{"Content-Type": "application/json"}})
    with urllib.request.urlopen(request, timeout=5) as reply:
        return int(json.load(reply)["header"]["revision"])


args = sys.argv[1:]
command, domain = args[-2], args[-1]
with open(HERE / "virsh.log", "a") as log:
    log.write(f"{{revision()}} {{' '.join(args)}}\\n")
agentless = (HERE / "agentless").read_text().split() if (HERE / "agentless").exists() else []
if command in ("domfsfreeze", "domfsthaw") and domain in agentless:
    sys.stderr.write("error: Guest agent is not responding: QEMU guest agent is not connected\\n")
    sys.exit(1)
print({{"domfsfreeze": "Froze 1 filesystem(s)", "domfsthaw": "Thawed 1 filesystem(s)"}}.get(command, ""))
'''


@dataclass
class FakeVirsh:
    """The recording ``virsh`` of one test: its calls, and which domains lack a guest agent."""

    directory: Path

    def calls(self) -> list[tuple[int, str]]:
        """(etcd revision, argv) of every call so far."""
        log = self.directory / "virsh.log"
        lines = log.read_text().splitlines() if log.exists() else []
        return [(int(rev), argv) for rev, _, argv in (line.partition(" ") for line in lines)]

    def without_agent(self, *domains: str) -> None:
        (self.directory / "agentless").write_text("\n".join(domains) + "\n")


@pytest.fixture(scope="session")
def virsh_dir(tmp_path_factory: pytest.TempPathFactory, action_user: ActionUser) -> Path:
    """A directory holding only the fake ``virsh``, the action user's (which runs it and writes
    its log there)."""
    directory = tmp_path_factory.mktemp("fake-virsh")
    script = directory / "virsh"
    script.write_text(FAKE_VIRSH.format(python=HOST_PYTHON))
    script.chmod(0o755)
    action_user.give(directory)
    return directory


@pytest.fixture(scope="session")
def virsh_sshd(tmp_path_factory: pytest.TempPathFactory, sshd: Sshd, virsh_dir: Path) -> Iterator[Sshd]:
    """The hosts of the session sshd, with the fake virsh first in the sessions' PATH."""
    env = {**sshd.env, "PATH": f"{virsh_dir}:{sshd.env['PATH']}"}
    with Sshd(tmp_path_factory.mktemp("sshd-virsh"), user=sshd.user, env=env, aliases=sshd.aliases) as server:
        yield server


@pytest.fixture()
def virsh(cloud: Cloud, virsh_sshd: Sshd, virsh_dir: Path) -> FakeVirsh:
    """Point the cloud at hosts (and a front-end PATH) whose ``virsh`` is the recording fake."""
    for name in ("virsh.log", "agentless"):
        (virsh_dir / name).unlink(missing_ok=True)
    address = cloud.cluster.config.etcd_address[0]
    url = (address if "://" in address else f"http://{address}").rstrip("/")
    (virsh_dir / "etcd").write_text(url if url.endswith("/v3") else f"{url}/v3")
    cloud.env["ONEVITA_SSH_CONFIG"] = str(virsh_sshd.config_path)
    cloud.env["PATH"] = f"{virsh_dir}:{cloud.env['PATH']}"
    return FakeVirsh(virsh_dir)
