"""A stand-in for ``vitastor-cli`` on a simulated cluster: metadata in a real etcd, layer data
in sparse files (README.md). Same command line, output and exit codes as vitastor-cli 3.0.8
for the commands onevita and its tests use:

- ``rm FROM [TO]``: remove layers FROM..TO, merging their data into their other children and
  re-parenting those, or taking the "inverse" shortcut (``src/cmd/cli_rm.cpp``);
- ``flatten NAME``: copy the ancestors' data into NAME and detach it;
- ``dd``: copy between images, files and pipes (``simdd.py``);
- ``ls [-l] [-p POOL] [--exact] [--sort F] [-r] [-n N] [GLOB...]``;
- ``sim-stats``: not a vitastor-cli command: writes the statistics a Vitastor monitor would.
"""

from __future__ import annotations

import errno
import re
import sys
from dataclasses import replace
from typing import Any, Callable, Sequence

import orjson

from onevita.errors import OnevitaError
from onevita.vitastor.catalog import POOL_ID_BITS, Catalog, Inode, dump_json11
from onevita.vitastor.etcd import Op, cmp_mod_before, op_delete, op_put

from .simdd import dd
from .simlayers import LayerKey
from .simtool import CliError, Result, Tool, emit, error_result, format_size, is_true, parse_args

__all__ = ["main"]

DEFAULT_CAPACITY = 10 << 30
DEFAULT_BLOCK_SIZE = 128 << 10
TIB = 1 << 40
TXN_OPS = 100
USAGE = """\
vitastor-cli stand-in (tests/sim): rm FROM [TO] | flatten NAME | ls [-l] [-p POOL] [GLOB...]
  | dd [iimg=IMG|if=FILE] [oimg=IMG|of=FILE] [bs=1M] [count=N] [seek=N] [skip=N] [conv=...]
  | sim-stats
Options: --config_path FILE (default /etc/vitastor/vitastor.conf), --json, -p/--pool POOL.
"""


# merge --------------------------------------------------------------------------------------
def _progress_count(label: str, total: int) -> None:
    """cli_merge.cpp's step counter without a terminal: ``LABEL: k/total`` every 128 steps."""
    for done in range(128, total + 1, 128):
        print(f"{label}: {done}/{total}", file=sys.stderr)


def _merge_progress(tool: Tool, target: Inode, lower: Sequence[Inode], upper: Sequence[Inode] = ()) -> None:
    """What 3.0.8's merge into ``target`` reports while it works: the Merging line on stdout,
    then on stderr a line per ``lower`` layer (between the target and FROM) listed, the pass
    that leaves out the objects the target fills wholly, a line per ``upper`` layer (between the
    target and TO) listed, and the pass that overwrites the objects (on an object basis)."""
    if not tool.progress:
        return
    if lower or upper:
        print(f"Merging {len(lower) + len(upper)} layer(s) into target {target.name} online (with CAS) "
              f"(inode {target.id} in pool {target.pool_id})", flush=True)
    pool = tool.catalog.pools.get(target.pool_id)
    block = pool.block_size * pool.data_chunks if pool else DEFAULT_BLOCK_SIZE

    def listed(layers: Sequence[Inode]) -> set[int]:
        offsets: set[int] = set()
        for layer in layers:
            offsets |= tool.store.object_offsets(tool.key(layer), block)
            print(f"Got listing of layer {layer.name} (inode {layer.id} in pool {layer.pool_id})", file=sys.stderr)
        return offsets

    offsets = listed(lower)
    if offsets:
        _progress_count("Filtering target blocks", len(offsets))
        full = {o for o in offsets if tool.store.covers(tool.key(target), o, o + block)}
        print(f"{len(full)} full blocks of target filtered out", file=sys.stderr)
        offsets -= full
    offsets |= listed(upper)
    _progress_count("Overwriting blocks", len(offsets))
    print(f"Overwriting blocks: {len(offsets)}/{len(offsets)}", file=sys.stderr, flush=True)


# rm -----------------------------------------------------------------------------------------
def _rm_chain(tool: Tool, source: Inode, target: Inode) -> list[Inode]:
    """TO, its parent, ... up to FROM; TO must descend from FROM."""
    chain = [target]
    while chain[-1].num != source.num and chain[-1].parent_id and len(chain) <= len(tool.catalog.inodes):
        chain.append(tool.parent(chain[-1]))
    if chain[-1].num != source.num:
        raise CliError(errno.EINVAL, f"Layer {target.name} is not a child of {source.name}")
    return chain


