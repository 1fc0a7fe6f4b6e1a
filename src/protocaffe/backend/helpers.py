"""Where the templates live, and the helper snippets generated modules may include.

The templates sit at the top of the repository (`templates/`). A wheel carries them inside the
package as `protocaffe/templates` (see pyproject.toml); a source checkout or an editable install
reads them from the repository. This module is the one place that knows both.

A helper (templates/helpers/NAME.py, or a plugin's `register_helper` source) starts with the
import statements it needs (`import torch.nn.functional as F`); the generated module gets those
imports once, at its top, and the rest of the helper's source where helpers go.
"""

from __future__ import annotations

import ast
import re
from functools import cache, lru_cache
from pathlib import Path

_PACKAGED = Path(__file__).resolve().parent.parent / "templates"
_REPOSITORY = Path(__file__).resolve().parents[3] / "templates"


@lru_cache(maxsize=1)
def templates_dir() -> Path:
    for candidate in (_PACKAGED, _REPOSITORY):
        if (candidate / "model.py.j2").is_file():
            return candidate
    raise FileNotFoundError(f"protocaffe templates not found in {_PACKAGED} or {_REPOSITORY}")


_PLUGIN_HELPERS: dict[str, tuple[tuple[str, ...], str]] = {}  # name -> (imports, code)


def register_helper(name: str, source: str) -> None:
    """Make `source` (plain Python defining `name`) available to emitters as helper `name`.

    For plugins: their generated code stays self-contained by including its helpers this way.
    """
    if name in _PLUGIN_HELPERS or (templates_dir() / "helpers" / f"{name}.py").is_file():
        raise ValueError(f"helper {name!r} is already defined")
    _PLUGIN_HELPERS[name] = _split_imports(source)


def helper_source(name: str) -> str:
    """The code of helper `name` (a plugin's, or templates/helpers/NAME.py) after its imports,
    without leading or trailing blank lines."""
    return _helper(name)[1]


def helper_imports(name: str) -> tuple[str, ...]:
    """The import statements helper `name` starts with, normalised (ast.unparse)."""
    return _helper(name)[0]


def _helper(name: str) -> tuple[tuple[str, ...], str]:
    if name in _PLUGIN_HELPERS:
        return _PLUGIN_HELPERS[name]
    return _template_helper(name)


@cache
def _template_helper(name: str) -> tuple[tuple[str, ...], str]:
    return _split_imports((templates_dir() / "helpers" / f"{name}.py").read_text(encoding="utf-8"))


def _split_imports(source: str) -> tuple[tuple[str, ...], str]:
    """(the leading import statements, the code after them) of a helper's source."""
    imports: list[str] = []
    lines = source.splitlines(keepends=True)
    start = 0
    for statement in ast.parse(source).body:
        if not isinstance(statement, ast.Import | ast.ImportFrom):
            break
        imports.append(ast.unparse(statement))
        start = statement.end_lineno or start
    code = "".join(lines[start:]).strip("\n").rstrip() + "\n"
    return tuple(imports), code


def helper_names() -> frozenset[str]:
    """The names every helper snippet binds at module level (the templates' and the plugins').

    Generated code may call any of them, so no layer or blob may take one of these names."""
    plugin_names = (_bound_names(code) for _, code in _PLUGIN_HELPERS.values())
    return _template_helper_names().union(*plugin_names)


@lru_cache(maxsize=1)
def _template_helper_names() -> frozenset[str]:
    # A scan of the lines, not _bound_names: parsing every helper cost each conversion 50 ms of
    # its start-up. The helpers are black-formatted (one statement starts a line at column 0),
    # and tests/test_helpers.py checks that both find the same names in every one.
    names = [
        _scanned_names(path.read_text(encoding="utf-8"))
        for path in (templates_dir() / "helpers").glob("*.py")
    ]
    return frozenset().union(*names)


_TOP_LEVEL_NAME = re.compile(r"^(?:(?:def|class) (\w+)|(\w+) = )", re.MULTILINE)


def _scanned_names(source: str) -> frozenset[str]:
    """The names of the def, class and `name = ...` lines at column 0 of a black-formatted
    helper, which are _bound_names' for the helpers protocaffe ships."""
    return frozenset(a or b for a, b in _TOP_LEVEL_NAME.findall(source))


def _bound_names(source: str) -> frozenset[str]:
    """Top-level def/class/assignment names of a helper (a file may hold private helpers too)."""
    names: set[str] = set()
    for statement in ast.parse(source).body:
        if isinstance(statement, ast.FunctionDef | ast.ClassDef):
            names.add(statement.name)
        elif isinstance(statement, ast.Assign):
            names.update(t.id for t in statement.targets if isinstance(t, ast.Name))
    return frozenset(names)
