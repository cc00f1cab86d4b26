"""A Vitastor cluster for tests: simulated (etcd + sparse files + the vitastor-cli stand-in),
or a real one when ONEVITA_TEST_VITASTOR_CONF names its vitastor.conf.

Image data is written and read only through ``vitastor-cli dd``, so the same calls check
"bytes read back" on both, and ``allocated`` counts a layer's own written granules on both
(the files of the simulation, the allocation bitmap through the real libvitastor_client). The
real cluster is used as it is: its pools, the real ``vitastor-cli`` ($ONEVITA_TEST_VITASTOR_CLI,
default from PATH); ``stats`` needs the simulation and skips the test there. A real cluster is shared (other tests, other
users): a test names its images under a prefix of its own, counts only those
(``own_inodes``) and removes them when it ends (``remove_images``).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Any, Iterable

import orjson
import pytest

from onevita.vitastor.catalog import Catalog, Inode, dump_json11
from onevita.vitastor.config import read_config
from onevita.vitastor.etcd import Etcd

from .libclient import layer_allocation
from .simlayers import GRANULE, LayerKey, LayerStore, round_down, round_up

__all__ = ["DEFAULT_CAPACITY", "SIM_CLI", "SimCluster", "real_conf", "real_leftovers"]

SIM_CLI = str(Path(__file__).resolve().parent / "bin" / "vitastor-cli")
DEFAULT_CAPACITY = 10 << 30
MAX_BLOCK = 1 << 20
POOL = {"scheme": "replicated", "pg_size": 1, "pg_minsize": 1, "pg_count": 1, "failure_domain": "osd"}


def _block_for(offset: int) -> int:
    """The largest dd block (≤ 1 MiB, a multiple of 4 KiB) that ``offset`` is a multiple of,
    since dd's seek/skip count whole blocks."""
    block = MAX_BLOCK
    while offset % block:
        block //= 2
    return block


def real_conf() -> str | None:
    """The vitastor.conf of the real cluster the tests run against (ONEVITA_TEST_VITASTOR_CONF),
    None when they run on simulated ones."""
    return os.environ.get("ONEVITA_TEST_VITASTOR_CONF") or None


def real_leftovers(prefixes: Iterable[str]) -> list[str]:
    """The images named under any of ``prefixes`` that the real cluster (ONEVITA_TEST_VITASTOR_CONF)
    still has, as ``vitastor-cli ls`` lists them or its etcd catalog holds them (a layer whose
    removal stopped half-way may be in one only); none without a real cluster or prefixes."""
    conf, starts = real_conf(), tuple(prefixes)
    if not conf or not starts:
        return []
    cli = os.environ.get("ONEVITA_TEST_VITASTOR_CLI", "vitastor-cli")
    listed = subprocess.run([cli, "--config_path", conf, "ls", "--json"], capture_output=True, timeout=120,
                            check=True).stdout
    config = read_config(conf)
    names = {item["name"] for item in orjson.loads(listed)}
    names |= {inode.name for inode in Catalog(Etcd(config.etcd_address), config.etcd_prefix).inodes.values()}
    return sorted(name for name in names if name.startswith(starts))


def _named_under(catalog: Catalog, prefix: str) -> dict[LayerKey, Inode]:
    """The layers of ``catalog`` whose names start with ``prefix``."""
    return {key: inode for key, inode in catalog.inodes.items() if inode.name.startswith(prefix)}


def _leaves_first(catalog: Catalog, inodes: dict[LayerKey, Inode]) -> list[Inode]:
    """``inodes`` ordered so that each comes after all of its children among them."""
    ordered: list[Inode] = []
    remaining = dict(inodes)
    while remaining:
        leaves = [i for i in remaining.values()
                  if not any((c.pool_id, c.id) in remaining for c in catalog.children(i))]
        leaves = leaves or list(remaining.values())  # a cycle cannot happen in Vitastor; stop rather than spin
        for leaf in sorted(leaves, key=lambda i: i.name):
            ordered.append(leaf)
            del remaining[(leaf.pool_id, leaf.id)]
    return ordered


