"""The built artefacts: the command table, the remotes links, the synced size, the launcher."""

from __future__ import annotations

import os
import subprocess
from importlib import import_module
from pathlib import Path

from onevita.actions import ACTIONS, ADMIN, DRIVER_DIRS
from tests.cloud import REMOTES


class TestCommandTable:
    def test_every_entry_names_an_importable_function(self) -> None:
        for command, target in {**ACTIONS, **ADMIN}.items():
            module, _, func = target.partition(":")
            assert callable(getattr(import_module(module), func)), command

    def test_links_and_table_agree(self, built: Path) -> None:
        """Each driver action has exactly one link to the launcher, and nothing else is linked."""
        links = {f"{family}/{p.name}": os.readlink(p)
                 for family, directory in DRIVER_DIRS.items()
                 for p in (built / directory).iterdir()}
        assert set(links) == set(ACTIONS)
        assert set(links.values()) == {"../../onevita/onevita"}


    def test_every_action_oned_calls_is_linked(self, built: Path) -> None:
        """The driver contract's tables (opennebula-driver-contract.md §1, §2, §4): every action
        oned runs for an image datastore, a system or image TM and the kvm overrides."""
        expected = {
            "datastore": "cp clone mkfs rm stat monitor snap_delete snap_revert snap_flatten export",
            "tm": "clone ln mkimage mkswap context delete mv mvds cpds premigrate postmigrate failmigrate resize "
                  "snap_create snap_create_live snap_delete snap_revert monitor prebackup prebackup_live "
                  "postbackup postbackup_live restore",
            "vmm": "deploy.vitastor attach_disk.vitastor save.vitastor restore.vitastor",
        }
        for family, actions in expected.items():
            for action in actions.split():
                assert os.readlink(built / DRIVER_DIRS[family] / action) == "../../onevita/onevita", action


class TestRemotesTree:
    def test_rsync_L_copy_holds_the_zipapp_once(self, built: Path, tmp_path: Path) -> None:
        """OpenNebula syncs remotes with rsync -L; the copy must stay under 1.2x the zipapp."""
        subprocess.run(["rsync", "-aL", f"{built}/", str(tmp_path / "copy")], check=True)
        size = int(subprocess.run(["du", "-sb", str(tmp_path / "copy")], capture_output=True, text=True,
                                  check=True).stdout.split()[0])
        assert size < 1.2 * (built / "onevita/onevita.pyz").stat().st_size

    def test_a_copied_action_runs_like_the_link(self, built: Path, tmp_path: Path) -> None:
        subprocess.run(["rsync", "-aL", f"{built}/", str(tmp_path / "copy")], check=True)
        copy = tmp_path / "copy/tm/vitastor/mvds"
        assert not copy.is_symlink()
        proc = subprocess.run([str(copy), "h:/p/disk.0", "one-1", "x", "1"], capture_output=True, text=True)
        assert proc.returncode == 1
        assert proc.stderr.splitlines()[-1] == "VMID must be an integer, got 'x'"


class TestLauncher:
    """(Each Python of the build, and those it refuses: tests/test_pythons.py.)"""

    def test_unknown_command_fails_in_opennebula_format(self, built: Path) -> None:
        proc = subprocess.run([str(built / "onevita/onevita"), "frobnicate"], capture_output=True, text=True)
        assert proc.returncode == 1
        lines = proc.stderr.splitlines()
        assert lines[0].startswith("ERROR: frobnicate: unknown onevita command 'frobnicate'")
        assert lines[-1].startswith("unknown onevita command 'frobnicate'")

    def test_wrong_argument_count_is_a_clear_error(self, built: Path) -> None:
        proc = subprocess.run([str(built / "tm/vitastor/clone"), "only-one"], capture_output=True, text=True)
        assert proc.returncode == 1
        assert proc.stderr.splitlines()[-1] == "tm/clone: expected arguments SRC DST VM_ID DS_ID, got 1"

    def test_runs_through_the_zipapp_itself(self, built: Path) -> None:
        proc = subprocess.run(["/usr/bin/python3", str(REMOTES.parent / "onevita.pyz"), "version"], capture_output=True,
                              text=True)
        assert proc.stdout == "onevita 0.1.0\n"


