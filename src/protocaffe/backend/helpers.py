"""Where the templates live, and the helper snippets generated modules may include.

The templates sit at the top of the repository (`templates/`). A wheel carries them inside the
package as `protocaffe/templates` (see pyproject.toml); a source checkout or an editable install
reads them from the repository. This module is the one place that knows both.
"""

from __future__ import annotations

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


@cache
def helper_source(name: str) -> str:
    """The source of helper `name` (templates/helpers/NAME.py), without trailing blank lines."""
    return (templates_dir() / "helpers" / f"{name}.py").read_text(encoding="utf-8").rstrip() + "\n"


@lru_cache(maxsize=1)
def helper_names() -> frozenset[str]:
    """The names every helper snippet binds at module level (one per file, named after it).

    Generated code may call any of them, so no layer or blob may take one of these names."""
    return frozenset(path.stem for path in (templates_dir() / "helpers").glob("*.py"))
