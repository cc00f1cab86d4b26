"""tm/monitor for the system datastore through its dist/remotes link, in both job modes: pool
space on stdout and, with MONITOR_VM_DISKS=1, every VM's disk and snapshot sizes sent to
monitord over UDP as ``send_to_monitor MONITOR_VM`` does."""

from __future__ import annotations

import base64
import socket
import zlib
from pathlib import Path
from typing import Iterator

import pytest

from tests.cloud import SYSTEM_DS, Cloud
from tests.datastore.util import MIB, make_image, snapshot
from tests.harness import documents as docs
from tests.sim.cluster import DEFAULT_CAPACITY
from tests.tm.conftest import checkpoint

CAPACITY_MB = DEFAULT_CAPACITY // MIB
# Shaped like OpenNebula's monitord.conf, comments included (they mention PORT and PUBKEY too).
MONITORD_CONF = """\
#*******************************************************************************
#                       OpenNebula Configuration file
#*******************************************************************************
LOG = [
  SYSTEM      = "file",
  DEBUG_LEVEL = 3
]

DB = [ CONNECTIONS = 15 ]

#-------------------------------------------------------------------------------
# Network configuration attributes for the monitor daemon:
#   - ADDRESS: Listen address
#   - MONITOR_ADDRESS: Agents will send updates to this monitor address.
#   - PORT: Listen port
#   - THREADS: Number of threads used to process messages
#   - PUBKEY: Absolute path to public key (agents). Empty for no encryption
#   - PRIKEY: Absolute path to private key (monitord). Empty for no encryption
#-------------------------------------------------------------------------------
NETWORK = [
    ADDRESS = "0.0.0.0",
    MONITOR_ADDRESS = "auto",
    PORT = {port},
    THREADS = 8,
    PUBKEY = "{pubkey}",
    PRIKEY = ""
]

PROBES_PERIOD = [
    BEACON_HOST    = 30,
    SYSTEM_HOST    = 600,
    MONITOR_HOST   = 120,
    STATE_VM       = 5,
    MONITOR_VM     = 30,
    SYNC_STATE_VM  = 180
]
"""
PUBLIC_KEY = """\
-----BEGIN RSA PUBLIC KEY-----
MIIBCgKCAQEAwtUuZ1JZ0ZzgAQ0qBR4Z3yRlTg1VaSM3cCnpLJu9dcy5ThWdUQSJ
-----END RSA PUBLIC KEY-----
"""


class Monitord:
    """A UDP socket playing monitord, and the monitord.conf pointing at it."""

    def __init__(self, conf: Path) -> None:
        self.conf = conf
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.configure()

    def configure(self, pubkey: str = "") -> None:
        self.conf.parent.mkdir(parents=True, exist_ok=True)
        self.conf.write_text(MONITORD_CONF.format(port=self.port, pubkey=pubkey))

    def receive(self, timeout: float = 5.0) -> bytes:
        """One datagram; the action has exited when this is called, so it is already queued."""
        self.sock.settimeout(timeout)
        return self.sock.recv(65536)

    def nothing_sent(self) -> bool:
        self.sock.settimeout(0.2)
        try:
            self.sock.recv(65536)
        except socket.timeout:
            return True
        return False


@pytest.fixture()
def monitord(cloud: Cloud) -> Iterator[Monitord]:
    """monitord.conf in the cloud's ONE_LOCATION (shared by the session: removed afterwards)."""
    server = Monitord(Path(cloud.env["ONE_LOCATION"]) / "etc" / "monitord.conf")
    try:
        yield server
    finally:
        server.conf.unlink(missing_ok=True)
        server.sock.close()


def decode(datagram: bytes) -> tuple[list[str], dict[int, list[str]]]:
    """``MONITOR_VM SUCCESS -1 0 <base64(zlib(payload))>``: the header words, and per VM id the
    lines of its base64 MONITOR attribute."""
    text = datagram.decode()
    assert text.endswith("\n") and text.count("\n") == 1, text
    words = text.split()
    assert len(words) == 5, text
    payload = zlib.decompress(base64.b64decode(words[4], validate=True)).decode()
    vms: dict[int, list[str]] = {}
    for line in payload.splitlines():
        assert line.startswith("VM=[ID=") and line.endswith('"]'), line
        vm_id, _, monitor = line[len("VM=[ID="):-2].partition(',MONITOR="')
        vms[int(vm_id)] = base64.b64decode(monitor, validate=True).decode().splitlines()
    return words[:4], vms


def decode_empty(datagram: bytes) -> tuple[list[str], str]:
    """The header words and the (empty) payload of a message about no VM."""
    words = datagram.decode().split()
    assert len(words) == 5
    return words[:4], zlib.decompress(base64.b64decode(words[4], validate=True)).decode()


