"""Replacing a file in one rename: oned and the drivers never read a half-written one."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["replace_file"]


def replace_file(path: Path, data: bytes, mode: int = 0o644, owner: tuple[int, int] | None = None) -> None:
    """Write ``data`` beside ``path`` with ``mode`` (and ``owner``), then rename it over ``path``."""
    tmp = path.with_name(f".{path.name}.onevita-tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, mode)
    if owner is not None:
        os.chown(tmp, *owner)
    os.replace(tmp, path)
