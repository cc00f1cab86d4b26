"""``vitastor-cli dd`` on the simulated cluster: copy between images, files and pipes.

Follows ``src/cmd/cli_dd.cpp`` of 3.0.8 step by step, minus the asynchrony: the same options
(``key=value`` or ``--key value``), the same size and alignment rules, the same sparse copy
(an all-zero block is not written unless ``conv=nosparse``), images created or grown through
onevita's Catalog, writes padded to whole granules, EROFS on a readonly output image.
Deliberate differences: ``--pool`` picks the pool of a created image (3.0.8 ignores it and
needs a single-pool cluster), ``conv=notrunc`` is accepted as a no-op (3.0.8 rejects it), and
``conv=trunc`` never shrinks an image (3.0.8's shrink wipes it; see vitastor-internals §0.1).
"""

from __future__ import annotations

import errno
import os
import stat
import sys
import time

from onevita.errors import PoolNotFound
from onevita.vitastor.catalog import Inode, Pool

from .simlayers import GRANULE, round_up
from .simtool import CliError, Result, Tool, format_size, parse_size

__all__ = ["dd"]

DEFAULT_BLOCK = 1 << 20
CONV = ("nofsync", "trunc", "nocreat", "noerror", "nosparse", "notrunc")


class _WriteFailed(Exception):
    """One block could not be written; the copy stops unless conv=noerror."""

    def __init__(self, err: int, size: int, where: str, offset: int) -> None:
        self.err = err
        self.text = (f"Failed to write {size} bytes to {where} at offset {offset}: "
                     f"{os.strerror(err)} (code -{err})")
        super().__init__(self.text)


def _blocks(value: str | None, block: int) -> int:
    """``count``/``seek``/``skip``: N blocks of ``bs``, ``NB`` bytes, or a size with a suffix."""
    if not value:
        return 0
    if value.isdigit():
        return int(value) * block
    if value[-1] in "bB" and value[:-1].isdigit():
        return int(value[:-1])
    return parse_size(value)


def _words(value: str | None) -> list[str]:
    """``conv=a,b``-style lists."""
    return [w for w in (value or "").split(",") if w]


def _check_words(name: str, given: list[str], known: tuple[str, ...]) -> None:
    """An unknown conv/iflag/oflag word is EINVAL before anything is opened, as in 3.0.8."""
    for word in given:
        if word not in known:
            raise CliError(errno.EINVAL, f"Unknown option {name}={word}")


def _os_error(action: str, what: str, error: OSError) -> CliError:
    """A failed open/truncate exits with its errno, as cli_dd.cpp does."""
    code = error.errno or errno.EIO
    return CliError(code, f"Failed to {action} {what}: {os.strerror(code)}")


