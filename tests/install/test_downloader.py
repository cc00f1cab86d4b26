"""The downloader.sh editor on files shaped like OpenNebula 6.8 to 7.4 (and 6.10 with the Vitastor
bash driver's patch): where the vitastor:// arm goes, idempotence, exact round trip, refusals;
then the edited script run by bash with a stand-in launcher, for the bytes and for URLs built to
break out of the shell."""

from __future__ import annotations

import hashlib
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from onevita.errors import ConfigError
from onevita.install import downloader
from onevita.install.edits import Change
from tests.install.conftest import ONEFILES, VERSIONS

CASE = 'case "$FROM" in\n'
BASH_DRIVER = ONEFILES / "6.10" / "downloader.sh.bash-driver"
BASH_ARM = 'vitastor://*)\n    command="$(get_vitastor_cmd "$FROM")"\n    ;;\n'
RBD_ARM = 'rbd://*)\n    command="$(get_rbd_cmd "$FROM")"\n    ;;\n'


def original(version: str) -> str:
    return (ONEFILES / version / "downloader.sh").read_text()


def undo_of(changes: list[Change]) -> list[dict[str, object]]:
    # through JSON, as command.py keeps them in its state file
    return [orjson.loads(orjson.dumps(c.undo)) for c in changes]


def bash_syntax_ok(text: str, tmp_path: Path) -> bool:
    script = tmp_path / "syntax.sh"
    script.write_text(text)
    return subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0


@pytest.mark.parametrize("version", VERSIONS)
class TestVersions:
    def test_apply_puts_the_arm_first_in_the_case(self, version: str, tmp_path: Path) -> None:
        text = original(version)
        new, changes = downloader.apply(text)
        assert new == text.replace(CASE, CASE + downloader.ARM, 1)
        assert len(changes) == 1 and changes[0].summary.startswith("downloader.sh: ")
        assert bash_syntax_ok(new, tmp_path)

    def test_idempotent(self, version: str) -> None:
        new, _ = downloader.apply(original(version))
        assert downloader.apply(new) == (new, [])

    def test_revert_gives_the_original_bytes(self, version: str) -> None:
        text = original(version)
        new, changes = downloader.apply(text)
        assert downloader.revert(new, undo_of(changes)) == text

    def test_check_before_and_after(self, version: str) -> None:
        text = original(version)
        assert downloader.check(text) == ["no vitastor:// case, so importing Vitastor marketplace apps fails"]
        assert downloader.check(downloader.apply(text)[0]) == []

    def test_no_case_statement(self, version: str) -> None:
        text = original(version).replace(CASE, 'case "$URL" in\n')
        with pytest.raises(ConfigError, match=r'^downloader.sh: no `case "\$FROM" in` statement'):
            downloader.apply(text)
        assert downloader.check(text) == ['no `case "$FROM" in` statement choosing the command per URL scheme']

    def test_unknown_vitastor_arm(self, version: str) -> None:
        text = original(version).replace(CASE, CASE + 'vitastor://*)\n    command="my-own $FROM"\n    ;;\n')
        line = text[:text.index("vitastor://")].count("\n") + 1
        with pytest.raises(ConfigError, match=rf"^downloader.sh line {line}: a vitastor:// case onevita does not"):
            downloader.apply(text)
        assert downloader.check(text) == [f"line {line}: a vitastor:// case onevita does not know"]


