"""Diagnostics: errors and notes that carry the place in the input they are about.

Every failure protocaffe reports is a `Diagnostic` with a `SourceLoc`. Code that finds a problem
raises `ProtocaffeError` once, with every diagnostic it found; the command line prints each on
one line and exits with status 2. Notes and warnings are collected on a `Reporter` instead of
being printed where they arise, so library callers decide what to show.
"""

from __future__ import annotations

import difflib
import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace


@dataclass(frozen=True, order=True)
class SourceLoc:
    """A place in an input file: a prototxt line/column, or a caffemodel byte offset."""

    file: str
    line: int = 0
    col: int = 0
    offset: int | None = None

    @property
    def line_text(self) -> str:
        """`file:line`, how a layer's place is shown (its column adds nothing)."""
        return str(replace(self, col=0))

    def __str__(self) -> str:
        if self.offset is not None:
            return f"{self.file}: byte {self.offset}"
        if self.line <= 0:
            return self.file
        if self.col <= 0:
            return f"{self.file}:{self.line}"
        return f"{self.file}:{self.line}:{self.col}"


class Severity(enum.Enum):
    ERROR = "error"
    WARNING = "warning"
    NOTE = "note"


def _one_line(text: str) -> str:
    """Keep a diagnostic on one line whatever names it quotes."""
    return text.encode("unicode_escape").decode("ascii")


@dataclass(frozen=True)
class Diagnostic:
    """One message about one place; `layer` and `layer_type` name the Caffe layer if known."""

    loc: SourceLoc
    message: str
    layer: str | None = None
    layer_type: str | None = None
    severity: Severity = Severity.ERROR

    def __str__(self) -> str:
        # A diagnostic about a layer points at the layer's line (`file:line: layer "x" (T): ...`);
        # a column only helps where there is no layer to name, e.g. a syntax error.
        prefix = f"{self.loc.line_text if self.layer is not None else self.loc}: "
        if self.severity is not Severity.ERROR:
            prefix += f"{self.severity.value}: "
        if self.layer is not None:
            kind = f" ({_one_line(self.layer_type)})" if self.layer_type else ""
            prefix += f'layer "{_one_line(self.layer)}"{kind}: '
        return prefix + _one_line(self.message)


class ProtocaffeError(Exception):
    """The one exception type protocaffe raises for bad input. It holds every diagnostic found."""

    def __init__(self, diagnostics: Iterable[Diagnostic]) -> None:
        self.diagnostics: tuple[Diagnostic, ...] = tuple(diagnostics)
        if not self.diagnostics:
            raise ValueError("ProtocaffeError needs at least one diagnostic")
        super().__init__("\n".join(str(d) for d in self.diagnostics))

    @classmethod
    def at(
        cls,
        loc: SourceLoc,
        message: str,
        layer: str | None = None,
        layer_type: str | None = None,
    ) -> ProtocaffeError:
        return cls([Diagnostic(loc, message, layer, layer_type)])


@dataclass
class Reporter:
    """Collects warnings and notes during one conversion."""

    diagnostics: list[Diagnostic] = field(default_factory=list)

    def warn(
        self, loc: SourceLoc, message: str, layer: str | None = None, layer_type: str | None = None
    ) -> None:
        self.diagnostics.append(Diagnostic(loc, message, layer, layer_type, Severity.WARNING))

    def note(
        self, loc: SourceLoc, message: str, layer: str | None = None, layer_type: str | None = None
    ) -> None:
        self.diagnostics.append(Diagnostic(loc, message, layer, layer_type, Severity.NOTE))


def _words(name: str) -> tuple[str, ...]:
    """A name's words, lowercased and sorted: CamelCase, snake_case and digits split."""
    parts = re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+", name)
    return tuple(sorted(p.lower() for p in parts))


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """` (did you mean 'x'?)` for the choice closest to a misspelt `name`, or "": the same
    letters in another case, the same words in another order (DepthwiseConvolution for
    ConvolutionDepthwise), else difflib's closest match."""
    options = sorted(set(choices))
    lowered = {c.lower(): c for c in options}
    found = lowered.get(name.lower())
    if found is None:
        words = _words(name)
        found = next((c for c in options if words and _words(c) == words), None)
    if found is None:
        close = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.75)
        found = lowered[close[0]] if close else None
    return f" (did you mean '{found}'?)" if found is not None and found != name else ""