def _outside_children(tool: Tool, chain: list[Inode]) -> list[Inode]:
    """The layers that read through a chain member without being one, by inode number."""
    keys = {tool.key(member) for member in chain}
    return [child for child in sorted(tool.catalog.inodes.values(), key=lambda i: i.num)
            if child.parent_key in keys and tool.key(child) not in keys]


def _above(tool: Tool, chain: list[Inode], child: Inode) -> list[Inode]:
    """The chain members ``child`` reads through: its parent, ..., FROM."""
    keys = [tool.key(member) for member in chain]
    return chain[keys.index(child.parent_key):] if child.parent_key in keys else []


def _inverse_choice(tool: Tool, chain: list[Inode], children: list[Inode]) -> tuple[Inode, Inode] | None:
    """3.0.8's "inverse" shortcut (``choose_inverse_candidate``): of the readonly outside
    children (all of them with --writers-stopped), the one whose data is the smallest next to a
    chain layer it reads through, by the /inode/stats the monitor wrote: that (child, layer),
    or None when no such layer holds more than such a child."""
    stopped = is_true(tool.options.get("writers_stopped"))
    candidates = [child for child in children if child.readonly or stopped]
    used = tool.catalog.used_sizes() if candidates else {}
    best, max_diff = None, 0
    for child in candidates:
        for layer in _above(tool, chain, child):
            diff = used.get(tool.key(layer), 0) - used.get(tool.key(child), 0)
            if diff > 0 and (not max_diff or max_diff < diff):
                best, max_diff = (child, layer), diff
    return best


def _rebase_children(tool: Tool, chain: list[Inode], children: list[Inode], new_parent: LayerKey | None) -> list[str]:
    """Merge the removed layers' data into each outside child, then move it onto FROM's parent."""
    for child in children:
        members = _above(tool, chain, child)
        _merge_progress(tool, child, members)
        tool.store.merge(tool.key(child), [tool.key(member) for member in members])
        tool.say(f"Done, layers from {chain[-1].name} to {child.name} merged into {child.name}")
        tool.say(tool.change_parent(child, new_parent))
    return [child.name for child in children]


def _inverse_merge(tool: Tool, chain: list[Inode], child: Inode, layer: Inode,
                   new_parent: LayerKey | None) -> dict[str, Any]:
    """The shortcut itself: ``child`` is merged into chain ``layer`` (which then reads as the
    child did), the child's data removed, and in one transaction the child's config deleted,
    ``layer`` given the child's config and name on FROM's parent, and the child's children
    moved onto it (``rename_inverse_parent``). Returns the child's rm-data result."""
    members = _above(tool, chain, child)
    at = [m.num for m in members].index(layer.num)
    upper, lower = [child, *members[:at]], members[at + 1:]
    _merge_progress(tool, layer, lower, upper)
    tool.store.overlay(tool.key(layer), [tool.key(m) for m in (*upper, layer, *lower)])
    tool.say(f"Done, layers from {chain[-1].name} to {child.name} merged into {layer.name}")
    data = _remove_data(tool, child)
    prefix = tool.catalog.prefix
    child_key, layer_key = (f"{prefix}/config/inode/{i.pool_id}/{i.id}" for i in (child, layer))
    pool_id, parent_id = new_parent or (0, 0)
    renamed = replace(child, pool_id=layer.pool_id, id=layer.id, parent_pool=pool_id, parent_id=parent_id,
                      deleted=False)
    compare = [cmp_mod_before(child_key, child.mod_revision), cmp_mod_before(layer_key, layer.mod_revision)]
    success = [op_delete(child_key), op_delete(f"{prefix}/index/image/{layer.name}"),
               op_put(layer_key, dump_json11(renamed.config())),
               op_put(f"{prefix}/index/image/{child.name}", dump_json11({"id": layer.id, "pool_id": layer.pool_id}))]
    for grandchild in tool.catalog.children(child):
        key = f"{prefix}/config/inode/{grandchild.pool_id}/{grandchild.id}"
        compare.append(cmp_mod_before(key, grandchild.mod_revision))
        success.append(op_put(key, dump_json11(replace(grandchild, parent_pool=layer.pool_id,
                                                       parent_id=layer.id).config())))
    if not tool.catalog.etcd.txn(compare=compare, success=success).succeeded:
        raise CliError(errno.EAGAIN, f"Parent ({layer.name}), child ({child.name}), or one of its children"
                                     " configuration was modified during rename")
    tool.say(f"Layer {layer.name} renamed to {child.name}")
    tool.catalog.load()
    return data


