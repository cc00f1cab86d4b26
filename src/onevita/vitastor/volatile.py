"""Vitastor jobs for images that start empty: volatile disks (tm/mkimage, tm/mkswap) and empty
datablocks (datastore/mkfs), with a file system or a swap signature when asked.

The bash driver formatted through ``sudo vitastor-nbd map``, which needs root and the nbd
module on every host. Here the file system is built by the ordinary ``mkfs`` tools in a sparse
staging file on the job host and only its allocated extents are copied into the image through
libvitastor_client, so a fresh file system of gigabytes moves a few megabytes and the image
stays thin. Like every job, it takes JSON scalars and is idempotent (see ``make_empty``).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import tempfile

from .. import log
from ..errors import BadRequest, ConfigError, ImageExists, OnevitaError
from ..names import check_image
from ..run import CommandFailed, run
from .config import read_config
from .jobs import clear_partial, delete, open_catalog

__all__ = ["MADE_AS", "SWAP", "make_empty"]

MIB = 1 << 20
MADE_AS = "onevita_made_as"  # meta key: what make_empty put in the image ("raw", "ext4", "swap")
SWAP = "swap"
RAW = "raw"
_FS = re.compile(r"[a-z0-9]{1,16}")  # a SUPPORTED_FS word; never an option or a path


def _format_argv(fs: str, opts: list[str], path: str) -> list[str]:
    """The command ``mkfs_command`` (scripts_common.sh) would run on the staging file. The tools
    are found through PATH, which the entry point extends with the sbin directories as
    OpenNebula's scripts do (``one.environment``): ``mkfs -t ext4`` itself runs ``mkfs.ext4``
    through PATH, so locating ``mkfs`` alone would not be enough."""
    if fs == SWAP:
        return ["mkswap", "-L", "swap", path]
    if fs == "xfs":
        return ["mkfs.xfs", "-f", *opts, path]
    return ["mkfs", "-F", "-t", fs, *opts, path]


def _build(fs: str, opts: list[str], size: int, staging: str) -> str:
    """A sparse file of ``size`` bytes in ``staging`` formatted as ``fs``; its path."""
    path = os.path.join(staging, "disk.raw")
    try:
        with open(path, "wb") as f:
            f.truncate(size)
    except OSError as e:
        where = os.path.dirname(staging)
        raise OnevitaError(f"cannot write the staging file in {where}: {e.strerror}") from e
    try:
        run(_format_argv(fs, opts, path))
    except CommandFailed as e:
        raise OnevitaError(f"cannot make the {fs} file system: {e}") from e
    return path


def make_empty(conf: str | None, pool: str | None, name: str, size: int, fs: str, fs_opts: str,
               staging_dir: str) -> bool:
    """A new image ``name`` of ``size`` bytes: empty (``fs`` ""), or holding a fresh file system
    ``fs`` (``mkfs``/``mkfs.xfs`` with ``fs_opts``, split like a shell would) or a swap signature
    (``fs`` "swap"); returns whether it was made now (False: a retry found it done).

    Without ``fs`` the image is created in one etcd transaction, so it is whole or absent.
    With ``fs`` the file system is built in a sparse file in a new directory under
    ``staging_dir``, the image is created as ``name.importing``, filled with the file's
    allocated extents and renamed when complete; a failure removes it, and the staging
    directory always goes. The image records in its ``meta`` what it was made as, so a retry
    recognises a finished image (that marker and ``size``) as its own and succeeds; anything
    else called ``name`` is someone else's: ImageExists. A ``name.importing`` left by a killed
    run is removed first."""
    if fs and not _FS.fullmatch(fs):
        raise BadRequest(f"invalid file system type {fs!r}")
    if size <= 0 or size % 4096:
        raise BadRequest(f"image size must be a positive multiple of 4 KiB, got {size}")
    made_as = {MADE_AS: fs or RAW}
    catalog = open_catalog(conf)
    existing = catalog.find(check_image(name))
    if existing is not None:
        if existing.meta == made_as and existing.size == size and not existing.parent_id:
            log.info(f"{name} already exists as a {size // MIB} MiB {fs or 'empty'} image")
            return False
        raise ImageExists(f"Vitastor image {name} already exists and is not the {size // MIB} MiB "
                          f"{fs or 'empty'} image asked for: remove it first")
    target = catalog.pool(pool)
    if not fs:
        catalog.create(name, size, target, meta=made_as)
        log.info(f"created {name} ({size // MIB} MiB) in pool {target.name}")
        return True
    partial = clear_partial(conf, catalog, name, "run")
    try:
        staging = tempfile.mkdtemp(prefix="onevita-mkfs-", dir=staging_dir)
    except OSError as e:
        raise ConfigError(f"cannot use STAGING_DIR {staging_dir}: {e.strerror}") from e
    created = False
    try:
        path = _build(fs, shlex.split(fs_opts), size, staging)
        catalog.create(partial, size, target, meta=made_as)
        created = True
        from .client import import_file

        copied = import_file(read_config(conf), path, partial, progress=False)
        catalog.modify(catalog.get(partial), rename=name)
    except BaseException:
        if created:
            delete(conf, partial)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info(f"created {name} ({size // MIB} MiB, {fs}, {copied} bytes written) in pool {target.name}")
    return True
