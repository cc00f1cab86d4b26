"""The vmm_execrc editor on files shaped like OpenNebula 6.8 to 7.4: kvm-vitastor joins
LIVE_DISK_SNAPSHOTS (as bash reads it), idempotence, exact round trip, the bash driver's patch,
admin edits after install, and values it must refuse."""

from __future__ import annotations

import subprocess
from pathlib import Path

import orjson
import pytest

from onevita.errors import ConfigError
from onevita.install import vmm_execrc
from onevita.install.edits import Change
from tests.install.conftest import ONEFILES, VERSIONS

ITEM = "kvm-vitastor"


def original(version: str) -> str:
    return (ONEFILES / version / "vmm_execrc").read_text()


def live_disk_snapshots(text: str, tmp_path: Path) -> list[str]:
    """The list as one_vmm_exec gets it: the file sourced by bash, the value split on whitespace."""
    rc = tmp_path / "vmm_execrc"
    rc.write_text(text)
    proc = subprocess.run(["bash", "-c", '. "$1" && printf "%s" "$LIVE_DISK_SNAPSHOTS"', "bash", str(rc)],
                          capture_output=True, text=True, check=True)
    return proc.stdout.split()


def undo_of(changes: list[Change]) -> list[dict[str, object]]:
    # through JSON, as command.py keeps them in its state file
    return [orjson.loads(orjson.dumps(c.undo)) for c in changes]


@pytest.mark.parametrize("version", VERSIONS)
class TestVersions:
    def test_apply_appends_kvm_vitastor(self, version: str, tmp_path: Path) -> None:
        text = original(version)
        new, changes = vmm_execrc.apply(text)
        assert live_disk_snapshots(new, tmp_path) == live_disk_snapshots(text, tmp_path) + [ITEM]
        assert len(changes) == 1 and changes[0].summary.startswith("vmm_execrc: ")
        old_lines, new_lines = text.splitlines(), new.splitlines()
        changed = [i for i, (a, b) in enumerate(zip(old_lines, new_lines)) if a != b]
        assert len(old_lines) == len(new_lines) and len(changed) == 1
        assert new_lines[changed[0]] == old_lines[changed[0]][:-1] + f' {ITEM}"'

    def test_idempotent(self, version: str) -> None:
        new, _ = vmm_execrc.apply(original(version))
        assert vmm_execrc.apply(new) == (new, [])

    def test_revert_gives_the_original_bytes(self, version: str) -> None:
        text = original(version)
        new, changes = vmm_execrc.apply(text)
        assert vmm_execrc.revert(new, undo_of(changes)) == text

    def test_check_before_and_after(self, version: str) -> None:
        text = original(version)
        assert vmm_execrc.check(text) == [
            "LIVE_DISK_SNAPSHOTS lacks kvm-vitastor, so OpenNebula refuses disk snapshots of running VMs "
            "on Vitastor"]
        assert vmm_execrc.check(vmm_execrc.apply(text)[0]) == []

    def test_the_bash_drivers_patch_is_kept_and_not_recorded(self, version: str, tmp_path: Path) -> None:
        """Its diff puts kvm-vitastor after kvm-ceph; that counts as done."""
        patched = original(version).replace("kvm-ceph ", f"kvm-ceph {ITEM} ", 1)
        assert vmm_execrc.apply(patched) == (patched, [])
        assert vmm_execrc.check(patched) == []
        assert vmm_execrc.revert(patched, []) == patched
        assert ITEM in live_disk_snapshots(patched, tmp_path)

    def test_missing_line(self, version: str) -> None:
        text = "".join(line for line in original(version).splitlines(keepends=True)
                       if not line.startswith("LIVE_DISK_SNAPSHOTS="))
        with pytest.raises(ConfigError, match=r"^vmm_execrc: no LIVE_DISK_SNAPSHOTS="):
            vmm_execrc.apply(text)
        assert vmm_execrc.check(text)[0].startswith("no LIVE_DISK_SNAPSHOTS=")


