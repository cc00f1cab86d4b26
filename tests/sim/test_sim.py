"""The vitastor-cli stand-in against a real etcd: data read back byte for byte through dd, and
rm/flatten keeping every image's contents while changing the layers under them."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Iterator

import orjson
import pytest

from onevita.vitastor.catalog import Catalog, Inode, dump_json11
from tests.harness.etcd_server import EtcdServer
from tests.sim.cluster import SimCluster

KIB, MIB = 1 << 10, 1 << 20

pytestmark = pytest.mark.skipif(bool(os.environ.get("ONEVITA_TEST_VITASTOR_CONF")),
                                reason="tests of the simulation itself (they expect an empty cluster)")


@pytest.fixture(scope="module")
def sim_etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One real etcd for this module; every test gets its own key prefix on it."""
    with EtcdServer(tmp_path_factory.mktemp("sim-etcd")) as server:
        yield server.url


@pytest.fixture()
def sim(sim_etcd: str, tmp_path: Path) -> SimCluster:
    return SimCluster(sim_etcd, tmp_path / "cluster")


def noise(seed: int, size: int) -> bytes:
    """Reproducible bytes with no zero granules in practice."""
    return random.Random(seed).randbytes(size)


def create(sim: SimCluster, name: str, size: int = MIB, parent: str | None = None) -> Inode:
    cat = sim.catalog()
    return cat.create(name, size, cat.pool(None), parent=cat.get(parent) if parent else None)


def snapshot(sim: SimCluster, name: str, snap: str) -> Inode:
    return sim.catalog().snapshot(name, snap)


def contents(sim: SimCluster) -> dict[str, bytes]:
    """Every image's full contents, by name."""
    return {i.name: sim.read(i.name, 0, i.size) for i in sim.catalog().inodes.values()}


def ok(sim: SimCluster, *args: str) -> bytes:
    proc = sim.cli(*args)
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout


def rm_json(sim: SimCluster, *args: str) -> dict[str, object]:
    result: dict[str, object] = orjson.loads(ok(sim, "--json", "--progress", "0", "rm", *args))
    return result


class TestDd:
    def test_file_round_trip_is_byte_exact_with_hole_and_unaligned_tail(self, sim: SimCluster,
                                                                         tmp_path: Path) -> None:
        """A zero MiB in the middle stays a hole; the unaligned tail reads back, then zeros."""
        data = noise(1, MIB) + bytes(MIB) + noise(2, MIB + 5000)
        source, back = tmp_path / "in", tmp_path / "back"
        source.write_bytes(data)
        ok(sim, "dd", f"if={source}", "oimg=img", "iodepth=8")
        assert sim.catalog().get("img").size == 3 * MIB + 8192
        assert sim.allocated("img") == 2 * MIB + 8192
        ok(sim, "dd", "iimg=img", f"of={back}", "bs=64K")
        assert back.read_bytes() == data + bytes(8192 - 5000)
        assert sim.read("img", MIB - 10, 20) == data[MIB - 10:MIB + 10]
        assert sim.read("img", 3 * MIB + 4000, 2000) == data[3 * MIB + 4000:] + bytes(1000)

    def test_helper_write_is_exact_at_unaligned_offsets(self, sim: SimCluster) -> None:
        create(sim, "img", MIB)
        sim.write("img", 0, b"x" * 8192)
        sim.write("img", 1000, b"hello")
        expected = b"x" * 1000 + b"hello" + b"x" * (8192 - 1005)
        assert sim.read("img", 0, 8192) == expected
        assert sim.read("img", 0, 2 * MIB) == expected + bytes(2 * MIB - 8192)

    def test_sparse_skips_zero_blocks_and_nosparse_writes_them(self, sim: SimCluster, tmp_path: Path) -> None:
        zeros = tmp_path / "zeros"
        zeros.write_bytes(bytes(2 * MIB))
        ok(sim, "dd", f"if={zeros}", "oimg=sparse")
        ok(sim, "dd", f"if={zeros}", "oimg=dense", "conv=nosparse")
        assert (sim.allocated("sparse"), sim.allocated("dense")) == (0, 2 * MIB)
        assert sim.read("dense", 0, 2 * MIB) == bytes(2 * MIB)

    def test_growing_an_image_and_seek(self, sim: SimCluster, tmp_path: Path) -> None:
        create(sim, "img", MIB)
        source = tmp_path / "in"
        source.write_bytes(b"y" * 4096)
        ok(sim, "dd", f"if={source}", "oimg=img", "bs=4K", "seek=512")
        assert sim.catalog().get("img").size == 2 * MIB + 4096
        assert sim.read("img", 2 * MIB - 1, 4097) == b"\0" + b"y" * 4096

    def test_errors(self, sim: SimCluster, tmp_path: Path) -> None:
        create(sim, "img", MIB)
        snapshot(sim, "img", "s1")
        source = tmp_path / "in"
        source.write_bytes(b"z" * 4096)
        assert sim.cli("dd", f"if={source}", "oimg=img@s1").returncode == 30
        assert sim.read("img@s1", 0, 4096) == bytes(4096)
        missing = sim.cli("dd", "iimg=nosuch", f"of={tmp_path / 'out'}")
        assert (missing.returncode, missing.stderr) == (2, b"Image nosuch does not exist\n")
        assert sim.cli("dd", "iimg=img", "of=x", "bs=1000").returncode == 22
        assert sim.cli("dd", f"if={source}", "oimg=img", "conv=bogus").returncode == 22
        assert sim.cli("dd", f"if={source}", "oimg=img", "conv=trunc").returncode == 22  # never shrinks

    def test_output_pool_with_two_pools(self, sim_etcd: str, tmp_path: Path) -> None:
        """With several pools a new image needs --pool (3.0.8 cannot create one at all then)."""
        sim = SimCluster(sim_etcd, tmp_path / "two", second_pool=True)
        source = tmp_path / "in"
        source.write_bytes(b"z" * 4096)
        assert sim.cli("dd", f"if={source}", "oimg=img").returncode == 2
        ok(sim, "dd", f"if={source}", "oimg=img", "--pool", "ssdpool")
        assert sim.catalog().get("img").pool_id == 2
        assert sim.read("img", 0, 4096) == b"z" * 4096


