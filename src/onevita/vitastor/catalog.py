"""The Vitastor image catalog in etcd, byte-compatible with vitastor-cli.

Images are inodes: ``<prefix>/config/inode/<pool>/<id>`` holds the image config (json11 text:
sorted keys, ``", "``/``": "`` separators), ``<prefix>/index/image/<name>`` maps a name to its
inode, ``<prefix>/index/maxid/<pool>`` is the last allocated id. Every write here is the same
conditional transaction vitastor-cli sends (``src/cmd/cli_create.cpp``, ``cli_modify.cpp``), so
the two can work on one cluster at once; a lost race re-reads and retries like vitastor-cli.

Shrinking is refused: vitastor-cli's shrink deletes every object of the image (see
vitastor-internals.md §0.1), and a correct one needs the OSD object listing.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Iterator

import orjson

from ..errors import CompareFailed, ImageBusy, ImageExists, ImageNotFound, PoolNotFound, ShrinkRefused
from .etcd import (
    Etcd,
    KeyValue,
    cmp_mod,
    cmp_mod_before,
    cmp_version,
    op_delete,
    op_put,
    op_range,
    prefix_range_end,
)

__all__ = ["Catalog", "Inode", "Pool", "PoolUsage", "dump_json11"]

POOL_ID_BITS = 48
ALIGN = 4096
RETRIES = 20
MIB = 1 << 20


def dump_json11(value: Any) -> str:
    """Serialise like Vitastor's json11 ``dump``: sorted keys, ``", "`` and ``": "`` separators."""
    if isinstance(value, dict):
        items = (f"{dump_json11(str(k))}: {dump_json11(value[k])}" for k in sorted(value))
        return "{" + ", ".join(items) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(dump_json11(v) for v in value) + "]"
    if isinstance(value, str):
        return orjson.dumps(value).decode().replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    return orjson.dumps(value).decode()


@dataclass(frozen=True)
class Pool:
    """A Vitastor pool from ``/config/pools``."""

    id: int
    name: str
    scheme: str
    pg_size: int
    parity_chunks: int
    block_size: int

    @property
    def data_chunks(self) -> int:
        """Data parts per stripe: 1 for replicated pools, pg_size - parity for EC/XOR."""
        return 1 if self.scheme == "replicated" else max(1, self.pg_size - self.parity_chunks)


@dataclass(frozen=True)
class Inode:
    """One image layer as stored in ``/config/inode/<pool>/<id>``."""

    pool_id: int
    id: int
    name: str
    size: int
    parent_pool: int = 0
    parent_id: int = 0
    readonly: bool = False
    deleted: bool = False
    meta: dict[str, Any] | None = None
    mod_revision: int = 0

    @property
    def num(self) -> int:
        """The full 64-bit inode number the C API and QEMU use."""
        return (self.pool_id << POOL_ID_BITS) | self.id

    @property
    def parent_key(self) -> tuple[int, int] | None:
        """(pool, id) of the parent layer, or None."""
        return (self.parent_pool or self.pool_id, self.parent_id) if self.parent_id else None

    def config(self) -> dict[str, Any]:
        """The etcd value, with vitastor-cli's rules for which keys are written."""
        cfg: dict[str, Any] = {"name": self.name, "size": self.size}
        if self.parent_id:
            if self.parent_pool and self.parent_pool != self.pool_id:
                cfg["parent_pool"] = self.parent_pool
            cfg["parent_id"] = self.parent_id
        if self.readonly:
            cfg["readonly"] = True
        if self.deleted:
            cfg["deleted"] = True
        if isinstance(self.meta, dict):
            cfg["meta"] = self.meta
        return cfg


@dataclass(frozen=True)
class PoolUsage:
    """A pool's space as ``vitastor-cli df`` computes it, in bytes (usable, not raw)."""

    total: float
    used: float
    free: float


