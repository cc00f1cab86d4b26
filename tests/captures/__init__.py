"""What a real oned sends the driver, captured on a real front-end (``wrap.sh``, ``collect.py``;
README.md), and the comparison the suite makes against it: the documents the tests send or
serve must have the shape of the captured ones.

A document's shape is the set of its element paths outside TEMPLATE and USER_TEMPLATE (whose
contents are the users' and the datastores' attributes) and outside a host's HOST_SHARE and
MONITORING (its hardware and load, which differ from machine to machine), plus the order of the
top-level elements of the driver messages. The tests' documents must not have paths oned never
sends, and must have every path oned sent in each of its captures of that kind, except the
members of lists (an image's snapshots, a datastore's images), which depend on the object's
state.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from lxml import etree

__all__ = ["Capture", "Shape", "captured_actions", "captures", "oned_document", "shape", "shape_problems"]

HERE = Path(__file__).resolve().parent
VERSION = "7.0.2"
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=True, remove_blank_text=True)
_USER_DATA = ("TEMPLATE", "USER_TEMPLATE", "HOST_SHARE", "MONITORING")
_LISTS = ("IMAGES", "VMS", "CLONES", "APP_CLONES", "BACKUP_IDS", "SNAPSHOTS", "BACKUP_INCREMENTS",
          "BACKUP_DISK_IDS", "HISTORY_RECORDS")
_MEMBERS = ("ID", "SNAPSHOT", "HISTORY", "INCREMENT")


@dataclass(frozen=True)
class Capture:
    """One driver call of a real oned."""

    file: str
    operation: str
    action: str
    argv: list[str]
    stdin: str

    def document(self) -> etree._Element | None:
        """The stdin document: base64 for DS actions and local VMM actions, plain XML for the
        backup TM actions (one_vmm_exec passes the VM as it is); None when empty (tm/restore)."""
        text = self.stdin.strip()
        if not text:
            return None
        return etree.fromstring(text.encode() if text.startswith("<") else base64.b64decode(text), _PARSER)


@cache
def captures(version: str = VERSION) -> tuple[Capture, ...]:
    found = []
    for path in sorted((HERE / version).glob("*.json")):
        record = json.loads(path.read_text())
        found.append(Capture(path.name, record["operation"], record["action"], record["argv"], record["stdin"]))
    return tuple(found)


def captured_actions(version: str = VERSION) -> list[str]:
    return sorted({c.action for c in captures(version)})


def oned_document(name: str, version: str = VERSION) -> etree._Element:
    """A document as ``one.<object>.info`` returned it (``oned/<name>``)."""
    return etree.parse(str(HERE / version / "oned" / name), _PARSER).getroot()


def _paths(node: etree._Element, prefix: str) -> set[str]:
    found = set()
    for child in node:
        if not isinstance(child.tag, str):
            continue
        path = f"{prefix}/{child.tag}"
        found.add(path)
        if child.tag not in _USER_DATA:
            found |= _paths(child, path)
    return found


def _list_member(path: str) -> bool:
    """Whether ``path`` is in a member of a list, present or not by the object's state."""
    parts = path.split("/")
    return any(a in _LISTS and b in _MEMBERS for a, b in zip(parts, parts[1:]))


@dataclass(frozen=True)
class Shape:
    """A document's top-level element order and its element paths."""

    top: tuple[str, ...]
    paths: frozenset[str]


def shape(root: etree._Element) -> Shape:
    top = tuple(dict.fromkeys(c.tag for c in root if isinstance(c.tag, str)))
    return Shape(top, frozenset(_paths(root, root.tag)))


def shape_problems(sent: Shape, real: list[Shape]) -> list[str]:
    """How ``sent`` differs from what a real oned sent (``real``: its captures of the same kind)."""
    problems = []
    if all(sent.top != r.top for r in real):
        problems.append(f"top-level elements {list(sent.top)}, oned sends {list(real[0].top)}")
    union = frozenset().union(*(r.paths for r in real))
    common = frozenset(p for p in frozenset.intersection(*(r.paths for r in real)) if not _list_member(p))
    extra = sorted(sent.paths - union)
    missing = sorted(common - sent.paths)
    if extra:
        problems.append(f"elements oned never sends: {', '.join(extra)}")
    if missing:
        problems.append(f"elements oned always sends, missing: {', '.join(missing)}")
    return problems
