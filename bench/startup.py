"""Cold start of the zipapp, as a ratio to a bare interpreter start, measured side by side.

    .venv/bin/python -m bench.startup [--rounds 30]

Each round runs, one after the other: ``python3 -I -S -c pass`` (the floor any Python driver
pays), the launcher with the no-op command, ``python3 onevita.pyz noop`` (plain shiv bootstrap)
and a whole front-end-mode ``tm/clone`` (three XML-RPC calls to the oned stand-in, the etcd
read and the create transaction; an already-made clone, so every round does the same work).
Medians of wall time and the ratios to the bare interpreter are printed; the targets are
launcher noop < 3x and front-end clone < 8x.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from demo import REAL_CONF, World
from tests.harness import documents as docs

ROOT = Path(__file__).resolve().parent.parent
PYTHON = "/usr/bin/python3"  # the interpreter the launcher's shebang names (no pyenv shim)


def timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    return time.perf_counter() - start


def measure(commands: dict[str, list[str]], rounds: int, env: dict[str, str]) -> dict[str, float]:
    """Median seconds per command, the commands interleaved in every round."""
    samples: dict[str, list[float]] = {name: [] for name in commands}
    for argv in commands.values():
        timed(argv, env)  # warm the page cache and shiv's extraction
    for _ in range(rounds):
        for name, argv in commands.items():
            samples[name].append(timed(argv, env))
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    launcher = str(ROOT / "dist/remotes/onevita/onevita")
    commands = {
        "bare python3 -I -S": [PYTHON, "-I", "-S", "-c", "pass"],
        "launcher noop": [launcher, "noop"],
        "shiv pyz noop": [PYTHON, str(ROOT / "dist/onevita.pyz"), "noop"],
    }
    with World(real=bool(REAL_CONF)) as world:
        cloud = world.cloud("frontend", "startup")
        catalog = cloud.cluster.catalog()
        image = f"{cloud.prefix}-5"
        catalog.create(image, 64 << 20, catalog.pool(cloud.pool))
        cloud.add_vm(12, [docs.image_disk(0, 5, source=image, clone=True, size_mb=64)])
        clone = [str(ROOT / "dist/remotes/tm/vitastor/clone"), f"one-fe:{image}",
                 "node1:/var/lib/one//datastores/100/12/disk.0", "12", "101"]
        commands["front-end tm/clone"] = clone
        try:
            medians = measure(commands, args.rounds, cloud.env)
        finally:
            for name in (f"{image}-12-0", image):  # the clone first, then its parent
                cloud.cluster.cli("rm", name)
    print(f"cluster: {'real, ' + REAL_CONF if REAL_CONF else 'SIMULATED'}")
    floor = medians["bare python3 -I -S"]
    print(f"{'command':<22}{'median ms':>12}{'x bare':>10}")
    for name, seconds in medians.items():
        print(f"{name:<22}{seconds * 1000:>12.1f}{seconds / floor:>10.2f}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
