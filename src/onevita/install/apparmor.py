"""AppArmor: let libvirt's qemu read the vitastor.conf of every Vitastor datastore.

Where AppArmor confines qemu (Debian, Ubuntu), a VM's profile includes libvirt's
``abstractions/libvirt-qemu``, which ends with ``#include <local/abstractions/libvirt-qemu>``
(Debian bookworm; newer libvirt ``include if exists`` it and marks it deprecated in favour of
``abstractions/libvirt-qemu.d``, still reading it). That local file is the place for site
rules: install adds one ``  <path> r,`` line per vitastor.conf there, creating the file if
needed, and uninstall removes just those lines. A path that already has a read rule, such as
the bash driver's ``"/etc/vitastor/vitastor.conf" r,``, is left as it is.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..errors import BadName, ConfigError
from ..names import check_conf
from .edits import Change

__all__ = ["apply", "check", "in_use", "revert"]

LABEL = "AppArmor"
OP = "add_read_rule"
_QUALIFIERS = r"(?:(?:audit|allow|owner|file)[ \t]+)*"


def in_use(root: str = "/") -> bool:
    """AppArmor is enabled in the kernel and libvirt's qemu abstraction is installed."""
    base = Path(root)
    try:
        enabled = (base / "sys/module/apparmor/parameters/enabled").read_text().strip()
    except OSError:
        return False
    return enabled == "Y" and (base / "etc/apparmor.d/abstractions/libvirt-qemu").is_file()


def _path(path: str) -> str:
    """A path safe to write as an unquoted AppArmor rule: absolute, plain characters only
    (no whitespace, quotes, commas, globs or variables), the same rule VITASTOR_CONF follows."""
    try:
        return check_conf(path)
    except BadName:
        raise ConfigError(f"{LABEL}: refusing a read rule for {path!r}: a vitastor.conf path must be "
                          "absolute and made of letters, digits, '_', '.', '+', '-' and '/'") from None


def _rule(path: str) -> str:
    return f"  {path} r,\n"


def _has_read_rule(text: str, path: str) -> bool:
    """A rule granting read on exactly ``path`` (quoted or not, mode after or before it)."""
    target = rf'(?:"{re.escape(path)}"|{re.escape(path)})'
    rule = re.compile(rf"^[ \t]*{_QUALIFIERS}"
                      rf"(?:{target}[ \t]+(?P<mode1>[a-zA-Z]+)|(?P<mode2>[a-zA-Z]+)[ \t]+{target})"
                      r"[ \t]*,[ \t]*(?:#.*)?$", re.MULTILINE)
    return any("r" in (m.group("mode1") or m.group("mode2")) for m in rule.finditer(text))


def apply(text: str, conf_paths: list[str]) -> tuple[str, list[Change]]:
    """Append a read rule for each path that has none; ``text`` is "" for a file not there yet."""
    paths = list(dict.fromkeys(_path(p) for p in conf_paths))
    changes = []
    for path in paths:
        if _has_read_rule(text, path):
            continue
        newline = bool(text) and not text.endswith("\n")
        text += ("\n" if newline else "") + _rule(path)
        changes.append(Change(f"{LABEL}: qemu may read {path}",
                              {"op": OP, "line": _rule(path), "newline": newline}))
    return text, changes


def revert(text: str, undo: list[dict[str, Any]]) -> str:
    """Remove the lines install appended (the last copy of each, if still there)."""
    for record in reversed(undo):
        if record.get("op") != OP:
            raise ConfigError(f"{LABEL}: unknown undo record {record!r}")
        line = record["line"]
        at = text.rfind(line)
        while at > 0 and text[at - 1] != "\n":
            at = text.rfind(line, 0, at)
        if at < 0:
            continue
        end = at + len(line)
        if record["newline"] and end == len(text) and at > 0:
            at -= 1  # the newline added in front of our line when the file did not end with one
        text = text[:at] + text[end:]
    return text


def check(text: str, conf_paths: list[str]) -> list[str]:
    """The vitastor.conf paths qemu may not read."""
    problems = []
    for path in dict.fromkeys(conf_paths):
        try:
            _path(path)
        except ConfigError as e:
            problems.append(str(e).removeprefix(f"{LABEL}: "))
            continue
        if not _has_read_rule(text, path):
            problems.append(f"no read rule for {path}, so qemu cannot open Vitastor disks using it")
    return problems
