"""protocaffe: compile a Caffe net (deploy.prototxt + .caffemodel) into readable PyTorch code.

`protocaffe.convert(...)` returns model.py's source and the state_dict, `protocaffe.load(...)` a
ready module (`protocaffe.ImageOptions` adds a preprocess()): all are `protocaffe.api`'s,
imported on first use (importing protocaffe itself costs nothing).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from protocaffe.version import __version__

if TYPE_CHECKING:
    from protocaffe.api import ImageOptions, convert, load

__all__ = ["ImageOptions", "__version__", "convert", "load"]
_FROM_API = ("ImageOptions", "convert", "load")


def __getattr__(name: str) -> Any:
    if name in _FROM_API:
        from protocaffe import api

        return getattr(api, name)
    raise AttributeError(f"module 'protocaffe' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_FROM_API])
