"""Import and export throughput of one file, side by side in one run (a benchmark, not a test).

    .venv/bin/python -m bench.throughput [--size-mib 1024] [--rounds 3]

The file is half random data, a quarter zeros (written) and a quarter hole. Each round runs,
one after the other:

* ``client.import_file`` into a new image and ``client.export_to_file`` of it to a new file
  (libvitastor_client in a forked child, the C copy loop);
* the comparison: on a real cluster (ONEVITA_TEST_VITASTOR_CONF and ONEVITA_TEST_VITASTOR_CLI)
  ``vitastor-cli dd if=FILE oimg=IMG bs=1M`` and ``dd iimg=IMG of=FILE bs=1M``; otherwise a
  plain local copy (``cp --sparse=always`` to a file, then reading that copy into /dev/null)
  and the simulated ``vitastor-cli dd``, with the simulated libvitastor_client (built into a
  temporary directory, loaded through ONEVITA_LIBVITASTOR);
* ``datastore/cp`` end to end (oned's argv and stdin through the dist/remotes link, the file read
  on the "front-end" and streamed to the job) in ssh mode and in front-end mode.

Medians are printed as MiB/s of the file's size (holes and zeros count: they are what the image
reads) and as ratios to ``client.import_file`` / ``client.export_to_file``. Everything runs on
this machine; on the simulated cluster image data lands in sparse files of the same disk.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Callable

from demo import MODES, REAL_CONF, REAL_POOL, World, cluster_env
from onevita.vitastor import client
from tests.cloud import Cloud
from tests.datastore.util import image_data
from tests.sim.cluster import SimCluster

MIB = 1 << 20


def make_file(path: Path, size: int) -> None:
    """Half random data, a quarter zeros (written), a quarter hole at the end."""
    half, quarter = size // 2, size // 4
    with open(path, "wb") as f:
        for _ in range(0, half, 64 * MIB):
            f.write(os.urandom(min(64 * MIB, half - f.tell())))
        zeros = bytes(MIB)
        for _ in range(0, quarter, MIB):
            f.write(zeros[:min(MIB, half + quarter - f.tell())])
        f.truncate(size)
    subprocess.run(["cat", str(path)], stdout=subprocess.DEVNULL, check=True)  # into the page cache


def timed(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def sh(*argv: str) -> None:
    proc = subprocess.run(argv, capture_output=True, check=False)
    if proc.returncode:
        reason = proc.stderr.decode(errors="replace")
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {reason}")


class Bench:
    def __init__(self, world: World, base: Path, size: int) -> None:
        self.world, self.base, self.size = world, base, size
        self.source = base / "source.img"
        self.prefix = f"bench{uuid.uuid4().hex[:6]}"
        with cluster_env(world.real):
            self.cluster = SimCluster(world.etcd.url, base / "cluster", prefix=f"/vitastor-{self.prefix}")
        self.pool = REAL_POOL if REAL_CONF else "testpool"
        self.images: list[str] = []
        self.samples: dict[str, list[float]] = {}

    def record(self, label: str, seconds: float) -> None:
        self.samples.setdefault(label, []).append(seconds)

    def new_image(self, name: str) -> str:
        catalog = self.cluster.catalog()
        catalog.create(name, self.size, catalog.pool(self.pool))
        self.images.append(name)
        return name

    def remove_images(self) -> None:
        for name in self.images:
            self.cluster.cli("rm", name)
        self.images.clear()

    def out(self, name: str) -> Path:
        path = self.base / name
        path.unlink(missing_ok=True)
        return path

    def client_round(self, round_: int) -> None:
        conf = self.cluster.config
        image = self.new_image(f"{self.prefix}-lib-{round_}")
        self.record("client.import_file", timed(lambda: client.import_file(conf, self.source, image,
                                                                           progress=False)))
        target = self.out("export.img")
        self.record("client.export_to_file", timed(lambda: client.export_to_file(conf, image, target,
                                                                                 progress=False)))
        if round_ == 0 and not filecmp(self.source, target):
            raise AssertionError("client.export_to_file did not give back the imported bytes")
        target.unlink()

    def dd_round(self, round_: int) -> None:
        image = f"{self.prefix}-dd-{round_}"
        self.images.append(image)
        # the real dd at the queue depth the issue compares against; the simulated one ignores it
        pool = ["--pool", self.pool] if self.cluster.simulated else ["iodepth=32"]
        cli = [str(self.cluster.cli_path), "--config_path", str(self.cluster.config_path)]
        self.record("vitastor-cli dd import", timed(lambda: sh(*cli, "dd", f"if={self.source}",
                                                               f"oimg={image}", "bs=1M", *pool)))
        target = self.out("dd-export.img")
        extra = [] if self.cluster.simulated else ["iodepth=32", "conv=trunc"]
        self.record("vitastor-cli dd export", timed(lambda: sh(*cli, "dd", f"iimg={image}", f"of={target}",
                                                               "bs=1M", *extra)))
        target.unlink()

    def local_round(self) -> None:
        target = self.out("copy.img")
        self.record("local cp --sparse=always", timed(lambda: sh("cp", "--sparse=always", str(self.source),
                                                                 str(target))))
        self.record("local read to /dev/null", timed(lambda: sh("dd", f"if={target}", "of=/dev/null",
                                                                "bs=1M", "status=none")))
        target.unlink()

    def cp_round(self, round_: int) -> None:
        for mode in MODES if round_ % 2 == 0 else tuple(reversed(MODES)):
            image_id = 100 + 2 * round_ + MODES.index(mode)
            cloud = Cloud(oned=self.world.oned, cluster=self.cluster, env=dict(self.world.env), mode=mode,
                          user=self.world.user, workdir=self.base, prefix=self.prefix, pool=self.pool)
            cloud.add_datastores()
            stdin = image_data(cloud, image_id, path=str(self.source), size_mb=self.size // MIB)
            result = cloud.run("datastore/cp", str(image_id), stdin=stdin)
            if result.rc:
                raise RuntimeError(f"datastore/cp in {mode} mode failed: {result.stderr}")
            self.images.append(f"{self.prefix}-{image_id}")
            self.record(f"datastore/cp ({mode})", result.seconds)


def filecmp(a: Path, b: Path) -> bool:
    return subprocess.run(["cmp", "-s", str(a), str(b)], check=False).returncode == 0


def report(samples: dict[str, list[float]], size: int, rounds: int, comparison: str) -> None:
    mib = size / MIB
    medians = {label: statistics.median(values) for label, values in samples.items()}
    base_import, base_export = medians["client.import_file"], medians["client.export_to_file"]
    print(f"file: {mib:.0f} MiB (1/2 random, 1/4 zeros, 1/4 hole); median of {rounds} rounds")
    print(f"comparison: {comparison}")
    print(f"{'':<28}{'seconds':>9}{'MiB/s':>10}{'x client':>10}")
    for label, seconds in medians.items():
        base = base_export if "export" in label or "read" in label else base_import
        print(f"{label:<28}{seconds:>9.2f}{mib / seconds:>10.0f}{base / seconds:>10.2f}")
    print("x client: the client call's time / this one's (> 1: faster than client.import_file for imports, "
          "client.export_to_file for exports)")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.throughput")
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    size = args.size_mib * MIB
    tmp = Path(tempfile.mkdtemp(prefix="onevita-throughput-", dir=os.environ.get("TMPDIR", "/var/tmp")))
    try:
        if REAL_CONF:
            comparison = (f"real cluster ({REAL_CONF}): vitastor-cli dd iodepth=32, the real "
                          "libvitastor_client")
        else:
            comparison = ("SIMULATED cluster: a plain local copy (cp --sparse=always, then reading the copy "
                          "into /dev/null) and the simulated vitastor-cli dd; simulated libvitastor_client")
        with World(real=bool(REAL_CONF)) as world:
            if world.libvitastor:
                os.environ["ONEVITA_LIBVITASTOR"] = world.libvitastor
            bench = Bench(world, tmp, size)
            make_file(bench.source, size)
            world.oned.reset()
            for round_ in range(args.rounds):
                bench.client_round(round_)
                bench.dd_round(round_)
                if not REAL_CONF:
                    bench.local_round()
                bench.cp_round(round_)
                bench.remove_images()
                print(f"round {round_ + 1}/{args.rounds} done", file=sys.stderr)
        report(bench.samples, size, args.rounds, comparison)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