class TestBashDriverPatch:
    """6.10 with the bash driver's downloader-vitastor.sh.diff applied."""

    def test_its_arm_and_function_are_replaced(self, tmp_path: Path) -> None:
        text = BASH_DRIVER.read_text()
        new, changes = downloader.apply(text)
        assert "get_vitastor_cmd" not in new
        assert new == original("6.10").replace(RBD_ARM, RBD_ARM + downloader.ARM)
        assert [c.undo["op"] for c in changes] == ["replace_bash_driver_arm"]
        assert "bash driver" in changes[0].summary
        assert bash_syntax_ok(new, tmp_path)
        assert downloader.apply(new) == (new, [])

    def test_revert_gives_the_bash_drivers_bytes_back(self) -> None:
        text = BASH_DRIVER.read_text()
        new, changes = downloader.apply(text)
        assert downloader.revert(new, undo_of(changes)) == text

    def test_check(self) -> None:
        problems = downloader.check(BASH_DRIVER.read_text())
        assert len(problems) == 1 and "bash driver's get_vitastor_cmd" in problems[0]

    def test_a_function_still_used_elsewhere_stays(self) -> None:
        text = BASH_DRIVER.read_text().replace("FROM=\"$1\"\nTO=\"$2\"\n",
                                               "FROM=\"$1\"\nTO=\"$2\"\n# see get_vitastor_cmd\n")
        new, changes = downloader.apply(text)
        assert "function get_vitastor_cmd\n" in new and BASH_ARM not in new
        assert changes[0].undo["function"] == ""
        assert downloader.revert(new, undo_of(changes)) == text

    def test_function_put_back_before_the_case_when_its_neighbour_changed(self, tmp_path: Path) -> None:
        text = BASH_DRIVER.read_text()
        new, changes = downloader.apply(text)
        edited = new.replace("# True when version $1 <= version $2 (sort -V)\n", "# reworded by the admin\n")
        reverted = downloader.revert(edited, undo_of(changes))
        assert reverted.count("function get_vitastor_cmd\n") == 1
        assert reverted.index("function get_vitastor_cmd\n") < reverted.index(CASE)
        assert BASH_ARM in reverted and downloader.ARM not in reverted
        assert bash_syntax_ok(reverted, tmp_path)


class TestRevertTolerance:
    def test_arm_already_removed_by_hand(self) -> None:
        text = original("7.0")
        _, changes = downloader.apply(text)
        assert downloader.revert(text, undo_of(changes)) == text

    def test_admin_edits_elsewhere_survive(self) -> None:
        text = original("7.4")
        new, changes = downloader.apply(text)
        edited = new.replace("INTERACTIVE=false\n", "INTERACTIVE=false\nexport LC_ALL=C\n")
        assert downloader.revert(edited, undo_of(changes)) == text.replace(
            "INTERACTIVE=false\n", "INTERACTIVE=false\nexport LC_ALL=C\n")

    def test_unknown_undo_record(self) -> None:
        with pytest.raises(ConfigError, match="unknown undo record"):
            downloader.revert(original("7.0"), [{"op": "other"}])


class TestMalformed:
    def test_no_esac(self) -> None:
        text = original("7.2").replace("\nesac\n", "\n")
        with pytest.raises(ConfigError, match=r"has no `esac`"):
            downloader.apply(text)

    def test_two_case_statements(self) -> None:
        text = original("7.2") + CASE + "*)\n    ;;\nesac\n"
        with pytest.raises(ConfigError, match=r'two `case "\$FROM" in` statements'):
            downloader.apply(text)

    def test_two_vitastor_arms(self) -> None:
        text = downloader.apply(BASH_DRIVER.read_text())[0].replace(RBD_ARM, RBD_ARM + BASH_ARM)
        with pytest.raises(ConfigError, match="two vitastor:// cases"):
            downloader.apply(text)

    def test_arm_without_end(self) -> None:
        text = original("6.8").replace(CASE, CASE + "vitastor://*)\n    command=x\n")
        text = text[:text.index("http://*|https://*)")] + "esac\n"
        with pytest.raises(ConfigError, match="the vitastor:// case has no `;;`"):
            downloader.apply(text)

    def test_a_string_mentioning_vitastor_is_not_an_arm(self) -> None:
        text = original("6.8").replace('    command="curl $curl_args"\n',
                                       '    command="curl $curl_args"\n    echo "vitastor://x)"\n')
        new, changes = downloader.apply(text)
        assert len(changes) == 1 and downloader.check(new) == []


