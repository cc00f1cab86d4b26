"""onevita firewall through the built launcher: the printed rules, validation, and --apply with
an iptables that records its calls and answers -C like the real one (1: no such rule)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

FAKE_IPTABLES = """#!/bin/sh
# Records every call; -C succeeds only for rules added before (kept one per line in $0.rules).
echo "$*" >> "$0.calls"
if [ "$1" = "-C" ]; then
    shift
    grep -qxF -- "$*" "$0.rules" 2>/dev/null && exit 0
    echo "iptables: Bad rule (does a matching rule exist in that chain?)." >&2
    exit 1
fi
op="$1"; chain="$2"; shift 2
[ "$op" = "-I" ] && shift
echo "$chain $*" >> "$0.rules"
"""

RULES = [
    "iptables -A INPUT -m physdev --physdev-in eth0 -j ACCEPT",
    "iptables -A INPUT ! -s 10.0.3.0/24 -i onebr0 -j DROP",
    "iptables -A INPUT -s 10.0.3.0/24 -d 10.0.2.0/24 -j DROP",
    "iptables -I FORWARD 1 -s 10.0.3.0/24 -d 10.0.2.0/24 -j DROP",
]


def firewall(built: Path, *args: str, path: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{path}:{os.environ['PATH']}" if path else os.environ["PATH"]}
    return subprocess.run([str(built / "onevita/onevita"), "firewall", *args], capture_output=True, text=True,
                          env=env)


def test_prints_the_rules_without_applying(built: Path) -> None:
    proc = firewall(built, "--vm-net", "10.0.3.0/24", "--host-net", "10.0.2.7/24", "--uplink", "eth0")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[:4] == RULES  # the host address is widened to its network
    assert lines[4].startswith("# not applied")


def test_without_uplink_there_is_no_physdev_rule(built: Path) -> None:
    proc = firewall(built, "--vm-net", "10.0.3.0/24", "--host-net", "10.0.2.0/24", "--bridge", "br-vm")
    assert proc.returncode == 0, proc.stderr
    assert [line for line in proc.stdout.splitlines() if not line.startswith("#")] == [
        "iptables -A INPUT ! -s 10.0.3.0/24 -i br-vm -j DROP",
        "iptables -A INPUT -s 10.0.3.0/24 -d 10.0.2.0/24 -j DROP",
        "iptables -I FORWARD 1 -s 10.0.3.0/24 -d 10.0.2.0/24 -j DROP",
    ]


@pytest.mark.parametrize(("args", "reason"), [
    (["--vm-net", "10.0.3.0/24; reboot", "--host-net", "10.0.2.0/24"],
     "--vm-net: not an IP network: '10.0.3.0/24; reboot'"),
    (["--vm-net", "10.0.3.0/24", "--host-net", "10.0.2.0/24", "--bridge", "br0 -j ACCEPT"],
     "--bridge: not a network interface name: 'br0 -j ACCEPT'"),
])
def test_bad_values_are_refused(built: Path, args: list[str], reason: str) -> None:
    proc = firewall(built, *args)
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr.splitlines()[-1] == reason


def test_apply_adds_each_rule_once(built: Path, tmp_path: Path) -> None:
    iptables = tmp_path / "iptables"
    iptables.write_text(FAKE_IPTABLES)
    iptables.chmod(0o755)
    args = ["--vm-net", "10.0.3.0/24", "--host-net", "10.0.2.0/24", "--uplink", "eth0", "--apply"]
    first = firewall(built, *args, path=str(tmp_path))
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines() == [f"added: {rule}" for rule in RULES]
    second = firewall(built, *args, path=str(tmp_path))
    assert second.stdout.splitlines() == [f"present: {rule}" for rule in RULES]
    added = [c for c in Path(f"{iptables}.calls").read_text().splitlines() if not c.startswith("-C")]
    assert added == [rule.removeprefix("iptables ") for rule in RULES]
