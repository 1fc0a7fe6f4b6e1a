"""A protobuf text-format reader that keeps the source location of every field.

protobuf's own `text_format` stops at the first field the schema does not know and forgets
where each message came from. Caffe files from forks are full of fields no single schema knows,
and every diagnostic protocaffe prints names a file and line, so this reader does both jobs:
it turns text into a message via the schema's descriptors, warns (with file:line) about unknown
fields instead of failing, and records where each message and field was written.
"""

from __future__ import annotations

import bisect
import functools
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from protocaffe.errors import ProtocaffeError, Reporter, SourceLoc, did_you_mean

# One match per token: the whitespace and comments before it, then the token itself (or, at a
# character no token starts with, that character as `bad`; or nothing at the end of the text).
_TOKEN = re.compile(
    r"""
    (?:[ \t\r\n\f\v]+|\#[^\n]*)*
    (?:
        (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
      | (?P<number>[-+]?(?:0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)[fF]?)
      | (?P<ident>[-+]?[A-Za-z_][A-Za-z0-9_.]*)
      | (?P<punct>[{}<>\[\]:,;])
      | (?P<bad>[\s\S])
    )?
    """,
    re.VERBOSE,
)

_CLOSE = {"{": "}", "<": ">"}


@functools.cache
def _repeated(fd: Any) -> bool:
    # protobuf 6 added `is_repeated`; protobuf 7 removed `label`.
    flag = getattr(fd, "is_repeated", None)
    if flag is not None:
        return bool(flag)
    return bool(fd.label == FieldDescriptor.LABEL_REPEATED)


class _Source:
    """A text's path and line starts, to turn offsets into locations when one is needed."""

    __slots__ = ("newlines", "path")

    def __init__(self, text: str, path: str) -> None:
        self.path = path
        self.newlines = [m.start() for m in re.finditer("\n", text)]

    def loc(self, pos: int) -> SourceLoc:
        before = bisect.bisect_left(self.newlines, pos)  # newlines before `pos`
        line_start = self.newlines[before - 1] + 1 if before else 0
        return SourceLoc(self.path, before + 1, pos - line_start + 1)


class Token(NamedTuple):
    kind: str
    text: str
    pos: int
    source: _Source

    @property
    def loc(self) -> SourceLoc:
        return self.source.loc(self.pos)


def _tokenize(text: str, path: str) -> Iterator[Token]:
    """Tokens, then one "eof" token. Locations are computed only for the tokens asked about:
    making a SourceLoc for each of ResNet-152's 15,000 tokens cost more than the parse."""
    source = _Source(text, path)
    match = _TOKEN.match
    new_token = tuple.__new__  # Token(...) without NamedTuple's Python-level __new__
    pos = 0
    end = len(text)
    while True:
        found = match(text, pos)
        assert found is not None  # every part of the pattern is optional
        kind = found.lastgroup
        if kind is None:  # only whitespace and comments were left
            yield Token("eof", "", end, source)
            return
        start, pos = found.span(kind)
        if kind == "bad":
            raise ProtocaffeError.at(
                source.loc(start), f"syntax error: unexpected character {text[start]!r}"
            )
        yield new_token(Token, (kind, text[start:pos], start, source))


@dataclass
class Locations:
    """Where messages and fields were written: keyed by message identity (`id`).

    A place may be stored as the Token written there; it becomes a SourceLoc when first asked
    for (most are never asked for, and making them all cost a quarter of the parse).
    """

    messages: dict[int, SourceLoc | Token] = field(default_factory=dict)
    fields: dict[tuple[int, str], SourceLoc | Token] = field(default_factory=dict)
    # Messages are kept alive here so that their ids stay unique for the parse's lifetime.
    _keep: list[Message] = field(default_factory=list)

    def record(self, msg: Message, loc: SourceLoc | Token) -> None:
        self.messages[id(msg)] = loc
        self._keep.append(msg)

    def of(self, msg: Message) -> SourceLoc | None:
        return _resolve(self.messages, id(msg))

    def of_field(self, msg: Message, name: str) -> SourceLoc | None:
        return _resolve(self.fields, (id(msg), name))


def _resolve(places: dict[Any, SourceLoc | Token], key: Any) -> SourceLoc | None:
    place = places.get(key)
    if isinstance(place, Token):
        place = places[key] = place.loc
    return place


_UNESCAPE = re.compile(
    r"\\(x[0-9a-fA-F]{1,2}|[0-7]{1,3}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|.)", re.DOTALL
)
_SIMPLE_ESCAPES = {
    "n": b"\n",
    "t": b"\t",
    "r": b"\r",
    "a": b"\a",
    "b": b"\b",
    "f": b"\f",
    "v": b"\v",
    "\\": b"\\",
    "'": b"'",
    '"': b'"',
    "?": b"?",
}


