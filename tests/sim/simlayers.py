"""Simulated Vitastor layer data: one sparse file per layer, a granule written iff allocated.

The layout (see README.md) is shared with the C stand-in for libvitastor_client, so it is kept
to plain files: layer (pool P, local id N) is ``<data_dir>/P/N``. Vitastor tracks written
granules (bitmap_granularity, 4 KiB) per layer; a file's allocated extents play that bitmap,
found with SEEK_DATA/SEEK_HOLE. Every write here covers whole granules, so the allocation is
exact even where the data written is zeros.
"""

from __future__ import annotations

import contextlib
import errno
import os
from typing import Iterator, Sequence

__all__ = ["GRANULE", "LayerKey", "LayerStore", "round_down", "round_up"]

GRANULE = 4096
COPY_CHUNK = 4 << 20

LayerKey = tuple[int, int]  # (pool id, local inode id)
Extent = tuple[int, int]  # [start, end) in bytes


def round_down(value: int, align: int = GRANULE) -> int:
    """``value`` rounded down to a multiple of ``align``."""
    return value - value % align


def round_up(value: int, align: int = GRANULE) -> int:
    """``value`` rounded up to a multiple of ``align``."""
    return -(-value // align) * align


def _subtract(extent: Extent, covered: Sequence[Extent]) -> list[Extent]:
    """The parts of ``extent`` not in ``covered`` (sorted, disjoint)."""
    start, end = extent
    gaps, pos = [], start
    for c_start, c_end in covered:
        if c_end <= pos:
            continue
        if c_start >= end:
            break
        if c_start > pos:
            gaps.append((pos, c_start))
        pos = max(pos, c_end)
    if pos < end:
        gaps.append((pos, end))
    return gaps


def _union(extents: Sequence[Extent], more: Sequence[Extent]) -> list[Extent]:
    """Sorted, disjoint extents covering both lists."""
    merged: list[Extent] = []
    for start, end in sorted([*extents, *more]):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


class LayerStore:
    """The data of every layer of one simulated cluster, under ``data_dir``."""

    def __init__(self, data_dir: str) -> None:
        self.data_dir = data_dir

    def path(self, key: LayerKey) -> str:
        """``<data_dir>/<pool>/<id>``: the layer's sparse data file."""
        return os.path.join(self.data_dir, str(key[0]), str(key[1]))

    def extents(self, key: LayerKey, start: int = 0, end: int | None = None) -> list[Extent]:
        """Written granule ranges of the layer within [start, end) (end None = the whole file)."""
        try:
            fd = os.open(self.path(key), os.O_RDONLY)
        except FileNotFoundError:
            return []
        try:
            return list(self._scan(fd, start, end))
        finally:
            os.close(fd)

    @staticmethod
    def _scan(fd: int, start: int, end: int | None) -> Iterator[Extent]:
        """SEEK_DATA/SEEK_HOLE over the file, widened to whole granules and clipped to the range."""
        limit = round_up(os.fstat(fd).st_size)
        end = limit if end is None else min(end, limit)
        pos = start
        while pos < end:
            try:
                data = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError as e:
                if e.errno == errno.ENXIO:
                    return
                raise
            if data >= end:
                return
            hole = os.lseek(fd, data, os.SEEK_HOLE)
            yield max(start, round_down(data)), min(end, round_up(hole))
            pos = round_up(hole)

    def allocated(self, key: LayerKey) -> int:
        """Bytes written in the layer itself (what the OSDs would store for it)."""
        return sum(end - start for start, end in self.extents(key))

    def objects(self, key: LayerKey, block_size: int) -> int:
        """How many ``block_size`` objects of the layer hold data (what rm-data would delete)."""
        return len(self.object_offsets(key, block_size))

    def object_offsets(self, key: LayerKey, block_size: int) -> set[int]:
        """The offsets of the ``block_size`` objects of the layer that hold data (what an OSD
        listing of the layer gives)."""
        blocks: set[int] = set()
        for start, end in self.extents(key):
            blocks.update(range(start // block_size * block_size, end, block_size))
        return blocks

    def covers(self, key: LayerKey, start: int, end: int) -> bool:
        """Whether the layer itself has every granule of [start, end) written."""
        return _subtract((start, end), self.extents(key, start, end)) == []

    def plan(self, layers: Sequence[LayerKey], start: int, end: int | None,
             covered: Sequence[Extent] = ()) -> list[tuple[LayerKey, int, int]]:
        """Which layer provides each written range of [start, end), nearest layer first, leaving
        out ``covered``: how a read through a chain (or a merge into a layer) finds its data."""
        covered = _union(covered, ())
        pieces = []
        for key in layers:
            extents = self.extents(key, start, end)
            for extent in extents:
                pieces += [(key, s, e) for s, e in _subtract(extent, covered)]
            covered = _union(covered, extents)
        return pieces

    def read(self, chain: Sequence[LayerKey], offset: int, length: int) -> bytes:
        """``length`` bytes at ``offset`` of an image whose layers are ``chain`` (head first);
        granules no layer has written read as zeros."""
        buf = bytearray(length)
        for key, start, end in self.plan(chain, offset, offset + length):
            data = self._pread(key, start, end - start)
            buf[start - offset:start - offset + len(data)] = data
        return bytes(buf)

    def write(self, key: LayerKey, offset: int, data: bytes) -> None:
        """Write into the layer's own file (callers pass whole granules)."""
        path = self.path(key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            view = memoryview(data)
            while view:
                done = os.pwrite(fd, view, offset)
                view, offset = view[done:], offset + done
        finally:
            os.close(fd)

    def merge(self, target: LayerKey, sources: Sequence[LayerKey]) -> int:
        """Copy into ``target`` every granule it lacks from ``sources`` (nearest first wins), like
        vitastor-cli's merge-data; returns the bytes copied."""
        copied = 0
        for key, start, end in self.plan(sources, 0, None, self.extents(target)):
            for pos in range(start, end, COPY_CHUNK):
                size = min(COPY_CHUNK, end - pos)
                self.write(target, pos, self._pread(key, pos, size).ljust(size, b"\0"))
                copied += size
        return copied

    def overlay(self, target: LayerKey, layers: Sequence[LayerKey]) -> int:
        """Make ``target`` read what the chain ``layers`` (nearest first, ``target`` among them)
        reads: every granule another of them provides is copied over it, like vitastor-cli's
        merge of the layers above a target into it; returns the bytes copied."""
        copied = 0
        for key, start, end in self.plan(layers, 0, None):
            if key == target:
                continue
            for pos in range(start, end, COPY_CHUNK):
                size = min(COPY_CHUNK, end - pos)
                self.write(target, pos, self._pread(key, pos, size).ljust(size, b"\0"))
                copied += size
        return copied

    def delete(self, key: LayerKey) -> None:
        """Drop all data of the layer (rm-data)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path(key))

    def _pread(self, key: LayerKey, offset: int, size: int) -> bytes:
        with open(self.path(key), "rb") as f:
            f.seek(offset)
            return f.read(size)
