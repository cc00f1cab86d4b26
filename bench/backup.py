"""Backup speed, side by side in one run (a benchmark, not a test).

    .venv/bin/python -m bench.backup [--size-mib 1024] [--rounds 3]

A disk of the given size (half random data, a quarter written zeros, a quarter hole, as in
bench.throughput) is the persistent disk of a powered-off VM. Each round, one after the other:

* a raw export of the disk to a file (``client.export_to_file``, the C copy loop);
* ``tm/prebackup`` through its dist/remotes link with oned's argv and stdin, a new chain
  (front-end mode; the staging directory on the VM's host over ssh): checkpoint, whole-disk
  ``disk.0.0`` as qcow2; then ``tm/postbackup``;
* 1 % of the disk rewritten (40 scattered writes), then ``tm/prebackup`` of the increment
  (``disk.0.1`` from the layer bitmaps) and ``tm/postbackup``;
* the host job's disk work alone, in this process, from the two checkpoints those left: the
  whole disk (``backup_disk`` of checkpoint 0) and the increment (checkpoint 1 since 0).

Printed: medians, the full backup's speed as a fraction of the raw export's (goal >= 0.5) and
the increment's time as a fraction of the full backup's (goal <= 0.10), through the action
(what oned waits for, with an action's start and one ssh session to the VM's host) and for the
disk work alone. With
ONEVITA_TEST_VITASTOR_CONF / ONEVITA_TEST_VITASTOR_CLI it runs on that real cluster.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import uuid
from functools import partial
from pathlib import Path

from bench.throughput import make_file, timed
from demo import REAL_CONF, REAL_POOL, World, cluster_env
from onevita.vitastor import client
from onevita.vitastor.backup_jobs import backup_disk
from tests.cloud import Cloud
from tests.harness import documents as docs
from tests.sim.cluster import SimCluster

MIB = 1 << 20
VM_ID = 12
IMAGE_ID = 7
WRITES = 40


def vm_document(cloud: Cloud, size: int, last: int) -> bytes:
    disk = docs.image_disk(0, IMAGE_ID, source=f"{cloud.prefix}-{IMAGE_ID}", clone=False, persistent=True,
                           size_mb=size // MIB)
    xml = docs.vm_xml(VM_ID, disks=[disk], lcm_state=70, state=8, deploy_id=f"one-{VM_ID}",
                      backup_config={"MODE": "INCREMENT", "LAST_INCREMENT_ID": str(last)})
    cloud.oned.vms[VM_ID] = xml
    return xml.encode()


def backup(cloud: Cloud, location: str, size: int, last: int) -> float:
    """prebackup (timed) then postbackup; the seconds prebackup took."""
    stdin = vm_document(cloud, size, last)
    args = (location, "0", f"one-{VM_ID}", "-", str(VM_ID), "100")
    result = cloud.run("tm/prebackup", *args, stdin=stdin)
    if result.rc:
        raise RuntimeError(f"tm/prebackup failed: {result.stderr}")
    cloud.ok("tm/postbackup", *args, stdin=stdin)
    return result.seconds


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.backup")
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    size = args.size_mib * MIB
    tmp = Path(tempfile.mkdtemp(prefix="onevita-backup-", dir=os.environ.get("TMPDIR", "/var/tmp")))
    samples: dict[str, list[float]] = {}
    try:
        with World(real=bool(REAL_CONF)) as world:
            if world.libvitastor:
                os.environ["ONEVITA_LIBVITASTOR"] = world.libvitastor
            prefix = f"bk{uuid.uuid4().hex[:6]}"
            with cluster_env(world.real):
                cluster = SimCluster(world.etcd.url, tmp / "cluster", prefix=f"/vitastor-{prefix}")
            cloud = Cloud(oned=world.oned, cluster=cluster, env=dict(world.env), mode="frontend",
                          user=world.user, workdir=tmp, prefix=prefix,
                          pool=REAL_POOL if REAL_CONF else "testpool")
            cloud.add_datastores()
            source = tmp / "source.img"
            make_file(source, size)
            vm_dir = tmp / "datastores" / "100" / str(VM_ID)
            vm_dir.mkdir(parents=True)
            world.user.give(tmp / "datastores")
            location = f"node1:{vm_dir}"
            name = f"{prefix}-{IMAGE_ID}"
            for round_ in range(args.rounds):
                catalog = cluster.catalog()
                catalog.create(name, size, catalog.pool(cloud.pool))
                client.import_file(cluster.config, source, name, progress=False)
                export = tmp / "export.raw"
                samples.setdefault("raw export to a file", []).append(timed(
                    lambda: client.export_to_file(cluster.config, name, export, progress=False)))  # noqa: B023
                export.unlink()
                samples.setdefault("full backup (prebackup)", []).append(backup(cloud, location, size, -1))
                for k in range(WRITES):  # 1 % of the disk, scattered
                    offset = (k * 7919 % (size // MIB - 1)) * MIB + k * 4096
                    cluster.write(name, offset, os.urandom(size // 100 // WRITES))
                samples.setdefault("1% increment (prebackup)", []).append(backup(cloud, location, size, 0))
                stage = tmp / "job" / "backup"
                for label, increment_id, since in (("full, disk work alone", 0, -1),
                                                   ("increment, disk work alone", 1, 0)):
                    stage.mkdir(parents=True, exist_ok=True)
                    samples.setdefault(label, []).append(timed(
                        partial(backup_disk, cluster.config.path, name, str(stage), 0, increment_id, since)))
                    shutil.rmtree(stage)
                cluster.remove_images(prefix)
                print(f"round {round_ + 1}/{args.rounds} done", file=sys.stderr)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    medians = {label: statistics.median(values) for label, values in samples.items()}
    raw, full, inc = (medians["raw export to a file"], medians["full backup (prebackup)"],
                      medians["1% increment (prebackup)"])
    kind = f"real cluster ({REAL_CONF})" if REAL_CONF else "SIMULATED cluster (sparse files on this disk)"
    print(f"disk: {args.size_mib} MiB (1/2 random, 1/4 zeros, 1/4 hole); {kind}; "
          f"median of {args.rounds} rounds")
    for label, seconds in medians.items():
        print(f"{label:<28}{seconds:>8.2f} s{args.size_mib / seconds:>8.0f} MiB/s of disk")
    print(f"full backup speed / raw export speed: {raw / full:.2f} (goal >= 0.5)")
    print(f"increment time / full backup time:    {inc / full:.3f} (goal <= 0.10)")
    work_full, work_inc = medians["full, disk work alone"], medians["increment, disk work alone"]
    print(f"the same for the disk work alone:     {raw / work_full:.2f} and {work_inc / work_full:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