class TestLayers:
    def test_snapshot_then_write_to_head(self, sim: SimCluster) -> None:
        create(sim, "img", MIB)
        sim.write("img", 0, b"A" * 8192)
        snapshot(sim, "img", "s1")
        sim.write("img", 4096, b"B" * 4096)
        assert sim.read("img", 0, 8192) == b"A" * 4096 + b"B" * 4096
        assert sim.read("img@s1", 0, 8192) == b"A" * 8192
        assert (sim.allocated("img"), sim.allocated("img@s1")) == (4096, 8192)

    def build_chain(self, sim: SimCluster) -> dict[str, bytes]:
        """img@s0 → img@s1 → img@s2 → img, each layer writing some granules, one writing
        zeros over data below it (a written zero granule is not a hole)."""
        create(sim, "img", MIB)
        sim.write("img", 0, noise(0, 64 * KIB))
        for n in range(3):
            snapshot(sim, "img", f"s{n}")
            sim.write("img", (n + 1) * 16 * KIB, noise(n + 10, 24 * KIB))
        sim.write("img", 0, bytes(4096))
        before = contents(sim)
        assert before["img"][:4096] == bytes(4096) and before["img@s2"][:4096] != bytes(4096)
        return before

    def test_rm_middle_snapshot_keeps_every_image(self, sim: SimCluster) -> None:
        before = self.build_chain(sim)
        s0, s1 = sim.catalog().get("img@s0"), sim.catalog().get("img@s1")
        result = rm_json(sim, "img@s1")
        assert (result["deleted_images"], result["rebased_images"]) == (["img@s1"], ["img@s2"])
        assert result["deleted_ids"] == [s1.num]
        assert contents(sim) == {k: v for k, v in before.items() if k != "img@s1"}
        cat = sim.catalog()
        assert cat.get("img@s2").parent_id == s0.id and cat.find("img@s1") is None
        assert cat.etcd.get(f"{cat.prefix}/index/image/img@s1") is None
        assert not Path(sim.config.raw["sim_data_dir"], "1", str(s1.id)).exists()

    def test_rm_whole_chain_rebases_outside_children(self, sim: SimCluster) -> None:
        """rm img@s1 img removes img, img@s2, img@s1; clones of img@s1 and img@s2 keep their
        bytes and move onto img@s0 (FROM's parent) with vitastor-cli's config bytes."""
        self.build_chain(sim)
        create(sim, "c1", MIB, parent="img@s1")
        create(sim, "c2", MIB, parent="img@s2")
        sim.write("c1", 20 * KIB, b"c" * 4096)
        before = contents(sim)
        result = rm_json(sim, "img@s1", "img")
        assert result["deleted_images"] == ["img", "img@s2", "img@s1"]
        assert result["rebased_images"] == ["c1", "c2"]
        assert contents(sim) == {k: before[k] for k in ("img@s0", "c1", "c2")}
        cat = sim.catalog()
        s0 = cat.get("img@s0")
        for name in ("c1", "c2"):
            inode = cat.get(name)
            raw = cat.etcd.get(f"{cat.prefix}/config/inode/1/{inode.id}")
            assert raw is not None
            assert raw.value == dump_json11({"name": name, "parent_id": s0.id, "size": MIB}).encode()

    def test_rm_errors(self, sim: SimCluster) -> None:
        create(sim, "a", MIB)
        create(sim, "b", MIB)
        missing = sim.cli("rm", "nosuch")
        assert (missing.returncode, missing.stderr) == (2, b"Layer nosuch not found\n")
        as_json = sim.cli("--json", "rm", "nosuch")
        assert (as_json.returncode, orjson.loads(as_json.stdout)) == (
            2, {"error_code": 2, "error_text": "Layer nosuch not found"})
        unrelated = sim.cli("rm", "a", "b")
        assert (unrelated.returncode, unrelated.stderr) == (22, b"Layer b is not a child of a\n")
        assert {i.name for i in sim.catalog().inodes.values()} == {"a", "b"}

    def test_rm_progress_lines(self, sim: SimCluster) -> None:
        create(sim, "a", MIB)
        lines = ok(sim, "rm", "a").decode().splitlines()
        assert lines == ["Image a modified", "Done, inode 1 from pool 1 removed", "Layer a deleted"]

    def test_flatten_keeps_bytes_and_drops_the_parent(self, sim: SimCluster) -> None:
        self.build_chain(sim)
        create(sim, "clone", MIB, parent="img@s2")
        sim.write("clone", 8 * KIB, b"k" * 4096)
        before = contents(sim)
        out = ok(sim, "flatten", "clone")
        clone = sim.catalog().get("clone")
        assert out == f"Parent of layer clone (inode {clone.id} in pool 1) detached\n".encode()
        assert clone.parent_id == 0 and contents(sim) == before
        assert sim.allocated("clone") == 64 * KIB
        ok(sim, "flatten", "img@s1")
        cat = sim.catalog()
        assert cat.get("img@s1").parent_id == 0 and cat.get("img@s1").readonly
        assert contents(sim) == before

    def test_flatten_missing(self, sim: SimCluster) -> None:
        proc = sim.cli("flatten", "nosuch")
        assert (proc.returncode, proc.stderr) == (2, b"Layer nosuch not found\n")


