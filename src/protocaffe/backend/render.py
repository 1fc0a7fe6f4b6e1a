"""Render the module with Jinja2 and format it with black under protocaffe's own Mode."""

from __future__ import annotations

import ast

import black
import jinja2
from black.mode import TargetVersion

from protocaffe.backend.emit import LINE_LENGTH, ModuleParts
from protocaffe.backend.helpers import templates_dir

# Pinned so that generated files do not depend on the user's black configuration.
BLACK_MODE = black.Mode(
    target_versions={TargetVersion.PY310},
    line_length=LINE_LENGTH,
    string_normalization=True,
    magic_trailing_comma=True,
    preview=False,
)


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )


def render_module(parts: ModuleParts) -> str:
    fields = {name: getattr(parts, name) for name in parts.__dataclass_fields__}
    raw = _environment().get_template("model.py.j2").render(**fields)
    formatted = format_source(raw)
    ast.parse(formatted)  # a last check: the output must be valid Python
    return formatted


def format_source(source: str) -> str:
    return black.format_str(source, mode=BLACK_MODE)
