"""The vitastor-cli stand-in against a real etcd: data read back byte for byte through dd, and
rm/flatten keeping every image's contents while changing the layers under them.

In real-cluster mode the same tests run with the real vitastor-cli on the real cluster, which
pins the stand-in to what the real tool does (output, exit codes, JSON, data). Only what is the
simulation's own runs simulated alone: its layer files, ``sim-stats``, a second pool, and the
deliberate differences (``conv=trunc`` never shrinks)."""

from __future__ import annotations

import random
import time
import uuid
from pathlib import Path
from typing import Callable, Iterator

import orjson
import pytest

from onevita.vitastor.catalog import Catalog, Inode, dump_json11
from tests.harness.etcd_server import EtcdServer
from tests.sim.cluster import SimCluster, real_conf, real_leftovers

KIB, MIB = 1 << 10, 1 << 20
simulated_only = pytest.mark.skipif(bool(real_conf()), reason="the simulation's own internals")
Name = Callable[[str], str]


@pytest.fixture(scope="module")
def sim_etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One real etcd for the simulation-only tests; every cluster gets its own key prefix on it."""
    with EtcdServer(tmp_path_factory.mktemp("sim-etcd")) as server:
        yield server.url


@pytest.fixture()
def sim(cluster: SimCluster) -> SimCluster:
    """The test's cluster: a simulated one of its own, or the real one."""
    return cluster


@pytest.fixture()
def n(image_prefix: str) -> Name:
    """The test's image names: ``n("img")`` is ``<prefix>-img``."""
    return lambda name: f"{image_prefix}-{name}"


def noise(seed: int, size: int) -> bytes:
    """Reproducible bytes with no zero granules in practice."""
    return random.Random(seed).randbytes(size)


def create(sim: SimCluster, name: str, size: int = MIB, parent: str | None = None) -> Inode:
    cat = sim.catalog()
    return cat.create(name, size, cat.pool(None), parent=cat.get(parent) if parent else None)


def snapshot(sim: SimCluster, name: str, snap: str) -> Inode:
    return sim.catalog().snapshot(name, snap)


def contents(sim: SimCluster, n: Name) -> dict[str, bytes]:
    """The full contents of every image of the test, by name."""
    return {i.name: sim.read(i.name, 0, i.size) for i in sim.own_inodes(n("")).values()}


def ok(sim: SimCluster, *args: str) -> bytes:
    proc = sim.cli(*args)
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout


def rm_json(sim: SimCluster, *args: str) -> dict[str, object]:
    result: dict[str, object] = orjson.loads(ok(sim, "--json", "--progress", "0", "rm", *args))
    return result


