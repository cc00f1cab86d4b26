"""What every command of the vitastor-cli stand-in shares: the command line, results and exit
codes, and one run's view of the cluster (etcd catalog plus simulated layer data).

Conventions copied from vitastor-cli 3.0.8 (``src/cmd/cli.cpp``, ``cli_common.cpp``): any
``--key value`` is an option (``-`` becomes ``_``), a fixed set of ``--flag``s take no value,
exit codes are errno values, ``--json`` prints the result object or ``{error_code, error_text}``.
"""

from __future__ import annotations

import errno
import sys
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any, Sequence

from onevita.errors import (
    CompareFailed,
    ConfigError,
    ImageBusy,
    ImageExists,
    ImageNotFound,
    OnevitaError,
    PoolNotFound,
    ShrinkRefused,
)
from onevita.vitastor.catalog import Catalog, Inode, dump_json11
from onevita.vitastor.config import read_config
from onevita.vitastor.etcd import Etcd, cmp_mod_before, op_put

from .simlayers import LayerKey, LayerStore

__all__ = ["CliError", "Result", "Tool", "emit", "format_size", "is_true", "parse_args", "parse_size"]

# Options that never take a value (vitastor-cli's parse_args); any other --opt eats the next word.
FLAG_OPTIONS = frozenset({
    "json", "wait", "wait-list", "wait_list", "long", "detail", "del", "no-color", "no_color",
    "readonly", "readwrite", "force", "reverse", "allow-data-loss", "allow_data_loss", "allow-up",
    "allow_up", "down-ok", "down_ok", "dry-run", "dry_run", "help", "all", "exact", "matching",
    "tree", "writers-stopped", "writers_stopped",
})
SHORT_FLAGS = {"-h": "help", "-l": "long", "-r": "reverse", "-f": "force"}
SHORT_OPTIONS = {"-n": "count", "-p": "pool", "-s": "size"}

# Library errors onevita's Catalog raises, as the errno vitastor-cli exits with.
ERRNO_OF = (
    (ImageExists, errno.EEXIST), (ImageNotFound, errno.ENOENT), (PoolNotFound, errno.ENOENT),
    (ShrinkRefused, errno.EINVAL), (ImageBusy, errno.EINVAL), (CompareFailed, errno.EAGAIN),
    (ConfigError, 1), (OnevitaError, errno.EIO),
)


class CliError(Exception):
    """A command failed: the errno to exit with, the message, and JSON data if any."""

    def __init__(self, err: int, text: str, data: Any = None) -> None:
        super().__init__(text)
        self.err, self.text, self.data = err, text, data


@dataclass
class Result:
    """A command's outcome as vitastor-cli's ``cli_result_t``."""

    err: int = 0
    text: str = ""
    data: Any = None


