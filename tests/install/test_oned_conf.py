"""oned.conf editor: what apply adds (read back by parsing), idempotence, exact revert, check."""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any

import pytest

from onevita.errors import ConfigError
from onevita.install import oned_conf
from onevita.install.edits import Change
from onevita.install.template import Attribute, Template, parse

ONEFILES = Path(__file__).resolve().parent / "onefiles"
VERSIONS = ["6.8", "6.10", "7.0", "7.2", "7.4"]
BASH_DRIVER = ONEFILES / "6.10" / "oned.conf.bash-driver"
LOCAL = "deploy=deploy.vitastor,attach_disk=attach_disk.vitastor,save=save.vitastor,restore=restore.vitastor"


def original(version: str) -> str:
    return (ONEFILES / version / "oned.conf").read_text()


def undo_of(changes: list[Change]) -> list[dict[str, Any]]:
    """The undo data as command.py stores it: through JSON."""
    return [json.loads(json.dumps(c.undo)) for c in changes]


def arguments(tmpl: Template, name: str, **where: str) -> str:
    vec = tmpl.vector(name, **where)
    assert vec is not None
    value = vec.get("ARGUMENTS")
    assert value is not None
    return value


def option(args: str, flag: str) -> str:
    words = args.split()
    return words[len(words) - 1 - words[::-1].index(flag) + 1]


def values(tmpl: Template, name: str) -> list[str]:
    return [a.value.text for a in tmpl.singles(name) if a.value is not None]


def pairs(attr: Attribute | None) -> tuple[tuple[str, str], ...]:
    assert attr is not None
    return tuple((p.name, p.value.text) for p in attr.pairs or ())