class TestDd:
    def test_file_round_trip_is_byte_exact_with_hole_and_unaligned_tail(self, sim: SimCluster, n: Name,
                                                                         tmp_path: Path) -> None:
        """A zero MiB in the middle stays a hole; the unaligned tail reads back, then zeros."""
        data = noise(1, MIB) + bytes(MIB) + noise(2, MIB + 5000)
        source, back = tmp_path / "in", tmp_path / "back"
        source.write_bytes(data)
        ok(sim, "dd", f"if={source}", f"oimg={n('img')}", "iodepth=8")
        assert sim.catalog().get(n("img")).size == 3 * MIB + 8192
        assert sim.allocated(n("img")) == 2 * MIB + 8192
        ok(sim, "dd", f"iimg={n('img')}", f"of={back}", "bs=64K")
        assert back.read_bytes() == data + bytes(8192 - 5000)
        assert sim.read(n("img"), MIB - 10, 20) == data[MIB - 10:MIB + 10]
        assert sim.read(n("img"), 3 * MIB + 4000, 2000) == data[3 * MIB + 4000:] + bytes(1000)

    def test_helper_write_is_exact_at_unaligned_offsets(self, sim: SimCluster, n: Name) -> None:
        create(sim, n("img"), MIB)
        sim.write(n("img"), 0, b"x" * 8192)
        sim.write(n("img"), 1000, b"hello")
        expected = b"x" * 1000 + b"hello" + b"x" * (8192 - 1005)
        assert sim.read(n("img"), 0, 8192) == expected
        assert sim.read(n("img"), 0, 2 * MIB) == expected + bytes(2 * MIB - 8192)

    def test_sparse_skips_zero_blocks_and_nosparse_writes_them(self, sim: SimCluster, n: Name,
                                                               tmp_path: Path) -> None:
        zeros = tmp_path / "zeros"
        zeros.write_bytes(bytes(2 * MIB))
        ok(sim, "dd", f"if={zeros}", f"oimg={n('sparse')}")
        ok(sim, "dd", f"if={zeros}", f"oimg={n('dense')}", "conv=nosparse")
        assert (sim.allocated(n("sparse")), sim.allocated(n("dense"))) == (0, 2 * MIB)
        assert sim.read(n("dense"), 0, 2 * MIB) == bytes(2 * MIB)

    def test_growing_an_image_and_seek(self, sim: SimCluster, n: Name, tmp_path: Path) -> None:
        create(sim, n("img"), MIB)
        source = tmp_path / "in"
        source.write_bytes(b"y" * 4096)
        ok(sim, "dd", f"if={source}", f"oimg={n('img')}", "bs=4K", "seek=512")
        assert sim.catalog().get(n("img")).size == 2 * MIB + 4096
        assert sim.read(n("img"), 2 * MIB - 1, 4097) == b"\0" + b"y" * 4096

    def test_errors(self, sim: SimCluster, n: Name, tmp_path: Path) -> None:
        create(sim, n("img"), MIB)
        snapshot(sim, n("img"), "s1")
        source = tmp_path / "in"
        source.write_bytes(b"z" * 4096)
        readonly = sim.cli("dd", f"if={source}", f"oimg={n('img')}@s1")
        assert readonly.returncode == 30
        assert readonly.stderr.decode().startswith(
            f"Failed to write 4096 bytes to image {n('img')}@s1 at offset 0: Read-only file system (code -30)\n")
        assert sim.read(f"{n('img')}@s1", 0, 4096) == bytes(4096)
        missing = sim.cli("dd", f"iimg={n('nosuch')}", f"of={tmp_path / 'out'}")
        assert (missing.returncode, missing.stderr) == (2, f"Image {n('nosuch')} does not exist\n".encode())
        unaligned = sim.cli("dd", f"iimg={n('img')}", "of=x", "bs=1000")
        assert (unaligned.returncode, unaligned.stderr) == (22, b"Unaligned read from Vitastor is not supported\n")
        bogus = sim.cli("dd", f"if={source}", f"oimg={n('img')}", "conv=bogus")
        assert (bogus.returncode, bogus.stderr) == (22, b"Unknown option conv=bogus\n")
        nocreat = sim.cli("dd", f"if={source}", f"oimg={n('new')}", "conv=nocreat")
        assert (nocreat.returncode, nocreat.stderr) == (2, f"Image {n('new')} does not exist\n".encode())

    @simulated_only
    def test_trunc_never_shrinks(self, sim: SimCluster, n: Name, tmp_path: Path) -> None:
        """A deliberate difference: 3.0.8's shrink wipes the image (vitastor-internals §0.1)."""
        create(sim, n("img"), MIB)
        source = tmp_path / "in"
        source.write_bytes(b"z" * 4096)
        assert sim.cli("dd", f"if={source}", f"oimg={n('img')}", "conv=trunc").returncode == 22

    @simulated_only
    def test_output_pool_with_two_pools(self, sim_etcd: str, tmp_path: Path) -> None:
        """With several pools a new image needs --pool (3.0.8 cannot create one at all then)."""
        sim = SimCluster(sim_etcd, tmp_path / "two", second_pool=True)
        source = tmp_path / "in"
        source.write_bytes(b"z" * 4096)
        assert sim.cli("dd", f"if={source}", "oimg=img").returncode == 2
        ok(sim, "dd", f"if={source}", "oimg=img", "--pool", "ssdpool")
        assert sim.catalog().get("img").pool_id == 2
        assert sim.read("img", 0, 4096) == b"z" * 4096


