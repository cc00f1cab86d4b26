"""``downloader.sh``: fetch ``vitastor://`` URLs with ``onevita download``.

OpenNebula imports a MarketPlaceApp into a datastore by running
``<remotes>/datastore/downloader.sh URL FILE``; datastore/export gives Vitastor images
``vitastor://<host>/<image>?VITASTOR_CONF=<path>`` URLs. downloader.sh picks a shell command
per URL scheme in its ``case "$FROM" in`` statement and runs it with ``eval "$command"`` (and,
unless the arm sets ``file_type``, once more through ``get_type`` to sniff compression). The
arm install adds comes right after that ``case`` line, which every version from 6.8 to 7.4 has
(the arms around it differ: 7.0 dropped vcenter and added netapp, 7.2 purefa, 7.4 onebex). It
runs the launcher next to downloader.sh, ``$(dirname "$0")/../onevita/onevita``, so it works
wherever the remotes tree is (/var/lib/one/remotes, $ONE_LOCATION/var/remotes, /var/tmp/one on
a host), and quotes the launcher path and the URL with bash's ``printf %q``: the eval sees each
as one literal word, so a crafted URL cannot run anything. ``file_type`` is set because the
bytes are a raw image: no second download just to sniff them.

The Vitastor bash driver's patch (a ``get_vitastor_cmd`` function parsing the URL with url.rb,
which fails on URLs without a query, and a ``vitastor://*)`` arm calling it) is replaced: its
text goes into the undo record so that uninstall puts it back byte for byte.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from .edits import Change

__all__ = ["ARM", "apply", "check", "revert"]

FILE = "downloader.sh"
INSERT = "insert_arm"
REPLACE = "replace_bash_driver_arm"

ARM = (
    "vitastor://*)\n"
    "    # onevita: raw image bytes from 'onevita download URL' (no type sniffing, which would\n"
    "    # download twice); printf %q makes the launcher path and the URL single words for eval\n"
    '    file_type="application/octet-stream"\n'
    '    command="$(printf \'%q download %q\' "$(dirname "$0")/../onevita/onevita" "$FROM")"\n'
    "    ;;\n"
)

_CASE = re.compile(r'^case[ \t]+"\$FROM"[ \t]+in[ \t]*$')
_ESAC = re.compile(r"^esac[ \t]*(?:#.*)?$")
# an arm's head line: `pattern)` or `pattern|pattern)`, optionally with `(` before it
_HEAD = re.compile(r"^[ \t]*\(?[ \t]*(?P<patterns>[^\s()]+(?:[ \t]*\|[ \t]*[^\s()]+)*)"
                   r"[ \t]*\)[ \t]*(?:#.*)?$")
_BASH_FUNCTION = re.compile(
    r"^(?:function[ \t]+get_vitastor_cmd(?:[ \t]*\(\))?|get_vitastor_cmd[ \t]*\(\))[ \t]*\n?"
    r"[ \t]*\{[ \t]*\n(?:.*\n)*?\}[ \t]*\n(?:[ \t]*\n)?",
    re.MULTILINE,
)
_BASH_CALL = "get_vitastor_cmd"


@dataclass(frozen=True)
class _Arm:
    """A ``vitastor://`` arm of the case statement: its text and where it starts (offsets)."""

    start: int
    end: int
    line: int
    text: str


def _line_starts(text: str) -> list[int]:
    starts = [0]
    starts += [i + 1 for i, c in enumerate(text) if c == "\n" and i + 1 < len(text)]
    return starts


def _case(text: str) -> tuple[int, int, list[_Arm]]:
    """(offset just after the ``case "$FROM" in`` line, offset of ``esac``, the vitastor arms)."""
    lines = text.splitlines(keepends=True)
    starts = _line_starts(text)
    cases = [i for i, line in enumerate(lines) if _CASE.match(line.rstrip("\n"))]
    if not cases:
        raise ConfigError(f'{FILE}: no `case "$FROM" in` statement choosing the command per URL scheme')
    if len(cases) > 1:
        raise ConfigError(f'{FILE} lines {cases[0] + 1} and {cases[1] + 1}: two `case "$FROM" in` '
                          "statements, cannot tell which one downloads")
    first = cases[0]
    last = next((i for i in range(first + 1, len(lines)) if _ESAC.match(lines[i].rstrip("\n"))), None)
    if last is None:
        raise ConfigError(f'{FILE} line {first + 1}: `case "$FROM" in` has no `esac`')
    arms = []
    i = first + 1
    while i < last:
        head = _HEAD.match(lines[i].rstrip("\n"))
        patterns = head.group("patterns").split("|") if head else []
        if not any(p.strip().strip("\"'").startswith("vitastor://") for p in patterns):
            i += 1
            continue
        end = next((j for j in range(i, last) if lines[j].rstrip().endswith(";;")), None)
        if end is None:
            raise ConfigError(f"{FILE} line {i + 1}: the vitastor:// case has no `;;`")
        arms.append(_Arm(starts[i], starts[end] + len(lines[end]), i + 1,
                         "".join(lines[i:end + 1])))
        i = end + 1
    return starts[first] + len(lines[first]), starts[last], arms


