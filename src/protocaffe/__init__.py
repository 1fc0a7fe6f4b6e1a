"""protocaffe: compile a Caffe net (deploy.prototxt + .caffemodel) into readable PyTorch code."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from protocaffe.version import __version__

if TYPE_CHECKING:
    from protocaffe.api import Conversion


def convert(*args: Any, **kwargs: Any) -> Conversion:
    """See `protocaffe.api.convert`."""
    from protocaffe.api import convert as _convert

    return _convert(*args, **kwargs)


def load(*args: Any, **kwargs: Any) -> Any:
    """See `protocaffe.api.load`."""
    from protocaffe.api import load as _load

    return _load(*args, **kwargs)


def fast(model: Any, *example_inputs: Any, nnpack: bool | None = None) -> Any:
    """See `protocaffe.inference.fast`: an inference-only copy of a generated module, prepared
    for CPU speed in seconds (channels-last weights, NNPACK where faster, TorchScript-frozen)."""
    from protocaffe.inference import fast as _fast

    return _fast(model, *example_inputs, nnpack=nnpack)


__all__ = ["__version__", "convert", "fast", "load"]