def _pool(pool_id: int, cfg: dict[str, Any], global_cfg: dict[str, Any]) -> Pool:
    return Pool(
        id=pool_id,
        name=str(cfg.get("name", "")),
        scheme=str(cfg.get("scheme", "replicated")),
        pg_size=int(cfg.get("pg_size", 1)),
        parity_chunks=int(cfg.get("parity_chunks", 0)),
        block_size=int(cfg.get("block_size") or global_cfg.get("block_size") or 128 * 1024),
    )


def _inode(kv: KeyValue, pool_id: int, local_id: int) -> Inode | None:
    try:
        cfg = orjson.loads(kv.value)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(cfg, dict):
        return None  # a non-object value means "deleted" to Vitastor
    return Inode(
        pool_id=pool_id,
        id=local_id,
        name=str(cfg.get("name", "")),
        size=int(cfg.get("size", 0)),
        parent_pool=int(cfg.get("parent_pool", 0)),
        parent_id=int(cfg.get("parent_id", 0)),
        readonly=bool(cfg.get("readonly", False)),
        deleted=bool(cfg.get("deleted", False)),
        meta=cfg.get("meta") if isinstance(cfg.get("meta"), dict) else None,
        mod_revision=kv.mod_revision,
    )


class Catalog:
    """Every image and pool of one cluster, read in one etcd round trip, and the writes on them."""

    def __init__(self, etcd: Etcd, prefix: str = "/vitastor") -> None:
        self.etcd = etcd
        self.prefix = prefix.rstrip("/")
        self.pools: dict[int, Pool] = {}
        self.inodes: dict[tuple[int, int], Inode] = {}
        self.load()

    # keys ---------------------------------------------------------------------------------
    def _inode_key(self, pool_id: int, local_id: int) -> str:
        return f"{self.prefix}/config/inode/{pool_id}/{local_id}"

    def _index_key(self, name: str) -> str:
        return f"{self.prefix}/index/image/{name}"

    def _maxid_key(self, pool_id: int) -> str:
        return f"{self.prefix}/index/maxid/{pool_id}"

    # reading ------------------------------------------------------------------------------
    def load(self) -> None:
        """(Re)read global config, pools and every inode config (what vitastor-cli loads at start)."""
        inode_prefix = f"{self.prefix}/config/inode/"
        result = self.etcd.txn([
            op_range(f"{self.prefix}/config/global"),
            op_range(f"{self.prefix}/config/pools"),
            op_range(inode_prefix, prefix_range_end(inode_prefix)),
        ])
        global_kvs, pool_kvs, inode_kvs = result.responses
        global_cfg = orjson.loads(global_kvs[0].value) if global_kvs else {}
        pools_cfg = orjson.loads(pool_kvs[0].value) if pool_kvs else {}
        self.pools = {int(pid): _pool(int(pid), cfg, global_cfg) for pid, cfg in pools_cfg.items()}
        self.inodes = {}
        for kv in inode_kvs:
            pool_s, _, id_s = kv.key[len(inode_prefix):].partition("/")
            if not (pool_s.isdigit() and id_s.isdigit()):
                continue
            inode = _inode(kv, int(pool_s), int(id_s))
            if inode is not None:
                self.inodes[(inode.pool_id, inode.id)] = inode

    def find(self, name: str) -> Inode | None:
        """The layer called ``name``, or None."""
        return next((i for i in self.inodes.values() if i.name == name), None)

    def get(self, name: str) -> Inode:
        """The layer called ``name``; ImageNotFound if there is none."""
        inode = self.find(name)
        if inode is None:
            raise ImageNotFound(f"Vitastor image {name} does not exist")
        return inode

    def parent(self, inode: Inode) -> Inode | None:
        """The layer ``inode`` reads through to, or None."""
        key = inode.parent_key
        return self.inodes.get(key) if key else None

    def children(self, inode: Inode) -> list[Inode]:
        """Layers whose parent is ``inode``."""
        return [i for i in self.inodes.values() if i.parent_key == (inode.pool_id, inode.id)]

    def ancestors(self, inode: Inode) -> Iterator[Inode]:
        """The parent chain of ``inode``, nearest first."""
        seen = set()
        parent = self.parent(inode)
        while parent is not None and parent.num not in seen:
            seen.add(parent.num)
            yield parent
            parent = self.parent(parent)

    def pool(self, name: str | None, *, default: Pool | None = None) -> Pool:
        """Resolve POOL_NAME (a name or id) like vitastor-cli: else ``default``, else the only pool."""
        if name:
            for pool in self.pools.values():
                if pool.name == name or str(pool.id) == name:
                    return pool
            raise PoolNotFound(f"Vitastor pool {name} does not exist")
        if default is not None:
            return default
        if len(self.pools) == 1:
            return next(iter(self.pools.values()))
        raise PoolNotFound("POOL_NAME is not set and the cluster has more than one pool")

    # writing ------------------------------------------------------------------------------
    def _next_id(self, pool_id: int, maxid: int) -> int:
        highest = max((i.id for i in self.inodes.values() if i.pool_id == pool_id), default=0)
        return max(maxid, highest) + 1

    def create(self, name: str, size: int, pool: Pool, parent: Inode | None = None,
               meta: dict[str, Any] | None = None) -> Inode:
        """``vitastor-cli create -s SIZE -p POOL [--parent P] NAME``: one conditional txn, retried.
        ``meta`` is stored in the config's ``meta`` object (kept by modify, rm and flatten)."""
        if size % ALIGN:
            raise ValueError(f"image size {size} is not a multiple of {ALIGN}")
        for _ in range(RETRIES):
            if self.find(name) is not None:
                raise ImageExists(f"Vitastor image {name} already exists")
            maxid_kv = self.etcd.get(self._maxid_key(pool.id))
            maxid = int(maxid_kv.value) if maxid_kv else 0
            new = Inode(pool_id=pool.id, id=self._next_id(pool.id, maxid), name=name, size=size, meta=meta)
            if parent is not None:
                new = replace(new, parent_pool=parent.pool_id, parent_id=parent.id)
            inode_key = self._inode_key(pool.id, new.id)
            result = self.etcd.txn(
                compare=[cmp_version(inode_key, 0), cmp_version(self._index_key(name), 0),
                         cmp_mod(self._maxid_key(pool.id), maxid_kv.mod_revision if maxid_kv else 0)],
                success=[op_put(inode_key, dump_json11(new.config())),
                         op_put(self._index_key(name), dump_json11({"id": new.id, "pool_id": pool.id})),
                         op_put(self._maxid_key(pool.id), str(new.id))],
                failure=[op_range(self._index_key(name))],
            )
            if result.succeeded:
                new = replace(new, mod_revision=result.revision)
                self.inodes[(new.pool_id, new.id)] = new
                return new
            if result.responses and result.responses[0]:
                raise ImageExists(f"Vitastor image {name} already exists")
            self.load()
        raise CompareFailed(f"could not create {name}: etcd kept changing under us")

    def swap_head(self, name: str, aside: str, parent: Inode) -> Inode:
        """In one transaction, rename the layer ``name`` to ``aside`` and create a new empty
        ``name`` on ``parent`` (a revert): no revision of etcd lacks ``name``. Returns the new head."""
        for _ in range(RETRIES):
            if self.find(aside) is not None:
                raise ImageExists(f"Vitastor image {aside} already exists")
            head = self.get(name)
            pool = self.pools[parent.pool_id]
            maxid_kv = self.etcd.get(self._maxid_key(pool.id))
            index_kv = self.etcd.get(self._index_key(name))
            new = Inode(pool_id=pool.id, id=self._next_id(pool.id, int(maxid_kv.value) if maxid_kv else 0),
                        name=name, size=parent.size, parent_pool=parent.pool_id, parent_id=parent.id)
            old = replace(head, name=aside)
            old_key, new_key = self._inode_key(head.pool_id, head.id), self._inode_key(pool.id, new.id)
            result = self.etcd.txn(
                compare=[cmp_version(new_key, 0), cmp_version(self._index_key(aside), 0),
                         cmp_mod(self._maxid_key(pool.id), maxid_kv.mod_revision if maxid_kv else 0),
                         cmp_mod(old_key, head.mod_revision),
                         cmp_mod(self._index_key(name), index_kv.mod_revision if index_kv else 0)],
                success=[op_put(new_key, dump_json11(new.config())),
                         op_put(self._index_key(name), dump_json11({"id": new.id, "pool_id": pool.id})),
                         op_put(self._maxid_key(pool.id), str(new.id)),
                         op_put(old_key, dump_json11(old.config())),
                         op_put(self._index_key(aside),
                                dump_json11({"id": head.id, "pool_id": head.pool_id}))],
            )
            if result.succeeded:
                self.inodes[(head.pool_id, head.id)] = replace(old, mod_revision=result.revision)
                new = replace(new, mod_revision=result.revision)
                self.inodes[(new.pool_id, new.id)] = new
                return new
            self.load()
        raise CompareFailed(f"could not replace {name}: etcd kept changing under us")

    def snapshot(self, name: str, snap: str) -> Inode:
        """``vitastor-cli snap-create NAME@SNAP``: the data stays in the old inode, renamed
        ``NAME@SNAP`` and made readonly; NAME becomes a new empty child. Returns the snapshot."""
        return self.snapshot_many([(name, snap)])[0]

    def snapshot_many(self, pairs: list[tuple[str, str]]) -> list[Inode]:
        """Snapshot every ``(NAME, SNAP)`` as ``snapshot`` does, all in ONE etcd transaction:
        every image's snapshot holds the same instant (a VM's disks, consistent with each
        other), and either all are taken or none. Returns the snapshots in order."""
        for _ in range(RETRIES):
            for name, snap in pairs:
                if self.find(f"{name}@{snap}") is not None:
                    raise ImageExists(f"Vitastor snapshot {name}@{snap} already exists")
            heads = [self.get(name) for name, _ in pairs]
            maxid_kvs = {h.pool_id: self.etcd.get(self._maxid_key(h.pool_id)) for h in heads}
            next_ids = {pool: self._next_id(pool, int(kv.value) if kv else 0)
                        for pool, kv in maxid_kvs.items()}
            compare = [cmp_mod(self._maxid_key(pool), kv.mod_revision if kv else 0)
                       for pool, kv in maxid_kvs.items()]
            success, failure, made = [], [], []
            for (name, snap), head in zip(pairs, heads):
                snap_name, pool_id, new_id = f"{name}@{snap}", head.pool_id, next_ids[head.pool_id]
                next_ids[pool_id] += 1
                index_kv = self.etcd.get(self._index_key(name))
                new_head = Inode(pool_id=pool_id, id=new_id, name=name, size=head.size, parent_id=head.id)
                snapshot = replace(head, name=snap_name, readonly=True, meta=None)
                old_key, new_key = self._inode_key(pool_id, head.id), self._inode_key(pool_id, new_id)
                compare += [cmp_version(new_key, 0), cmp_version(self._index_key(snap_name), 0),
                            cmp_mod(old_key, head.mod_revision),
                            cmp_mod(self._index_key(name), index_kv.mod_revision if index_kv else 0)]
                success += [op_put(new_key, dump_json11(new_head.config())),
                            op_put(self._index_key(name), dump_json11({"id": new_id, "pool_id": pool_id})),
                            op_put(old_key, dump_json11(snapshot.config())),
                            op_put(self._index_key(snap_name),
                                   dump_json11({"id": head.id, "pool_id": pool_id}))]
                failure.append(op_range(self._index_key(snap_name)))
                made.append((new_head, snapshot))
            success += [op_put(self._maxid_key(pool), str(last - 1)) for pool, last in next_ids.items()]
            result = self.etcd.txn(compare=compare, success=success, failure=failure)
            if result.succeeded:
                for new_head, snapshot in made:
                    for layer in (new_head, snapshot):
                        self.inodes[(layer.pool_id, layer.id)] = replace(layer, mod_revision=result.revision)
                return [replace(snapshot, mod_revision=result.revision) for _, snapshot in made]
            for (name, snap), found in zip(pairs, result.responses):
                if found:
                    raise ImageExists(f"Vitastor snapshot {name}@{snap} already exists")
            self.load()
        names = ", ".join(name for name, _ in pairs)
        raise CompareFailed(f"could not snapshot {names}: etcd kept changing under us")

    def modify(self, inode: Inode, *, rename: str | None = None, size: int | None = None,
               readonly: bool | None = None) -> Inode:
        """``vitastor-cli modify``: rename, grow, readonly/readwrite in one conditional txn.

        Raises CompareFailed when the image changed since it was read (vitastor-cli: EAGAIN).
        """
        changed = inode
        if size is not None and size != inode.size:
            if size < inode.size:
                raise ShrinkRefused(f"refusing to shrink {inode.name} from {inode.size} to {size} bytes: "
                                    "Vitastor's shrink deletes all data of the image")
            if size % ALIGN:
                raise ValueError(f"image size {size} is not a multiple of {ALIGN}")
            changed = replace(changed, size=size)
        if readonly is not None and readonly != inode.readonly:
            if not readonly and self.children(inode):
                raise ImageBusy(f"{inode.name} has children; it must stay readonly")
            changed = replace(changed, readonly=readonly)
        if rename is not None and rename != inode.name:
            if self.find(rename) is not None:
                raise ImageExists(f"Vitastor image {rename} already exists")
            changed = replace(changed, name=rename)
        if changed == inode:
            return inode
        key = self._inode_key(inode.pool_id, inode.id)
        compare = [cmp_mod_before(key, inode.mod_revision)]
        success = [op_put(key, dump_json11(changed.config()))]
        if changed.name != inode.name:
            compare += [cmp_mod_before(self._index_key(inode.name), inode.mod_revision),
                        cmp_version(self._index_key(changed.name), 0)]
            success += [op_delete(self._index_key(inode.name)),
                        op_put(self._index_key(changed.name),
                               dump_json11({"id": inode.id, "pool_id": inode.pool_id}))]
        result = self.etcd.txn(compare=compare, success=success)
        if not result.succeeded:
            self.load()
            raise CompareFailed(f"Vitastor image {inode.name} was modified by someone else")
        changed = replace(changed, mod_revision=result.revision)
        self.inodes[(inode.pool_id, inode.id)] = changed
        return changed

    # statistics ---------------------------------------------------------------------------
    def used_sizes(self) -> dict[tuple[int, int], int]:
        """Bytes used by each layer (``vitastor-cli ls -l``): raw_used / pg_real_size × data chunks."""
        stats_prefix, pool_prefix = f"{self.prefix}/inode/stats/", f"{self.prefix}/pool/stats/"
        result = self.etcd.txn([op_range(pool_prefix, prefix_range_end(pool_prefix)),
                                op_range(stats_prefix, prefix_range_end(stats_prefix))])
        real_size = {int(kv.key[len(pool_prefix):]): float(orjson.loads(kv.value).get("pg_real_size") or 1)
                     for kv in result.responses[0] if kv.key[len(pool_prefix):].isdigit()}
        used = {}
        for kv in result.responses[1]:
            pool_s, _, id_s = kv.key[len(stats_prefix):].partition("/")
            if not (pool_s.isdigit() and id_s.isdigit()):
                continue
            pool_id = int(pool_s)
            pool = self.pools.get(pool_id)
            chunks = pool.data_chunks if pool else 1
            raw = float(orjson.loads(kv.value).get("raw_used") or 0)
            used[(pool_id, int(id_s))] = int(raw / real_size.get(pool_id, 1) * chunks)
        return used

    def usage(self, pool: Pool) -> PoolUsage:
        """Pool space as ``vitastor-cli df`` reports it (``pool_lister_t``), in one etcd txn."""
        p = self.prefix
        result = self.etcd.txn([
            op_range(f"{p}/pool/stats/{pool.id}"),
            op_range(f"{p}/osd/stats/", prefix_range_end(f"{p}/osd/stats/")),
            op_range(f"{p}/config/osd/", prefix_range_end(f"{p}/config/osd/")),
            op_range(f"{p}/pg/config"),
        ])
        pool_kvs, osd_stats, osd_cfgs, pg_config = result.responses
        stats = orjson.loads(pool_kvs[0].value) if pool_kvs else {}
        raw_to_usable = float(stats.get("raw_to_usable") or 1)
        total = float(stats.get("total_raw_tb") or 0) * (1 << 40) / raw_to_usable
        used = float(stats.get("used_raw_tb") or 0) * (1 << 40) / raw_to_usable
        free_by_osd = {int(kv.key.rsplit("/", 1)[1]): float(orjson.loads(kv.value).get("free") or 0)
                       for kv in osd_stats}
        reweight = {int(kv.key.rsplit("/", 1)[1]): float(orjson.loads(kv.value).get("reweight", 1))
                    for kv in osd_cfgs}
        pgs = (orjson.loads(pg_config[0].value).get("items", {}) if pg_config else {}).get(str(pool.id), {})
        pgs_on_osd: dict[int, int] = {}
        for pg in pgs.values():
            for osd in pg.get("osd_set", ()):
                if int(osd):
                    pgs_on_osd[int(osd)] = pgs_on_osd.get(int(osd), 0) + 1
        free = min((free_by_osd.get(osd, 0) * reweight.get(osd, 1) * len(pgs) / count
                    for osd, count in pgs_on_osd.items()), default=0.0) * pool.data_chunks
        return PoolUsage(total=total, used=used, free=free)

    # several renames at once ---------------------------------------------------------------
    def rename_many(self, renames: dict[str, str]) -> None:
        """Rename layers (old name → new name) in ONE conditional transaction: every rename
        happens or none. Names may be passed around among them (``a`` → ``a.old`` and
        ``a.new`` → ``a`` swaps an image in); a new name held by a layer not renamed here is
        ImageExists. Retried like vitastor-cli when someone else changed one of them."""
        for _ in range(RETRIES):
            inodes = {old: self.get(old) for old in renames}
            taken = [new for new in renames.values() if new not in renames and self.find(new) is not None]
            if taken:
                raise ImageExists(f"Vitastor image {taken[0]} already exists")
            if len(set(renames.values())) != len(renames):
                raise ValueError("two layers cannot take the same name")
            indexes = self.etcd.txn([op_range(self._index_key(old)) for old in renames]).responses
            compare, success = [], []
            for (old, inode), found in zip(inodes.items(), indexes):
                key = self._inode_key(inode.pool_id, inode.id)
                compare += [cmp_mod(key, inode.mod_revision),
                            cmp_mod(self._index_key(old), found[0].mod_revision if found else 0)]
                success.append(op_put(key, dump_json11(replace(inode, name=renames[old]).config())))
                if old not in renames.values():
                    success.append(op_delete(self._index_key(old)))
            for old, new in renames.items():
                if new not in renames:
                    compare.append(cmp_version(self._index_key(new), 0))
                success.append(op_put(self._index_key(new),
                                      dump_json11({"id": inodes[old].id, "pool_id": inodes[old].pool_id})))
            result = self.etcd.txn(compare=compare, success=success)
            if result.succeeded:
                for old, inode in inodes.items():
                    self.inodes[(inode.pool_id, inode.id)] = replace(inode, name=renames[old],
                                                                     mod_revision=result.revision)
                return
            self.load()
        raise CompareFailed(f"could not rename {', '.join(renames)}: etcd kept changing under us")