def _remove_data(tool: Tool, inode: Inode) -> dict[str, Any]:
    """rm-data: drop every object of the layer, with its progress lines; its JSON result."""
    pool = tool.catalog.pools.get(inode.pool_id)
    objects = tool.store.objects(tool.key(inode), pool.block_size if pool else DEFAULT_BLOCK_SIZE)
    _removal_progress(tool, objects)
    tool.store.delete(tool.key(inode))
    tool.say(f"Done, inode {inode.id} from pool {inode.pool_id} removed")
    return {"removed_objects": objects, "total_objects": objects, "error_count": 0,
            "inactive_osds": [], "inactive_pgs": []}


def _delete_layer(tool: Tool, inode: Inode) -> dict[str, Any]:
    """Mark deleted, drop the data, delete config and name index (three steps, as vitastor-cli)."""
    if not inode.deleted:
        conflict = f"Image {inode.name} was modified by someone else, please repeat your request"
        inode = tool.put_config(inode, replace(inode, deleted=True), conflict)
        tool.say(f"Image {inode.name} modified")
    data = _remove_data(tool, inode)
    key = f"{tool.catalog.prefix}/config/inode/{inode.pool_id}/{inode.id}"
    result = tool.catalog.etcd.txn(
        compare=[cmp_mod_before(key, inode.mod_revision)],
        success=[op_delete(key), op_delete(f"{tool.catalog.prefix}/index/image/{inode.name}")])
    if not result.succeeded:
        raise CliError(errno.EAGAIN, f"Layer {inode.name} was modified during deletion")
    del tool.catalog.inodes[tool.key(inode)]
    tool.say(f"Layer {inode.name} deleted")
    return data


def _removal_progress(tool: Tool, objects: int) -> None:
    """The progress lines of 3.0.8's ``cli_rm_data.cpp`` without a terminal: one per object
    removed, at most one per mille of them, then an empty line, on stderr."""
    shown = -1
    for done in range(1, objects + 1) if tool.progress else ():
        if done * 1000 // objects != shown:
            shown = done * 1000 // objects
            print(f"Removed {done}/{objects} objects, 0 more PGs to list...", file=sys.stderr)
    if tool.progress and objects:
        print(file=sys.stderr)


def rm(tool: Tool, words: list[str]) -> Result:
    """``rm FROM [TO]``: §2.5 of vitastor-internals.md. Every outside child gets the data it read
    from the removed layers, but the one the "inverse" shortcut picks (``_inverse_choice``),
    which is merged into a removed layer that then takes its name and stays."""
    if not words:
        raise CliError(errno.EINVAL, "Layer to remove argument is missing")
    source = tool.layer(words[0])
    chain = _rm_chain(tool, source, tool.layer(words[1] if len(words) > 1 else words[0]))
    children = _outside_children(tool, chain)
    inverse = _inverse_choice(tool, chain, children)
    rebased = _rebase_children(tool, chain, [c for c in children if not inverse or c.num != inverse[0].num],
                               source.parent_key)
    data: dict[str, Any] = {}
    if inverse:
        data = _inverse_merge(tool, chain, *inverse, source.parent_key)
    removed = [m for m in chain if not inverse or m.num != inverse[1].num]
    for member in removed:
        data = _delete_layer(tool, tool.catalog.inodes[tool.key(member)])
    data.update(deleted_ids=[m.num for m in removed], deleted_images=[m.name for m in removed],
                rebased_images=rebased, renamed_from=inverse[1].name if inverse else "",
                renamed_to=inverse[0].name if inverse else "")
    return Result(data=data)


# flatten ------------------------------------------------------------------------------------
def flatten(tool: Tool, words: list[str]) -> Result:
    """``flatten NAME``: merge every ancestor into NAME (readonly or not), then detach it."""
    if not words:
        raise CliError(errno.EINVAL, "Layer to flatten not specified")
    chain = tool.chain(tool.layer(words[0]))
    _merge_progress(tool, chain[0], chain[1:])
    tool.store.merge(tool.key(chain[0]), [tool.key(layer) for layer in chain[1:]])
    return Result(text=tool.change_parent(chain[0], None))