class TestValueForms:
    @pytest.mark.parametrize(("text", "expected"), [
        ('LIVE_DISK_SNAPSHOTS="kvm-qcow2"\n', f'LIVE_DISK_SNAPSHOTS="kvm-qcow2 {ITEM}"\n'),
        ("LIVE_DISK_SNAPSHOTS='kvm-qcow2 kvm-ceph'\n", f"LIVE_DISK_SNAPSHOTS='kvm-qcow2 kvm-ceph {ITEM}'\n"),
        ('export LIVE_DISK_SNAPSHOTS="kvm-ceph"\n', f'export LIVE_DISK_SNAPSHOTS="kvm-ceph {ITEM}"\n'),
        ('LIVE_DISK_SNAPSHOTS=""\n', f'LIVE_DISK_SNAPSHOTS="{ITEM}"\n'),
        ('LIVE_DISK_SNAPSHOTS="kvm-ceph "\n', f'LIVE_DISK_SNAPSHOTS="kvm-ceph {ITEM}"\n'),
        ("LIVE_DISK_SNAPSHOTS=kvm-ceph\n", f'LIVE_DISK_SNAPSHOTS="kvm-ceph {ITEM}"\n'),
        ("LIVE_DISK_SNAPSHOTS=\n", f'LIVE_DISK_SNAPSHOTS="{ITEM}"\n'),
        ('LIVE_DISK_SNAPSHOTS="kvm-ceph" # site list\n', f'LIVE_DISK_SNAPSHOTS="kvm-ceph {ITEM}" # site list\n'),
        ('LIVE_DISK_SNAPSHOTS="kvm-qcow2 \\\n    kvm-ceph"\nX=1\n',
         f'LIVE_DISK_SNAPSHOTS="kvm-qcow2 \\\n    kvm-ceph {ITEM}"\nX=1\n'),
        ('LIVE_DISK_SNAPSHOTS="kvm-ceph"', f'LIVE_DISK_SNAPSHOTS="kvm-ceph {ITEM}"'),
    ])
    def test_forms(self, text: str, expected: str, tmp_path: Path) -> None:
        new, changes = vmm_execrc.apply(text)
        assert new == expected
        assert live_disk_snapshots(new, tmp_path)[-1] == ITEM
        assert vmm_execrc.revert(new, undo_of(changes)) == text
        assert vmm_execrc.apply(new) == (new, [])

    def test_the_last_assignment_is_the_one_bash_keeps(self, tmp_path: Path) -> None:
        text = ('LIVE_DISK_SNAPSHOTS="kvm-qcow2"\n# LIVE_DISK_SNAPSHOTS="commented"\n'
                'LIVE_DISK_SNAPSHOTS="kvm-ceph"\n#LIVE_DISK_SNAPSHOTS="x"\n')
        new, changes = vmm_execrc.apply(text)
        assert new == text.replace('"kvm-ceph"', f'"kvm-ceph {ITEM}"')
        assert live_disk_snapshots(new, tmp_path) == ["kvm-ceph", ITEM]
        assert vmm_execrc.revert(new, undo_of(changes)) == text

    def test_a_longer_word_is_not_ours(self) -> None:
        text = f'LIVE_DISK_SNAPSHOTS="{ITEM}-x kvm-ceph"\n'
        assert vmm_execrc.apply(text)[0] == f'LIVE_DISK_SNAPSHOTS="{ITEM}-x kvm-ceph {ITEM}"\n'

    @pytest.mark.parametrize(("text", "message"), [
        ('LIVE_DISK_SNAPSHOTS="kvm-ceph\n', r"^vmm_execrc line 1: the LIVE_DISK_SNAPSHOTS value has no closing \""),
        ('X=1\nLIVE_DISK_SNAPSHOTS="kvm-ceph"x\n', r"^vmm_execrc line 2: cannot read the LIVE_DISK_SNAPSHOTS value"),
        ('LIVE_DISK_SNAPSHOTS=$DEFAULTS" kvm-ceph"\n', r"^vmm_execrc line 1: cannot read"),
        ('  LIVE_DISK_SNAPSHOTS="kvm-ceph"\n', r"^vmm_execrc: no LIVE_DISK_SNAPSHOTS="),
        ('# LIVE_DISK_SNAPSHOTS="kvm-ceph"\n', r"^vmm_execrc: no LIVE_DISK_SNAPSHOTS="),
        ("", r"^vmm_execrc: no LIVE_DISK_SNAPSHOTS="),
    ])
    def test_malformed(self, text: str, message: str) -> None:
        with pytest.raises(ConfigError, match=message):
            vmm_execrc.apply(text)
        assert len(vmm_execrc.check(text)) == 1


class TestRevertAfterAdminEdits:
    def test_a_word_added_after_install_stays(self) -> None:
        text = original("7.0")
        new, changes = vmm_execrc.apply(text)
        edited = new.replace(f'{ITEM}"', f'{ITEM} kvm-mine"')
        assert vmm_execrc.revert(edited, undo_of(changes)) == text.replace('qemu-netapp"', 'qemu-netapp kvm-mine"')

    def test_our_word_moved_by_the_admin_is_still_taken_out(self) -> None:
        text = 'LIVE_DISK_SNAPSHOTS="kvm-qcow2 kvm-ceph"\n'
        _, changes = vmm_execrc.apply(text)
        moved = f'LIVE_DISK_SNAPSHOTS="{ITEM} kvm-qcow2 kvm-ceph"\n'
        assert vmm_execrc.revert(moved, undo_of(changes)) == text

    def test_already_removed_by_hand(self) -> None:
        text = original("6.8")
        _, changes = vmm_execrc.apply(text)
        assert vmm_execrc.revert(text, undo_of(changes)) == text

    def test_line_gone(self) -> None:
        _, changes = vmm_execrc.apply(original("6.8"))
        assert vmm_execrc.revert("# emptied\n", undo_of(changes)) == "# emptied\n"

    def test_unknown_undo_record(self) -> None:
        with pytest.raises(ConfigError, match="unknown undo record"):
            vmm_execrc.revert(original("6.8"), [{"op": "something_else"}])
