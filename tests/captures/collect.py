"""Turn a capture directory written by ``wrap.sh`` into this folder's fixtures: one JSON file per
successful driver call, ``{"version", "operation", "action", "argv", "stdin", "stderr"}``.

    python3 tests/captures/collect.py CAPTURES VERSION OPERATIONS.tsv

OPERATIONS.tsv names what was run on the front-end: ``HHMMSS<TAB>operation`` lines, each
operation covering the calls from its time until the next one's. Monitoring calls are kept
twice at most (they repeat every few seconds).
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path


def main(captures: str, version: str, operations: str) -> None:
    labels = sorted(tuple(line.split("\t", 1)) for line in Path(operations).read_text().splitlines()
                    if line.strip() and not line.startswith("#"))
    out = Path(__file__).parent / version
    out.mkdir(exist_ok=True)
    seen: Counter[str] = Counter()
    for rc in sorted(Path(captures).glob("*.rc")):
        base = str(rc)[:-len(".rc")]  # names hold other dots (the time's fraction)
        if rc.read_text().strip() != "0":
            continue
        stamp, family, driver, action = Path(base).name.split("-", 3)
        name = f"{family}/{action}"
        seen[name] += 1
        if action == "monitor" and seen[name] > 2:
            continue
        clock = stamp.split("T")[1][:6]
        operation = next((label for start, label in reversed(labels) if start <= clock), "")
        argv = Path(base + ".argv").read_bytes().split(b"\0")[:-1]
        record = {"version": version, "operation": operation.strip(), "action": name,
                  "argv": [a.decode() for a in argv],
                  "stdin": Path(base + ".stdin").read_bytes().decode(),
                  "stderr": Path(base + ".stderr").read_text(errors="replace")}
        target = out / f"{clock}.{stamp.split('.')[1][:3]}-{family}-{action}.json"
        target.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main(*sys.argv[1:4])