def monitor_data(cloud: Cloud, vm_disks: bool = True) -> bytes:
    """What oned sends tm/monitor: the system datastore, DATASTORE_LOCATION, and MONITOR_VM_DISKS
    (1 every DS_MONITOR_VM_DISK runs, else 0)."""
    return cloud.action_data(ds_id=SYSTEM_DS, extra={"DATASTORE_LOCATION": docs.DATASTORE_LOCATION,
                                                     "MONITOR_VM_DISKS": "1" if vm_disks else "0"})


def skip_unless_simulated(cloud: Cloud) -> None:
    """Sizes are checked against statistics the simulation writes at once (a real cluster's
    monitor reports them every 30 s), before anything is created."""
    if not cloud.cluster.simulated:
        pytest.skip("needs the simulated cluster's statistics")


@pytest.fixture()
def vm_layers(cloud: Cloud) -> str:
    """Two VMs' disks: clones of an image (one with a snapshot), volatile disks (one with
    snapshots only), and images that belong to no VM."""
    skip_unless_simulated(cloud)
    p = cloud.prefix
    make_image(cloud, f"{p}-5", data=b"i" * MIB)                      # an image: no VM
    make_image(cloud, f"{p}-6", data=b"j" * MIB)                      # a persistent image: no VM
    # VM 12, disk 0: clone; 2 MiB + 4 KiB moved into snapshot 0, then 1 MiB more in the disk
    make_image(cloud, f"{p}-5-12-0", parent=f"{p}-5", data=b"a" * (2 * MIB + 4096))
    snapshot(cloud, f"{p}-5-12-0", 0)
    cloud.cluster.write(f"{p}-5-12-0", 4 * MIB, b"b" * MIB)
    # VM 12, disk 1: volatile, 512 KiB
    make_image(cloud, f"{p}-sys-12-1", data=b"c" * (512 << 10))
    # VM 13, disk 0: clone with 4 MiB; disk 2: volatile whose data all went into snapshot 3
    make_image(cloud, f"{p}-5-13-0", parent=f"{p}-5", data=b"d" * (4 * MIB))
    make_image(cloud, f"{p}-sys-13-2", data=b"e" * MIB)
    snapshot(cloud, f"{p}-sys-13-2", 3)
    # look-alikes that are no VM disk: base image missing, other prefix's volatile name
    make_image(cloud, f"{p}x-14-0", data=b"f" * 4096)
    make_image(cloud, f"{p}x-sys-15-0", data=b"g" * 4096)
    cloud.cluster.stats()
    return p


def test_monitor_sends_disk_and_snapshot_sizes(cloud: Cloud, monitord: Monitord, vm_layers: str) -> None:
    result = cloud.ok("tm/monitor", str(SYSTEM_DS), stdin=monitor_data(cloud))
    used_mb = 10.5 + 3 * 4096 / MIB  # every layer's data: 10.5 MiB and three 4 KiB pieces
    assert result.stdout == (f"USED_MB={int(used_mb)}\nTOTAL_MB={CAPACITY_MB}\n"
                             f"FREE_MB={int(CAPACITY_MB - used_mb)}\n")
    header, vms = decode(monitord.receive())
    assert header == ["MONITOR_VM", "SUCCESS", "-1", "0"]
    assert vms == {
        12: ["DISK_SIZE=[ID=0,SIZE=1]", "DISK_SIZE=[ID=1,SIZE=1]", "SNAPSHOT_SIZE=[ID=0,DISK_ID=0,SIZE=3]"],
        13: ["DISK_SIZE=[ID=0,SIZE=4]", "DISK_SIZE=[ID=2,SIZE=0]", "SNAPSHOT_SIZE=[ID=3,DISK_ID=2,SIZE=1]"],
    }
    assert monitord.nothing_sent()  # one datagram for all VMs


def test_backup_checkpoints_count_in_the_disk_size(cloud: Cloud, monitord: Monitord) -> None:
    """A disk's backup checkpoints (@backup-N) are no OpenNebula snapshot: their bytes go into
    the disk's DISK_SIZE, checkpoints under, between and over snapshots alike, and also where
    all the disk's data is in a checkpoint."""
    skip_unless_simulated(cloud)
    p = cloud.prefix
    make_image(cloud, f"{p}-5", data=b"i" * 4096)
    # VM 12, disk 0: clone; @0 1 MiB, @backup-3 2 MiB, @1 1 MiB, @backup-4 3 MiB, the disk 512 KiB
    disk = f"{p}-5-12-0"
    make_image(cloud, disk, parent=f"{p}-5")
    for offset, size, layer in ((0, 1, "0"), (4, 2, "backup-3"), (8, 1, "1"), (16, 3, "backup-4"), (24, 0.5, "")):
        cloud.cluster.write(disk, offset * MIB, b"a" * int(size * MIB))
        if layer.isdigit():
            snapshot(cloud, disk, int(layer))
        elif layer:
            checkpoint(cloud, disk, int(layer.removeprefix("backup-")))
    # VM 12, disk 1: volatile, its 1 MiB all in @backup-7, nothing written since
    make_image(cloud, f"{p}-sys-12-1", data=b"c" * MIB)
    checkpoint(cloud, f"{p}-sys-12-1", 7)
    cloud.cluster.stats()
    result = cloud.ok("tm/monitor", str(SYSTEM_DS), stdin=monitor_data(cloud))
    used_mb = 8.5 + 4096 / MIB
    assert result.stdout == (f"USED_MB={int(used_mb)}\nTOTAL_MB={CAPACITY_MB}\n"
                             f"FREE_MB={int(CAPACITY_MB - used_mb)}\n")
    _, vms = decode(monitord.receive())
    assert vms == {12: ["DISK_SIZE=[ID=0,SIZE=6]", "DISK_SIZE=[ID=1,SIZE=1]",
                        "SNAPSHOT_SIZE=[ID=0,DISK_ID=0,SIZE=1]", "SNAPSHOT_SIZE=[ID=1,DISK_ID=0,SIZE=1]"]}


