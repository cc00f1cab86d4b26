"""tm/context hands over to the context script OpenNebula installs for the ssh driver (exec,
same argv), in remotes trees laid out as each version's install.sh lays them, with onevita put
in by ``onevita install``, packaged and self-contained."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from tests.cloud import Result
from tests.harness.oned import OnedStandIn
from tests.harness.user import ActionUser
from tests.install.conftest import FrontEnd, frontend_env, make_frontend
from tests.onetrees import VERSIONS

RECORDER = """#!/bin/sh
printf '%s\\n' "$0" "$@" > {record}.argv
exit {rc}
"""
ARGS = ["/var/lib/one/vms/12/context.sh", "/var/lib/one/files/init.sh:init.sh",
        "node1:/var/lib/one//datastores/100/12/disk.3", "12", "100"]


@pytest.fixture(params=[(v, layout) for v in VERSIONS for layout in ("packaged", "self-contained")],
                ids=lambda p: f"{p[0]}-{p[1]}")
def installed(request: pytest.FixtureRequest, oned: OnedStandIn, tmp_path: Path, world: Path) -> FrontEnd:
    """A front-end of each version and layout with onevita installed by its own command."""
    version, layout = request.param
    one_location = "/srv/one" if layout == "self-contained" else None
    frontend = make_frontend(version, tmp_path / "root", frontend_env(oned, tmp_path, world), one_location)
    proc = frontend.onevita("install")
    assert proc.returncode == 0, proc.stderr
    return frontend


def record_at(script: Path, record: Path, rc: int) -> None:
    script.write_text(RECORDER.format(record=record, rc=rc))
    script.chmod(0o755)


def context(frontend: FrontEnd, *args: str) -> Result:
    """Run the installed tm/vitastor/context as oned runs it: as the action user, Debian's PATH."""
    argv = [str(frontend.remotes / "tm" / "vitastor" / "context"), *args]
    start = time.monotonic()
    user = ActionUser.lookup()
    user.give(frontend.root.parent)  # the test's directory, as oneadmin owns OpenNebula's
    proc = subprocess.run(argv, capture_output=True, env={**frontend.env, **user.environment()}, timeout=60,
                          check=False, **user.credentials())
    return Result(argv, proc.returncode, proc.stdout.decode(), proc.stderr.decode(), time.monotonic() - start)


@pytest.mark.parametrize("rc", [0, 7])
def test_context_runs_the_installed_ssh_context_script(installed: FrontEnd, rc: int) -> None:
    """argv reaches tm/ssh/context unchanged, and its exit code is the action's."""
    script = installed.remotes / "tm" / "ssh" / "context"
    record_at(script, installed.root / "call", rc)
    result = context(installed, *ARGS)
    assert result.rc == rc, result.stderr
    assert (installed.root / "call.argv").read_text().splitlines() == [str(script), *ARGS]


def test_no_tm_common_in_any_installed_tree(installed: FrontEnd) -> None:
    """What broke every VM with CONTEXT: the script onevita ran exists only in OpenNebula's source."""
    assert not (installed.remotes / "tm" / "common").exists()
    assert (installed.remotes / "tm" / "ssh" / "context").exists()


def test_without_any_context_script_it_fails_clearly(oned: OnedStandIn, tmp_path: Path, world: Path) -> None:
    frontend = make_frontend("7.0", tmp_path / "root", frontend_env(oned, tmp_path, world))
    assert frontend.onevita("install").returncode == 0
    for driver in ("ssh", "shared", "ceph"):
        (frontend.remotes / "tm" / driver / "context").unlink()
    result = context(frontend, *ARGS)
    tm = frontend.remotes / "tm"
    assert (result.rc, result.reason) == (
        1, f"no OpenNebula context script in this remotes tree (looked for {tm}/ssh/context, "
           f"{tm}/shared/context, {tm}/ceph/context)")
    assert result.errors