# ls -----------------------------------------------------------------------------------------
def _ls_item(catalog: Catalog, inode: Inode) -> dict[str, Any]:
    """One image as ``ls --json`` lists it (``cli_ls.cpp`` get_list)."""
    pool = catalog.pools.get(inode.pool_id)
    item: dict[str, Any] = {
        "name": inode.name, "size": inode.size, "used_size": 0, "readonly": inode.readonly,
        "pool_id": inode.pool_id, "pool_name": pool.name if pool else f"? (ID:{inode.pool_id})",
        "inode_num": inode.id, "inode_id": inode.num, "deleted": inode.deleted,
    }
    if inode.parent_key:
        parent_pool, parent_id = inode.parent_key
        parent = catalog.inodes.get(inode.parent_key)
        item.update(parent_name=parent.name if parent else "", parent_pool_id=parent_pool,
                    parent_inode_num=parent_id, parent_inode_id=(parent_pool << POOL_ID_BITS) | parent_id)
    return item


def _stats_only_item(catalog: Catalog, pool_id: int, local_id: int) -> dict[str, Any]:
    """A layer with statistics but no config (``Pool:P,ID:N``)."""
    pool = catalog.pools.get(pool_id)
    return {"name": f"Pool:{pool_id},ID:{local_id}", "size": 0, "readonly": False, "pool_id": pool_id,
            "pool_name": (pool.name or "<Unnamed>") if pool else "?", "inode_num": local_id,
            "inode_id": (pool_id << POOL_ID_BITS) | local_id}


def _glob(pattern: str) -> re.Pattern[str]:
    """vitastor's ``stupid_glob``: ``*``, ``?`` and ``\\`` escapes, nothing else."""
    parts = re.findall(r"\\.|\*|\?|.", pattern, re.S)
    regex = "".join(".*" if p == "*" else "." if p == "?" else re.escape(p[-1]) for p in parts)
    return re.compile(regex, re.S)


def _ls_pool(tool: Tool) -> tuple[int, str]:
    """``-p``: a pool id, or a name that must exist; (0, "") lists every pool."""
    option = tool.options.get("pool", "")
    if option.isdigit():
        return int(option), ""
    if not option:
        return 0, ""
    pool = next((p for p in tool.catalog.pools.values() if p.name == option), None)
    if pool is None:
        raise CliError(errno.ENOENT, f"Pool {option} does not exist")
    return pool.id, option


def _select(tool: Tool, items: list[dict[str, Any]], names: list[str]) -> list[dict[str, Any]]:
    """Filter by globs (or exact names), sort, cut to ``-n``, as ``to_list`` does."""
    if names:
        globs = [re.compile(re.escape(n)) if is_true(tool.options.get("exact")) else _glob(n) for n in names]
        items = [i for i in items if any(g.fullmatch(i["name"]) for g in globs)]
    field = tool.options.get("sort") or "name"
    if field in ("name", "pool_name"):
        items.sort(key=lambda i: str(i.get(field, "")), reverse=is_true(tool.options.get("reverse")))
    else:
        items.sort(key=lambda i: i[field] if isinstance(i.get(field), (int, float)) else 0,
                   reverse=is_true(tool.options.get("reverse")))
    count = tool.options.get("count", "")
    return items[:int(count)] if count.isdigit() and int(count) else items


def _table(items: list[dict[str, Any]], columns: list[tuple[str, str, bool]]) -> str:
    """``print_table``: a header and one line per item, two spaces apart, no colours."""
    cells = [[title for _, title, _ in columns]]
    cells += [[str(item.get(key, "")) for key, _, _ in columns] for item in items]
    widths = [max(len(row[c]) for row in cells) for c in range(len(columns))]
    lines = ["  ".join(cell.rjust(w) if right else cell.ljust(w)
                       for cell, w, (_, _, right) in zip(row, widths, columns)) for row in cells]
    return "\n".join(lines) + "\n"


def ls(tool: Tool, words: list[str]) -> Result:
    """``ls``: every image (``-p`` one pool's), ``-l`` adds used_size from the statistics.
    The per-operation rates of ``-l`` and ``--tree`` are not simulated."""
    catalog = tool.catalog
    pool_id, pool_name = _ls_pool(tool)
    items = {i.num: _ls_item(catalog, i) for i in sorted(catalog.inodes.values(), key=lambda i: i.num)
             if not pool_id or i.pool_id == pool_id}
    long = is_true(tool.options.get("long"))
    if long:
        for (p, n), used in catalog.used_sizes().items():
            if not pool_id or p == pool_id:
                items.setdefault((p << POOL_ID_BITS) | n, _stats_only_item(catalog, p, n))["used_size"] = used
    listing = _select(tool, list(items.values()), words)
    if tool.json:
        return Result(data=listing)
    for item in listing:
        item.update(size_fmt=format_size(item["size"]), used_size_fmt=format_size(item["used_size"]),
                    ro="DEL" if item.get("deleted") else "RO" if item["readonly"] else "-")
    columns = [("name", "NAME", False)] + ([] if pool_name else [("pool_name", "POOL", False)])
    columns += [("size_fmt", "SIZE", False)] + ([("used_size_fmt", "USED", False)] if long else [])
    columns += [("ro", "FLAGS", True), ("parent_name", "PARENT", False)]
    return Result(text=_table(listing, columns))