class SimCluster:
    """One test's Vitastor cluster: its vitastor.conf, pools, and data access through dd."""

    def __init__(self, etcd_url: str, tmp_path: Path | str, prefix: str | None = None, *,
                 second_pool: bool = False, capacity: int = DEFAULT_CAPACITY) -> None:
        self.tmp_path = Path(tmp_path)
        self.tmp_path.mkdir(parents=True, exist_ok=True)
        conf = real_conf()
        self.simulated = not conf
        if conf:
            self.config_path = Path(conf)
            self.cli_path = os.environ.get("ONEVITA_TEST_VITASTOR_CLI", "vitastor-cli")
            self.data_dir: Path | None = None
        else:
            self.config_path = self.tmp_path / "vitastor.conf"
            self.cli_path = SIM_CLI
            self.data_dir = self.tmp_path / "data"
            self._write_config(etcd_url, prefix or f"/vitastor-{uuid.uuid4().hex[:8]}", capacity)
        self.config = read_config(str(self.config_path))
        if self.simulated:
            self._write_pools(second_pool)

    def _write_config(self, etcd_url: str, prefix: str, capacity: int) -> None:
        """vitastor.conf with the simulation's own keys (sim_data_dir, sim_capacity)."""
        assert self.data_dir is not None
        self.data_dir.mkdir(exist_ok=True)
        conf = {"etcd_address": etcd_url.removeprefix("http://"), "etcd_prefix": prefix,
                "sim_data_dir": str(self.data_dir), "sim_capacity": capacity}
        self.config_path.write_text(dump_json11(conf) + "\n")

    def _write_pools(self, second_pool: bool) -> None:
        """/config/pools as ``vitastor-cli create-pool`` would leave it: testpool (1), ssdpool (2)."""
        pools: dict[str, Any] = {"1": {"name": "testpool", **POOL}}
        if second_pool:
            pools["2"] = {"name": "ssdpool", **POOL}
        self.etcd().put(f"{self.config.etcd_prefix}/config/pools", dump_json11(pools))

    # metadata -----------------------------------------------------------------------------
    def etcd(self) -> Etcd:
        """A client for the cluster's etcd."""
        return Etcd(self.config.etcd_address)

    def catalog(self) -> Catalog:
        """The cluster's image catalog, freshly loaded."""
        return Catalog(self.etcd(), self.config.etcd_prefix)

    def own_inodes(self, prefix: str) -> dict[LayerKey, Inode]:
        """The layers named under ``prefix``, freshly read: on a real cluster every other test's
        and user's images are in the catalog too, and a test may count and compare its own only."""
        return _named_under(self.catalog(), prefix)

    def remove_images(self, prefix: str) -> list[str]:
        """Remove every layer named under ``prefix`` with ``vitastor-cli rm``, as onevita removes
        layers: each after every layer that reads through it, so no data is merged between
        them (and a readonly snapshot never outlives its child). The names, in that order."""
        catalog = self.catalog()
        removed = []
        for inode in _leaves_first(catalog, _named_under(catalog, prefix)):
            self._ok("rm", inode.name, "--progress", "0")
            removed.append(inode.name)
        return removed

    # commands -----------------------------------------------------------------------------
    def cli(self, *args: str, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        """``vitastor-cli --config_path CONF ARGS...`` (the stand-in, or the real tool)."""
        return subprocess.run([self.cli_path, "--config_path", str(self.config_path), *args],
                              input=input, capture_output=True, timeout=300, check=False)

    def _ok(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        proc = self.cli(*args)
        if proc.returncode:
            raise AssertionError(f"vitastor-cli {' '.join(args)} failed ({proc.returncode}): "
                                 f"{proc.stderr.decode(errors='replace')}")
        return proc

    def stats(self) -> None:
        """Refresh /inode/stats, /pool/stats, /osd/stats like the monitor (simulation only)."""
        if not self.simulated:
            pytest.skip("a real cluster's statistics come from its own monitor")
        self._ok("sim-stats")

    # data ---------------------------------------------------------------------------------
    def write(self, name: str, offset: int, data: bytes, *, pool: str | None = None) -> None:
        """Write ``data`` at ``offset`` of image ``name`` (created in ``pool`` if missing) with
        ``dd conv=nosparse``, so zeros are written too; unaligned edges are read, merged and
        written back as whole 4 KiB granules, as a client does."""
        start, end = round_down(offset, GRANULE), round_up(offset + len(data), GRANULE)
        block = bytearray(end - start)
        if (start, end) != (offset, offset + len(data)) and self._exists(name):
            block[:] = self.read(name, start, end - start)
        block[offset - start:offset - start + len(data)] = data
        with tempfile.TemporaryDirectory(dir=self.tmp_path) as tmp:
            source = Path(tmp) / "in"
            source.write_bytes(bytes(block))
            bs = _block_for(start)
            self._ok("dd", f"if={source}", f"oimg={name}", f"bs={bs}", f"seek={start // bs}", "conv=nosparse",
                     *(["--pool", pool] if pool else []))

    def read(self, name: str, offset: int, length: int) -> bytes:
        """``length`` bytes at ``offset`` of image ``name``, through ``dd iimg=``; past the
        image's end Vitastor reads zeros."""
        size = self.catalog().get(name).size
        start, end = round_down(offset, GRANULE), round_up(offset + length, GRANULE)
        if start >= size:
            return bytes(length)
        with tempfile.TemporaryDirectory(dir=self.tmp_path) as tmp:
            target = Path(tmp) / "out"
            bs = _block_for(start)
            self._ok("dd", f"iimg={name}", f"of={target}", f"bs={bs}", f"skip={start // bs}",
                     f"count={-(-(end - start) // bs)}", "conv=trunc")
            data = target.read_bytes()[offset - start:offset - start + length]
        return data.ljust(length, b"\0")

    def allocated(self, name: str) -> int:
        """Bytes written in the head layer of ``name`` itself, zeros included: its allocated
        granules in the simulation's files, or on a real cluster its own allocation bitmap
        (read_bitmap without parents, through the real libvitastor_client)."""
        inode = self.catalog().get(name)
        if self.data_dir is None:
            return layer_allocation(self.config_path, inode.num, inode.size)
        return LayerStore(str(self.data_dir)).allocated((inode.pool_id, inode.id))

    def _exists(self, name: str) -> bool:
        return self.catalog().find(name) is not None