@pytest.mark.parametrize("version", VERSIONS)
class TestVersions:
    def test_apply_adds_everything(self, version: str) -> None:
        text = original(version)
        before = parse(text)
        new_text, changes = oned_conf.apply(text)
        after = parse(new_text)  # the result parses

        # driver lists: vitastor appended, the rest untouched and in order
        for name, flag in (("TM_MAD", "-d"), ("DATASTORE_MAD", "-d"), ("DATASTORE_MAD", "-s")):
            old = option(arguments(before, name), flag).split(",")
            assert option(arguments(after, name), flag).split(",") == [*old, "vitastor"]
        assert arguments(after, "VM_MAD", NAME="kvm") == "-t 15 -r 0 kvm -p -l " + LOCAL
        assert arguments(after, "VM_MAD", NAME="qemu") == arguments(before, "VM_MAD", NAME="qemu")
        assert arguments(after, "VM_MAD", NAME="lxc") == arguments(before, "VM_MAD", NAME="lxc")

        # single lines: present once, right after the last old line of the same name
        for name, added in (("INHERIT_DATASTORE_ATTR", list(oned_conf.INHERIT)),
                            ("VM_RESTRICTED_ATTR", list(oned_conf.VM_RESTRICTED)),
                            ("IMAGE_RESTRICTED_ATTR", list(oned_conf.IMAGE_RESTRICTED))):
            old_count = len(values(before, name))
            assert values(after, name) == values(before, name) + added
            lines = [a.line for a in after.singles(name)]
            last_old = lines[old_count - 1]
            assert lines[old_count:] == list(range(last_old + 1, last_old + 1 + len(added)))
        line = 'INHERIT_DATASTORE_ATTR  = "VITASTOR_CONF"\n'  # spaced like the lines around it
        assert line in new_text

        # the vectors: values of contract §9, placed after the last block of their kind
        tm = after.vector("TM_MAD_CONF", NAME="vitastor")
        assert pairs(tm) == oned_conf.TM_MAD_CONF
        assert after.vectors("TM_MAD_CONF")[-1] is tm
        assert pairs(after.vector("DS_MAD_CONF", NAME="vitastor")) == oned_conf.DS_MAD_CONF
        assert after.vectors("DS_MAD_CONF")[-1].get("NAME") == "vitastor"
        assert tm is not None and tm.line < after.vectors("DS_MAD_CONF")[0].line
        assert '\n]\n\nTM_MAD_CONF = [\n    NAME = "vitastor", LN_TARGET = "NONE",' in new_text

        assert len(changes) == 14
        assert all(c.summary.startswith("oned.conf: ") for c in changes)
        assert {c.undo["op"] for c in changes} == {"insert", "arguments"}

    def test_only_intended_bytes_change(self, version: str) -> None:
        text = original(version)
        new_text, _ = oned_conf.apply(text)
        ops = difflib.SequenceMatcher(a=text.splitlines(True), b=new_text.splitlines(True),
                                      autojunk=False).get_opcodes()
        replaced = [(i1, i2, j1, j2) for tag, i1, i2, j1, j2 in ops if tag == "replace"]
        assert [tag for tag, *_ in ops if tag == "delete"] == []
        # the three ARGUMENTS lines are the only ones rewritten, each in place
        assert len(replaced) == 3 and all(i2 - i1 == 1 and j2 - j1 == 1 for i1, i2, j1, j2 in replaced)
        for i1, _, j1, _ in replaced:
            old_line, new_line = text.splitlines(True)[i1], new_text.splitlines(True)[j1]
            assert "ARGUMENTS" in old_line and new_line.startswith(old_line[:old_line.index('"')])

    def test_idempotent(self, version: str) -> None:
        new_text, _ = oned_conf.apply(original(version))
        assert oned_conf.apply(new_text) == (new_text, [])

    def test_revert_restores_bytes(self, version: str) -> None:
        text = original(version)
        new_text, changes = oned_conf.apply(text)
        assert oned_conf.revert(new_text, undo_of(changes)) == text
        assert oned_conf.revert(text, []) == text

    def test_revert_twice_is_harmless(self, version: str) -> None:
        text = original(version)
        new_text, changes = oned_conf.apply(text)
        once = oned_conf.revert(new_text, undo_of(changes))
        assert oned_conf.revert(once, undo_of(changes)) == text

    def test_revert_keeps_later_admin_edits(self, version: str) -> None:
        text = original(version)
        new_text, changes = oned_conf.apply(text)
        edited = new_text + '\n# added by the admin later\nINHERIT_DATASTORE_ATTR = "MY_ATTR"\n'
        assert oned_conf.revert(edited, undo_of(changes)) == (
            text + '\n# added by the admin later\nINHERIT_DATASTORE_ATTR = "MY_ATTR"\n')

    def test_check(self, version: str) -> None:
        text = original(version)
        problems = oned_conf.check(text)
        assert len(problems) == 14
        joined = "\n".join(problems)
        for piece in ("TM_MAD ARGUMENTS -d does not list vitastor",
                      "DATASTORE_MAD ARGUMENTS -d does not list vitastor",
                      "DATASTORE_MAD ARGUMENTS -s does not list vitastor",
                      "VM_MAD kvm ARGUMENTS -l lacks " + LOCAL,
                      'INHERIT_DATASTORE_ATTR = "VITASTOR_CONF" is missing',
                      'INHERIT_DATASTORE_ATTR = "IMAGE_PREFIX" is missing',
                      'VM_RESTRICTED_ATTR = "DISK/POOL_NAME" is missing',
                      'IMAGE_RESTRICTED_ATTR = "IMAGE_PREFIX" is missing',
                      'TM_MAD_CONF with NAME = "vitastor" is missing',
                      'DS_MAD_CONF with NAME = "vitastor" is missing'):
            assert piece in joined
        assert oned_conf.check(oned_conf.apply(text)[0]) == []