# sim-stats ----------------------------------------------------------------------------------
def _number(value: float) -> float | int:
    """Integral values as JSON integers, like the mon's JSON.stringify."""
    return int(value) if float(value).is_integer() else value


def _stats_ops(tool: Tool) -> list[Op]:
    """Puts for /inode/stats, /pool/stats and /osd/stats/1, and deletes of stale inode stats."""
    catalog, prefix = tool.catalog, tool.catalog.prefix
    capacity = int(tool.config.raw.get("sim_capacity") or DEFAULT_CAPACITY)
    values: dict[str, bytes] = {}
    pool_raw = dict.fromkeys(catalog.pools, 0)
    used = 0
    for inode in catalog.inodes.values():
        pool = catalog.pools.get(inode.pool_id)
        if pool is None:
            continue
        allocated = tool.store.allocated(tool.key(inode))
        raw = allocated * pool.pg_size // pool.data_chunks
        values[f"{prefix}/inode/stats/{pool.id}/{inode.id}"] = orjson.dumps({"raw_used": str(raw)})
        pool_raw[pool.id] += raw
        used += allocated
    for pool in catalog.pools.values():
        raw_to_usable = pool.pg_size / pool.data_chunks
        values[f"{prefix}/pool/stats/{pool.id}"] = orjson.dumps({
            "used_raw_tb": pool_raw[pool.id] / TIB, "total_raw_tb": capacity * raw_to_usable / TIB,
            "pg_real_size": pool.pg_size, "raw_to_usable": _number(raw_to_usable), "space_efficiency": 1})
    values[f"{prefix}/osd/stats/1"] = orjson.dumps({"size": capacity, "free": max(0, capacity - used)})
    stale = [kv.key for kv in catalog.etcd.prefix(f"{prefix}/inode/stats/") if kv.key not in values]
    return [op_delete(key) for key in stale] + [op_put(key, value) for key, value in values.items()]


def _pg_config_op(tool: Tool) -> list[Op]:
    """``/pg/config`` with one PG on OSD 1 for every pool it lacks (none if complete)."""
    key = f"{tool.catalog.prefix}/pg/config"
    current = tool.catalog.etcd.get(key)
    config = orjson.loads(current.value) if current else {}
    items = config.setdefault("items", {})
    missing = [str(p) for p in tool.catalog.pools if str(p) not in items]
    for pool_id in missing:
        items[pool_id] = {"1": {"osd_set": ["1"], "primary": "1"}}
    return [op_put(key, orjson.dumps(config))] if missing else []


def sim_stats(tool: Tool, words: list[str]) -> Result:
    """Play the Vitastor monitor: raw_used per layer (allocated bytes × pg_size / data chunks),
    pool totals from ``sim_capacity`` (usable bytes), one OSD holding it all, and a PG map."""
    ops = _stats_ops(tool) + _pg_config_op(tool)
    for start in range(0, len(ops), TXN_OPS):
        tool.catalog.etcd.txn(ops[start:start + TXN_OPS])
    return Result()


# main ---------------------------------------------------------------------------------------
COMMANDS: dict[str, Callable[[Tool, list[str]], Result]] = {
    "rm": rm, "flatten": flatten, "dd": dd, "ls": ls, "sim-stats": sim_stats,
}


def run(options: dict[str, str], words: list[str]) -> Result:
    """Run one command; every failure becomes vitastor-cli's errno result."""
    handler = COMMANDS.get(words[0])
    try:
        if handler is None:
            raise CliError(errno.EINVAL, f"unknown command: {words[0]}")
        return handler(Tool(options), words[1:])
    except CliError as e:
        return Result(e.err, e.text, e.data)
    except OnevitaError as e:
        return error_result(e)


def main(argv: Sequence[str]) -> int:
    """The command line without the program name; returns the exit code (an errno, 0 = ok)."""
    options, words = parse_args(argv)
    if not words or is_true(options.get("help")):
        print(USAGE, end="")
        return 0
    return emit(run(options, words), is_true(options.get("json")))
