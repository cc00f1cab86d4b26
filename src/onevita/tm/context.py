"""``tm/vitastor/context``: OpenNebula's own context script does the job.

The context ISO is a small file in the VM directory on the host, like every other driver's, so
onevita runs the copy of OpenNebula's context script that install.sh puts under the ssh driver
(``tm/common/context`` exists only in OpenNebula's source tree: 6.8 to 7.4 install a copy per
driver, ``tm/ssh/context``, ``tm/shared/context``, ``tm/ceph/context``...).
"""

from __future__ import annotations

import os

from ..errors import ConfigError
from ..remotes import script

__all__ = ["CONTEXT_DRIVERS", "context"]

# drivers whose installed context script builds the ISO on the front-end and copies it into the
# VM directory on the host over ssh, in order of preference
CONTEXT_DRIVERS = ("ssh", "shared", "ceph")


def installed_context_script() -> str:
    """The first of the drivers' context scripts this remotes tree has."""
    candidates = [script("tm", driver, "context") for driver in CONTEXT_DRIVERS]
    for path in candidates:
        if os.access(path, os.X_OK):
            return path
    raise ConfigError("no OpenNebula context script in this remotes tree "
                      f"(looked for {', '.join(candidates)})")


def context(*args: str) -> None:
    """``CONTEXT vitastor context.sh [files...] host:<sysdir>/disk.N VMID DSID``: build the
    context ISO on the front-end and copy it into the VM directory, exactly like the ssh driver
    does. It replaces this process, so its exit code and messages go to oned unchanged."""
    path = installed_context_script()
    try:
        os.execv(path, [path, *args])
    except OSError as e:
        raise ConfigError(f"cannot run OpenNebula's {path}: {e.strerror}") from e
