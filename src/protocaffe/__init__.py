"""protocaffe: compile a Caffe net (deploy.prototxt + .caffemodel) into readable PyTorch code.

`protocaffe.convert(...)` returns model.py's source and the state_dict, `protocaffe.load(...)` a
ready module: both are `protocaffe.api`'s, imported on first use (importing protocaffe itself
costs nothing).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from protocaffe.version import __version__

if TYPE_CHECKING:
    from protocaffe.api import convert, load

__all__ = ["__version__", "convert", "load"]


def __getattr__(name: str) -> Any:
    if name in ("convert", "load"):
        from protocaffe import api

        return getattr(api, name)
    raise AttributeError(f"module 'protocaffe' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), "convert", "load"])
