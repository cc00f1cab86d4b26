"""OpenNebula's remotes tree around onevita: where it is, and calling other drivers' scripts."""

from __future__ import annotations

import os
import re

from .errors import BadRequest, ConfigError

__all__ = ["remotes_dir", "script"]

_DRIVER = re.compile(r"[a-z0-9_]+")


def remotes_dir() -> str:
    """The remotes tree the running action was started from (set by the launcher)."""
    root = os.environ.get("ONEVITA_REMOTES")
    if not root:
        raise ConfigError("ONEVITA_REMOTES is not set: run onevita through its remotes links")
    return root


def script(family: str, driver: str, action: str) -> str:
    """The path of another driver's action script, e.g. ``tm/common/context``."""
    if not (_DRIVER.fullmatch(driver) and _DRIVER.fullmatch(action)):
        raise BadRequest(f"invalid driver script {family}/{driver}/{action}")
    return os.path.join(remotes_dir(), family, driver, action)
