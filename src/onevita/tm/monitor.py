"""``tm/vitastor/monitor DSID`` for the system datastore: pool space on stdout, and with
MONITOR_VM_DISKS=1 each VM's disk and snapshot sizes sent to monitord (like Ceph on 7.2+,
but in one etcd read instead of one ``rbd du`` per image)."""

from __future__ import annotations

import base64
import sys
from typing import Any

from ..cluster import run_job
from ..datastore.common import read_action
from ..datastore.monitor import pool_usage_lines
from ..one.monitord import send_to_monitor

MIB = 1 << 20


def vm_monitor_lines(usage: dict[str, dict[str, dict[str, Any]]]) -> str:
    """``VM=[ID=.., MONITOR="<base64 of DISK_SIZE/SNAPSHOT_SIZE vectors>"]`` lines."""
    lines = []
    for vm_id, disks in sorted(usage.items(), key=lambda kv: int(kv[0])):
        parts = [f"DISK_SIZE=[ID={disk},SIZE={-(-size // MIB)}]"
                 for disk, size in sorted(disks["disks"].items(), key=lambda kv: int(kv[0]))]
        for disk, snaps in sorted(disks["snapshots"].items(), key=lambda kv: int(kv[0])):
            parts += [f"SNAPSHOT_SIZE=[ID={snap},DISK_ID={disk},SIZE={-(-size // MIB)}]"
                      for snap, size in sorted(snaps.items(), key=lambda kv: int(kv[0]))]
        monitor = base64.b64encode("\n".join(parts).encode()).decode()
        lines.append(f'VM=[ID={vm_id},MONITOR="{monitor}"]')
    return "\n".join(lines)


def monitor(ds_id: str) -> None:
    """Print TOTAL_MB/USED_MB/FREE_MB of the system datastore's pool; with MONITOR_VM_DISKS=1
    also send per-VM DISK_SIZE and SNAPSHOT_SIZE to monitord. A disk's backup checkpoints are
    counted in its DISK_SIZE, never reported as snapshots (``vm_disk_usage``)."""
    action = read_action(ds_id)
    settings = action.settings
    usage = run_job(action.host, "pool_usage", conf=settings.conf, pool=settings.pool)
    sys.stdout.write(pool_usage_lines(usage))
    if action.data.extra.get("MONITOR_VM_DISKS") == "1":
        per_vm = run_job(action.host, "vm_disk_usage", conf=settings.conf, prefix=settings.prefix)
        send_to_monitor("MONITOR_VM", True, -1, vm_monitor_lines(per_vm))
