"""The image catalog against a real etcd: vitastor-cli's byte format and conditional
transactions, races with another writer, and the space statistics."""

from __future__ import annotations

import uuid
from typing import Callable, Optional

import orjson
import pytest

from onevita.errors import CompareFailed, ImageBusy, ImageExists, ShrinkRefused
from onevita.vitastor.catalog import Catalog, Pool, dump_json11
from onevita.vitastor.etcd import Etcd, KeyValue

MIB, GIB, TIB = 1 << 20, 1 << 30, 1 << 40
SIZE = 64 * MIB
POOLS = {
    "1": {"name": "testpool", "scheme": "replicated", "pg_size": 2, "pg_minsize": 1, "pg_count": 4,
          "failure_domain": "osd"},
    "2": {"name": "ecpool", "scheme": "ec", "pg_size": 3, "parity_chunks": 1, "pg_minsize": 2, "pg_count": 1,
          "failure_domain": "osd", "block_size": 131072},
    "3": {"name": "emptypool", "scheme": "replicated", "pg_size": 1, "pg_minsize": 1, "pg_count": 1,
          "failure_domain": "osd"},
}


class HookedEtcd(Etcd):
    """An etcd client that runs ``hook(key)`` once, right after its next ``get``: another writer
    acting between vitastor-cli's read of maxid and its conditional txn."""

    def __init__(self, endpoints: list[str]) -> None:
        super().__init__(endpoints)
        self.hook: Optional[Callable[[str], None]] = None

    def get(self, key: str) -> Optional[KeyValue]:
        kv = super().get(key)
        hook, self.hook = self.hook, None
        if hook is not None:
            hook(key)
        return kv


@pytest.fixture()
def prefix(etcd: str) -> str:
    """A fresh cluster under its own etcd prefix, with three pools."""
    prefix = f"/vitastor-unit-{uuid.uuid4().hex[:8]}"
    Etcd([etcd]).put(f"{prefix}/config/pools", dump_json11(POOLS))
    return prefix


@pytest.fixture()
def client(etcd: str) -> HookedEtcd:
    return HookedEtcd([etcd])


@pytest.fixture()
def cat(client: HookedEtcd, prefix: str) -> Catalog:
    return Catalog(client, prefix)


def other(etcd: str, prefix: str) -> Catalog:
    """Another writer's view of the same cluster (vitastor-cli on another host)."""
    return Catalog(Etcd([etcd]), prefix)


def creator(etcd: str, prefix: str, name: str) -> None:
    """Another writer creates ``name`` (64 MiB in testpool)."""
    writer = other(etcd, prefix)
    writer.create(name, SIZE, writer.pool("testpool"))


def raw(cat: Catalog, key: str) -> Optional[bytes]:
    kv = cat.etcd.get(cat.prefix + key)
    return kv.value if kv is not None else None


def pool(cat: Catalog, name: str = "testpool") -> Pool:
    return cat.pool(name)


# json11 --------------------------------------------------------------------------------------
def test_dump_json11_matches_vitastor_byte_format() -> None:
    value = {"size": 1, "name": "é\u0001\u2028\u2029\"\\/", "meta": {"b": [1, True, None], "a": False}}
    assert dump_json11(value) == ('{"meta": {"a": false, "b": [1, true, null]}, '
                                  '"name": "é\\u0001\\u2028\\u2029\\"\\\\/", "size": 1}')
    assert dump_json11({}) == "{}" and dump_json11([]) == "[]"


