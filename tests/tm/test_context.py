"""tm/context hands over to OpenNebula's stock ``tm/common/context`` (exec, same argv), run from a
copy of the built remotes tree in which that script is a recorder."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from tests.cloud import Cloud, Result

RECORDER = """#!/bin/sh
printf '%s\\n' "$0" "$@" > {record}.argv
exit {rc}
"""
ARGS = ["/var/lib/one/vms/12/context.sh", "/var/lib/one/files/init.sh:init.sh",
        "node1:/var/lib/one//datastores/100/12/disk.3", "12", "100"]


@pytest.fixture()
def remotes(built: Path, tmp_path: Path) -> Path:
    """A copy of the built remotes tree, links kept, as /var/lib/one/remotes has it."""
    tree = tmp_path / "remotes"
    subprocess.run(["rsync", "-a", f"{built}/", str(tree)], check=True)
    return tree


def stock_context(remotes: Path, record: Path, rc: int) -> Path:
    script = remotes / "tm" / "common" / "context"
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(RECORDER.format(record=record, rc=rc))
    script.chmod(0o755)
    return script


def context(cloud: Cloud, remotes: Path, *args: str) -> Result:
    argv = [str(remotes / "tm" / "vitastor" / "context"), *args]
    start = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, env=cloud.env, timeout=60, check=False)
    return Result(argv, proc.returncode, proc.stdout.decode(), proc.stderr.decode(), time.monotonic() - start)


@pytest.mark.parametrize("rc", [0, 1, 7])
def test_context_runs_the_stock_script_with_the_same_arguments(cloud: Cloud, remotes: Path, tmp_path: Path,
                                                                rc: int) -> None:
    """argv reaches tm/common/context unchanged, and its exit code is the action's."""
    record = tmp_path / "context-call"
    script = stock_context(remotes, record, rc)
    result = context(cloud, remotes, *ARGS)
    assert result.rc == rc
    assert Path(f"{record}.argv").read_text().splitlines() == [str(script), *ARGS]
    assert cloud.oned.calls == []


def test_context_without_the_stock_script_fails_clearly(cloud: Cloud, remotes: Path) -> None:
    result = context(cloud, remotes, *ARGS)
    assert (result.rc, result.reason) == (
        1, f"cannot run OpenNebula's {remotes}/tm/common/context: No such file or directory")
    assert result.errors
