"""Cold start of the zipapp, as a ratio to a bare interpreter start, measured side by side.

    .venv/bin/python -m bench.startup [--rounds 30]

Each round runs, in alternating order: ``python3 -I -S -c pass`` (the floor any Python driver
pays), the launcher with the no-op command, and ``python3 onevita.pyz noop`` (plain shiv
bootstrap). Medians of wall time and the ratios are printed; the target is launcher < 3x.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = "/usr/bin/python3"  # the interpreter the launcher's shebang names (no pyenv shim)


def timed(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def measure(commands: dict[str, list[str]], rounds: int) -> dict[str, float]:
    """Median seconds per command, the commands interleaved in every round."""
    samples: dict[str, list[float]] = {name: [] for name in commands}
    for argv in commands.values():
        timed(argv)  # warm the page cache and shiv's extraction
    for _ in range(rounds):
        for name, argv in commands.items():
            samples[name].append(timed(argv))
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
    medians = measure(commands, args.rounds)
    floor = medians["bare python3 -I -S"]
    print(f"{'command':<22}{'median ms':>12}{'x bare':>10}")
    for name, seconds in medians.items():
        print(f"{name:<22}{seconds * 1000:>12.1f}{seconds / floor:>10.2f}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
