"""onevita.vmm.kvmrc: kvmrc read as KEY=value lines, never sourced; the remotes' VERSION."""

from __future__ import annotations

from pathlib import Path

import pytest

from onevita.errors import ConfigError
from onevita.vmm.kvmrc import NEWEST, load_kvmrc, opennebula_release, parse_kvmrc

# shaped like the kvmrc OpenNebula ships (exports, comments, commented-out defaults), plus the
# quoting an admin may use
KVMRC = """export LANG=C

export LIBVIRT_URI=qemu:///system
# Seconds to wait after shutdown until timeout
export SHUTDOWN_TIMEOUT=180
DEFAULT_ATTACH_CACHE=none
#DEFAULT_ATTACH_IO=
DEFAULT_ATTACH_DISCARD='unmap'   # trailing comment
  DEFAULT_ATTACH_IO="native"
DEFAULT_ATTACH_TOTAL_BYTES_SEC=10"0"'0'
DEFAULT_ATTACH_SIZE_IOPS_SEC=
VIRTIOFSD_BINARY_PATH="/usr/libexec/virtiofsd /usr/lib/qemu/virtiofsd"
DEFAULT_ATTACH_READ_BYTES_SEC=1
DEFAULT_ATTACH_READ_BYTES_SEC=2
DEFAULT_ATTACH_NIC_FILTER=a#b
if [ -n "$X" ]; then
    echo hello
fi
DEFAULT_ATTACH_WRITE_BYTES_SEC = 5
"""


def test_assignments() -> None:
    rc = parse_kvmrc(KVMRC, "/r/etc/vmm/kvm/kvmrc")
    assert rc["LANG"] == "C" and rc["LIBVIRT_URI"] == "qemu:///system" and rc["SHUTDOWN_TIMEOUT"] == "180"
    assert rc["DEFAULT_ATTACH_CACHE"] == "none"
    assert rc["DEFAULT_ATTACH_DISCARD"] == "unmap"
    assert rc["DEFAULT_ATTACH_IO"] == "native"  # the commented-out line is no assignment
    assert rc["DEFAULT_ATTACH_TOTAL_BYTES_SEC"] == "1000"
    assert rc["DEFAULT_ATTACH_SIZE_IOPS_SEC"] == ""
    assert rc["VIRTIOFSD_BINARY_PATH"] == "/usr/libexec/virtiofsd /usr/lib/qemu/virtiofsd"
    assert rc["DEFAULT_ATTACH_READ_BYTES_SEC"] == "2"  # the last assignment wins
    assert rc["DEFAULT_ATTACH_NIC_FILTER"] == "a#b"  # '#' starts a comment only after a blank
    assert "DEFAULT_ATTACH_WRITE_BYTES_SEC" not in rc  # "KEY = v" runs a command KEY in a shell
    assert rc.get("DEFAULT_ATTACH_READ_IOPS_SEC", "") == ""


@pytest.mark.parametrize("value", ["$(reboot)", "`id`", "$HOME", '"${X:-none}"', "none io", "none; rm -rf /",
                                   "'unbalanced", "a\\ b", "x|y", "(none)"])
def test_values_that_need_a_shell(value: str) -> None:
    """Reported with file and line when the key is read; other keys still readable."""
    rc = parse_kvmrc(f"DEFAULT_ATTACH_DISCARD=unmap\nDEFAULT_ATTACH_CACHE={value}\n", "/r/kvmrc")
    assert rc["DEFAULT_ATTACH_DISCARD"] == "unmap"
    assert "DEFAULT_ATTACH_CACHE" in rc
    with pytest.raises(ConfigError, match=r"/r/kvmrc line 2: cannot read DEFAULT_ATTACH_CACHE without a shell"):
        rc["DEFAULT_ATTACH_CACHE"]
    with pytest.raises(ConfigError):
        rc.get("DEFAULT_ATTACH_CACHE")


def test_last_assignment_decides_readability() -> None:
    rc = parse_kvmrc("A=$(x)\nA=ok\nB=ok\nB=$(x)\n", "/r/kvmrc")
    assert rc["A"] == "ok"
    with pytest.raises(ConfigError, match="line 4"):
        rc["B"]
    assert sorted(rc) == ["A", "B"] and len(rc) == 2


def test_files_of_the_remotes_tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("ONEVITA_REMOTES", str(tmp_path))
    assert dict(load_kvmrc()) == {}
    assert opennebula_release() == NEWEST
    err = capsys.readouterr().err
    assert f"WARN: onevita: {tmp_path}/etc/vmm/kvm/kvmrc not found" in err
    assert f"WARN: onevita: cannot read {tmp_path}/VERSION" in err and "following OpenNebula 7.4.0" in err

    (tmp_path / "etc" / "vmm" / "kvm").mkdir(parents=True)
    (tmp_path / "etc" / "vmm" / "kvm" / "kvmrc").write_text(KVMRC)
    assert load_kvmrc()["DEFAULT_ATTACH_CACHE"] == "none"
    for text, release in (("7.0.2", (7, 0, 2)), ("6.10.0.1\n", (6, 10, 0, 1)), ("6.8.3", (6, 8, 3))):
        (tmp_path / "VERSION").write_text(text)
        assert opennebula_release() == release
    (tmp_path / "VERSION").write_text("unknown")
    assert opennebula_release() == NEWEST
    assert "holds no release number" in capsys.readouterr().err