class TestBashDriverPatch:
    """The old bash driver's patcher already ran: its pieces are kept and not recorded."""

    def test_only_missing_pieces_are_added(self) -> None:
        text = BASH_DRIVER.read_text()
        new_text, changes = oned_conf.apply(text)
        summaries = [c.summary for c in changes]
        assert summaries[0] == ("oned.conf: VM_MAD kvm ARGUMENTS: added -l attach_disk=attach_disk.vitastor,"
                                "save=save.vitastor,restore=restore.vitastor")
        assert len(changes) == 7  # -l attach_disk, 3 VM_RESTRICTED_ATTR, 3 IMAGE_RESTRICTED_ATTR
        after = parse(new_text)
        assert option(arguments(after, "VM_MAD", NAME="kvm"), "-l") == LOCAL
        # the bash driver's lines stay where and as they were, once each
        assert values(after, "INHERIT_DATASTORE_ATTR").count("VITASTOR_CONF") == 1
        assert 'INHERIT_DATASTORE_ATTR="VITASTOR_CONF"' in new_text
        assert len(after.vectors("TM_MAD_CONF", NAME="vitastor")) == 1
        assert len(after.vectors("DS_MAD_CONF", NAME="vitastor")) == 1
        assert option(arguments(after, "TM_MAD"), "-d").split(",").count("vitastor") == 1
        assert oned_conf.check(new_text) == []
        assert oned_conf.apply(new_text) == (new_text, [])

    def test_revert_leaves_the_bash_driver_patch(self) -> None:
        text = BASH_DRIVER.read_text()
        new_text, changes = oned_conf.apply(text)
        reverted = oned_conf.revert(new_text, undo_of(changes))
        assert reverted == text
        assert option(arguments(parse(reverted), "VM_MAD", NAME="kvm"), "-l") == "deploy=deploy.vitastor"

    def test_check_reports_only_what_is_missing(self) -> None:
        problems = oned_conf.check(BASH_DRIVER.read_text())
        assert len(problems) == 7
        assert "-l lacks attach_disk=attach_disk.vitastor,save=save.vitastor,restore=restore.vitastor" in problems[0]


KVM_TEMPLATE = original("7.0")
KVM_ARGS = '"-t 15 -r 0 kvm -p"'


def with_kvm_args(args: str, text: str = KVM_TEMPLATE) -> str:
    assert text.count(KVM_ARGS) == 1
    return text.replace(KVM_ARGS, args)