PAYLOAD = b"\x1f\x8b\x08\x00" + bytes(range(256)) * 300 + b"\n" * 2000 + b"tail"  # gzip magic: never sniffed

FAKE_LAUNCHER = """#!/bin/bash
# stands in for <remotes>/onevita/onevita: records its argv (NUL-separated) and how often it ran
printf '%s\\0' "$@" > "$ONEVITA_TEST_ARGV"
echo run >> "$ONEVITA_TEST_RUNS"
[ -n "$ONEVITA_TEST_FAIL" ] && { echo "onevita: no such image" >&2; exit 1; }
cat "$ONEVITA_TEST_PAYLOAD"
"""


@dataclass
class Remotes:
    """A self-contained OpenNebula (ONE_LOCATION) with downloader.sh and a stand-in launcher."""

    location: Path
    script: Path
    env: dict[str, str]
    argv_file: Path
    runs_file: Path
    pwn: Path

    def run(self, *args: str, cwd: Path | None = None, script: str | None = None,
            **env: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([script or str(self.script), *args], capture_output=True, cwd=cwd,
                              env={**self.env, **env}, timeout=60)

    def argv(self) -> list[str]:
        return self.argv_file.read_bytes().decode().split("\0")[:-1]

    def runs(self) -> int:
        return len(self.runs_file.read_text().splitlines()) if self.runs_file.exists() else 0


def make_remotes(text: str, tmp_path: Path) -> Remotes:
    location = tmp_path / "one"
    (location / "lib/sh").mkdir(parents=True)
    (location / "lib/sh/scripts_common.sh").write_text("# stand-in: nothing the copy path needs\n")
    script = location / "var/remotes/datastore/downloader.sh"
    script.parent.mkdir(parents=True)
    script.write_text(text)
    script.chmod(0o755)
    launcher = location / "var/remotes/onevita/onevita"
    launcher.parent.mkdir(parents=True)
    launcher.write_text(FAKE_LAUNCHER)
    launcher.chmod(0o755)
    (location / "var/remotes/market/one").mkdir(parents=True)
    payload = tmp_path / "payload"
    payload.write_bytes(PAYLOAD)
    pwn = tmp_path / "pwn"
    pwn.mkdir()
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "ONE_LOCATION": str(location),
           "ONEVITA_TEST_ARGV": str(tmp_path / "argv"), "ONEVITA_TEST_RUNS": str(tmp_path / "runs"),
           "ONEVITA_TEST_PAYLOAD": str(payload)}
    return Remotes(location, script, env, tmp_path / "argv", tmp_path / "runs", pwn)


@pytest.fixture(params=VERSIONS)
def patched(request: pytest.FixtureRequest, tmp_path: Path) -> Remotes:
    """Each version's downloader.sh as install leaves it."""
    return make_remotes(downloader.apply(original(request.param))[0], tmp_path)


URL = "vitastor://node1/one-12?VITASTOR_CONF=/etc/vitastor/vitastor.conf"


