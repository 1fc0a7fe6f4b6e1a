"""A protobuf text-format reader that keeps the source location of every field.

protobuf's own `text_format` stops at the first field the schema does not know and forgets
where each message came from. Caffe files from forks are full of fields no single schema knows,
and every diagnostic protocaffe prints names a file and line, so this reader does both jobs:
it turns text into a message via the schema's descriptors, warns (with file:line) about unknown
fields instead of failing, and records where each message and field was written.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from protocaffe.errors import ProtocaffeError, Reporter, SourceLoc

_TOKEN = re.compile(
    r"""
    (?P<ws>[ \t\r\n\f\v]+|\#[^\n]*)
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<number>[-+]?(?:0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)[fF]?)
  | (?P<ident>[-+]?[A-Za-z_][A-Za-z0-9_.]*)
  | (?P<punct>[{}<>\[\]:,;])
    """,
    re.VERBOSE,
)

_CLOSE = {"{": "}", "<": ">"}


def _repeated(fd: Any) -> bool:
    # protobuf 6 added `is_repeated`; protobuf 7 removed `label`.
    flag = getattr(fd, "is_repeated", None)
    if flag is not None:
        return bool(flag)
    return bool(fd.label == FieldDescriptor.LABEL_REPEATED)


@dataclass(frozen=True)
class Token:
    kind: str
    text: str
    loc: SourceLoc


def _tokenize(text: str, path: str) -> Iterator[Token]:
    pos = 0
    line = 1
    line_start = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        loc = SourceLoc(path, line, pos - line_start + 1)
        if match is None:
            raise ProtocaffeError.at(loc, f"syntax error: unexpected character {text[pos]!r}")
        kind = match.lastgroup or ""
        value = match.group()
        if kind != "ws":
            yield Token(kind, value, loc)
        newlines = value.count("\n")
        if newlines:
            line += newlines
            line_start = match.start() + value.rindex("\n") + 1
        pos = match.end()
    yield Token("eof", "", SourceLoc(path, line, pos - line_start + 1))


@dataclass
class Locations:
    """Where messages and fields were written: keyed by message identity (`id`)."""

    messages: dict[int, SourceLoc] = field(default_factory=dict)
    fields: dict[tuple[int, str], SourceLoc] = field(default_factory=dict)
    # Messages are kept alive here so that their ids stay unique for the parse's lifetime.
    _keep: list[Message] = field(default_factory=list)

    def record(self, msg: Message, loc: SourceLoc) -> None:
        self.messages[id(msg)] = loc
        self._keep.append(msg)

    def of(self, msg: Message) -> SourceLoc | None:
        return self.messages.get(id(msg))

    def of_field(self, msg: Message, name: str) -> SourceLoc | None:
        return self.fields.get((id(msg), name))


_UNESCAPE = re.compile(r"\\(x[0-9a-fA-F]{1,2}|[0-7]{1,3}|.)", re.DOTALL)
_SIMPLE_ESCAPES = {
    "n": "\n",
    "t": "\t",
    "r": "\r",
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "v": "\v",
    "\\": "\\",
    "'": "'",
    '"': '"',
    "?": "?",
}


def _unquote(token: str) -> str:
    def replace(match: re.Match[str]) -> str:
        esc = match.group(1)
        if esc[0] in "xX" and len(esc) > 1:
            return chr(int(esc[1:], 16))
        if esc[0].isdigit():
            return chr(int(esc, 8))
        return _SIMPLE_ESCAPES.get(esc, esc)

    return _UNESCAPE.sub(replace, token[1:-1])


class _Parser:
    def __init__(self, text: str, path: str, reporter: Reporter, locations: Locations) -> None:
        self._tokens = _tokenize(text, path)
        self._tok = next(self._tokens)
        self._reporter = reporter
        self._locations = locations

    def _advance(self) -> Token:
        tok = self._tok
        self._tok = next(self._tokens)
        return tok

    def _expect(self, text: str) -> Token:
        if self._tok.text != text or self._tok.kind not in ("punct",):
            found = self._tok.text or "end of file"
            raise ProtocaffeError.at(
                self._tok.loc, f"syntax error: expected '{text}', found {found!r}"
            )
        return self._advance()

    def parse_message(self, msg: Message, close: str | None) -> None:
        while True:
            tok = self._tok
            if close is None and tok.kind == "eof":
                return
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
        fd = descriptor.fields_by_name.get(name_tok.text)
        has_colon = self._tok.kind == "punct" and self._tok.text == ":"
        if has_colon:
            self._advance()
        if fd is None:
            self._reporter.warn(
                name_tok.loc,
                f"unknown field '{name_tok.text}' in {descriptor.name}; ignored",
            )
            self._skip_value()
            return
        self._locations.fields[(id(msg), fd.name)] = name_tok.loc
        if not _repeated(fd) and msg.HasField(fd.name):
            raise ProtocaffeError.at(
                name_tok.loc, f"field '{fd.name}' of {descriptor.name} is given more than once"
            )
        if self._tok.kind == "punct" and self._tok.text == "[":
            self._advance()
            while not (self._tok.kind == "punct" and self._tok.text == "]"):
                self._parse_value(msg, fd, name_tok)
                if self._tok.kind == "punct" and self._tok.text == ",":
                    self._advance()
            self._advance()
        else:
            self._parse_value(msg, fd, name_tok)

    def _parse_value(self, msg: Message, fd: Any, name_tok: Token) -> None:
        if fd.type in (FieldDescriptor.TYPE_MESSAGE, FieldDescriptor.TYPE_GROUP):
            open_tok = self._tok
            if open_tok.kind != "punct" or open_tok.text not in _CLOSE:
                raise ProtocaffeError.at(
                    open_tok.loc, f"syntax error: expected '{{' after '{fd.name}'"
                )
            self._advance()
            if _repeated(fd):
                sub = getattr(msg, fd.name).add()
            else:
                sub = getattr(msg, fd.name)
                sub.SetInParent()
            self._locations.record(sub, name_tok.loc)
            self.parse_message(sub, _CLOSE[open_tok.text])
            return
        tok = self._advance()
        value = _convert_scalar(fd, tok)
        # Adjacent string literals concatenate, as in C.
        if fd.type in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES):
            while self._tok.kind == "string":
                value = str(value) + _unquote(self._advance().text)
            if fd.type == FieldDescriptor.TYPE_BYTES:
                value = str(value).encode("latin-1", errors="replace")
        if _repeated(fd):
            getattr(msg, fd.name).append(value)
        else:
            setattr(msg, fd.name, value)

    def _skip_value(self) -> None:
        tok = self._tok
        if tok.kind == "punct" and tok.text in _CLOSE:
            self._advance()
            depth = [_CLOSE[tok.text]]
            while depth:
                t = self._advance()
                if t.kind == "eof":
                    raise ProtocaffeError.at(t.loc, "syntax error: unclosed '{' at end of file")
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
    """Fill `msg` from protobuf text format, recording locations and warning on unknown fields."""
    locations.record(msg, SourceLoc(path, 1, 1))
    _Parser(text, path, reporter, locations).parse_message(msg, None)
