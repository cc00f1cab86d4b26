"""Where OpenNebula keeps its files on the front-end, found the way OpenNebula finds them.

A packaged OpenNebula uses fixed system paths (/etc/one, /var/lib/one); a self-contained one
keeps everything under ONE_LOCATION, which oned needs in its environment and so passes on to
every driver it starts. oned writes its effective configuration, oned.conf's defaults included,
to ``<var>/config`` at start (Nebula::start); OpenNebula's own Ruby drivers read settings such
as SCRIPTS_REMOTE_DIR from there (the driver framework does not export them), and so does
onevita.
"""

from __future__ import annotations

import functools
import os

__all__ = ["datastore_location", "etc_dir", "oned_config", "one_location", "scripts_remote_dir", "var_dir"]

DEFAULT_SCRIPTS_REMOTE_DIR = "/var/tmp/one"  # noqa: S108 (oned.conf's default)


def one_location() -> str | None:
    """ONE_LOCATION of a self-contained install, or None for a packaged one."""
    return os.environ.get("ONE_LOCATION") or None


def etc_dir() -> str:
    """oned's configuration directory: /etc/one or ``$ONE_LOCATION/etc``."""
    location = one_location()
    return f"{location}/etc" if location else "/etc/one"


def var_dir() -> str:
    """oned's state directory (oneadmin's home on packaged installs): /var/lib/one or
    ``$ONE_LOCATION/var``."""
    location = one_location()
    return f"{location}/var" if location else "/var/lib/one"


@functools.cache
def oned_config(var: str | None = None) -> dict[str, str]:
    """The single-valued ``KEY=VALUE`` lines of ``<var>/config`` (``var``: another install's
    state directory, for admin commands); empty when oned has not written it (a host, or a
    front-end whose oned never started)."""
    settings: dict[str, str] = {}
    try:
        with open(os.path.join(var or var_dir(), "config"), encoding="utf-8", errors="replace") as f:
            for line in f:
                key, sep, value = line.strip().partition("=")
                if sep and key.isidentifier() and "=" not in value:
                    settings[key] = value.strip().strip('"')
    except OSError:
        pass
    return settings


def scripts_remote_dir(var: str | None = None) -> str:
    """Where hosts keep OpenNebula's remotes (oned.conf's SCRIPTS_REMOTE_DIR)."""
    return oned_config(var).get("SCRIPTS_REMOTE_DIR") or DEFAULT_SCRIPTS_REMOTE_DIR


def datastore_location() -> str:
    """oned.conf's DATASTORE_LOCATION: where hosts keep the datastores' directories (oned's
    default, double slash included, when its config is not there)."""
    return oned_config().get("DATASTORE_LOCATION") or f"{var_dir()}//datastores"
