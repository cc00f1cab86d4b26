"""What the stock kvm scripts find in the remotes tree besides themselves: the settings file
``etc/vmm/kvm/kvmrc`` and the OpenNebula release in ``VERSION``.

The stock ``attach_disk`` sources kvmrc, a shell fragment, for its ``DEFAULT_ATTACH_*`` values.
onevita never runs it: it reads ``KEY=value`` lines (optionally ``export KEY=value``), with
single or double quotes removed and a trailing ``# comment`` dropped, and the last assignment of
a key wins, as in the shell. A value that needs a shell to mean anything (``$`` or backquote
expansions, backslashes, several words, ``;``, pipes, redirections) cannot be read literally:
such a line is remembered and reported, naming the file and line, only when onevita needs that
key, because kvmrc also holds settings onevita never reads. Lines that are not assignments
(comments, blank lines, commands, functions) are ignored. Values are checked where they are
used (see :mod:`onevita.vmm.disk_xml`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from typing import Optional

from .. import log
from ..errors import ConfigError
from ..remotes import remotes_dir

__all__ = ["NEWEST", "Kvmrc", "Release", "kvmrc_path", "load_kvmrc", "opennebula_release", "parse_kvmrc"]

Release = tuple[int, ...]
NEWEST: Release = (7, 4, 0)  # the newest release whose attach_disk onevita follows
_ASSIGNMENT = re.compile(r"\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)")
# one shell word of literal text: 'single quoted', "double quoted" without expansions, plain
_PART = r"""'[^']*'|"[^"$`\\]*"|[^\s'"$`\\;&|<>()]+"""
_VALUE = re.compile(rf"((?:{_PART})*)\s*(?:#.*)?")
_PARTS = re.compile(_PART)
_RELEASE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)*)")


def _literal(value: str) -> Optional[str]:
    """The text of a shell word ``value`` (quotes removed, a trailing comment dropped), or None
    when only a shell could tell what it means."""
    match = _VALUE.fullmatch(value.rstrip())
    if match is None:
        return None
    return "".join(p[1:-1] if p[0] in "'\"" else p for p in _PARTS.findall(match[1]))


class Kvmrc(Mapping[str, str]):
    """kvmrc's readable assignments; looking up a key whose last assignment could not be read
    raises ConfigError naming its line."""

    def __init__(self, path: str, values: Mapping[str, str], unreadable: Mapping[str, int]):
        self.path = path
        self._values = dict(values)
        self._unreadable = dict(unreadable)

    def __getitem__(self, key: str) -> str:
        line = self._unreadable.get(key)
        if line is not None:
            raise ConfigError(f"{self.path} line {line}: cannot read {key} without a shell; "
                              f"write it as {key}=value (quotes allowed, no $ or backquotes)")
        return self._values[key]

    def __contains__(self, key: object) -> bool:
        return key in self._values or key in self._unreadable

    def __iter__(self) -> Iterator[str]:
        return iter({**self._values, **self._unreadable})

    def __len__(self) -> int:
        return len({**self._values, **self._unreadable})


def parse_kvmrc(text: str, path: str) -> Kvmrc:
    """The ``KEY=value`` assignments of kvmrc's ``text``."""
    values: dict[str, str] = {}
    unreadable: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), 1):
        match = _ASSIGNMENT.fullmatch(line)
        if match is None:
            continue
        key, value = match[1], _literal(match[2])
        if value is None:
            values.pop(key, None)
            unreadable[key] = number
        else:
            unreadable.pop(key, None)
            values[key] = value
    return Kvmrc(path, values, unreadable)


def kvmrc_path() -> str:
    """``<remotes>/etc/vmm/kvm/kvmrc``, the file the stock kvm scripts source."""
    return os.path.join(remotes_dir(), "etc", "vmm", "kvm", "kvmrc")


def load_kvmrc() -> Kvmrc:
    """kvmrc of the remotes tree onevita runs from; empty, with a WARN line, when it is missing
    (the stock script's ``source`` fails then too and every default is empty)."""
    path = kvmrc_path()
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except FileNotFoundError:
        log.warn(f"{path} not found: no DEFAULT_ATTACH_* defaults")
        text = ""
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}") from e
    return parse_kvmrc(text, path)


def opennebula_release() -> Release:
    """The OpenNebula release of the remotes tree (``<remotes>/VERSION``, e.g. ``7.0.2``); the
    newest release onevita knows, with a WARN line, when it is missing or unreadable."""
    path = os.path.join(remotes_dir(), "VERSION")
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            match = _RELEASE.match(f.read())
    except OSError as e:
        log.warn(f"cannot read {path} ({e.strerror}): following OpenNebula {'.'.join(map(str, NEWEST))}")
        return NEWEST
    if match is None:
        log.warn(f"{path} holds no release number: following OpenNebula {'.'.join(map(str, NEWEST))}")
        return NEWEST
    return tuple(int(n) for n in match[1].split("."))