def test_vms_are_sorted_by_number(cloud: Cloud, monitord: Monitord) -> None:
    skip_unless_simulated(cloud)
    for vm_id in (100, 9, 20):
        make_image(cloud, f"{cloud.prefix}-sys-{vm_id}-0", data=b"x" * 4096)
    cloud.cluster.stats()
    cloud.ok("tm/monitor", str(SYSTEM_DS), stdin=monitor_data(cloud))
    _, vms = decode(monitord.receive())
    assert list(vms) == [9, 20, 100]


def test_no_vm_disks_sends_an_empty_message(cloud: Cloud, monitord: Monitord) -> None:
    """No VM disk in the pool: monitord still gets a (empty) MONITOR_VM message."""
    skip_unless_simulated(cloud)
    make_image(cloud, f"{cloud.prefix}-5", data=b"i" * 4096)
    cloud.cluster.stats()
    cloud.ok("tm/monitor", str(SYSTEM_DS), stdin=monitor_data(cloud))
    header, vms = decode_empty(monitord.receive())
    assert (header, vms) == (["MONITOR_VM", "SUCCESS", "-1", "0"], "")


def test_without_monitor_vm_disks_nothing_is_sent(cloud: Cloud, monitord: Monitord, vm_layers: str) -> None:
    result = cloud.ok("tm/monitor", str(SYSTEM_DS), stdin=monitor_data(cloud, vm_disks=False))
    assert result.stdout.startswith("USED_MB=")
    assert monitord.nothing_sent()


def test_encrypted_monitord_gets_nothing_and_a_warning(cloud: Cloud, monitord: Monitord, vm_layers: str,
                                                       tmp_path: Path) -> None:
    """A monitord.conf with a real PUBKEY expects encrypted messages: a WARN line for oned.log,
    nothing sent, and the pool space is still reported."""
    key = tmp_path / "onemonitor.pub"
    key.write_text(PUBLIC_KEY)
    monitord.configure(pubkey=str(key))
    result = cloud.ok("tm/monitor", str(SYSTEM_DS), stdin=monitor_data(cloud))
    assert result.stdout.startswith("USED_MB=")
    assert [line for line in result.stderr.splitlines() if line.startswith("WARN:")] == [
        "WARN: tm/monitor: monitord expects encrypted messages (PUBKEY); onevita does not encrypt, not sending"]
    assert result.reason == ""
    assert monitord.nothing_sent()


def test_unreadable_pubkey_sends_in_clear_like_the_shell_helper(cloud: Cloud, monitord: Monitord,
                                                               vm_layers: str, tmp_path: Path) -> None:
    monitord.configure(pubkey=str(tmp_path / "missing.pub"))
    cloud.ok("tm/monitor", str(SYSTEM_DS), stdin=monitor_data(cloud))
    header, vms = decode(monitord.receive())
    assert header[:2] == ["MONITOR_VM", "SUCCESS"] and set(vms) == {12, 13}


def test_system_datastore_monitor_on_a_fresh_pool(cloud: Cloud, monitord: Monitord) -> None:
    """Before the Vitastor monitor wrote any statistics: zeros and an empty message, no failure."""
    skip_unless_simulated(cloud)
    result = cloud.ok("tm/monitor", str(SYSTEM_DS), stdin=monitor_data(cloud))
    assert result.stdout == "USED_MB=0\nTOTAL_MB=0\nFREE_MB=0\n"
    header, payload = decode_empty(monitord.receive())
    assert (header, payload) == (["MONITOR_VM", "SUCCESS", "-1", "0"], "")


def test_missing_bridge_list(cloud: Cloud, monitord: Monitord) -> None:
    cloud.add_datastores(BRIDGE_LIST=None)  # type: ignore[arg-type]
    result = cloud.run("tm/monitor", str(SYSTEM_DS), stdin=monitor_data(cloud))
    if cloud.mode == "ssh":
        assert (result.rc, result.reason) == (1, "Datastore template missing 'BRIDGE_LIST' attribute.")
        assert monitord.nothing_sent()
    else:
        assert result.rc == 0, result.stderr
