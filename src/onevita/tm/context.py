"""``tm/vitastor/context``: OpenNebula's stock context script does the job."""

from __future__ import annotations

import os

from ..errors import ConfigError
from ..remotes import script


def context(*args: str) -> None:
    """``CONTEXT vitastor context.sh [files...] host:<sysdir>/disk.N VMID DSID``: build the
    context ISO on the front-end and copy it into the VM directory, exactly like every other
    driver does (``tm/common/context``, the script the bash driver also links to). It replaces
    this process, so its exit code and messages go to oned unchanged."""
    path = script("tm", "common", "context")
    try:
        os.execv(path, [path, *args])
    except OSError as e:
        raise ConfigError(f"cannot run OpenNebula's {path}: {e.strerror}") from e