class TestRunVitastorURL:
    def test_the_bytes_reach_the_file(self, patched: Remotes, tmp_path: Path) -> None:
        out = tmp_path / "image"
        proc = patched.run(URL, str(out))
        assert proc.returncode == 0, proc.stderr
        assert out.read_bytes() == PAYLOAD
        assert patched.argv() == ["download", URL]
        assert patched.runs() == 1  # no second run to sniff the type

    def test_to_stdout(self, patched: Remotes) -> None:
        proc = patched.run(URL, "-")
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == PAYLOAD

    def test_md5_checked(self, patched: Remotes, tmp_path: Path) -> None:
        good = hashlib.md5(PAYLOAD).hexdigest()
        assert patched.run("--md5", good, URL, str(tmp_path / "a")).returncode == 0
        bad = patched.run("--md5", "0" * 32, URL, str(tmp_path / "b"))
        assert bad.returncode != 0 and b"Hash does not match" in bad.stderr

    def test_a_failed_download_fails(self, patched: Remotes, tmp_path: Path) -> None:
        proc = patched.run(URL, str(tmp_path / "image"), ONEVITA_TEST_FAIL="1")
        assert proc.returncode != 0
        assert b"onevita: no such image" in proc.stderr and b"Error copying" in proc.stderr

    def test_run_through_a_relative_or_roundabout_path(self, patched: Remotes, tmp_path: Path) -> None:
        """$0 as the market drivers (…/market/one/../../datastore/downloader.sh) or a shell gives it."""
        roundabout = str(patched.location / "var/remotes/market/one/../../datastore/downloader.sh")
        proc = patched.run(URL, str(tmp_path / "a"), script=roundabout)
        assert proc.returncode == 0, proc.stderr
        proc = patched.run(URL, str(tmp_path / "b"), cwd=patched.script.parent, script="./downloader.sh")
        assert proc.returncode == 0, proc.stderr
        assert (tmp_path / "b").read_bytes() == PAYLOAD

    def test_a_plain_file_still_copies(self, patched: Remotes, tmp_path: Path) -> None:
        source = tmp_path / "plain.img"
        source.write_bytes(b"plain bytes\n")
        proc = patched.run(str(source), str(tmp_path / "copy"))
        assert proc.returncode == 0, proc.stderr
        assert (tmp_path / "copy").read_bytes() == b"plain bytes\n"
        assert patched.runs() == 0


HOSTILE = [
    "vitastor://node1/img$(touch {pwn}/dollar)",
    "vitastor://node1/img`touch {pwn}/backtick`",
    "vitastor://node1/img;touch {pwn}/semicolon;",
    "vitastor://node1/it's a \"quoted\" name ?VITASTOR_CONF=/etc/my conf",
    "vitastor://node1/x' ; touch {pwn}/single ; '",
    'vitastor://node1/x" ; touch {pwn}/double ; "',
    "vitastor://node1/x|touch {pwn}/pipe&touch {pwn}/amp>{pwn}/redirect",
    "vitastor://node1/x\ntouch {pwn}/newline",
    "vitastor://node1/*",
    "vitastor://node1/$HOME/${{PATH}}/\\n",
]


@pytest.mark.parametrize("template", HOSTILE)
@pytest.mark.parametrize("version", VERSIONS)
def test_a_hostile_url_is_one_literal_argument(version: str, template: str, tmp_path: Path) -> None:
    remotes = make_remotes(downloader.apply(original(version))[0], tmp_path)
    url = template.format(pwn=remotes.pwn)
    out = tmp_path / "image"
    proc = remotes.run(url, str(out))
    assert proc.returncode == 0, proc.stderr
    assert remotes.argv() == ["download", url]
    assert list(remotes.pwn.iterdir()) == []
    assert out.read_bytes() == PAYLOAD


@pytest.mark.parametrize("version", VERSIONS)
def test_unpatched_copy_runs(version: str, tmp_path: Path) -> None:
    """The test copies themselves run a plain file copy, as the real ones do."""
    remotes = make_remotes(original(version), tmp_path)
    source = tmp_path / "plain.img"
    source.write_bytes(PAYLOAD[4:])
    proc = remotes.run(str(source), str(tmp_path / "copy"))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "copy").read_bytes() == PAYLOAD[4:]


def test_the_bash_drivers_arm_needs_url_rb(tmp_path: Path) -> None:
    """What onevita replaces: without url.rb (or with a URL it cannot parse) the bash driver's arm
    builds an ssh command with an empty host."""
    remotes = make_remotes(BASH_DRIVER.read_text(), tmp_path)
    proc = remotes.run("vitastor://node1/one-12", str(tmp_path / "image"))
    assert proc.returncode != 0
    assert remotes.runs() == 0
