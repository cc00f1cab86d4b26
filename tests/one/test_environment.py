"""The PATH every action runs with: extended as OpenNebula's driver scripts extend it."""

from __future__ import annotations

import os
import subprocess

import pytest

from onevita.one.environment import tool_path, use_tool_path

DEBIAN_USER_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/local/games:/usr/games"  # oneadmin's


def test_oneadmins_path_gets_the_sbin_directories_in_front() -> None:
    assert tool_path(DEBIAN_USER_PATH) == "/bin:/sbin:/usr/bin:/usr/sbin:/usr/local/bin:/usr/local/games:/usr/games"


def test_each_directory_once_and_no_empty_entries() -> None:
    assert tool_path("/opt/x::/usr/sbin:/opt/x:") == "/bin:/sbin:/usr/bin:/usr/sbin:/opt/x"


def test_unset_path() -> None:
    assert tool_path(None) == "/bin:/sbin:/usr/bin:/usr/sbin"


def test_children_inherit_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", DEBIAN_USER_PATH)
    use_tool_path()
    seen = subprocess.run(["/bin/sh", "-c", 'printf %s "$PATH"'], capture_output=True, text=True, check=True).stdout
    assert seen == os.environ["PATH"] == tool_path(DEBIAN_USER_PATH)