def await_stats(sim: SimCluster, layers: list[Inode]) -> None:
    """The /inode/stats of ``layers``, as a monitor writes them: at once on a simulated cluster
    (sim-stats), awaited on a real one (its monitor writes them every few seconds)."""
    if sim.simulated:
        sim.stats()
        return
    deadline = time.monotonic() + 60
    while not all(sim.catalog().used_sizes().get((i.pool_id, i.id)) for i in layers):
        assert time.monotonic() < deadline, f"no statistics of {[i.name for i in layers]} after 60 s"
        time.sleep(0.5)


class TestLayers:
    def test_snapshot_then_write_to_head(self, sim: SimCluster, n: Name) -> None:
        create(sim, n("img"), MIB)
        sim.write(n("img"), 0, b"A" * 8192)
        snapshot(sim, n("img"), "s1")
        sim.write(n("img"), 4096, b"B" * 4096)
        assert sim.read(n("img"), 0, 8192) == b"A" * 4096 + b"B" * 4096
        assert sim.read(f"{n('img')}@s1", 0, 8192) == b"A" * 8192
        assert (sim.allocated(n("img")), sim.allocated(f"{n('img')}@s1")) == (4096, 8192)

    def build_chain(self, sim: SimCluster, n: Name) -> dict[str, bytes]:
        """img@s0 → img@s1 → img@s2 → img, each layer writing some granules, one writing
        zeros over data below it (a written zero granule is not a hole)."""
        img = n("img")
        create(sim, img, MIB)
        sim.write(img, 0, noise(0, 64 * KIB))
        for i in range(3):
            snapshot(sim, img, f"s{i}")
            sim.write(img, (i + 1) * 16 * KIB, noise(i + 10, 24 * KIB))
        sim.write(img, 0, bytes(4096))
        before = contents(sim, n)
        assert before[img][:4096] == bytes(4096) and before[f"{img}@s2"][:4096] != bytes(4096)
        return before

    def test_rm_middle_snapshot_keeps_every_image(self, sim: SimCluster, n: Name) -> None:
        before = self.build_chain(sim, n)
        img = n("img")
        s0, s1 = sim.catalog().get(f"{img}@s0"), sim.catalog().get(f"{img}@s1")
        result = rm_json(sim, f"{img}@s1")
        assert (result["deleted_images"], result["rebased_images"]) == ([f"{img}@s1"], [f"{img}@s2"])
        assert result["deleted_ids"] == [s1.num]
        assert contents(sim, n) == {k: v for k, v in before.items() if k != f"{img}@s1"}
        cat = sim.catalog()
        assert cat.get(f"{img}@s2").parent_id == s0.id and cat.find(f"{img}@s1") is None
        assert cat.etcd.get(f"{cat.prefix}/index/image/{img}@s1") is None
        if sim.data_dir is not None:  # the simulation's own layout: the layer's file went too
            assert not Path(sim.data_dir, "1", str(s1.id)).exists()

    def test_rm_whole_chain_rebases_outside_children(self, sim: SimCluster, n: Name) -> None:
        """rm img@s1 img removes img, img@s2, img@s1; clones of img@s1 and img@s2 keep their
        bytes and move onto img@s0 (FROM's parent) with vitastor-cli's config bytes."""
        self.build_chain(sim, n)
        img = n("img")
        create(sim, n("c1"), MIB, parent=f"{img}@s1")
        create(sim, n("c2"), MIB, parent=f"{img}@s2")
        sim.write(n("c1"), 20 * KIB, b"c" * 4096)
        before = contents(sim, n)
        result = rm_json(sim, f"{img}@s1", img)
        assert result["deleted_images"] == [img, f"{img}@s2", f"{img}@s1"]
        assert result["rebased_images"] == [n("c1"), n("c2")]
        assert contents(sim, n) == {k: before[k] for k in (f"{img}@s0", n("c1"), n("c2"))}
        cat = sim.catalog()
        s0 = cat.get(f"{img}@s0")
        for name in (n("c1"), n("c2")):
            inode = cat.get(name)
            raw = cat.etcd.get(f"{cat.prefix}/config/inode/{inode.pool_id}/{inode.id}")
            assert raw is not None
            assert raw.value == dump_json11({"name": name, "parent_id": s0.id, "size": MIB}).encode()

    def test_rm_errors(self, sim: SimCluster, n: Name) -> None:
        create(sim, n("a"), MIB)
        create(sim, n("b"), MIB)
        missing = sim.cli("rm", n("nosuch"))
        assert (missing.returncode, missing.stderr) == (2, f"Layer {n('nosuch')} not found\n".encode())
        as_json = sim.cli("--json", "rm", n("nosuch"))
        assert (as_json.returncode, orjson.loads(as_json.stdout)) == (
            2, {"error_code": 2, "error_text": f"Layer {n('nosuch')} not found"})
        unrelated = sim.cli("rm", n("a"), n("b"))
        assert (unrelated.returncode, unrelated.stderr) == (22, f"Layer {n('b')} is not a child of {n('a')}\n".encode())
        assert {i.name for i in sim.own_inodes(n("")).values()} == {n("a"), n("b")}

    def test_rm_progress_lines(self, sim: SimCluster, n: Name) -> None:
        a = create(sim, n("a"), MIB)
        lines = ok(sim, "rm", n("a")).decode().splitlines()
        assert lines == [f"Image {n('a')} modified", f"Done, inode {a.id} from pool {a.pool_id} removed",
                         f"Layer {n('a')} deleted"]

    def test_rm_merges_into_a_child_with_progress_lines(self, sim: SimCluster, n: Name) -> None:
        """A layer with a child: its two objects merged into the child (the merge's lines), the
        child detached, then the layer removed (rm-data's lines)."""
        sim.write(n("b"), 0, noise(3, 200_000))
        b = sim.catalog().get(n("b"))
        c = create(sim, n("c"), b.size, parent=n("b"))
        proc = sim.cli("rm", n("b"))
        assert proc.returncode == 0
        assert proc.stdout.decode().splitlines() == [
            f"Merging 1 layer(s) into target {n('c')} online (with CAS) (inode {c.id} in pool {c.pool_id})",
            f"Done, layers from {n('b')} to {n('c')} merged into {n('c')}",
            f"Parent of layer {n('c')} (inode {c.id} in pool {c.pool_id}) detached",
            f"Image {n('b')} modified", f"Done, inode {b.id} from pool {b.pool_id} removed", f"Layer {n('b')} deleted"]
        merge, removal = proc.stderr.decode().splitlines()[:3], proc.stderr.decode().splitlines()[3:]
        assert merge == [f"Got listing of layer {n('b')} (inode {b.id} in pool {b.pool_id})",
                         "0 full blocks of target filtered out", "Overwriting blocks: 2/2"]
        assert removal[-2].startswith("Removed 2/2 objects, ") and removal[-1] == ""
        assert sim.read(n("c"), 0, 200_000) == noise(3, 200_000)

    def test_rm_takes_the_inverse_shortcut_for_a_smaller_readonly_child(self, sim: SimCluster, n: Name) -> None:
        """The statistics say the removed img@0 holds more than its readonly child img@1: 3.0.8
        merges img@1 into img@0 instead and gives img@0 img@1's name and config (the "inverse"
        shortcut). Same names, same contents; img@1's name is now on img@0's inode."""
        img = n("img")
        sim.write(img, 0, noise(6, 512 * KIB))
        s0 = snapshot(sim, img, "0")
        sim.write(img, 0, b"1" * 4096)
        s1 = snapshot(sim, img, "1")
        sim.write(img, 8192, b"h" * 4096)
        await_stats(sim, [s0, s1])
        before = contents(sim, n)
        proc = sim.cli("--json", "rm", f"{img}@0")
        assert proc.returncode == 0, proc.stderr
        *lines, last = proc.stdout.decode().splitlines()
        assert lines == [
            f"Merging 1 layer(s) into target {img}@0 online (with CAS) (inode {s0.id} in pool {s0.pool_id})",
            f"Done, layers from {img}@0 to {img}@1 merged into {img}@0",
            f"Done, inode {s1.id} from pool {s1.pool_id} removed", f"Layer {img}@0 renamed to {img}@1"]
        result = orjson.loads(last)
        assert (result["renamed_from"], result["renamed_to"]) == (f"{img}@0", f"{img}@1")
        assert (result["deleted_images"], result["deleted_ids"], result["rebased_images"]) == ([], [], [])
        errors = proc.stderr.decode().splitlines()
        assert errors[:2] == [f"Got listing of layer {img}@1 (inode {s1.id} in pool {s1.pool_id})",
                              "Overwriting blocks: 1/1"]
        assert errors[2].startswith("Removed 1/1 objects, ") and errors[3:] == [""]
        cat = sim.catalog()
        renamed = cat.get(f"{img}@1")
        assert (renamed.id, renamed.readonly, renamed.parent_id) == (s0.id, True, 0)
        assert cat.get(img).parent_key == (s0.pool_id, s0.id) and cat.find(f"{img}@0") is None
        assert contents(sim, n) == {k: v for k, v in before.items() if k != f"{img}@0"}
        assert sim.allocated(f"{img}@1") == 512 * KIB

    def test_flatten_keeps_bytes_and_drops_the_parent(self, sim: SimCluster, n: Name) -> None:
        self.build_chain(sim, n)
        img, clone = n("img"), n("clone")
        create(sim, clone, MIB, parent=f"{img}@s2")
        sim.write(clone, 8 * KIB, b"k" * 4096)
        before = contents(sim, n)
        proc = sim.cli("flatten", clone)
        inode = sim.catalog().get(clone)
        assert proc.returncode == 0
        assert proc.stdout.decode().splitlines() == [
            f"Merging 3 layer(s) into target {clone} online (with CAS) (inode {inode.id} in pool {inode.pool_id})",
            f"Parent of layer {clone} (inode {inode.id} in pool {inode.pool_id}) detached"]
        assert proc.stderr.decode().splitlines()[-1] == "Overwriting blocks: 1/1"
        assert inode.parent_id == 0 and contents(sim, n) == before
        assert sim.allocated(clone) == 64 * KIB
        ok(sim, "flatten", f"{img}@s1")
        cat = sim.catalog()
        assert cat.get(f"{img}@s1").parent_id == 0 and cat.get(f"{img}@s1").readonly
        assert contents(sim, n) == before

    def test_flatten_without_a_parent(self, sim: SimCluster, n: Name) -> None:
        """Nothing to merge: no Merging line, an empty pass over the blocks, and the config
        written again all the same."""
        before = create(sim, n("img"), MIB)
        proc = sim.cli("flatten", n("img"))
        assert (proc.returncode, proc.stdout, proc.stderr) == (
            0, f"Parent of layer {n('img')} (inode {before.id} in pool {before.pool_id}) detached\n".encode(),
            b"Overwriting blocks: 0/0\n")
        assert sim.catalog().get(n("img")).mod_revision > before.mod_revision

    def test_flatten_missing(self, sim: SimCluster, n: Name) -> None:
        proc = sim.cli("flatten", n("nosuch"))
        assert (proc.returncode, proc.stderr) == (2, f"Layer {n('nosuch')} not found\n".encode())


