"""Interoperability with a real vitastor-cli on a real cluster: what onevita writes to etcd,
``vitastor-cli ls --json`` reads, and what vitastor-cli creates, onevita reads.

Runs only with ONEVITA_TEST_VITASTOR_CLI (a real vitastor-cli binary, not the simulation's
stand-in) and ONEVITA_TEST_VITASTOR_CONF (the cluster's vitastor.conf); the pool is
ONEVITA_TEST_POOL (default testpool) and every name starts with the test's own prefix.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest

from onevita.vitastor.catalog import Catalog
from onevita.vitastor.config import read_config
from onevita.vitastor.etcd import Etcd
from tests.sim.cluster import SimCluster

MIB = 1 << 20
CLI = os.environ.get("ONEVITA_TEST_VITASTOR_CLI", "")
CONF = os.environ.get("ONEVITA_TEST_VITASTOR_CONF", "")
POOL = os.environ.get("ONEVITA_TEST_POOL", "testpool")


def _real_binary(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


pytestmark = pytest.mark.skipif(not (CLI and CONF and _real_binary(CLI)),
                                reason="needs a real vitastor-cli (ONEVITA_TEST_VITASTOR_CLI) and cluster "
                                       "(ONEVITA_TEST_VITASTOR_CONF)")


def cli(*args: str) -> bytes:
    proc = subprocess.run([CLI, "--config_path", CONF, *args], capture_output=True, timeout=120, check=False)
    assert proc.returncode == 0, f"vitastor-cli {' '.join(args)}: {proc.stderr.decode(errors='replace')}"
    return proc.stdout


def listing(prefix: str) -> dict[str, dict[str, Any]]:
    """``vitastor-cli ls --json``, this test's images only."""
    items = orjson.loads(cli("ls", "--json"))
    return {item["name"]: item for item in items if item["name"].startswith(prefix)}


def catalog() -> Catalog:
    config = read_config(CONF)
    return Catalog(Etcd(config.etcd_address), config.etcd_prefix)


@pytest.fixture()
def prefix(cluster: SimCluster, image_prefix: str) -> str:
    """The test's image prefix: the (real) ``cluster`` fixture removes its images afterwards."""
    return image_prefix


def test_vitastor_cli_lists_what_onevita_created(prefix: str) -> None:
    cat = catalog()
    pool = cat.pool(POOL)
    base = cat.create(prefix, 64 * MIB, pool)
    cat.snapshot(prefix, "0")
    head = cat.get(prefix)
    child = cat.create(f"{prefix}-12-0", 128 * MIB, pool, parent=head)
    cat.modify(child, rename=f"{prefix}-13-0")
    items = listing(prefix)
    assert set(items) == {prefix, f"{prefix}@0", f"{prefix}-13-0"}
    snap = items[f"{prefix}@0"]
    assert (snap["size"], snap["readonly"], snap["inode_num"], snap["pool_name"]) == (64 * MIB, True, base.id,
                                                                                       pool.name)
    assert (items[prefix]["parent_name"], items[prefix]["readonly"]) == (f"{prefix}@0", False)
    assert (items[f"{prefix}-13-0"]["parent_name"], items[f"{prefix}-13-0"]["size"]) == (prefix, 128 * MIB)


def test_onevita_reads_what_vitastor_cli_created(prefix: str, tmp_path: Path) -> None:
    cli("create", "-s", "32M", "-p", POOL, prefix)
    cli("snap-create", f"{prefix}@1")
    cli("create", "--parent", prefix, f"{prefix}-5-0")
    cli("modify", f"{prefix}-5-0", "--resize", "64M")
    cat = catalog()
    head, snap, child = cat.get(prefix), cat.get(f"{prefix}@1"), cat.get(f"{prefix}-5-0")
    assert (snap.size, snap.readonly, snap.parent_id) == (32 * MIB, True, 0)
    assert (head.size, head.readonly, head.parent_key) == (32 * MIB, False, (snap.pool_id, snap.id))
    assert (child.size, child.parent_key) == (64 * MIB, (head.pool_id, head.id))
    assert cat.pools[head.pool_id].name == POOL or str(head.pool_id) == POOL
    # and onevita's writes on vitastor-cli's images are read back by vitastor-cli
    cat.modify(child, size=96 * MIB)
    assert listing(prefix)[f"{prefix}-5-0"]["size"] == 96 * MIB