# create --------------------------------------------------------------------------------------
class TestCreate:
    def test_create_writes_the_keys_vitastor_cli_writes(self, cat: Catalog) -> None:
        img = cat.create("img", SIZE, pool(cat))
        assert (img.pool_id, img.id, img.num) == (1, 1, (1 << 48) | 1)
        assert raw(cat, "/config/inode/1/1") == b'{"name": "img", "size": 67108864}'
        assert raw(cat, "/index/image/img") == b'{"id": 1, "pool_id": 1}'
        assert raw(cat, "/index/maxid/1") == b"1"
        kv = cat.etcd.get(f"{cat.prefix}/config/inode/1/1")
        assert kv is not None and img.mod_revision == kv.mod_revision > 0
        assert cat.find("img") == img

    def test_child_and_cross_pool_child(self, cat: Catalog) -> None:
        img = cat.create("img", SIZE, pool(cat))
        child = cat.create("child", 2 * SIZE, pool(cat), parent=img)
        assert raw(cat, "/config/inode/1/2") == b'{"name": "child", "parent_id": 1, "size": 134217728}'
        remote = cat.create("remote", SIZE, pool(cat, "ecpool"), parent=img)
        assert (remote.pool_id, remote.id) == (2, 1)
        assert raw(cat, "/config/inode/2/1") == (
            b'{"name": "remote", "parent_id": 1, "parent_pool": 1, "size": 67108864}')
        assert raw(cat, "/index/image/remote") == b'{"id": 1, "pool_id": 2}'
        assert (raw(cat, "/index/maxid/1"), raw(cat, "/index/maxid/2")) == (b"2", b"1")
        assert cat.parent(child) == img and cat.parent(remote) == img
        assert sorted(i.name for i in cat.children(img)) == ["child", "remote"]

    def test_meta_is_stored(self, cat: Catalog) -> None:
        cat.create("img", SIZE, pool(cat), meta={"onevita_copy_of": "src"})
        assert raw(cat, "/config/inode/1/1") == b'{"meta": {"onevita_copy_of": "src"}, "name": "img", "size": 67108864}'
        assert Catalog(cat.etcd, cat.prefix).get("img").meta == {"onevita_copy_of": "src"}

    def test_ids_continue_above_existing_inodes_without_maxid(self, cat: Catalog) -> None:
        """vitastor-cli's extract_next_id: max(maxid, highest inode id) + 1."""
        cat.etcd.put(f"{cat.prefix}/config/inode/1/5", '{"name": "old", "size": 4096}')
        cat.load()
        assert cat.create("img", SIZE, pool(cat)).id == 6
        assert raw(cat, "/index/maxid/1") == b"6"

    def test_ids_are_never_reused(self, cat: Catalog) -> None:
        cat.create("a", SIZE, pool(cat))
        cat.etcd.delete_prefix(f"{cat.prefix}/config/inode/1/1")
        cat.load()
        assert cat.create("b", SIZE, pool(cat)).id == 2

    def test_size_must_be_4k_aligned(self, cat: Catalog) -> None:
        with pytest.raises(ValueError, match="image size 1000 is not a multiple of 4096"):
            cat.create("img", 1000, pool(cat))

    def test_existing_name(self, cat: Catalog) -> None:
        cat.create("img", SIZE, pool(cat))
        with pytest.raises(ImageExists, match="^Vitastor image img already exists$"):
            cat.create("img", SIZE, pool(cat, "ecpool"))

    def test_retry_when_another_writer_takes_the_id(self, etcd: str, client: HookedEtcd, cat: Catalog) -> None:
        """Between the maxid read and the txn another writer creates an image with the same new
        id: the txn fails, the catalog re-reads and takes the next id."""
        client.hook = lambda key: creator(etcd, cat.prefix, "intruder")
        img = cat.create("img", SIZE, pool(cat))
        assert img.id == 2
        assert raw(cat, "/config/inode/1/1") == b'{"name": "intruder", "size": 67108864}'
        assert raw(cat, "/config/inode/1/2") == b'{"name": "img", "size": 67108864}'
        assert raw(cat, "/index/image/img") == b'{"id": 2, "pool_id": 1}'
        assert raw(cat, "/index/maxid/1") == b"2"
        assert {i.name for i in cat.inodes.values()} == {"intruder", "img"}

    def test_retry_when_another_writer_only_bumps_maxid(self, client: HookedEtcd, cat: Catalog) -> None:
        """A writer that allocated an id but did not write its inode yet (maxid changed)."""
        client.hook = lambda key: cat.etcd.put(key, "7")
        img = cat.create("img", SIZE, pool(cat))
        assert img.id == 8
        assert raw(cat, "/index/maxid/1") == b"8"

    def test_eexist_when_another_writer_takes_the_name(self, etcd: str, client: HookedEtcd,
                                                       cat: Catalog) -> None:
        client.hook = lambda key: creator(etcd, cat.prefix, "img")
        with pytest.raises(ImageExists, match="^Vitastor image img already exists$"):
            cat.create("img", 2 * SIZE, pool(cat))
        assert raw(cat, "/config/inode/1/1") == b'{"name": "img", "size": 67108864}'
        assert raw(cat, "/config/inode/1/2") is None

    def test_gives_up_when_etcd_keeps_changing(self, client: HookedEtcd, cat: Catalog,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
        bumps = iter(range(100, 200))

        def get(key: str) -> Optional[KeyValue]:
            kv = Etcd.get(client, key)
            Etcd.put(client, key, str(next(bumps)))
            return kv

        monkeypatch.setattr(client, "get", get)
        with pytest.raises(CompareFailed, match="^could not create img: etcd kept changing under us$"):
            cat.create("img", SIZE, pool(cat))
        assert raw(cat, "/index/image/img") is None


# snapshot ------------------------------------------------------------------------------------
class TestSnapshot:
    def test_snapshot_txn_result(self, cat: Catalog) -> None:
        """The data stays in the old inode, renamed NAME@SNAP and readonly; NAME is a new child."""
        img = cat.create("img", SIZE, pool(cat), meta={"k": "v"})
        snap = cat.snapshot("img", "3")
        assert (snap.id, snap.name, snap.readonly, snap.meta) == (img.id, "img@3", True, None)
        head = cat.get("img")
        assert (head.id, head.parent_id, head.size) == (2, 1, SIZE)
        assert raw(cat, "/config/inode/1/1") == b'{"name": "img@3", "readonly": true, "size": 67108864}'
        assert raw(cat, "/config/inode/1/2") == b'{"name": "img", "parent_id": 1, "size": 67108864}'
        assert raw(cat, "/index/image/img") == b'{"id": 2, "pool_id": 1}'
        assert raw(cat, "/index/image/img@3") == b'{"id": 1, "pool_id": 1}'
        assert raw(cat, "/index/maxid/1") == b"2"
        fresh = Catalog(cat.etcd, cat.prefix)
        assert fresh.inodes == cat.inodes

    def test_snapshot_of_a_child_keeps_its_parent(self, cat: Catalog) -> None:
        base = cat.create("base", SIZE, pool(cat))
        cat.create("disk", SIZE, pool(cat), parent=base)
        cat.snapshot("disk", "0")
        assert raw(cat, "/config/inode/1/2") == (
            b'{"name": "disk@0", "parent_id": 1, "readonly": true, "size": 67108864}')
        assert raw(cat, "/config/inode/1/3") == b'{"name": "disk", "parent_id": 2, "size": 67108864}'

    def test_existing_snapshot(self, cat: Catalog) -> None:
        cat.create("img", SIZE, pool(cat))
        cat.snapshot("img", "0")
        with pytest.raises(ImageExists, match="^Vitastor snapshot img@0 already exists$"):
            cat.snapshot("img", "0")

    def test_retry_when_the_image_changes_meanwhile(self, etcd: str, client: HookedEtcd, cat: Catalog) -> None:
        """The head grows between the read and the txn: the snapshot is retried with the new size."""
        cat.create("img", SIZE, pool(cat))

        def grow(key: str) -> None:
            writer = other(etcd, cat.prefix)
            writer.modify(writer.get("img"), size=2 * SIZE)

        client.hook = grow
        snap = cat.snapshot("img", "0")
        assert snap.size == 2 * SIZE
        assert raw(cat, "/config/inode/1/2") == b'{"name": "img", "parent_id": 1, "size": 134217728}'


# modify --------------------------------------------------------------------------------------
class TestModify:
    def test_rename(self, cat: Catalog) -> None:
        img = cat.create("img", SIZE, pool(cat), meta={"k": "v"})
        renamed = cat.modify(img, rename="new")
        assert (renamed.id, renamed.name) == (img.id, "new")
        assert renamed.mod_revision > img.mod_revision
        assert raw(cat, "/config/inode/1/1") == b'{"meta": {"k": "v"}, "name": "new", "size": 67108864}'
        assert raw(cat, "/index/image/img") is None
        assert raw(cat, "/index/image/new") == b'{"id": 1, "pool_id": 1}'

    def test_readonly_and_back(self, cat: Catalog) -> None:
        img = cat.modify(cat.create("img", SIZE, pool(cat)), readonly=True)
        assert raw(cat, "/config/inode/1/1") == b'{"name": "img", "readonly": true, "size": 67108864}'
        img = cat.modify(img, readonly=False)
        assert raw(cat, "/config/inode/1/1") == b'{"name": "img", "size": 67108864}'
        assert not img.readonly

    def test_grow(self, cat: Catalog) -> None:
        img = cat.modify(cat.create("img", SIZE, pool(cat)), size=2 * SIZE)
        assert raw(cat, "/config/inode/1/1") == b'{"name": "img", "size": 134217728}'
        assert img.size == 2 * SIZE

    def test_no_change_writes_nothing(self, cat: Catalog) -> None:
        img = cat.create("img", SIZE, pool(cat))
        assert cat.modify(img, rename="img", size=SIZE, readonly=False) is img
        kv = cat.etcd.get(f"{cat.prefix}/config/inode/1/1")
        assert kv is not None and kv.mod_revision == img.mod_revision

    def test_concurrent_change_is_compare_failed(self, etcd: str, cat: Catalog) -> None:
        img = cat.create("img", SIZE, pool(cat))
        writer = other(etcd, cat.prefix)
        writer.modify(writer.get("img"), size=2 * SIZE)
        with pytest.raises(CompareFailed, match="^Vitastor image img was modified by someone else$"):
            cat.modify(img, rename="new")
        assert raw(cat, "/index/image/new") is None
        assert raw(cat, "/config/inode/1/1") == b'{"name": "img", "size": 134217728}'
        # the catalog re-read etcd: a retry with the fresh image works
        assert cat.modify(cat.get("img"), rename="new").size == 2 * SIZE

    def test_rename_onto_an_existing_image(self, cat: Catalog) -> None:
        img = cat.create("img", SIZE, pool(cat))
        cat.create("new", SIZE, pool(cat))
        with pytest.raises(ImageExists, match="^Vitastor image new already exists$"):
            cat.modify(img, rename="new")

    def test_rename_onto_a_name_taken_meanwhile(self, etcd: str, cat: Catalog) -> None:
        img = cat.create("img", SIZE, pool(cat))
        other(etcd, cat.prefix).create("new", SIZE, pool(cat))
        with pytest.raises(CompareFailed):
            cat.modify(img, rename="new")
        assert raw(cat, "/config/inode/1/1") == b'{"name": "img", "size": 67108864}'

    def test_shrink_is_refused(self, cat: Catalog) -> None:
        img = cat.create("img", SIZE, pool(cat))
        with pytest.raises(ShrinkRefused) as info:
            cat.modify(img, size=SIZE // 2)
        assert str(info.value) == ("refusing to shrink img from 67108864 to 33554432 bytes: "
                                   "Vitastor's shrink deletes all data of the image")
        assert raw(cat, "/config/inode/1/1") == b'{"name": "img", "size": 67108864}'

    def test_grow_must_be_aligned(self, cat: Catalog) -> None:
        with pytest.raises(ValueError, match="not a multiple of 4096"):
            cat.modify(cat.create("img", SIZE, pool(cat)), size=SIZE + 1)

    def test_readwrite_refused_with_children(self, cat: Catalog) -> None:
        cat.create("img", SIZE, pool(cat))
        snap = cat.snapshot("img", "0")
        with pytest.raises(ImageBusy, match="^img@0 has children; it must stay readonly$"):
            cat.modify(snap, readonly=False)


# statistics ----------------------------------------------------------------------------------
def put_json(cat: Catalog, key: str, value: object) -> None:
    cat.etcd.put(cat.prefix + key, orjson.dumps(value))


@pytest.fixture()
def stats(cat: Catalog) -> Catalog:
    """/pool/stats, /osd/stats, /config/osd and /pg/config as the mon and OSDs write them (the
    mon writes PG numbers as strings), written by hand."""
    put_json(cat, "/pool/stats/1", {"used_raw_tb": GIB / TIB, "total_raw_tb": 8 * GIB / TIB, "pg_real_size": 2,
                                    "raw_to_usable": 2, "space_efficiency": 1})
    put_json(cat, "/pool/stats/2", {"used_raw_tb": 3 * GIB / TIB, "total_raw_tb": 12 * GIB / TIB,
                                    "pg_real_size": 3, "raw_to_usable": 1.5, "space_efficiency": 1})
    put_json(cat, "/osd/stats/1", {"size": 8 * GIB, "free": 3 * GIB, "data_block_size": 131072})
    put_json(cat, "/osd/stats/2", {"size": 8 * GIB, "free": 2 * GIB, "data_block_size": 131072})
    put_json(cat, "/osd/stats/3", {"size": 8 * GIB, "free": 4 * GIB, "data_block_size": 131072})
    put_json(cat, "/config/osd/2", {"reweight": 0.5})
    put_json(cat, "/config/osd/3", {"noout": True})
    put_json(cat, "/pg/config", {"hash": "abc", "items": {
        "1": {"1": {"osd_set": ["1", "2"], "primary": "1"}, "2": {"osd_set": ["2", "3"], "primary": "2"},
              "3": {"osd_set": ["3", "1"], "primary": "3"}, "4": {"osd_set": ["1", "0"], "primary": "1"}},
        "2": {"1": {"osd_set": ["1", "2", "3"], "primary": "1"}},
    }})
    return cat


class TestUsage:
    def test_replicated_pool(self, stats: Catalog) -> None:
        """total/used = raw / raw_to_usable; free = min over the pool's OSDs of
        free × reweight × PGs / PGs on that OSD (OSD 0 in a set is a missing one)."""
        usage = stats.usage(pool(stats))
        # OSD 1: 3 GiB × 4/3 = 4 GiB; OSD 2: 2 GiB × 0.5 × 4/2 = 2 GiB; OSD 3: 4 GiB × 4/2 = 8 GiB
        assert (usage.total, usage.used, usage.free) == (4 * GIB, GIB / 2, 2 * GIB)

    def test_ec_pool_free_counts_data_chunks(self, stats: Catalog) -> None:
        usage = stats.usage(pool(stats, "ecpool"))
        # one PG on every OSD: min(3, 2 × 0.5, 4) GiB = 1 GiB, × 2 data chunks
        assert (usage.total, usage.used, usage.free) == (8 * GIB, 2 * GIB, 2 * GIB)

    def test_pool_without_statistics(self, stats: Catalog) -> None:
        usage = stats.usage(pool(stats, "emptypool"))
        assert (usage.total, usage.used, usage.free) == (0, 0, 0)

    def test_fresh_cluster(self, cat: Catalog) -> None:
        usage = cat.usage(pool(cat))
        assert (usage.total, usage.used, usage.free) == (0, 0, 0)

    def test_osd_without_stats_has_no_space(self, stats: Catalog) -> None:
        stats.etcd.delete_prefix(f"{stats.prefix}/osd/stats/3")
        assert stats.usage(pool(stats)).free == 0

    def test_used_sizes_with_string_numbers(self, stats: Catalog) -> None:
        """/inode/stats numbers are strings (the mon's BigInts): used = raw_used / pg_real_size
        × data chunks, as ``vitastor-cli ls -l``."""
        read = {"count": "5", "usec": "100", "bytes": "20480", "bps": "0", "iops": "0", "lat": "0"}
        put_json(stats, "/inode/stats/1/1", {"raw_used": str(2 * GIB), "read": read, "write": read})
        put_json(stats, "/inode/stats/2/7", {"raw_used": str(3 * MIB)})
        put_json(stats, "/inode/stats/3/1", {"raw_used": "4096"})
        put_json(stats, "/inode/stats/1/2", {"write": read})
        put_json(stats, "/inode/stats/1/x", {"raw_used": "1"})
        assert stats.used_sizes() == {(1, 1): GIB, (2, 7): 2 * MIB, (3, 1): 4096, (1, 2): 0}
