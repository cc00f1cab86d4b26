"""The front-end half of making an empty image (tm/mkimage, tm/mkswap, datastore/mkfs): which
file systems are allowed and with which options, where to stage, and the one job call.

OpenNebula's ``mkfs_command`` takes SUPPORTED_FS and ``FS_OPTS_<fs>`` from
``<remotes>/etc/datastore/datastore.conf``, a shell fragment the bash drivers source. It is
read here as ``KEY="value"`` lines and never run, so a file system name from a VM's DISK (which
users write) can only pick one of the admin's words, never reach a shell.
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass

from .cluster import run_job
from .errors import BadRequest, ConfigError
from .one.model import VitastorSettings
from .remotes import remotes_dir

__all__ = ["SWAP", "FileSystems", "make_empty", "read_datastore_conf", "staging_dir"]

MIB = 1 << 20
SWAP = "swap"
SUPPORTED_FS = "ext2,ext3,ext4,xfs"  # datastore.conf's default
STAGING_DIR = "/var/tmp"  # noqa: S108 (the bash driver's default; the job uses mkdtemp in it)
_LINE = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)=(.*)")


def _read_conf(path: str) -> dict[str, str]:
    """``KEY=value`` assignments of a shell fragment, quotes and comments removed; {} if absent."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}") from e
    values = {}
    for line in lines:
        match = _LINE.fullmatch(line)
        if match:
            try:
                values[match.group(1)] = " ".join(shlex.split(match.group(2), comments=True))
            except ValueError as e:
                raise ConfigError(f"{path}: cannot read {match.group(1)}: {e}") from e
    return values


def read_datastore_conf() -> dict[str, str]:
    """``<remotes>/etc/datastore/datastore.conf`` (SUPPORTED_FS, FS_OPTS_<fs>, BACKUP_BASE_PATH),
    read, never sourced; {} without it."""
    return _read_conf(os.path.join(remotes_dir(), "etc", "datastore", "datastore.conf"))


@dataclass(frozen=True)
class FileSystems:
    """SUPPORTED_FS and the FS_OPTS_<fs> values of datastore.conf."""

    supported: tuple[str, ...]
    options: dict[str, str]

    @classmethod
    def load(cls) -> FileSystems:
        """From ``<remotes>/etc/datastore/datastore.conf``, OpenNebula's defaults without it."""
        conf = read_datastore_conf()
        supported = conf.get("SUPPORTED_FS") or SUPPORTED_FS
        return cls(supported=tuple(fs.strip() for fs in supported.split(",") if fs.strip()),
                   options={key[len("FS_OPTS_"):]: value for key, value in conf.items()
                            if key.startswith("FS_OPTS_")})

    def check(self, fs: str) -> str:
        """``fs`` if SUPPORTED_FS has it (mkfs_command's check), else BadRequest."""
        if fs not in self.supported:
            raise BadRequest(f"Unsupported file system type: {fs}. Supported types are: "
                             f"{','.join(self.supported)}")
        return fs


def staging_dir(template: dict[str, str]) -> str:
    """STAGING_DIR of a datastore template (an absolute path on the job host)."""
    path = template.get("STAGING_DIR") or STAGING_DIR
    if not path.startswith("/"):
        raise BadRequest(f"STAGING_DIR must be an absolute path, got {path!r}")
    return path


def make_empty(host: str | None, settings: VitastorSettings, template: dict[str, str], name: str,
               size_mb: int, fs: str) -> None:
    """Create ``name`` (``size_mb`` MB, in the datastore's pool) through the ``make_empty`` job
    on ``host``: empty when ``fs`` is "", else holding a file system of SUPPORTED_FS, or swap."""
    if size_mb <= 0:
        raise BadRequest(f"SIZE must be a positive number of MB, got {size_mb}")
    options = ""
    if fs and fs != SWAP:
        systems = FileSystems.load()
        options = systems.options.get(systems.check(fs), "")
    run_job(host, "make_empty", conf=settings.conf, pool=settings.pool, name=name, size=size_mb * MIB,
            fs=fs, fs_opts=options, staging_dir=staging_dir(template))
