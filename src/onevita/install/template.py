"""A lossless parser and editor for OpenNebula's template syntax, as oned.conf uses it.

Why not regular expressions: oned.conf has vectors spread over many lines, comments between
vector pairs, quoted values that run over several lines, repeated attributes (one ``VM_MAD`` per
hypervisor, one ``TM_MAD_CONF`` per driver) and admin edits of any shape. A regex patch that
matches a ``]`` inside a comment, or the wrong ``VM_MAD``, silently breaks the one file every
OpenNebula service reads. This module reads the file the way oned does and can prove it.

What oned accepts is defined by its flex/bison parser (``src/parsers/template_parser.l`` and
``template_syntax.y``, unchanged from 6.8 to 7.4); the rules reproduced here:

* an attribute is ``NAME = value`` or ``NAME = [ K = v, K2 = v2 ]``; names are ``[A-Za-z0-9_]+``
  and oned upper-cases them, so names and keys compare case-insensitively (values do not);
* blanks, newlines and ``#`` comments (to the end of the line) may appear between any two
  tokens, except between ``=`` and its value, which must start on the same line;
* ``NAME =`` followed by the end of the line is an empty value (not allowed inside vectors);
* a value is a double-quoted string, which may contain newlines and ``\\"`` (the only escape:
  oned turns ``\\"`` into ``"`` and leaves every other backslash alone), or a bare word
  without blanks, ``=``, ``#``, ``,``, ``[`` or ``]``; when both could match, the longer
  wins, as in flex; a value holding ``]]>`` makes oned refuse the file;
* vectors cannot nest, a trailing comma is an error, ``[ ]`` is an empty vector.

Where oned's lexer is sloppy (flex echoes and skips characters no rule matches, so a stray
``-`` between attributes is ignored) this parser raises ``ConfigError`` instead: an installer
should not edit a file whose structure it can only guess.

Lossless: the file becomes a sequence of tokens, each a span of the original text (trivia —
blanks and comments — included), so serialising gives back the input byte for byte, and every
edit is a splice of new text into the old, leaving all other bytes where they were. Edits return
a new, re-parsed ``Template``; the tree is never patched in place, so it cannot drift from the
text.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import ConfigError

__all__ = ["Attribute", "Pair", "Template", "Token", "Value", "parse", "quote"]

_NAME = re.compile(r"[A-Za-z0-9_]+")
_BLANKS = re.compile(r"[ \t]*")
# Trivia between tokens: blanks, newlines (a stray CR is taken as a blank) and comments. A
# comment at the very end of a file without a final newline is accepted, unlike flex's rule.
_TRIVIA = re.compile(r"(?:[ \t\r\n]+|#[^\n]*(?:\n|\Z))*")
# The candidate value tokens right after "= " (flex's <VALUE> state), in rule order.
_OPEN = re.compile(r"\[[ \t\n]*")
_OPEN_TAIL = re.compile(r"[ \t\n]*")
_CDATA = re.compile(r".*\]\]>.*")
_QUOTED = re.compile(r'"(?:[^"]|(?<=\\)")*"')
_BARE = re.compile(r"[^=# \t\n,\[\]]+")
_BARE_FULL = re.compile(r"[^=# \t\n,\[\]\"]+")


@dataclass(frozen=True)
class Token:
    """One span of the text. ``kind`` is one of: trivia (blanks, newlines, comments), name,
    equals, value, open, close, comma."""

    kind: str
    start: int
    end: int


@dataclass(frozen=True)
class Value:
    """A value token: ``raw`` is the text as written (quotes included), ``text`` what oned reads."""

    start: int
    end: int
    raw: str
    quoted: bool
    line: int

    @property
    def text(self) -> str:
        if self.quoted:
            return self.raw[1:-1].replace('\\"', '"')
        return self.raw


@dataclass(frozen=True)
class Pair:
    """``KEY = value`` inside a vector."""

    name: str
    start: int
    value: Value
    line: int


@dataclass(frozen=True)
class Attribute:
    """A top-level attribute: single (``value`` set) or vector (``pairs`` set).

    ``start`` is the first byte of the name, ``end`` the byte after the value or the ``]``.
    """

    name: str
    start: int
    end: int
    line: int
    value: Value | None
    pairs: tuple[Pair, ...] | None
    open_end: int = -1  # for vectors: the byte after "[" and the blanks/newlines flex takes with it

    @property
    def is_vector(self) -> bool:
        return self.pairs is not None

    def pair(self, key: str) -> Pair | None:
        """The pair named ``key`` (case-insensitive); oned keeps the first of duplicates."""
        for p in self.pairs or ():
            if p.name.upper() == key.upper():
                return p
        return None

    def get(self, key: str) -> str | None:
        """The value of pair ``key`` as oned reads it (unquoted, unescaped), or None."""
        p = self.pair(key)
        return p.value.text if p is not None else None

    def matches(self, where: dict[str, str]) -> bool:
        """True when every ``KEY: value`` of ``where`` is a pair of this vector."""
        return self.is_vector and all(self.get(k) == v for k, v in where.items())


def quote(value: str) -> str:
    """``value`` as a quoted template string (oned's only escape is ``\\"``)."""
    return '"' + value.replace('"', '\\"') + '"'


class Template:
    """A parsed template file: the text, its tokens and its attributes, in file order."""

    def __init__(self, text: str, source: str, tokens: tuple[Token, ...],
                 attributes: tuple[Attribute, ...]) -> None:
        self.text = text
        self.source = source
        self.tokens = tokens
        self.attributes = attributes
        self._newlines = _newlines(text)

    @classmethod
    def parse(cls, text: str, source: str = "oned.conf") -> Template:
        return _Parser(text, source).run()

    def serialise(self) -> str:
        """The text rebuilt from the tokens; equals the parsed text (the round-trip tests use it)."""
        return "".join(self.text[t.start:t.end] for t in self.tokens)

    def line_of(self, offset: int) -> int:
        """1-based line number of byte ``offset``."""
        return bisect.bisect_left(self._newlines, offset) + 1

    # ---- finding ---------------------------------------------------------------------------

    def find(self, name: str) -> list[Attribute]:
        """All attributes called ``name`` (single or vector), in file order."""
        return [a for a in self.attributes if a.name.upper() == name.upper()]

    def singles(self, name: str, value: str | None = None) -> list[Attribute]:
        """Single attributes ``name``, optionally only those whose value reads ``value``."""
        return [a for a in self.find(name) if a.value is not None
                and (value is None or a.value.text == value)]

    def vectors(self, name: str, **where: str) -> list[Attribute]:
        """Vectors ``name`` having every pair in ``where``, e.g. ``vectors("VM_MAD", NAME="kvm")``."""
        return [a for a in self.find(name) if a.matches(where)]

    def vector(self, name: str, **where: str) -> Attribute | None:
        """The one vector ``name`` matching ``where``; None if absent, ConfigError if ambiguous."""
        found = self.vectors(name, **where)
        if len(found) > 1:
            lines = ", ".join(str(a.line) for a in found)
            raise ConfigError(f"{self.source}: {_describe(name, where)} is defined more than once "
                              f"(lines {lines}); keep one and retry")
        return found[0] if found else None

    # ---- locating whole lines --------------------------------------------------------------

    def line_start(self, offset: int) -> int:
        return self.text.rfind("\n", 0, offset) + 1

    def line_end(self, offset: int) -> int:
        """The offset after the newline ending the line that holds ``offset`` (or the text end)."""
        nl = self.text.find("\n", offset)
        return len(self.text) if nl < 0 else nl + 1

    def line_span(self, attr: Attribute) -> tuple[int, int] | None:
        """The whole lines ``attr`` occupies, newline included, if nothing but blanks shares them
        (a trailing comment counts as part of the attribute); else None."""
        start, end = self.line_start(attr.start), self.line_end(attr.end)
        before = self.text[start:attr.start]
        after = self.text[attr.end:end].rstrip("\n")
        if before.strip(" \t") or (after.strip(" \t\r") and not after.lstrip(" \t").startswith("#")):
            return None
        return start, end

    def insertion_point(self, after: Attribute | None) -> int:
        """Where a block goes to follow ``after``: the start of the line after its last line
        (None: the end of the file)."""
        if after is None:
            return len(self.text)
        return self.line_end(after.end)

    # ---- editing (each returns a new Template; the nodes passed must come from this one) -------

    def replace(self, start: int, end: int, new: str) -> Template:
        """Splice ``new`` over ``text[start:end]`` and parse the result (ConfigError if it breaks)."""
        return Template.parse(self.text[:start] + new + self.text[end:], self.source)

    def with_value(self, value: Value, new: str) -> Template:
        """Set a value token to read ``new``, keeping its quoting style when it can hold ``new``
        (a bare word stays bare unless ``new`` needs quotes), and every other byte as it was."""
        self._own(value)
        raw = new if (not value.quoted and _BARE_FULL.fullmatch(new)) else quote(new)
        result = self.replace(value.start, value.end, raw)
        got = result._value_at(value.start)
        if got is None or got.text != new:
            raise ConfigError(f"{self.source}: line {value.line}: cannot write {new!r} as a "
                              "template value")
        return result

    def insert(self, offset: int, block: str) -> Template:
        """Insert ``block`` (whole lines, ending with a newline) at ``offset``."""
        return self.replace(offset, offset, block)

    def insert_after(self, after: Attribute | None, block: str) -> tuple[Template, int]:
        """Insert ``block`` at the start of the line after ``after``'s last line (None: at the end
        of the file, first ending an unterminated last line with a newline). Returns the new
        template and the offset where the inserted text starts."""
        at = self.insertion_point(after)
        if at == len(self.text) and self.text and not self.text.endswith("\n"):
            block = "\n" + block
        return self.insert(at, block), at

    def remove(self, attr: Attribute) -> Template:
        """Remove an attribute: its whole lines when it has them to itself, else just its span."""
        self._own_attr(attr)
        span = self.line_span(attr)
        if span is None:
            start = attr.start
            while start > 0 and self.text[start - 1] in " \t":
                start -= 1
            span = (start, attr.end)
        return self.replace(span[0], span[1], "")

    # ---- rendering new text in the file's own style ----------------------------------------

    def render_single(self, name: str, value: str, like: Attribute | None = None) -> str:
        """``NAME = "value"\\n``, spaced like ``like`` (e.g. ``INHERIT_DATASTORE_ATTR  = "X"``)."""
        sep = " = "
        quoted = True
        if like is not None and like.value is not None:
            sep = self.text[like.start + len(like.name):like.value.start]
            quoted = like.value.quoted or not _BARE_FULL.fullmatch(value)
            if "\n" in sep:
                sep = " = "
        return f"{name}{sep}{quote(value) if quoted else value}\n"

    def render_vector(self, name: str, pairs: Sequence[tuple[str, str]],
                      like: Attribute | None = None, width: int = 80) -> str:
        """A vector block in the multi-line style of ``like`` (the oned.conf default is
        ``NAME = [`` / indented ``K = "v", ...`` lines wrapped at ``width`` / ``]``)."""
        head, indent, eq = f"{name} = [", "    ", " = "
        if like is not None and like.pairs:
            first = like.pairs[0]
            head = self.text[like.start:like.open_end].rstrip(" \t\n")
            head = name + head[len(like.name):]
            lead = self.text[self.line_start(first.start):first.start]
            if lead.strip(" \t") == "" and lead:
                indent = lead
            eq = self.text[first.start + len(first.name):first.value.start]
            if "\n" in eq:
                eq = " = "
        items = [f"{k}{eq}{quote(v)}" for k, v in pairs]
        lines: list[str] = []
        current = ""
        for i, item in enumerate(items):
            piece = item + ("," if i < len(items) - 1 else "")
            candidate = f"{current} {piece}" if current else indent + piece
            if current and len(candidate) > width:
                lines.append(current)
                candidate = indent + piece
            current = candidate
        if current:
            lines.append(current)
        return head + "\n" + "\n".join(lines) + "\n]\n"

    # ---- internals -------------------------------------------------------------------------

    def _own(self, value: Value) -> None:
        if self.text[value.start:value.end] != value.raw:
            raise ValueError("value token does not belong to this template")

    def _own_attr(self, attr: Attribute) -> None:
        if self.text[attr.start:attr.start + len(attr.name)] != attr.name:
            raise ValueError("attribute does not belong to this template")

    def _value_at(self, offset: int) -> Value | None:
        for a in self.attributes:
            if a.value is not None and a.value.start == offset:
                return a.value
            for p in a.pairs or ():
                if p.value.start == offset:
                    return p.value
        return None


def parse(text: str, source: str = "oned.conf") -> Template:
    """Parse a template file; ``source`` names it in error messages."""
    return Template.parse(text, source)


def _newlines(text: str) -> list[int]:
    return [m.start() for m in re.finditer("\n", text)]


def _describe(name: str, where: dict[str, str]) -> str:
    if not where:
        return name
    return name + " with " + ", ".join(f'{k} = "{v}"' for k, v in where.items())


class _Parser:
    """A recursive-descent reading of oned's grammar that records every span it passes."""

    def __init__(self, text: str, source: str) -> None:
        self.text = text
        self.source = source
        self.pos = 0
        self.tokens: list[Token] = []
        self.attributes: list[Attribute] = []
        self.newlines = _newlines(text)
        self.last_value: Value | None = None

    def run(self) -> Template:
        n = len(self.text)
        while True:
            self._trivia()
            if self.pos >= n:
                break
            if not _NAME.match(self.text, self.pos):
                self._fail(self.pos, f"unexpected {self._char(self.pos)}; expected an attribute name")
            self.attributes.append(self._attribute())
        end = 0
        for t in self.tokens:  # the tree must cover the text exactly: that is what makes it lossless
            if t.start != end or t.end < t.start:
                raise AssertionError(f"token gap or overlap at {end}")
            end = t.end
        if end != n:
            raise AssertionError("tokens do not cover the text")
        return Template(self.text, self.source, tuple(self.tokens), tuple(self.attributes))

    # -- tokens --

    def _line(self, offset: int) -> int:
        return bisect.bisect_left(self.newlines, offset) + 1

    def _char(self, offset: int) -> str:
        if offset >= len(self.text):
            return "end of file"
        return f"character {self.text[offset]!r}"

    def _fail(self, offset: int, message: str) -> None:
        hint = ""
        last = self.last_value
        if last is not None and last.quoted and "\n" in last.raw:
            hint = (f" (the quoted value starting on line {last.line} runs over several lines:"
                    " is a closing quote missing?)")
        raise ConfigError(f"{self.source}: line {self._line(offset)}: {message}{hint}")

    def _add(self, kind: str, end: int) -> None:
        if end > self.pos:
            self.tokens.append(Token(kind, self.pos, end))
            self.pos = end

    def _trivia(self) -> None:
        m = _TRIVIA.match(self.text, self.pos)
        assert m is not None  # noqa: S101 - the pattern matches the empty string
        self._add("trivia", m.end())

    def _blanks(self) -> None:
        m = _BLANKS.match(self.text, self.pos)
        assert m is not None  # noqa: S101
        self._add("trivia", m.end())

    def _name(self) -> tuple[str, int]:
        m = _NAME.match(self.text, self.pos)
        if m is None:
            self._fail(self.pos, f"unexpected {self._char(self.pos)}; expected a name")
            raise AssertionError  # unreachable: _fail raises
        start = self.pos
        self._add("name", m.end())
        return m.group(), start

    def _equals(self, name: str) -> None:
        self._trivia()
        if not self.text.startswith("=", self.pos):
            self._fail(self.pos, f"expected '=' after {name}, found {self._char(self.pos)}")
        self._add("equals", self.pos + 1)
        self._blanks()

    def _value_token(self, name: str, in_vector: bool) -> tuple[str, int]:
        """Pick the value token at pos as flex's <VALUE> state does: longest match, ties to the
        earlier rule (open bracket, CDATA, quoted, bare). Returns (kind, end)."""
        text, pos = self.text, self.pos
        if pos >= len(text):
            self._fail(pos, f"expected a value for {name}, found end of file")
        if text[pos] == "\n":
            if in_vector:
                self._fail(pos, f"{name} has no value")
            return "empty", pos
        best, best_len, quoted = "", 0, False
        for kind, rx in (("open", _OPEN), ("cdata", _CDATA), ("quoted", _QUOTED), ("bare", _BARE)):
            m = rx.match(text, pos)
            quoted = quoted or (m is not None and kind == "quoted")
            if m is not None and m.end() - pos > best_len:
                best, best_len = kind, m.end() - pos
        if best == "cdata":
            self._fail(pos, f"the value of {name} contains ']]>', which oned rejects")
        if text[pos] == '"' and not quoted:
            # flex would read '"abc' as a bare word; a lone opening quote is a typo, not a value
            self._fail(pos, f"unterminated quoted value for {name}")
        if not best:
            self._fail(pos, f"expected a value for {name}, found {self._char(pos)}")
        if best == "open":
            return "open", pos + 1  # the blanks/newlines after "[" are kept as trivia
        return best, pos + best_len

    def _value(self, kind: str, end: int) -> Value:
        start = self.pos
        raw = self.text[start:end]
        self._add("value", end)
        v = Value(start, end, raw, kind == "quoted", self._line(start))
        self.last_value = v
        return v

    def _attribute(self) -> Attribute:
        name, start = self._name()
        line = self._line(start)
        self._equals(name)
        kind, end = self._value_token(name, in_vector=False)
        if kind != "open":
            value = self._value(kind, end)
            return Attribute(name, start, value.end, line, value, None)
        open_line = self._line(self.pos)
        self._add("open", end)
        m = _OPEN_TAIL.match(self.text, self.pos)
        open_end = m.end() if m else self.pos
        pairs: list[Pair] = []
        while True:
            self._trivia()
            if self.pos >= len(self.text):
                self._fail(self.pos, f"vector {name} opened on line {open_line} is not closed with ']'")
            if self.text[self.pos] == "]":
                if pairs:
                    self._fail(self.pos, f"expected a pair after ',' in vector {name}")
                break
            pairs.append(self._pair(name, open_line))
            self._trivia()
            if self.pos >= len(self.text):
                self._fail(self.pos, f"vector {name} opened on line {open_line} is not closed with ']'")
            c = self.text[self.pos]
            if c == "]":
                break
            if c != ",":
                self._fail(self.pos, f"expected ',' or ']' in vector {name} (opened on line "
                                     f"{open_line}), found {self._char(self.pos)}")
            self._add("comma", self.pos + 1)
        self._add("close", self.pos + 1)
        return Attribute(name, start, self.pos, line, None, tuple(pairs), open_end)

    def _pair(self, vector: str, open_line: int) -> Pair:
        if not _NAME.match(self.text, self.pos):
            self._fail(self.pos, f"expected a name in vector {vector} (opened on line {open_line}), "
                                 f"found {self._char(self.pos)}")
        key, start = self._name()
        self._equals(f"{vector}/{key}")
        kind, end = self._value_token(f"{vector}/{key}", in_vector=True)
        if kind == "open":
            self._fail(self.pos, f"vector {vector}: {key} cannot hold a nested vector")
        value = self._value(kind, end)
        return Pair(key, start, value, self._line(start))
