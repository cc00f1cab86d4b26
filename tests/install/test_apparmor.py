"""The AppArmor editor: read rules for vitastor.conf paths in libvirt's local qemu abstraction
(created when missing), rules already there (the bash driver's quoted one), exact round trip,
refused paths, and in_use() on a scratch root."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from onevita.errors import ConfigError
from onevita.install import apparmor
from onevita.install.edits import Change

CONF = "/etc/vitastor/vitastor.conf"
OTHER = "/etc/vitastor/cluster-b.conf"
# what libvirt-daemon-system's postinst leaves, plus a site rule an admin added
SITE = "# Site-specific additions and overrides for 'abstractions/libvirt-qemu'\n  /srv/iso/** r,\n"


def undo_of(changes: list[Change]) -> list[dict[str, object]]:
    return [orjson.loads(orjson.dumps(c.undo)) for c in changes]


@pytest.mark.parametrize("text", ["", SITE, "  /srv/iso/** r,"], ids=["missing", "site", "no-final-newline"])
class TestApply:
    def test_adds_one_rule_per_path(self, text: str) -> None:
        new, changes = apparmor.apply(text, [CONF, OTHER, CONF])
        assert new == text + ("\n" if text and not text.endswith("\n") else "") + f"  {CONF} r,\n  {OTHER} r,\n"
        assert [c.summary for c in changes] == [f"AppArmor: qemu may read {CONF}", f"AppArmor: qemu may read {OTHER}"]

    def test_idempotent(self, text: str) -> None:
        new, _ = apparmor.apply(text, [CONF, OTHER])
        assert apparmor.apply(new, [CONF, OTHER]) == (new, [])

    def test_revert_gives_the_original_bytes(self, text: str) -> None:
        new, changes = apparmor.apply(text, [CONF, OTHER])
        assert apparmor.revert(new, undo_of(changes)) == text

    def test_check_before_and_after(self, text: str) -> None:
        assert apparmor.check(text, [CONF]) == [f"no read rule for {CONF}, so qemu cannot open Vitastor disks "
                                                "using it"]
        assert apparmor.check(apparmor.apply(text, [CONF, OTHER])[0], [CONF, OTHER]) == []

    def test_a_second_install_for_a_new_datastore(self, text: str) -> None:
        first, changes1 = apparmor.apply(text, [CONF])
        second, changes2 = apparmor.apply(first, [CONF, OTHER])
        assert second == first + f"  {OTHER} r,\n" and len(changes2) == 1
        assert apparmor.revert(second, undo_of(changes1 + changes2)) == text


class TestExistingRules:
    @pytest.mark.parametrize("rule", [
        f'  "{CONF}" r,',  # the bash driver's install.sh
        f"  {CONF} r,",
        f"  owner {CONF} rw,",
        f"  audit file {CONF} r, # comment",
        f"  r {CONF},",
    ])
    def test_counts_as_present(self, rule: str) -> None:
        text = SITE + rule + "\n"
        assert apparmor.apply(text, [CONF]) == (text, [])
        assert apparmor.check(text, [CONF]) == []
        assert apparmor.revert(text, []) == text

    @pytest.mark.parametrize("rule", [f"  # {CONF} r,", f"  {CONF} w,", f"  {CONF}.bak r,", f"  {CONF}x r,"])
    def test_does_not_count(self, rule: str) -> None:
        text = SITE + rule + "\n"
        new, changes = apparmor.apply(text, [CONF])
        assert new == text + f"  {CONF} r,\n" and len(changes) == 1

    def test_the_bash_drivers_line_stays_on_revert(self) -> None:
        text = f'  "{CONF}" r,\n'
        new, changes = apparmor.apply(text, [CONF, OTHER])
        assert apparmor.revert(new, undo_of(changes)) == text


class TestRevertTolerance:
    def test_line_removed_by_hand(self) -> None:
        _, changes = apparmor.apply(SITE, [CONF])
        assert apparmor.revert(SITE, undo_of(changes)) == SITE

    def test_lines_the_admin_added_after_ours_stay(self) -> None:
        new, changes = apparmor.apply("  /srv/iso/** r,", [CONF])
        edited = new + "  /srv/more/** r,\n"
        assert apparmor.revert(edited, undo_of(changes)) == "  /srv/iso/** r,\n  /srv/more/** r,\n"

    def test_only_our_copy_goes_when_the_admin_duplicated_it(self) -> None:
        new, changes = apparmor.apply(SITE, [CONF])
        edited = f"  {CONF} r,\n" + new
        assert apparmor.revert(edited, undo_of(changes)) == f"  {CONF} r,\n" + SITE

    def test_unknown_undo_record(self) -> None:
        with pytest.raises(ConfigError, match="unknown undo record"):
            apparmor.revert(SITE, [{"op": "other"}])


@pytest.mark.parametrize("path", [
    "etc/vitastor/vitastor.conf", "/etc/vitastor/my conf", '/etc/"x"', "/etc/it's", "/etc/a,b",
    "/etc/*.conf", "/etc/{a,b}", "/etc/x?", "/etc/[ab]", "/etc/a\n  /** rw", "/etc/a\tb", "@{HOME}/x",
    "/etc/../shadow", "/etc/./x", "/", "", "/etc/vitastor/",
])
def test_refused_paths(path: str) -> None:
    with pytest.raises(ConfigError, match=r"^AppArmor: refusing a read rule for "):
        apparmor.apply(SITE, [CONF, path])
    problems = apparmor.check(SITE, [path])
    assert len(problems) == 1 and problems[0].startswith("refusing a read rule for ")


class TestInUse:
    def make(self, root: Path, enabled: str | None, abstraction: bool) -> str:
        if enabled is not None:
            params = root / "sys/module/apparmor/parameters"
            params.mkdir(parents=True)
            (params / "enabled").write_text(enabled)
        if abstraction:
            (root / "etc/apparmor.d/abstractions").mkdir(parents=True)
            (root / "etc/apparmor.d/abstractions/libvirt-qemu").write_text(
                "  #include <local/abstractions/libvirt-qemu>\n")
        return str(root)

    @pytest.mark.parametrize(("enabled", "abstraction", "expected"), [
        ("Y\n", True, True), ("N\n", True, False), (None, True, False), ("Y\n", False, False),
    ])
    def test_in_use(self, enabled: str | None, abstraction: bool, expected: bool, tmp_path: Path) -> None:
        assert apparmor.in_use(self.make(tmp_path, enabled, abstraction)) is expected
