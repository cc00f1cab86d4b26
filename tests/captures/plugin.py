"""Every stdin document a test sends to a driver action that then succeeds is
compared, at the end of the session, with what a real oned sent to the same action
(tests/captures); a difference fails the run (``report``, from the session's end). Calls that fail are left out: they are the tests
of malformed input. ``record`` is called by the test cloud's runner."""

from __future__ import annotations

import base64
import binascii
from collections import defaultdict

import pytest
from lxml import etree

from tests.captures import Shape, captures, shape, shape_problems

__all__ = ["record", "report"]

_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=True, remove_blank_text=True)
# the parts of a driver message compared one by one, besides the message's own top level
_PARTS = ("IMAGE", "DATASTORE", "VM")
_sent: dict[str, dict[str, set[Shape]]] = defaultdict(lambda: defaultdict(set))  # action -> part -> shapes


def _document(stdin: bytes) -> etree._Element | None:
    text = stdin.strip()
    if not text:
        return None
    if not text.startswith(b"<"):
        try:
            text = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            return None  # a test of malformed input
    try:
        return etree.fromstring(text, _PARSER)
    except etree.XMLSyntaxError:
        return None


def _parts(root: etree._Element) -> dict[str, etree._Element]:
    parts = {"": root}
    for name in _PARTS:
        node = root.find(name)
        if node is not None:
            parts[name] = node
    return parts


def record(action: str, stdin: bytes) -> None:
    """Keep the shape of what a test sent ``action``, which succeeded with it. The driver
    messages oned composes are compared; the libvirt domain deploy gets is not: its elements
    follow each VM's template (NICs, RAW data, devices), so it is checked against libvirt's
    schema instead, and the captured domains themselves go through deploy (tests/vmm)."""
    root = _document(stdin)
    if root is None or root.tag == "domain":
        return
    for name, node in _parts(root).items():
        _sent[action][name].add(shape(node))


def problems() -> list[str]:
    real: dict[str, dict[str, list[Shape]]] = defaultdict(lambda: defaultdict(list))
    for capture in captures():
        root = capture.document()
        if root is not None:
            for name, node in _parts(root).items():
                real[capture.action][name].append(shape(node))
    found = []
    for action, parts in sorted(_sent.items()):
        if action not in real:
            continue  # no capture of this action yet
        for name, shapes in sorted(parts.items()):
            what = f"{action} {name or 'message'}"
            if not real[action].get(name):
                found.append(f"{what}: oned never sends it")
                continue
            for sent in shapes:
                found += [f"{what}: {p}" for p in shape_problems(sent, real[action][name])]
    return sorted(set(found))


def report(session: pytest.Session) -> bool:
    """Write the differences to the terminal; whether there were none."""
    found = problems()
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if found and reporter is not None:
        reporter.write_sep("=", "documents that differ from a real oned's (tests/captures)", red=True)
        for line in found:
            reporter.write_line(line)
    return not found
