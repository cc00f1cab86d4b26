"""Wall time per driver action in both job modes, side by side (a benchmark, not a test).

    .venv/bin/python -m bench.actions [--rounds 5]

Each round runs the demo's VM disk lifecycle (``demo.Lifecycle``: clone, ln, monitor, snapshots,
revert, resize, mv, delete...) once in ssh mode and once in front-end mode, on a fresh simulated
cluster each time (or, with ONEVITA_TEST_VITASTOR_CONF and ONEVITA_TEST_VITASTOR_CLI, on that
real cluster with a fresh image prefix), alternating which mode goes first. The median per
action over the rounds is printed with the ratio front-end/ssh. Everything runs on this
machine: ssh to "hosts" is a loopback connection, so real networks add their round trips to the
ssh column.
"""

from __future__ import annotations

import argparse
import statistics
import sys

from demo import MODES, REAL_CONF, Lifecycle, World


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.actions")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    samples: dict[str, dict[str, list[float]]] = {mode: {} for mode in MODES}
    totals: dict[str, list[float]] = {mode: [] for mode in MODES}
    with World(real=bool(REAL_CONF)) as world:
        for round_ in range(args.rounds):
            order = MODES if round_ % 2 == 0 else tuple(reversed(MODES))
            for mode in order:
                name = f"bench-{mode}-{round_}"
                life = Lifecycle(world, world.cloud(mode, name), world.base / name)
                life.run()
                for label, result in life.results.items():
                    samples[mode].setdefault(label, []).append(result.seconds)
                totals[mode].append(sum(r.seconds for r in life.results.values()))
            print(f"round {round_ + 1}/{args.rounds} done", file=sys.stderr)
    ssh, frontend = samples["ssh"], samples["frontend"]
    where = f"real cluster ({REAL_CONF})" if REAL_CONF else "SIMULATED cluster"
    print(f"median of {args.rounds} rounds, ms, {where}")
    print(f"{'action':<20}{'ssh':>10}{'front-end':>12}{'front-end/ssh':>15}")
    rows = [(label, statistics.median(ssh[label]), statistics.median(frontend[label])) for label in ssh]
    rows.append(("lifecycle total", statistics.median(totals["ssh"]), statistics.median(totals["frontend"])))
    for label, a, b in rows:
        print(f"{label:<20}{a * 1000:>10.1f}{b * 1000:>12.1f}{b / a:>15.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