class TestLsAndStats:
    def test_ls_json_fields(self, sim: SimCluster, n: Name) -> None:
        img = n("img")
        create(sim, img, 4 * MIB)
        snapshot(sim, img, "s1")
        cat = sim.catalog()
        snap, head = cat.get(f"{img}@s1"), cat.get(img)
        pool = cat.pools[head.pool_id]
        listing = orjson.loads(ok(sim, "ls", "--json", f"{n('')}*"))
        assert listing == [
            {"name": img, "size": 4 * MIB, "used_size": 0, "readonly": False, "pool_id": pool.id,
             "pool_name": pool.name, "inode_num": head.id, "inode_id": head.num, "deleted": False,
             "parent_name": f"{img}@s1", "parent_pool_id": pool.id, "parent_inode_num": snap.id,
             "parent_inode_id": snap.num},
            {"name": f"{img}@s1", "size": 4 * MIB, "used_size": 0, "readonly": True, "pool_id": pool.id,
             "pool_name": pool.name, "inode_num": snap.id, "inode_id": snap.num, "deleted": False},
        ]
        assert [i["name"] for i in orjson.loads(ok(sim, "ls", "--json", f"{n('')}*@*"))] == [f"{img}@s1"]
        table = ok(sim, "ls", f"{n('')}*").decode().splitlines()
        assert table[0].split() == ["NAME", "POOL", "SIZE", "FLAGS", "PARENT"]
        assert table[2].split() == [f"{img}@s1", pool.name, "4", "M", "RO"]

    @simulated_only
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