class TestLocalActions:
    def test_storpool_deploy_conflict(self) -> None:
        text = with_kvm_args('"-t 15 -r 0 kvm -p -l deploy=deploy-tweaks"')
        with pytest.raises(ConfigError) as err:
            oned_conf.apply(text)
        message = str(err.value)
        assert "deploy=deploy-tweaks" in message and "deploy=deploy.vitastor" in message
        assert message.startswith("oned.conf: line ")
        # check() says it instead of raising, and still reports the other pieces
        problems = oned_conf.check(text)
        assert any("deploy-tweaks" in p for p in problems) and len(problems) == 14

    def test_bare_local_action_is_a_conflict_too(self) -> None:
        # "-l deploy" runs the stock deploy script locally: still not ours
        with pytest.raises(ConfigError, match="deploy"):
            oned_conf.apply(with_kvm_args('"-t 15 -r 0 kvm -p -l DEPLOY"'))

    def test_merge_into_existing_list(self) -> None:
        text = with_kvm_args('"-t 15 -r 0 kvm -p -l migrate=migrate_local"')
        new_text, changes = oned_conf.apply(text)
        assert arguments(parse(new_text), "VM_MAD", NAME="kvm") == "-t 15 -r 0 kvm -p -l migrate=migrate_local," + LOCAL
        assert oned_conf.revert(new_text, undo_of(changes)) == text

    def test_an_earlier_install_gets_save_and_restore(self) -> None:
        """A front-end installed before checkpoints went through local actions."""
        text = with_kvm_args('"-t 15 -r 0 kvm -p -l deploy=deploy.vitastor,attach_disk=attach_disk.vitastor"')
        new_text, changes = oned_conf.apply(text)
        assert option(arguments(parse(new_text), "VM_MAD", NAME="kvm"), "-l") == LOCAL
        assert [c.summary for c in changes][0] == (
            "oned.conf: VM_MAD kvm ARGUMENTS: added -l save=save.vitastor,restore=restore.vitastor")

    def test_another_save_override_is_a_conflict(self) -> None:
        with pytest.raises(ConfigError, match="save=save-tweaks"):
            oned_conf.apply(with_kvm_args('"-t 15 -r 0 kvm -p -l save=save-tweaks"'))

    def test_option_in_the_middle_and_long_form(self) -> None:
        text = with_kvm_args('"-t 15 -l migrate=migrate_local,poll -r 0 kvm -p"')
        new_text, _ = oned_conf.apply(text)
        assert arguments(parse(new_text), "VM_MAD", NAME="kvm") == (
            "-t 15 -l migrate=migrate_local,poll," + LOCAL + " -r 0 kvm -p")
        text = with_kvm_args('"-t 15 -r 0 kvm --local=deploy=deploy.vitastor"')
        new_text, _ = oned_conf.apply(text)
        assert arguments(parse(new_text), "VM_MAD", NAME="kvm") == "-t 15 -r 0 kvm --local=" + LOCAL

    def test_revert_after_admin_changed_the_arguments(self) -> None:
        text = original("7.4")
        new_text, changes = oned_conf.apply(text)
        edited = new_text.replace(" kvm -p -l ", " kvm -p -w 90 -l ")
        reverted = oned_conf.revert(edited, undo_of(changes))
        # the -l option install created is gone; the admin's -w stays
        assert arguments(parse(reverted), "VM_MAD", NAME="kvm") == "-t 15 -r 0 kvm -p -w 90"
        assert reverted == text.replace(" kvm -p\"", " kvm -p -w 90\"")

    def test_revert_removes_only_our_entries(self) -> None:
        text = with_kvm_args('"-t 15 -r 0 kvm -p -l migrate=migrate_local"')
        new_text, changes = oned_conf.apply(text)
        edited = new_text.replace("restore=restore.vitastor", "restore=restore.vitastor,poll=x")
        reverted = oned_conf.revert(edited, undo_of(changes))
        assert option(arguments(parse(reverted), "VM_MAD", NAME="kvm"), "-l") == "migrate=migrate_local,poll=x"

    def test_missing_kvm_driver(self) -> None:
        text = KVM_TEMPLATE.replace('NAME           = "kvm"', 'NAME           = "kvm-custom"')
        with pytest.raises(ConfigError, match='no VM_MAD kvm vector found'):
            oned_conf.apply(text)

    def test_two_kvm_drivers_are_ambiguous(self) -> None:
        text = KVM_TEMPLATE + '\nVM_MAD = [ NAME = "kvm", ARGUMENTS = "-t 1 kvm" ]\n'
        with pytest.raises(ConfigError, match="more than once"):
            oned_conf.apply(text)


class TestDriverLists:
    def test_revert_after_admin_added_a_driver(self) -> None:
        text = original("7.2")
        new_text, changes = oned_conf.apply(text)
        edited = new_text.replace("netapp,purefa,vitastor\"\n]", "netapp,purefa,vitastor,linstor\"\n]", 1)
        assert edited != new_text
        reverted = oned_conf.revert(edited, undo_of(changes))
        assert option(arguments(parse(reverted), "TM_MAD"), "-d").endswith("netapp,purefa,linstor")
        assert reverted == text.replace("netapp,purefa\"\n]", "netapp,purefa,linstor\"\n]", 1)

    def test_no_d_option_means_all_drivers(self) -> None:
        text = original("7.0")
        tm = arguments(parse(text), "TM_MAD")
        text = text.replace(tm, "-t 15")
        new_text, changes = oned_conf.apply(text)
        assert arguments(parse(new_text), "TM_MAD") == "-t 15"
        assert not any("TM_MAD ARGUMENTS" in c.summary for c in changes)

    def test_no_s_option_gets_the_defaults_plus_vitastor(self) -> None:
        text = original("7.0")
        ds = arguments(parse(text), "DATASTORE_MAD")
        text = text.replace(ds, ds.split(" -s ")[0])
        new_text, changes = oned_conf.apply(text)
        assert option(arguments(parse(new_text), "DATASTORE_MAD"), "-s") == "shared,ssh,ceph,vitastor"
        assert oned_conf.revert(new_text, undo_of(changes)) == text
        # edited since: the whole option install wrote is dropped again
        edited = new_text.replace('"-t 15 -d', '"-t 16 -d')
        assert oned_conf.revert(edited, undo_of(changes)) == text.replace('"-t 15 -d', '"-t 16 -d')

    def test_missing_datastore_mad(self) -> None:
        text = original("7.0").replace("DATASTORE_MAD = [", "DATASTORE_MAD_OFF = [")
        with pytest.raises(ConfigError, match="no DATASTORE_MAD vector found"):
            oned_conf.apply(text)
        assert any("no DATASTORE_MAD vector found" in p for p in oned_conf.check(text))


