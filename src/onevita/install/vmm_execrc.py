"""``vmm_execrc``: let OpenNebula snapshot the Vitastor disks of running VMs.

one_vmm_exec refuses ``disk_snapshot_create`` on a RUNNING VM unless ``<VM_MAD>-<TM_MAD>`` is
a word of ``LIVE_DISK_SNAPSHOTS`` (read from /etc/one/vmm_exec/vmm_execrc, which the driver's
wrapper sources with bash and exports when the assignment starts the line). Install appends
``kvm-vitastor`` to that list, whatever the version's default list is (6.8 and 6.10 share one,
7.0 and 7.2 each grew it). A ``kvm-vitastor`` already in the list, such as the Vitastor bash
driver's patch puts there, counts as done and is left alone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from .edits import Change

__all__ = ["ITEM", "apply", "check", "revert"]

ITEM = "kvm-vitastor"
OP = "add_live_disk_snapshot"
FILE = "vmm_execrc"

# only assignments at the start of a line are exported by madcommon.sh's export_rc_vars
_ASSIGNMENT = re.compile(r"^(?:export[ \t]+)?LIVE_DISK_SNAPSHOTS=", re.MULTILINE)
_UNQUOTED = re.compile(r"[^\s;&|#'\"\\`$()<>]*")
_ITEM_WORD = re.compile(r"(?:(?<=[\s\"'])|^)" + re.escape(ITEM) + r"(?=[\s\"']|$)")


@dataclass(frozen=True)
class _Value:
    """The value of the effective LIVE_DISK_SNAPSHOTS assignment: ``text[start:end]`` with its
    quotes, the words between them, and where a new word goes (just before the closing quote)."""

    start: int
    end: int
    quote: str
    words: list[str]
    insert_at: int


def _line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _value(text: str) -> _Value:
    """Find and parse the last LIVE_DISK_SNAPSHOTS assignment (the last one is what bash keeps)."""
    matches = list(_ASSIGNMENT.finditer(text))
    if not matches:
        raise ConfigError(f"{FILE}: no LIVE_DISK_SNAPSHOTS=\"...\" line (the list of VMM-TM pairs "
                          "allowed live disk snapshots)")
    start = matches[-1].end()
    line = _line_of(text, start)
    quote = text[start:start + 1]
    if quote in ('"', "'"):
        end = start + 1
        while end < len(text) and text[end] != quote:
            end += 2 if quote == '"' and text[end] == "\\" else 1
        if end >= len(text):
            raise ConfigError(f"{FILE} line {line}: the LIVE_DISK_SNAPSHOTS value has no closing {quote}")
        content = text[start + 1:end]
        if quote == '"':
            content = content.replace("\\\n", "")
        insert_at, end = end, end + 1
    else:
        quote = ""
        match = _UNQUOTED.match(text, start)
        assert match is not None  # the pattern matches the empty string
        content, end = match.group(), match.end()
        insert_at = end
    after = text[end:end + 1]
    if after and not after.isspace() and after != ";":
        raise ConfigError(f"{FILE} line {line}: cannot read the LIVE_DISK_SNAPSHOTS value "
                          "(expected a plain list of words in one pair of quotes)")
    return _Value(start, end, quote, content.split(), insert_at)


def apply(text: str) -> tuple[str, list[Change]]:
    """Append ``kvm-vitastor`` inside the LIVE_DISK_SNAPSHOTS quotes, unless it is there."""
    value = _value(text)
    if ITEM in value.words:
        return text, []
    before = text[value.start:value.end]
    empty = value.insert_at == value.start + len(value.quote)
    last = "" if empty else text[value.insert_at - 1:value.insert_at]
    word = (" " if last and not last.isspace() else "") + ITEM
    if value.quote:
        new = text[:value.insert_at] + word + text[value.insert_at:]
    else:  # a bare word list gets quotes so that it can hold two words
        new = text[:value.start] + f'"{before}{word}"' + text[value.end:]
    after = new[value.start:value.end + len(new) - len(text)]
    change = Change(f"{FILE}: added {ITEM} to LIVE_DISK_SNAPSHOTS (snapshots of running VMs' Vitastor disks)",
                    {"op": OP, "item": ITEM, "before": before, "after": after})
    return new, [change]


def revert(text: str, undo: list[dict[str, Any]]) -> str:
    """Put the value back as it was; if the admin changed it since, take out only our word."""
    for record in reversed(undo):
        if record.get("op") != OP:
            raise ConfigError(f"{FILE}: unknown undo record {record!r}")
        try:
            value = _value(text)
        except ConfigError:
            continue  # the line is gone or rewritten beyond reading: nothing of ours to take out
        current = text[value.start:value.end]
        if current == record["after"]:
            text = text[:value.start] + record["before"] + text[value.end:]
            continue
        match = _ITEM_WORD.search(current)
        if match is None:
            continue
        cut_start, cut_end = match.start(), match.end()
        if cut_start > 0 and current[cut_start - 1] in " \t":
            cut_start -= 1
        elif cut_end < len(current) and current[cut_end] in " \t":
            cut_end += 1
        text = text[:value.start] + current[:cut_start] + current[cut_end:] + text[value.end:]
    return text


def check(text: str) -> list[str]:
    """Whether live disk snapshots of Vitastor disks are allowed."""
    try:
        value = _value(text)
    except ConfigError as e:
        return [str(e).removeprefix(f"{FILE}: ")]
    if ITEM in value.words:
        return []
    return [f"LIVE_DISK_SNAPSHOTS lacks {ITEM}, so OpenNebula refuses disk snapshots of running VMs "
            "on Vitastor"]