class TestLsAndStats:
    def test_ls_json_fields(self, sim: SimCluster) -> None:
        create(sim, "img", 4 * MIB)
        snapshot(sim, "img", "s1")
        cat = sim.catalog()
        snap, head = cat.get("img@s1"), cat.get("img")
        listing = orjson.loads(ok(sim, "ls", "--json"))
        assert listing == [
            {"name": "img", "size": 4 * MIB, "used_size": 0, "readonly": False, "pool_id": 1,
             "pool_name": "testpool", "inode_num": head.id, "inode_id": head.num, "deleted": False,
             "parent_name": "img@s1", "parent_pool_id": 1, "parent_inode_num": snap.id,
             "parent_inode_id": snap.num},
            {"name": "img@s1", "size": 4 * MIB, "used_size": 0, "readonly": True, "pool_id": 1,
             "pool_name": "testpool", "inode_num": snap.id, "inode_id": snap.num, "deleted": False},
        ]
        assert [i["name"] for i in orjson.loads(ok(sim, "ls", "--json", "*@*"))] == ["img@s1"]
        table = ok(sim, "ls").decode().splitlines()
        assert table[0].split() == ["NAME", "POOL", "SIZE", "FLAGS", "PARENT"]
        assert table[2].split() == ["img@s1", "testpool", "4", "M", "RO"]

    def test_stats_feed_used_sizes_and_usage(self, sim_etcd: str, tmp_path: Path) -> None:
        """raw_used = allocated × pg_size; df's total/used/free come out in usable bytes."""
        sim = SimCluster(sim_etcd, tmp_path / "two", second_pool=True, capacity=256 * MIB)
        cat = sim.catalog()
        pools_kv = cat.etcd.get(f"{cat.prefix}/config/pools")
        assert pools_kv is not None
        pools = orjson.loads(pools_kv.value)
        pools["2"]["pg_size"] = 2
        cat.etcd.put(f"{cat.prefix}/config/pools", dump_json11(pools))
        sim.write("a", 0, noise(1, 100 * KIB), pool="testpool")
        sim.write("b", 0, noise(2, 40 * KIB), pool="ssdpool")
        sim.stats()
        cat = sim.catalog()
        a, b = cat.get("a"), cat.get("b")
        assert cat.used_sizes() == {(1, a.id): 100 * KIB, (2, b.id): 40 * KIB}
        raw = cat.etcd.get(f"{cat.prefix}/inode/stats/2/{b.id}")
        assert raw is not None and orjson.loads(raw.value) == {"raw_used": str(80 * KIB)}
        free = 256 * MIB - 140 * KIB
        usage1, usage2 = cat.usage(cat.pool("testpool")), cat.usage(cat.pool("ssdpool"))
        assert (usage1.total, usage1.used, usage1.free) == (256 * MIB, 100 * KIB, free)
        assert (usage2.total, usage2.used, usage2.free) == (256 * MIB, 40 * KIB, free)
        listed = orjson.loads(ok(sim, "ls", "-l", "--json", "-p", "ssdpool"))
        assert [(i["name"], i["used_size"]) for i in listed] == [("b", 40 * KIB)]
        ok(sim, "rm", "a")
        sim.stats()
        assert sim.catalog().used_sizes() == {(2, b.id): 40 * KIB}


def test_catalog_sees_the_stand_in_changes(sim: SimCluster) -> None:
    """Inodes written by the stand-in parse back through onevita's Catalog unchanged."""
    create(sim, "img", MIB)
    before = sim.catalog().get("img")
    ok(sim, "flatten", "img")
    after = Catalog(sim.etcd(), sim.config.etcd_prefix).get("img")
    assert (after.name, after.size, after.parent_id) == (before.name, before.size, 0)
    assert after.mod_revision > before.mod_revision