def test_catalog_sees_the_stand_in_changes(sim: SimCluster, n: Name) -> None:
    """Inodes written by the stand-in parse back through onevita's Catalog unchanged."""
    create(sim, n("img"), MIB)
    before = sim.catalog().get(n("img"))
    ok(sim, "flatten", n("img"))
    after = Catalog(sim.etcd(), sim.config.etcd_prefix).get(n("img"))
    assert (after.name, after.size, after.parent_id) == (before.name, before.size, 0)
    assert after.mod_revision > before.mod_revision


class TestCleanup:
    """What ends every test on a real cluster: its images go, others' stay, and the session's
    end finds what a test left."""

    def test_remove_images_takes_the_prefix_leaves_first(self, sim: SimCluster, n: Name, image_prefix: str) -> None:
        """Every layer named under the prefix goes with vitastor-cli rm, each after the layers
        that read through it, so nothing is merged; another prefix's image stays."""
        sim.write(n("base"), 0, noise(4, 8 * KIB))
        snapshot(sim, n("base"), "0")
        create(sim, n("base-12-0"), MIB, parent=f"{n('base')}@0")
        snapshot(sim, n("base-12-0"), "1")
        other = f"t{uuid.uuid4().hex[:6]}-5"  # another test's image
        try:
            sim.write(other, 0, noise(5, 4 * KIB))
            removed = sim.remove_images(image_prefix)
            assert sorted(removed) == sorted([n("base"), f"{n('base')}@0", n("base-12-0"), f"{n('base-12-0')}@1"])
            for child, parent in ((n("base"), f"{n('base')}@0"), (n("base-12-0"), f"{n('base-12-0')}@1"),
                                  (f"{n('base-12-0')}@1", f"{n('base')}@0")):
                assert removed.index(child) < removed.index(parent)
            assert sim.own_inodes(image_prefix) == {}
            assert sim.read(other, 0, 4 * KIB) == noise(5, 4 * KIB)
        finally:
            sim.remove_images(other)

    @pytest.mark.skipif(not real_conf(), reason="the session-end check looks into the real cluster only")
    def test_real_leftovers_names_what_is_left(self, sim: SimCluster, n: Name, image_prefix: str) -> None:
        create(sim, n("left"), MIB)
        assert real_leftovers([image_prefix, "t-no-such-prefix"]) == [n("left")]
        sim.remove_images(image_prefix)
        assert real_leftovers([image_prefix]) == []