def _find_block(text: str, block: str) -> int:
    """Offset of ``block`` where it starts a line, or -1."""
    at = text.find(block)
    while at > 0 and text[at - 1] != "\n":
        at = text.find(block, at + 1)
    return at


def _vitastor_arm(text: str) -> _Arm | None:
    _after_case, _esac, arms = _case(text)
    if len(arms) > 1:
        raise ConfigError(f"{FILE} lines {arms[0].line} and {arms[1].line}: two vitastor:// cases; "
                          "remove the one that is not onevita's and run install again")
    return arms[0] if arms else None


def apply(text: str) -> tuple[str, list[Change]]:
    """Add onevita's ``vitastor://*)`` arm, or put it in place of the bash driver's."""
    arm = _vitastor_arm(text)
    if arm is None:
        after_case = _case(text)[0]
        change = Change(f"{FILE}: vitastor:// URLs (marketplace imports) stream through onevita download",
                        {"op": INSERT, "arm": ARM})
        return text[:after_case] + ARM + text[after_case:], [change]
    if arm.text == ARM:
        return text, []
    if _BASH_CALL not in arm.text:
        raise ConfigError(f"{FILE} line {arm.line}: a vitastor:// case onevita does not know; "
                          "remove it and run install again")
    new = text[:arm.start] + ARM + text[arm.end:]
    function, next_line = "", ""
    definition = _BASH_FUNCTION.search(new)
    if definition and _BASH_CALL not in new[:definition.start()] + new[definition.end():]:
        function = definition.group()
        rest = new[definition.end():]
        next_line = rest[:rest.find("\n") + 1] if "\n" in rest else rest
        new = new[:definition.start()] + rest
    change = Change(f"{FILE}: replaced the Vitastor bash driver's vitastor:// case (get_vitastor_cmd, which "
                    "needs url.rb and a ?VITASTOR_CONF= query) with onevita download",
                    {"op": REPLACE, "arm": ARM, "old_arm": arm.text, "function": function,
                     "function_next_line": next_line})
    return new, [change]


def revert(text: str, undo: list[dict[str, Any]]) -> str:
    """Take out onevita's arm (and put back the bash driver's arm and function it replaced)."""
    for record in reversed(undo):
        op = record.get("op")
        if op not in (INSERT, REPLACE):
            raise ConfigError(f"{FILE}: unknown undo record {record!r}")
        at = _find_block(text, record["arm"])
        if at < 0:
            continue  # already gone
        old_arm = record["old_arm"] if op == REPLACE else ""
        text = text[:at] + old_arm + text[at + len(record["arm"]):]
        if op == REPLACE and record["function"] and not _BASH_FUNCTION.search(text):
            text = _put_back_function(text, record["function"], record["function_next_line"])
    return text


def _put_back_function(text: str, function: str, next_line: str) -> str:
    """The bash driver's function where it was: before the line that followed it, else (that
    line changed since) anywhere before the case statement, where bash still defines it in time."""
    at = _find_block(text, next_line) if next_line else len(text)
    if at < 0:
        try:
            at = _case(text)[0]
        except ConfigError:
            return text
        at = text.rfind("\n", 0, at - 1) + 1
    return text[:at] + function + text[at:]


def check(text: str) -> list[str]:
    """Whether ``vitastor://`` URLs are downloaded by onevita."""
    try:
        arm = _vitastor_arm(text)
    except ConfigError as e:
        return [str(e).removeprefix(f"{FILE}: ")]
    if arm is None:
        return ["no vitastor:// case, so importing Vitastor marketplace apps fails"]
    if arm.text == ARM:
        return []
    if _BASH_CALL in arm.text:
        return [f"line {arm.line}: vitastor:// is handled by the Vitastor bash driver's get_vitastor_cmd, "
                "which needs url.rb and fails on URLs without ?VITASTOR_CONF="]
    return [f"line {arm.line}: a vitastor:// case onevita does not know"]
