"""datastore/monitor through its dist/remotes link, in both job modes: the pool's space as
``vitastor-cli df`` counts it, in whole MiB."""

from __future__ import annotations

import re

import pytest

from onevita.vitastor.catalog import dump_json11
from tests.cloud import IMAGE_DS, Cloud
from tests.datastore.util import MIB, catalog, make_image
from tests.sim.cluster import DEFAULT_CAPACITY, POOL

CAPACITY_MB = DEFAULT_CAPACITY // MIB


@pytest.fixture()
def sim(cloud: Cloud) -> Cloud:
    """The cloud, on the simulated cluster only: these tests set the pools and the statistics."""
    if not cloud.cluster.simulated:
        pytest.skip("needs the simulated cluster's pools and statistics")
    return cloud


def test_monitor_reports_pool_space_after_stats(sim: Cloud) -> None:
    """4 MiB + 4 KiB written: USED_MB and FREE_MB are whole MiB, rounded down like Ceph's."""
    make_image(sim, f"{sim.prefix}-1", data=b"a" * (3 * MIB))
    make_image(sim, f"{sim.prefix}-2", data=b"b" * (MIB + 4096), offset=8 * MIB)
    sim.cluster.stats()
    result = sim.ok("datastore/monitor", str(IMAGE_DS), stdin=sim.action_data())
    used = 4 * MIB + 4096
    assert result.stdout == (f"USED_MB={used // MIB}\nTOTAL_MB={CAPACITY_MB}\n"
                             f"FREE_MB={(DEFAULT_CAPACITY - used) // MIB}\n")
    assert result.stdout == f"USED_MB=4\nTOTAL_MB={CAPACITY_MB}\nFREE_MB={CAPACITY_MB - 5}\n"


def test_monitor_of_an_empty_pool_with_stats(sim: Cloud) -> None:
    sim.cluster.stats()
    result = sim.ok("datastore/monitor", str(IMAGE_DS), stdin=sim.action_data())
    assert result.stdout == f"USED_MB=0\nTOTAL_MB={CAPACITY_MB}\nFREE_MB={CAPACITY_MB}\n"


def test_first_monitor_on_a_fresh_pool_works(sim: Cloud) -> None:
    """A pool the monitor has not reported on yet (no /pool/stats, /osd/stats, /pg/config):
    zeros, not a failure, so oned does not mark the datastore in error."""
    result = sim.ok("datastore/monitor", str(IMAGE_DS), stdin=sim.action_data())
    assert result.stdout == "USED_MB=0\nTOTAL_MB=0\nFREE_MB=0\n"
    assert result.reason == ""


def test_monitor_without_pool_name_uses_the_only_pool(sim: Cloud) -> None:
    sim.add_datastores(POOL_NAME="")
    make_image(sim, f"{sim.prefix}-1", data=b"a" * MIB)
    sim.cluster.stats()
    result = sim.ok("datastore/monitor", str(IMAGE_DS), stdin=sim.action_data())
    assert result.stdout == f"USED_MB=1\nTOTAL_MB={CAPACITY_MB}\nFREE_MB={CAPACITY_MB - 1}\n"


def test_monitor_of_a_missing_pool_fails(cloud: Cloud) -> None:
    cloud.add_datastores(POOL_NAME="nosuchpool")
    result = cloud.run("datastore/monitor", str(IMAGE_DS), stdin=cloud.action_data())
    assert (result.rc, result.stdout, result.reason) == (1, "", "Vitastor pool nosuchpool does not exist")
    assert result.errors


def test_monitor_without_pool_name_on_a_cluster_with_two_pools_fails(sim: Cloud) -> None:
    sim.add_datastores(POOL_NAME="")
    pools = {"1": {"name": "testpool", **POOL}, "2": {"name": "ssdpool", **POOL}}
    sim.cluster.etcd().put(f"{sim.cluster.config.etcd_prefix}/config/pools", dump_json11(pools))
    result = sim.run("datastore/monitor", str(IMAGE_DS), stdin=sim.action_data())
    assert (result.rc, result.reason) == (1, "POOL_NAME is not set and the cluster has more than one pool")


def test_monitor_reports_the_datastore_pool_only(sim: Cloud) -> None:
    """Two pools: POOL_NAME picks the one whose space is reported."""
    pools = {"1": {"name": "testpool", **POOL}, "2": {"name": "ssdpool", **POOL}}
    sim.cluster.etcd().put(f"{sim.cluster.config.etcd_prefix}/config/pools", dump_json11(pools))
    sim.add_datastores(POOL_NAME="ssdpool")
    make_image(sim, f"{sim.prefix}-1", data=b"a" * (3 * MIB))  # in testpool
    cat = catalog(sim)
    cat.create(f"{sim.prefix}-2", 64 * MIB, cat.pool("ssdpool"))
    sim.cluster.write(f"{sim.prefix}-2", 0, b"b" * MIB)
    sim.cluster.stats()
    result = sim.ok("datastore/monitor", str(IMAGE_DS), stdin=sim.action_data())
    # one simulated OSD holds both pools: its free space is shared
    assert result.stdout == f"USED_MB=1\nTOTAL_MB={CAPACITY_MB}\nFREE_MB={CAPACITY_MB - 4}\n"


def test_monitor_output_format(cloud: Cloud) -> None:
    """Also on a real cluster: three KEY=integer lines, which oned parses as a template."""
    result = cloud.ok("datastore/monitor", str(IMAGE_DS), stdin=cloud.action_data())
    match = re.fullmatch(r"USED_MB=(\d+)\nTOTAL_MB=(\d+)\nFREE_MB=(\d+)\n", result.stdout)
    assert match, result.stdout
    used, total, free = map(int, match.groups())
    assert used <= total and free <= total