class _Input:
    """Where dd reads: an image (through its chain), a file, or stdin."""

    size = 0
    seekable = True
    fd = -1

    def read(self, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes at ``offset`` (the stream position when not seekable)."""
        chunks, got = [], 0
        while got < length:
            left = length - got
            chunk = os.pread(self.fd, left, offset + got) if self.seekable else os.read(self.fd, left)
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        if self.fd > 2:
            os.close(self.fd)


class _ImageInput(_Input):
    """An image read through its parent chain; its size is the configured image size."""

    def __init__(self, tool: Tool, name: str, detect_size: bool) -> None:
        inode = tool.catalog.find(name)
        if inode is None:
            raise CliError(errno.ENOENT, f"Image {name} does not exist")
        if inode.pool_id not in tool.catalog.pools:
            raise CliError(errno.ENOENT, f"Pool of image {name} does not exist")
        self.store = tool.store
        self.chain = [tool.key(layer) for layer in tool.chain(inode)]
        self.size = inode.size if detect_size else 0

    def read(self, offset: int, length: int) -> bytes:
        return self.store.read(self.chain, offset, length)


class _FileInput(_Input):
    """A file (size from stat or the block device) or, with no path, stdin."""

    def __init__(self, path: str, detect_size: bool) -> None:
        self.path = path
        if not path:
            self.fd, self.seekable = 0, False
            return
        try:
            self.fd = os.open(path, os.O_RDONLY)
        except OSError as e:
            raise _os_error("open", path, e) from e
        mode = os.fstat(self.fd).st_mode
        if detect_size and stat.S_ISREG(mode):
            self.size = os.fstat(self.fd).st_size
        elif detect_size and stat.S_ISBLK(mode):
            self.size = os.lseek(self.fd, 0, os.SEEK_END)
        try:
            self.seekable = os.lseek(self.fd, 1, os.SEEK_SET) == 1
            os.lseek(self.fd, 0, os.SEEK_SET)
        except OSError:
            self.seekable = False


class _Output:
    """Where dd writes: an image's head layer, a file, or stdout."""

    seekable = True

    def write(self, offset: int, data: bytes) -> int:
        """Write one block; returns the bytes counted as copied."""
        raise NotImplementedError

    def close(self, fsync: bool) -> None:
        """Flush and release the output."""


class _ImageOutput(_Output):
    """The image's head layer: blocks padded to whole granules, EROFS when readonly."""

    def __init__(self, tool: Tool, name: str, inode: Inode) -> None:
        self.store, self.name, self.inode, self.key = tool.store, name, inode, tool.key(inode)

    def write(self, offset: int, data: bytes) -> int:
        size = round_up(len(data), GRANULE)
        if self.inode.readonly:
            raise _WriteFailed(errno.EROFS, size, f"image {self.name}", offset)
        self.store.write(self.key, offset, data.ljust(size, b"\0"))
        return size


class _FileOutput(_Output):
    """A file (created unless conv=nocreat, truncated with conv=trunc) or, with no path, stdout."""

    def __init__(self, path: str, *, create: bool, append: bool, trunc_to: int | None) -> None:
        self.path = path or "stdout"
        if not path:
            self.fd, self.seekable = 1, False
            return
        flags = (os.O_APPEND | os.O_WRONLY if append else os.O_RDWR) | (os.O_CREAT if create else 0)
        try:
            self.fd = os.open(path, flags, 0o666)
            if trunc_to is not None:
                os.ftruncate(self.fd, trunc_to)
        except OSError as e:
            raise _os_error("open" if trunc_to is None else "truncate", path, e) from e
        self.seekable = not append

    def write(self, offset: int, data: bytes) -> int:
        view = memoryview(data)
        try:
            while view:
                done = os.pwrite(self.fd, view, offset) if self.seekable else os.write(self.fd, view)
                view, offset = view[done:], offset + done
        except OSError as e:
            raise _WriteFailed(e.errno or errno.EIO, len(view), self.path, offset) from e
        return len(data)

    def close(self, fsync: bool) -> None:
        if self.fd == 1:
            return
        if fsync and self.seekable:
            os.fsync(self.fd)
        os.close(self.fd)


class _Dd:
    """One dd run: the parsed options, then open, copy, report."""

    def __init__(self, tool: Tool, opts: dict[str, str]) -> None:
        self.tool = tool
        self.iimg, self.oimg = opts.get("iimg", ""), opts.get("oimg", "")
        self.ifile, self.ofile = opts.get("if", ""), opts.get("of", "")
        self.block = parse_size(opts.get("bs", "")) or DEFAULT_BLOCK
        self.limit = _blocks(opts.get("count"), self.block)
        self.oseek = _blocks(opts.get("oseek"), self.block) or _blocks(opts.get("seek"), self.block)
        self.iseek = _blocks(opts.get("iseek"), self.block) or _blocks(opts.get("skip"), self.block)
        self.detect_size = "size" not in opts
        self.out_size = parse_size(opts.get("size", ""))
        self.conv, self.iflag, self.oflag = (_words(opts.get(k)) for k in ("conv", "iflag", "oflag"))
        self.end_status = opts.get("status") != "none"
        if opts.get("status") == "progress":
            tool.progress = True

    def check(self) -> None:
        """Option errors found before anything is opened."""
        _check_words("conv", self.conv, CONV)
        _check_words("iflag", self.iflag, ("direct",))
        _check_words("oflag", self.oflag, ("direct", "append"))
        if (self.oimg and self.ofile) or (self.iimg and self.ifile):
            raise CliError(errno.EINVAL, "Image and file can't be specified at the same time")
        source = "i" + self.iimg if self.iimg else "f" + self.ifile
        if source == ("i" + self.oimg if self.oimg else "f" + self.ofile):
            raise CliError(errno.EINVAL, "Input and output image/file can't be equal")

    def open_input(self) -> _Input:
        source = (_ImageInput(self.tool, self.iimg, self.detect_size) if self.iimg
                  else _FileInput(self.ifile, self.detect_size))
        if self.iimg and (self.iseek % GRANULE or self.block % GRANULE):
            raise CliError(errno.EINVAL, "Unaligned read from Vitastor is not supported")
        if not self.out_size:
            rest = max(0, source.size - self.iseek)
            self.out_size = self.oseek + (rest if source.seekable and (not self.limit or rest < self.limit)
                                          else self.limit)
        return source

    def open_output(self) -> _Output:
        if self.oimg:
            self.out_size = round_up(self.out_size, GRANULE)
            output: _Output = _ImageOutput(self.tool, self.oimg, self._output_image())
            if self.oseek % GRANULE or self.block % GRANULE:
                raise CliError(errno.EINVAL, "Unaligned write to Vitastor is not supported")
            return output
        return _FileOutput(self.ofile, create="nocreat" not in self.conv, append="append" in self.oflag,
                           trunc_to=self.out_size if "trunc" in self.conv else None)

    def _create_output(self, pool: Pool) -> Inode:
        if "nocreat" in self.conv:
            raise CliError(errno.ENOENT, f"Image {self.oimg} does not exist")
        if not self.out_size:
            raise CliError(errno.ENOENT, f"Input size is unknown, specify size to create output image {self.oimg}")
        return self.tool.catalog.create(self.oimg, self.out_size, pool)

    def _output_pool(self) -> Pool:
        """``--pool`` (a stand-in extension), else the only pool."""
        catalog, name = self.tool.catalog, self.tool.options.get("pool")
        try:
            if name or len(catalog.pools) == 1:
                return catalog.pool(name)
        except PoolNotFound:
            pass
        raise CliError(errno.ENOENT, f"Pool to create output image {self.oimg} is not specified")

    def _output_image(self) -> Inode:
        """The output image: created at the input's size (rounded up to 4 KiB), grown, or taken
        as it is (and then its size bounds the copy)."""
        catalog = self.tool.catalog
        inode = catalog.find(self.oimg)
        if inode is None:
            return self._create_output(self._output_pool())
        if inode.pool_id not in catalog.pools:
            raise CliError(errno.ENOENT, f"Pool of image {self.oimg} does not exist")
        if inode.size < self.out_size or "trunc" in self.conv:
            if not self.out_size:
                raise CliError(errno.ENOENT, "Input size is unknown, specify size to truncate output image")
            return catalog.modify(inode, size=self.out_size)
        self.out_size = inode.size
        return inode

    def span(self, source: _Input) -> int:
        """Bytes to copy (0 = until the input ends), as cli_dd.cpp bounds them."""
        end = source.size - self.iseek if source.seekable else 0
        if self.out_size and (not end or end > self.out_size - self.oseek):
            end = self.out_size - self.oseek
        if self.limit and (not end or end > self.limit):
            end = self.limit
        return end

    def copy(self, source: _Input, output: _Output) -> tuple[int, int]:
        """Copy block by block; returns (bytes written, errno of the first failure or 0)."""
        write_zero = "nosparse" in self.conv or not output.seekable
        end, offset, written = self.span(source), 0, 0
        while not end or offset < end:
            want = min(self.block, end - offset) if end else self.block
            data = source.read(offset + self.iseek if source.seekable else 0, want)
            if not data:
                break
            if write_zero or data.count(0) != len(data):
                try:
                    written += output.write(offset + self.oseek if output.seekable else 0, data)
                except _WriteFailed as e:
                    print(e.text, file=sys.stderr, flush=True)
                    if "noerror" not in self.conv:
                        return written, e.err
            offset += len(data)
            if len(data) < want:
                break
        return written, 0

    def skip_stream(self, source: _Input) -> None:
        """A pipe cannot seek: read and drop ``skip`` bytes."""
        left = self.iseek
        while left:
            chunk = source.read(0, min(left, self.block))
            if not chunk:
                raise CliError(errno.EPIPE,
                               f"Failed to skip {self.iseek} input bytes: {os.strerror(errno.EPIPE)}")
            left -= len(chunk)

    def run(self) -> Result:
        self.check()
        source = self.open_input()
        try:
            output = self.open_output()
            try:
                return self._transfer(source, output)
            finally:
                output.close(fsync="nofsync" not in self.conv)
        finally:
            source.close()

    def _transfer(self, source: _Input, output: _Output) -> Result:
        if source.seekable and self.iseek >= source.size:
            return Result(-errno.EINVAL, "Input seek position is beyond end of input")
        if not source.seekable and self.iseek:
            self.skip_stream(source)
        started = time.monotonic()
        written, error = self.copy(source, output)
        return self.report(written, error, time.monotonic() - started)

    def report(self, written: int, error: int, seconds: float) -> Result:
        """The final ``N bytes (...) copied`` line: stderr, or the JSON result with --json."""
        seconds = max(seconds, 1e-9)
        text = (f"{written} bytes ({format_size(written)}) copied, {seconds:.1f} s, "
                f"{format_size(int(written / seconds), True)}B/s")
        if self.tool.json:
            return Result(error, text, {"copied": written, "seconds": seconds})
        if self.tool.progress or self.end_status:
            print(text, file=sys.stderr, flush=True)
        return Result(error)


def dd(tool: Tool, words: list[str]) -> Result:
    """``vitastor-cli dd [iimg=IMG|if=FILE] [oimg=IMG|of=FILE] [bs=1M] [count=N] [seek=N]
    [skip=N] [conv=...] [iodepth=N]``."""
    opts = dict(tool.options)
    opts.update({key: value for key, _, value in (word.partition("=") for word in words if "=" in word)})
    return _Dd(tool, opts).run()