def parse_args(argv: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """Split the command line into options and the command words, like vitastor-cli: note that
    ``--writers-stopped 1`` makes ``1`` a command word, as in the real tool."""
    options, words = {"progress": "1"}, []
    i = 0
    while i < len(argv):
        arg, has_value = argv[i], i < len(argv) - 1
        if arg in SHORT_FLAGS:
            options[SHORT_FLAGS[arg]] = "1"
        elif arg in SHORT_OPTIONS or (arg.startswith("--") and arg[2:] not in FLAG_OPTIONS):
            key = SHORT_OPTIONS.get(arg) or arg[2:]
            options[key] = argv[i + 1] if has_value else ""
            i += has_value
        elif arg.startswith("--"):
            options[arg[2:]] = "1"
        else:
            words.append(arg)
        i += 1
    return {k.replace("-", "_"): v for k, v in options.items()}, words


def is_true(value: str | None) -> bool:
    """An option's truth value: given and not an explicit no."""
    return value is not None and value.lower() not in ("", "0", "false", "no", "off")


def parse_size(text: str) -> int:
    """vitastor's ``parse_size``: an integer with an optional binary K/M/G/T suffix (0 if bad)."""
    text = text.strip()
    shift = {"k": 10, "m": 20, "g": 30, "t": 40}.get(text[-1:].lower(), 0)
    digits = text[:-1] if shift else text
    return int(digits) << shift if digits.isdigit() else 0


def format_size(size: int, nobytes: bool = False) -> str:
    """vitastor's ``format_size``: ``1.5 M``-style sizes (SI thresholds and no unit for bytes
    when ``nobytes``, as in rates)."""
    thresholds = (10**12, 10**9, 10**6, 10**3, 0) if nobytes else (1 << 40, 1 << 30, 1 << 20, 1 << 10, 0)
    for i, threshold in enumerate(thresholds):
        if size >= threshold:
            text = f"{size / threshold if threshold else size:.1f}"
            text = text[:-2] if text.endswith("0") else text
            if not threshold and nobytes:
                return text
            return f"{text} {'TGMKB'[i]}"
    raise AssertionError("the last threshold is 0")


def emit(result: Result, json_output: bool) -> int:
    """Print the outcome the way vitastor-cli does and return its exit code."""
    if json_output and result.data is not None:
        print(dump_json11(result.data), flush=True)
    elif json_output and result.err:
        print(dump_json11({"error_code": result.err, "error_text": result.text}), flush=True)
    elif result.text:
        stream = sys.stderr if result.err else sys.stdout
        print(result.text, end="" if result.text.endswith("\n") else "\n", file=stream, flush=True)
    return result.err


def error_result(error: OnevitaError) -> Result:
    """A library exception as the errno result vitastor-cli gives for the same failure."""
    code = next(code for kind, code in ERRNO_OF if isinstance(error, kind))
    return Result(code, str(error))


class Tool:
    """One run of the stand-in: options, vitastor.conf, the etcd catalog and the layer data."""

    def __init__(self, options: dict[str, str]) -> None:
        self.options = options
        self.json = is_true(options.get("json"))
        self.progress = is_true(options.get("progress"))
        self.config = read_config(options.get("config_path"))

    @cached_property
    def catalog(self) -> Catalog:
        """Every pool and image config, loaded once like vitastor-cli's start-up."""
        return Catalog(Etcd(self.config.etcd_address), self.config.etcd_prefix)

    @cached_property
    def store(self) -> LayerStore:
        """The layers' data files under vitastor.conf's ``sim_data_dir``."""
        data_dir = self.config.raw.get("sim_data_dir")
        if not data_dir:
            raise CliError(errno.EINVAL, f"{self.config.path}: no sim_data_dir, not a simulated cluster")
        return LayerStore(str(data_dir))

    def say(self, text: str) -> None:
        """A progress line on stdout (vitastor-cli prints them unless ``--progress 0``)."""
        if self.progress:
            print(text, flush=True)

    def layer(self, name: str) -> Inode:
        """The layer called ``name``; ENOENT with vitastor-cli's message if there is none."""
        inode = self.catalog.find(name)
        if inode is None:
            raise CliError(errno.ENOENT, f"Layer {name} not found")
        return inode

    def parent(self, inode: Inode) -> Inode:
        """The parent of ``inode``, which must exist (a dangling parent id is ENOENT)."""
        parent = self.catalog.parent(inode)
        if parent is None:
            raise CliError(errno.ENOENT,
                           f"Parent inode of layer {inode.name} (id {inode.parent_id}) does not exist")
        return parent

    def chain(self, inode: Inode) -> list[Inode]:
        """``inode`` and all its ancestors, nearest first (EBADF on a loop, as flatten)."""
        chain = [inode]
        while chain[-1].parent_id:
            parent = self.parent(chain[-1])
            if any(parent.num == member.num for member in chain):
                raise CliError(errno.EBADF, f"Layer {inode.name} has a loop in parents")
            chain.append(parent)
        return chain

    @staticmethod
    def key(inode: Inode) -> LayerKey:
        """The layer's (pool, id): where its data lives."""
        return (inode.pool_id, inode.id)

    def put_config(self, inode: Inode, changed: Inode, conflict: str) -> Inode:
        """vitastor-cli's single-key config update: ``MOD < rev+1`` and a put; EAGAIN if it lost."""
        key = f"{self.catalog.prefix}/config/inode/{inode.pool_id}/{inode.id}"
        result = self.catalog.etcd.txn(compare=[cmp_mod_before(key, inode.mod_revision)],
                                       success=[op_put(key, dump_json11(changed.config()))])
        if not result.succeeded:
            raise CliError(errno.EAGAIN, conflict)
        changed = replace(changed, mod_revision=result.revision)
        self.catalog.inodes[self.key(changed)] = changed
        return changed

    def change_parent(self, inode: Inode, parent_key: LayerKey | None) -> str:
        """``cli_tool_t::change_parent``: re-point (or detach) a layer; returns its message."""
        pool_id, parent_id = parent_key or (0, 0)
        changed = replace(inode, parent_pool=pool_id, parent_id=parent_id)
        self.put_config(inode, changed, f"Image {inode.name} was modified during change")
        where = f"{inode.name} (inode {inode.id} in pool {inode.pool_id})"
        if parent_key is None:
            return f"Parent of layer {where} detached"
        parent = self.catalog.inodes.get(parent_key)
        return (f"Parent of layer {where} changed to {parent.name if parent else '<unknown>'} "
                f"(inode {parent_id} in pool {pool_id})")
