"""The oned.conf template parser: lossless round trip, oned's lexing rules, errors, edits."""

from __future__ import annotations

from pathlib import Path

import pytest

from onevita.errors import ConfigError
from onevita.install.template import Template, parse, quote

ONEFILES = Path(__file__).resolve().parent / "onefiles"
VERSIONS = ["6.8", "6.10", "7.0", "7.2", "7.4"]
FIXTURES = [ONEFILES / v / "oned.conf" for v in VERSIONS] + [ONEFILES / "6.10" / "oned.conf.bash-driver"]


def fixture_id(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


@pytest.mark.parametrize("path", FIXTURES, ids=fixture_id)
class TestFixtures:
    def test_round_trip_is_lossless(self, path: Path) -> None:
        text = path.read_text()
        tmpl = parse(text)
        assert tmpl.serialise() == text
        # the tokens tile the text with no gap or overlap
        assert tmpl.tokens[0].start == 0 and tmpl.tokens[-1].end == len(text)
        assert all(a.end == b.start for a, b in zip(tmpl.tokens, tmpl.tokens[1:]))

    def test_blocks_we_edit_are_read(self, path: Path) -> None:
        tmpl = parse(path.read_text())
        kvm = tmpl.vector("VM_MAD", NAME="kvm")
        assert kvm is not None and kvm.get("ARGUMENTS", ).startswith("-t 15 -r 0 kvm -p")
        assert len(tmpl.find("VM_MAD")) >= 3  # kvm, qemu, lxc (and more on 6.8)
        assert tmpl.vector("VM_MAD", NAME="lxc") is not None
        tm = tmpl.vector("TM_MAD")
        assert tm is not None and " -d dummy," in (tm.get("ARGUMENTS") or "")
        ds = tmpl.vector("DATASTORE_MAD")
        assert ds is not None and " -s " in (ds.get("ARGUMENTS") or "")
        assert len(tmpl.vectors("TM_MAD_CONF")) >= 4
        assert tmpl.vector("TM_MAD_CONF", NAME="ceph") is not None
        assert tmpl.vector("DS_MAD_CONF", NAME="ceph").get("REQUIRED_ATTRS") == "DISK_TYPE,BRIDGE_LIST"
        assert "POOL_NAME" in [a.value.text for a in tmpl.singles("INHERIT_DATASTORE_ATTR")]
        assert tmpl.singles("VM_RESTRICTED_ATTR", "DISK/TOTAL_BYTES_SEC")
        assert tmpl.singles("IMAGE_RESTRICTED_ATTR", "SOURCE")
        # commented-out attributes are comments, not attributes
        assert not tmpl.singles("VM_RESTRICTED_ATTR", "RANK")
        assert not tmpl.singles("VM_RESTRICTED_ATTR", "DISK/SIZE")


def test_version_shapes() -> None:
    """The per-version differences the fixtures carry (and the editor must cope with)."""
    t68 = parse((ONEFILES / "6.8" / "oned.conf").read_text())
    actions = t68.vector("VM_MAD", NAME="kvm").get("IMPORTED_VMS_ACTIONS")
    assert actions is not None and "\n" in actions and actions.endswith("updateconf, update")
    assert t68.vector("VM_MAD", NAME="vcenter") is not None
    qcow2 = t68.vector("TM_MAD_CONF", NAME="qcow2")
    assert qcow2 is not None and qcow2.get("ALLOW_ORPHANS") == "FORMAT"
    assert "\tALLOW_ORPHANS" in t68.text[qcow2.start:qcow2.end]
    t610 = parse((ONEFILES / "6.10" / "oned.conf").read_text())
    assert t610.vector("VM_MAD", NAME="vcenter") is None  # commented out in 6.10
    t70 = parse((ONEFILES / "7.0" / "oned.conf").read_text())
    assert t70.vector("VM_MAD", NAME="kvm").get("IMPORTED_VMS_ACTIONS") is None
    assert "vcenter" not in t70.vector("TM_MAD").get("ARGUMENTS")
    assert t70.vector("SCHED_MAD") is not None
    assert [a.value.text for a in t70.singles("IMAGE_RESTRICTED_ATTR")] == ["SOURCE"]


class TestSyntax:
    def test_single_values(self) -> None:
        tmpl = parse('A = "x y"\nB=bare/path\nC = 15\n  D =   "q"  # trailing\nE =\nF = ""\n')
        got = {a.name: (a.value.text, a.value.quoted) for a in tmpl.attributes}
        assert got == {"A": ("x y", True), "B": ("bare/path", False), "C": ("15", False),
                       "D": ("q", True), "E": ("", False), "F": ("", True)}

    def test_vectors_with_comments_and_newlines(self) -> None:
        text = ('V = [ K1 = "a", # one\n'
                '  # a whole comment line\n'
                '  k2 = b\n'
                '  , K3 = "c"\n'
                '  # before the bracket\n'
                ']\n'
                'W = [\n]\n'
                'X = [ A = 1 ]\n'
                'Y = [\n  A = "v"]')
        tmpl = parse(text)
        v = tmpl.vector("V")
        assert v is not None and [(p.name, p.value.text) for p in v.pairs or ()] == [
            ("K1", "a"), ("k2", "b"), ("K3", "c")]
        assert v.get("K2") == "b"  # keys are case-insensitive, as oned upper-cases them
        assert tmpl.vector("W").pairs == ()
        assert tmpl.vector("x").get("A") == "1"
        assert tmpl.vector("Y").get("A") == "v"
        assert tmpl.serialise() == text

    def test_newlines_and_comments_between_name_and_equals(self) -> None:
        tmpl = parse('A\n  # note\n = "x"\n')
        assert tmpl.singles("A", "x")

    def test_quoted_multiline_and_escapes(self) -> None:
        tmpl = parse('A = "one\ntwo"\nB = "say \\"hi\\" \\n"\n')
        assert tmpl.singles("A")[0].value.text == "one\ntwo"
        # oned's only escape is \" ; other backslashes stay
        assert tmpl.singles("B")[0].value.text == 'say "hi" \\n'

    def test_longest_match_like_flex(self) -> None:
        # both the quoted and the bare rule match; the longer (bare) wins, quotes and all
        tmpl = parse('A = "ab"cd\n')
        value = tmpl.singles("A")[0].value
        assert value is not None and not value.quoted and value.text == '"ab"cd'

    def test_repeated_attributes_keep_order(self) -> None:
        tmpl = parse('R = "1"\nS = "x"\nR = "2"\nR = [ N = "3" ]\n')
        assert [a.line for a in tmpl.find("r")] == [1, 3, 4]
        assert [a.value.text for a in tmpl.singles("R")] == ["1", "2"]
        assert tmpl.vectors("R", N="3")

    def test_comment_at_end_without_newline(self) -> None:
        assert parse('A = "x"\n# end').serialise() == 'A = "x"\n# end'

    def test_empty_file(self) -> None:
        assert parse("").attributes == ()
        assert parse("# only\n\n").attributes == ()


@pytest.mark.parametrize(("text", "line", "words"), [
    ('A = "x"\nB = "unterminated\n', 2, "unterminated quoted value"),
    ('A = [\n  N = "x",\n  M = "y"\n', 4, "opened on line 1 is not closed"),
    ('A = [\n  N = "x"\nB = "y"\n', 3, "expected ',' or ']' in vector A (opened on line 1)"),
    ('A = [ N = "x", ]\n', 1, "expected a pair after ','"),
    ('A = [ N = [ M = 1 ] ]\n', 1, "nested vector"),
    ('A = [ N =\n "x" ]\n', 1, "A/N has no value"),
    ('A "x"\n', 1, "expected '=' after A"),
    ('A = "x"\n- B = "y"\n', 2, "unexpected character '-'"),
    ('A = "<![CDATA[x]]>"\n', 1, "']]>'"),
    ('A = ,\n', 1, "expected a value for A"),
    ('A = "x"\nB = ', 2, "expected a value for B, found end of file"),
    ('\n\nX = "a\nY = "b"\n', 4, "is a closing quote missing?"),
])
def test_errors_name_the_line(text: str, line: int, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse(text, "/etc/one/oned.conf")
    message = str(err.value)
    assert message.startswith(f"/etc/one/oned.conf: line {line}: "), message
    assert words in message


class TestEditing:
    TEXT = ('# head\n'
            'VM_MAD = [\n'
            '    NAME           = "kvm",\n'
            '    ARGUMENTS      = "-t 15 -r 0 kvm -p",  # comment\n'
            '    TYPE = kvm\n'
            ']\n'
            'VM_MAD = [ NAME = "lxc", ARGUMENTS = "-t 15 lxc" ]\n'
            'INHERIT_DATASTORE_ATTR  = "CEPH_HOST"\n'
            'INHERIT_DATASTORE_ATTR  = "POOL_NAME"\n'
            '\n'
            'LAST = 1')

    def test_find(self) -> None:
        tmpl = parse(self.TEXT)
        assert [a.get("NAME") for a in tmpl.vectors("VM_MAD")] == ["kvm", "lxc"]
        assert tmpl.vector("VM_MAD", NAME="lxc").get("arguments") == "-t 15 lxc"
        assert tmpl.vector("VM_MAD", NAME="xen") is None
        with pytest.raises(ConfigError, match="VM_MAD is defined more than once"):
            tmpl.vector("VM_MAD")

    def test_set_value_keeps_everything_else(self) -> None:
        tmpl = parse(self.TEXT)
        pair = tmpl.vector("VM_MAD", NAME="kvm").pair("ARGUMENTS")
        new = tmpl.with_value(pair.value, "-t 15 -r 0 kvm -p -l deploy=x")
        assert new.text == self.TEXT.replace('kvm -p",', 'kvm -p -l deploy=x",')
        assert new.vector("VM_MAD", NAME="kvm").get("ARGUMENTS") == "-t 15 -r 0 kvm -p -l deploy=x"

    def test_set_value_bare_stays_bare_unless_it_cannot(self) -> None:
        tmpl = parse(self.TEXT)
        value = tmpl.vector("VM_MAD", NAME="kvm").pair("TYPE").value
        assert "TYPE = qemu\n" in tmpl.with_value(value, "qemu").text
        changed = tmpl.with_value(value, 'a "b" c')
        assert 'TYPE = "a \\"b\\" c"\n' in changed.text
        assert changed.vector("VM_MAD", NAME="kvm").get("TYPE") == 'a "b" c'

    def test_set_value_refuses_what_cannot_be_written(self) -> None:
        tmpl = parse(self.TEXT)
        value = tmpl.vector("VM_MAD", NAME="kvm").pair("TYPE").value
        with pytest.raises(ConfigError):
            tmpl.with_value(value, "x]]>y")

    def test_insert_after_and_remove(self) -> None:
        tmpl = parse(self.TEXT)
        anchor = tmpl.singles("INHERIT_DATASTORE_ATTR")[-1]
        block = tmpl.render_single("INHERIT_DATASTORE_ATTR", "VITASTOR_CONF", like=anchor)
        assert block == 'INHERIT_DATASTORE_ATTR  = "VITASTOR_CONF"\n'
        new, at = tmpl.insert_after(anchor, block)
        assert new.text == self.TEXT.replace('"POOL_NAME"\n', '"POOL_NAME"\n' + block)
        assert at == self.TEXT.index('"POOL_NAME"\n') + len('"POOL_NAME"\n')
        added = new.singles("INHERIT_DATASTORE_ATTR", "VITASTOR_CONF")[0]
        assert new.remove(added).text == self.TEXT
        # a vector over several lines goes with all its lines, trailing comment included
        kvm = tmpl.vector("VM_MAD", NAME="kvm")
        assert kvm is not None
        assert tmpl.remove(kvm).text == "# head\n" + self.TEXT.split("]\n", 1)[1]
        # an attribute sharing its line keeps the rest of the line
        shared = parse('A = "1" B = "2"\n')
        assert shared.remove(shared.singles("B")[0]).text == 'A = "1"\n'

    def test_insert_at_end_without_final_newline(self) -> None:
        tmpl = parse(self.TEXT)
        new, at = tmpl.insert_after(None, 'Z = "1"\n')
        assert new.text == self.TEXT + '\nZ = "1"\n' and at == len(self.TEXT)

    def test_render_vector_follows_the_file(self) -> None:
        tmpl = parse('T = [\n  NAME="a", B="c"\n]\n')
        text = tmpl.render_vector("T", [("NAME", "v"), ("X", "y")], like=tmpl.vector("T"))
        assert text == 'T = [\n  NAME="v", X="y"\n]\n'
        long = tmpl.render_vector("T", [(f"K{i}", "value") for i in range(12)], width=40)
        assert all(len(line) <= 40 for line in long.splitlines())
        assert parse(long).vector("T").get("K11") == "value"

    def test_nodes_from_another_template_are_refused(self) -> None:
        a, b = parse('A = "x"\n'), parse('\nA = "x"\n')
        with pytest.raises(ValueError):
            b.with_value(a.singles("A")[0].value, "y")


def test_quote() -> None:
    assert quote('a"b') == '"a\\"b"'
    text = "A = " + quote('a"b') + "\n"
    assert parse(text).singles("A")[0].value.text == 'a"b'


def test_template_class_parse() -> None:
    assert Template.parse('A = "1"\n', "x.conf").source == "x.conf"