def _unquote(token: str) -> bytes:
    r"""The bytes a quoted literal stands for, as protobuf reads them: `\xHH` and octal escapes
    are bytes, `\uXXXX` and `\UXXXXXXXX` are code points in UTF-8, other text is UTF-8."""

    def escape(esc: str) -> bytes:
        if esc[0] == "x" and len(esc) > 1:
            return bytes([int(esc[1:], 16)])
        if esc[0].isdigit():
            return bytes([int(esc, 8) & 0xFF])  # protobuf keeps the low byte of \400 .. \777
        if esc[0] in "uU" and len(esc) > 1:
            return chr(min(int(esc[1:], 16), 0x10FFFF)).encode("utf-8", "surrogatepass")
        return _SIMPLE_ESCAPES.get(esc, esc.encode("utf-8"))

    body = token[1:-1]
    out = bytearray()
    pos = 0
    for match in _UNESCAPE.finditer(body):
        out += body[pos : match.start()].encode("utf-8")
        out += escape(match.group(1))
        pos = match.end()
    out += body[pos:].encode("utf-8")
    return bytes(out)


def _text(raw: bytes, tok: Token) -> str:
    """A string field's value. Caffe strings are UTF-8 (protobuf refuses anything else), so
    escapes that spell invalid UTF-8 are an error here rather than a mangled name."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocaffeError.at(
            tok.loc, f"string is not valid UTF-8 after its escapes (byte {exc.start})"
        ) from None


class _Field(NamedTuple):
    """What the parser needs of a field descriptor, looked up once per field of the schema."""

    fd: Any
    name: str
    repeated: bool
    message: bool  # a message or group: parsed as a nested block
    text: bool  # a string or bytes: adjacent literals concatenate


@functools.cache
def _field_names(descriptor: Any) -> tuple[str, ...]:
    return tuple(sorted(descriptor.fields_by_name))


@functools.cache
def _field(descriptor: Any, name: str) -> _Field | None:
    fd = descriptor.fields_by_name.get(name)
    if fd is None:
        return None
    kind = fd.type
    return _Field(
        fd,
        fd.name,
        _repeated(fd),
        kind in (FieldDescriptor.TYPE_MESSAGE, FieldDescriptor.TYPE_GROUP),
        kind in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES),
    )


class _Parser:
    def __init__(self, text: str, path: str, reporter: Reporter, locations: Locations) -> None:
        self._tokens = _tokenize(text, path)
        self._tok = next(self._tokens)
        self._reporter = reporter
        self._locations = locations

    def _advance(self) -> Token:
        tok = self._tok
        if tok.kind != "eof":  # the end stays the end: a caller that reads on sees "eof" again
            self._tok = next(self._tokens)
        return tok

    def parse_message(self, msg: Message, close: str | None, opened: Token | None = None) -> None:
        while True:
            tok = self._tok
            if close is None and tok.kind == "eof":
                return
            if tok.kind == "eof" and opened is not None:
                where = f"{opened.loc.line}:{opened.loc.col}"
                raise ProtocaffeError.at(
                    tok.loc, f"syntax error: '{opened.text}' at {where} is never closed"
                )
            if close is not None and tok.kind == "punct" and tok.text == close:
                self._advance()
                return
            if tok.kind == "punct" and tok.text in ",;":
                self._advance()
                continue
            if tok.kind != "ident":
                found = tok.text or "end of file"
                raise ProtocaffeError.at(
                    tok.loc, f"syntax error: expected a field name, found {found!r}"
                )
            self._advance()
            self._parse_field(msg, tok)

    def _parse_field(self, msg: Message, name_tok: Token) -> None:
        descriptor = msg.DESCRIPTOR
        known = _field(descriptor, name_tok.text)
        tok = self._tok
        if tok.kind == "punct" and tok.text == ":":
            self._advance()
        elif (known is None or not known.message) and not (
            tok.kind == "punct" and tok.text in _CLOSE
        ):
            # protobuf's text format (and so Caffe) allows leaving the colon out only before a
            # message's '{' or '<'.
            found = tok.text or "end of file"
            raise ProtocaffeError.at(
                tok.loc,
                f"syntax error: expected ':' after '{name_tok.text}', found {found!r} (only a "
                "'{' may follow a field name directly)",
            )
        if known is None:
            self._reporter.warn(
                name_tok.loc,
                f"unknown field '{name_tok.text}' in {descriptor.name}; ignored"
                + did_you_mean(name_tok.text, _field_names(descriptor)),
            )
            self._skip_value()
            return
        self._locations.fields[(id(msg), known.name)] = name_tok
        if not known.repeated and msg.HasField(known.name):
            raise ProtocaffeError.at(
                name_tok.loc, f"field '{known.name}' of {descriptor.name} is given more than once"
            )
        if self._tok.kind == "punct" and self._tok.text == "[":
            self._advance()
            while not (self._tok.kind == "punct" and self._tok.text == "]"):
                self._parse_value(msg, known, name_tok)
                if self._tok.kind == "punct" and self._tok.text == ",":
                    self._advance()
            self._advance()
        else:
            self._parse_value(msg, known, name_tok)

    def _parse_value(self, msg: Message, known: _Field, name_tok: Token) -> None:
        fd = known.fd
        if known.message:
            open_tok = self._tok
            if open_tok.kind != "punct" or open_tok.text not in _CLOSE:
                raise ProtocaffeError.at(
                    open_tok.loc, f"syntax error: expected '{{' after '{known.name}'"
                )
            self._advance()
            if known.repeated:
                sub = getattr(msg, known.name).add()
            else:
                sub = getattr(msg, known.name)
                sub.SetInParent()
            self._locations.record(sub, name_tok)
            self.parse_message(sub, _CLOSE[open_tok.text], open_tok)
            return
        tok = self._advance()
        value = _convert_scalar(fd, tok)
        if isinstance(value, bytes):
            # Adjacent string literals concatenate, as in C.
            while self._tok.kind == "string":
                value += _unquote(self._advance().text)
            if fd.type == FieldDescriptor.TYPE_STRING:
                value = _text(value, tok)
        if known.repeated:
            getattr(msg, known.name).append(value)
        else:
            setattr(msg, known.name, value)

    def _skip_value(self) -> None:
        tok = self._tok
        if tok.kind == "punct" and tok.text in _CLOSE:
            self._advance()
            depth = [_CLOSE[tok.text]]
            while depth:
                t = self._advance()
                if t.kind == "eof":
                    where = f"{tok.loc.line}:{tok.loc.col}"
                    raise ProtocaffeError.at(
                        t.loc, f"syntax error: '{tok.text}' at {where} is never closed"
                    )
                if t.kind == "punct" and t.text in _CLOSE:
                    depth.append(_CLOSE[t.text])
                elif t.kind == "punct" and t.text == depth[-1]:
                    depth.pop()
            return
        if tok.kind == "punct" and tok.text == "[":
            while not (self._tok.kind == "punct" and self._tok.text == "]"):
                if self._tok.kind == "eof":
                    raise ProtocaffeError.at(self._tok.loc, "syntax error: unclosed '['")
                self._advance()
            self._advance()
            return
        if tok.kind in ("string", "number", "ident"):
            self._advance()
            while tok.kind == "string" and self._tok.kind == "string":
                self._advance()
            return
        raise ProtocaffeError.at(tok.loc, f"syntax error: expected a value, found {tok.text!r}")


_INT_TYPES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}
_FLOAT_WORDS = {"inf": math.inf, "infinity": math.inf, "nan": math.nan}


def _convert_scalar(fd: Any, tok: Token) -> object:
    def fail(what: str) -> ProtocaffeError:
        return ProtocaffeError.at(tok.loc, f"field '{fd.name}' expects {what}, got {tok.text!r}")

    if fd.type in _INT_TYPES:
        if tok.kind != "number":
            raise fail("an integer")
        try:
            value = int(tok.text, 0)
        except ValueError:
            raise fail("an integer") from None
        low, high = _INT_TYPES[fd.type]
        if not low <= value <= high:
            raise fail(f"an integer in [{low}, {high}]")
        return value
    if fd.type in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
        text = tok.text.lower()
        sign = -1.0 if text.startswith("-") else 1.0
        word = text.lstrip("+-")
        if tok.kind == "ident" and word in _FLOAT_WORDS:
            return sign * _FLOAT_WORDS[word]
        if tok.kind != "number":
            raise fail("a number")
        try:
            return (
                float(int(text, 0))
                if text.lstrip("+-").startswith("0x")
                else float(text.rstrip("f"))
            )
        except ValueError:
            raise fail("a number") from None
    if fd.type == FieldDescriptor.TYPE_BOOL:
        if tok.text in ("true", "True", "t", "1"):
            return True
        if tok.text in ("false", "False", "f", "0"):
            return False
        raise fail("true or false")
    if fd.type in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES):
        if tok.kind != "string":
            raise fail("a quoted string")
        return _unquote(tok.text)
    if fd.type == FieldDescriptor.TYPE_ENUM:
        enum = fd.enum_type
        assert enum is not None
        if tok.kind == "ident" and tok.text in enum.values_by_name:
            return enum.values_by_name[tok.text].number
        if tok.kind == "number":
            try:
                number = int(tok.text, 0)
            except ValueError:
                number = None
            if number is not None and number in enum.values_by_number:
                return number
        names = ", ".join(v.name for v in enum.values)
        raise ProtocaffeError.at(
            tok.loc, f"unknown value {tok.text!r} for '{fd.name}' (expected one of: {names})"
        )
    raise fail("a supported value")  # pragma: no cover - all scalar types are handled above


def parse_text(
    text: str, path: str, msg: Message, reporter: Reporter, locations: Locations
) -> None:
    """Fill `msg` from protobuf text format, recording locations and warning on unknown fields.

    A syntax error is reported alone: the warnings before it (often the unknown fields that a
    missing '}' makes of the layers after it) are dropped. A '{' never closed is blamed where
    the indentation says its '}' is missing (see `_missing_close`)."""
    locations.record(msg, SourceLoc(path, 1, 1))
    warnings = Reporter()
    try:
        _Parser(text, path, warnings, locations).parse_message(msg, None)
    except ProtocaffeError as exc:
        if "is never closed" in exc.diagnostics[0].message:
            better = _missing_close(text, path)
            if better is not None:
                raise better from None
        raise
    reporter.diagnostics.extend(warnings.diagnostics)


def _indent(line_starts: list[int], text: str, pos: int) -> tuple[int, bool]:
    """The indentation (columns before the first token) of the line holding `pos`, and whether
    the token at `pos` is that first token."""
    line = bisect.bisect_right(line_starts, pos) - 1
    start = line_starts[line]
    head = text[start:pos]
    width = len(head) - len(head.lstrip(" \t"))
    return width, not head.strip(" \t")


def _missing_close(text: str, path: str) -> ProtocaffeError | None:
    """Where a '}' is missing, told by the indentation: the first line that opens a block at
    the indentation of the block around it (`layer {` inside a layer), or closes one at the
    indentation of an outer block (a '}' lined up with the `layer {` two levels up).

    Trusted only in a file that indents its blocks (a nested block before that line is
    indented deeper than its parent) and if, with a '}' put there, every other block that
    spans lines is indented consistently and the braces balance; else None (the error stays
    at the end of the file)."""
    line_starts = [0] + [m.end() for m in re.finditer("\n", text)]
    braces = [t for t in _tokenize(text, path) if t.kind == "punct" and t.text in "{}<>"]

    def scan(insert_before: int | None) -> tuple[int, Token | None, int]:
        """Walk the braces (with a '}' put before brace number `insert_before`): (the index of
        the first brace that breaks the indentation or the balance, or -1; the innermost
        block open there; how many nested blocks were indented deeper before it)."""
        stack: list[Token] = []
        nested = 0
        for index, tok in enumerate(braces):
            if index == insert_before:
                if not stack:
                    return index, None, nested
                stack.pop()
            indent, first = _indent(line_starts, text, tok.pos)
            top = stack[-1] if stack else None
            if top is not None and tok.source.loc(tok.pos).line != top.loc.line:
                top_indent = _indent(line_starts, text, top.pos)[0]
                opens = tok.text in _CLOSE
                if (opens and indent <= top_indent) or (
                    not opens and first and indent != top_indent
                ):
                    return index, top, nested
                nested += opens
            if tok.text in _CLOSE:
                stack.append(tok)
            elif not stack:
                return index, None, nested  # a '}' too many
            else:
                stack.pop()
        return (len(braces), stack[-1], nested) if stack else (-1, None, nested)

    index, unclosed, nested = scan(None)
    if unclosed is None or index == len(braces) or nested == 0 or scan(index)[0] != -1:
        return None
    where = braces[index]
    # The missing '}' belongs before the line's first token (the `layer` of `layer {`).
    start = line_starts[bisect.bisect_right(line_starts, where.pos) - 1]
    at = where.source.loc(start + _indent(line_starts, text, where.pos)[0])
    line, col = unclosed.loc.line, unclosed.loc.col
    return ProtocaffeError.at(
        at,
        f"syntax error: '{unclosed.text}' at {line}:{col} is never closed: a "
        f"'{_CLOSE[unclosed.text]}' is missing before this line (its indentation closes that "
        "block)",
    )
