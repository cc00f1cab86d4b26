"""``datastore/vitastor/monitor DSID``: the pool's space for oned."""

from __future__ import annotations

import sys

from ..cluster import run_job
from .common import read_action


def pool_usage_lines(usage: dict[str, float]) -> str:
    """``TOTAL_MB=..`` / ``USED_MB=..`` / ``FREE_MB=..`` lines (whole MiB, as Ceph reports)."""
    return "".join(f"{key}={int(usage[key])}\n" for key in ("USED_MB", "TOTAL_MB", "FREE_MB"))


def monitor(ds_id: str) -> None:
    """Print the pool's TOTAL_MB, USED_MB and FREE_MB as ``vitastor-cli df`` counts them, with
    the datastore's own VITASTOR_CONF (the bash driver ignored it)."""
    action = read_action(ds_id)
    usage = run_job(action.host, "pool_usage", conf=action.settings.conf, pool=action.settings.pool)
    sys.stdout.write(pool_usage_lines(usage))