class TestInsertedBlocks:
    def test_admin_edited_our_tm_mad_conf(self) -> None:
        text = original("6.8")
        new_text, changes = oned_conf.apply(text)
        edited = new_text.replace('DISK_TYPE_SHARED = "FILE"\n]', 'DISK_TYPE_SHARED = "FILE",\n    X = "1"\n]')
        assert edited != new_text
        assert oned_conf.revert(edited, undo_of(changes)) == text

    def test_admin_removed_our_lines(self) -> None:
        text = original("6.8")
        new_text, changes = oned_conf.apply(text)
        edited = new_text.replace('INHERIT_DATASTORE_ATTR  = "IMAGE_PREFIX"\n', "")
        assert oned_conf.revert(edited, undo_of(changes)) == text

    def test_file_without_the_attributes_or_final_newline(self) -> None:
        text = ('TM_MAD = [ EXECUTABLE = "one_tm", ARGUMENTS = "-t 15 -d ceph" ]\n'
                'DATASTORE_MAD = [ EXECUTABLE = "one_datastore", ARGUMENTS = "-t 15 -d ceph -s ceph" ]\n'
                'VM_MAD = [ NAME = "kvm", ARGUMENTS = "-t 15 -r 0 kvm" ]')
        new_text, changes = oned_conf.apply(text)
        after = parse(new_text)
        assert values(after, "INHERIT_DATASTORE_ATTR") == list(oned_conf.INHERIT)
        assert pairs(after.vector("TM_MAD_CONF", NAME="vitastor")) == oned_conf.TM_MAD_CONF
        assert new_text.endswith("]\n") and oned_conf.check(new_text) == []
        assert oned_conf.revert(new_text, undo_of(changes)) == text


class TestBadFiles:
    @pytest.mark.parametrize(("damage", "words"), [
        # TM_MAD's ARGUMENTS lose their closing quote: the string runs into the next quote
        (lambda t: t.replace('netapp,purefa"\n]', 'netapp,purefa\n]', 1),
         "the quoted value starting on line {tm} runs over several lines: is a closing quote missing?"),
        (lambda t: t + '\nTM_MAD_CONF = [\n  NAME = "x",\n', "opened on line {last2} is not closed"),
        (lambda t: t + '\nTM_MAD_CONF = [\n  NAME = "x,\n', "line {last}: unterminated quoted value"),
    ])
    def test_malformed(self, damage: Any, words: str) -> None:
        text = damage(original("7.4"))
        lines = text.splitlines()
        tm = next(i for i, line in enumerate(lines, 1) if line.startswith("    ARGUMENTS = \"-t 15 -d dummy"))
        words = words.format(tm=tm, last=len(lines), last2=len(lines) - 1)
        with pytest.raises(ConfigError) as err:
            oned_conf.apply(text, source="/etc/one/oned.conf")
        assert str(err.value).startswith("/etc/one/oned.conf: line ") and words in str(err.value)
        problems = oned_conf.check(text, source="/etc/one/oned.conf")
        assert len(problems) == 1 and words in problems[0]
        with pytest.raises(ConfigError):
            oned_conf.revert(text, [])

    def test_unknown_undo_record(self) -> None:
        with pytest.raises(ConfigError, match="unknown undo record"):
            oned_conf.revert(original("7.4"), [{"op": "teleport"}])
