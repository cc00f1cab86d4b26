"""Byte-level edits of the domain XML oned writes, so that what onevita does not change stays
as oned wrote it (lxml would re-quote attributes, reorder namespace declarations, collapse
``<x></x>`` and decode character references throughout).

Elements are located with expat, which reports the byte offset of every start and end tag; the
document must use an ASCII-compatible encoding (the caller checks), so markup found by offset
can be matched as bytes.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from xml.parsers import expat

from ..errors import BadRequest

__all__ = ["Span", "element_spans", "merge_devices", "replace_spans"]

# a start tag: attribute values are quoted, so a '>' inside one does not end it
_START_TAG = re.compile(rb"""<[^\s/>]+(\s+[^\s=/>]+\s*=\s*("[^"]*"|'[^']*'))*\s*(/?)>""")
_BLANK = b" \t\r\n"


@dataclass(frozen=True)
class Span:
    """Where an element is in the document: ``start`` at its ``<``, ``end`` just past it; its
    content is ``[content_start, content_end)`` (empty for ``<x/>``)."""

    start: int
    end: int
    content_start: int
    content_end: int
    has_attributes: bool
    empty_tag: bool


def element_spans(xml: bytes, path: Sequence[str]) -> list[Span]:
    """The spans of the elements at ``path`` below the root (e.g. ``("devices", "disk")``), in
    document order (that of ``root.findall("devices/disk")``). Namespaced elements never match
    a plain name. Documents declaring entities are refused."""
    parser = expat.ParserCreate(namespace_separator=" ")
    names: list[str] = []
    starts: list[tuple[int, int, bool, bool]] = []
    spans: list[Span] = []
    wanted = list(path)

    def start(name: str, attrs: object) -> None:
        names.append(name)
        if names[1:] == wanted:
            at = parser.CurrentByteIndex
            tag = _START_TAG.match(xml, at)
            if tag is None:
                raise BadRequest(f"cannot read the <{name}> start tag in the domain XML")
            starts.append((at, tag.end(), tag[1] is not None, tag[3] == b"/"))

    def end(name: str) -> None:
        if names[1:] == wanted:
            at = parser.CurrentByteIndex  # at "</name", or just past an empty-element tag
            begin, content, attributes, empty = starts.pop()
            if empty:
                spans.append(Span(begin, content, content, content, attributes, True))
            else:
                spans.append(Span(begin, xml.index(b">", at) + 1, content, at, attributes, False))
        names.pop()

    def entity(*args: object) -> None:
        raise BadRequest("domain XML declares entities")

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.EntityDeclHandler = entity
    try:
        parser.Parse(xml, True)
    except expat.ExpatError as e:
        raise BadRequest(f"malformed domain XML: {expat.ErrorString(e.code)}") from e
    return spans


def _cut(xml: bytes, span: Span) -> tuple[int, int]:
    """What to remove for the element at ``span``: its whole line when it stands alone on one,
    else just the element."""
    start, end = span.start, span.end
    while start > 0 and xml[start - 1] in b" \t":
        start -= 1
    while end < len(xml) and xml[end] in b" \t":
        end += 1
    newline = 2 if xml.startswith(b"\r\n", end) else 1 if xml.startswith(b"\n", end) else 0
    if newline and (start == 0 or xml[start - 1] in b"\r\n"):
        return start, end + newline
    return span.start, span.end


def _apply(xml: bytes, edits: Sequence[tuple[int, int, bytes]]) -> bytes:
    """``xml`` with each ``(start, end, replacement)`` applied; the edits do not overlap."""
    pieces: list[bytes] = []
    done = 0
    for start, end, text in sorted(edits, key=lambda e: (e[0], e[1])):
        pieces += [xml[done:start], text]
        done = end
    pieces.append(xml[done:])
    return b"".join(pieces)


def merge_devices(xml: bytes) -> bytes:
    """``xml`` with the children of every later ``<devices>`` of the root moved into the first.

    oned writes a second ``<devices>`` for the guest agent channel (FEATURES/GUEST_AGENT) and,
    up to 6.10, for q35's PCI controllers, and RAW data may hold more; libvirt's schema allows
    one. The moved content goes, byte for byte, after the first one's last child (its trailing
    whitespace dropped, so the indentation stays that of the children), and each later element
    is removed with its line. A later ``<devices>`` with attributes (a namespace declaration its
    children might need) is refused rather than guessed at."""
    spans = element_spans(xml, ("devices",))
    if len(spans) < 2:
        return xml
    first, later = spans[0], spans[1:]
    for span in later:
        if span.has_attributes:
            raise BadRequest("the domain XML has a later <devices> element with attributes; "
                             "cannot merge it into the first")
    moved = b"".join(xml[s.content_start:s.content_end].rstrip(_BLANK) for s in later)
    edits = [(*_cut(xml, s), b"") for s in later]
    if first.empty_tag:
        tag = xml[first.start:first.end]
        opened = tag[:-2].rstrip(_BLANK) + b">"
        edits.append((first.start, first.end, opened + moved + b"</devices>"))
    else:
        at = first.content_end
        while at > first.content_start and xml[at - 1] in _BLANK:
            at -= 1
        edits.append((at, at, moved))
    return _apply(xml, edits)


def replace_spans(xml: bytes, replacements: Sequence[tuple[Span, bytes]]) -> bytes:
    """``xml`` with the element at each span replaced by its text."""
    return _apply(xml, [(s.start, s.end, text) for s, text in replacements])
