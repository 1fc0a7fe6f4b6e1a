"""The helper snippets' reserved names: the start-up scan agrees with a parse of each file."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from protocaffe.backend.helpers import _scanned_names, helper_names, templates_dir

HELPERS = sorted((templates_dir() / "helpers").glob("*.py"))


def parsed_names(source: str) -> set[str]:
    """Every name a module binds at its top level, by Python's own parser (written here, apart
    from backend/helpers.py, so that it checks the scan rather than repeats it)."""
    names: set[str] = set()
    for statement in ast.parse(source).body:
        if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(statement.name)
        elif isinstance(statement, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
            for target in targets:
                names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
    return names


@pytest.mark.parametrize("path", HELPERS, ids=lambda p: p.name)
def test_the_scan_finds_every_top_level_name(path: Path) -> None:
    source = path.read_text(encoding="utf-8")
    assert _scanned_names(source) == parsed_names(source)
    assert parsed_names(source) <= helper_names()


def test_the_scan_skips_indented_names() -> None:
    source = "class A:\n    b = 1\n\n    def c(self) -> None:\n        d = 2\n\n\nE = 3\n"
    assert _scanned_names(source) == {"A", "E"} == parsed_names(source)
