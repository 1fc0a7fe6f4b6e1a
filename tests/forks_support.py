"""Shared tools of the fork-layer tests: convert a net with seeded random weights, run the
generated module while capturing every intermediate value, and compare with OpenCV per blob."""

from __future__ import annotations

import sys
import types
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from shared_dir import CORPUS

from protocaffe.api import Conversion, convert, module_from_source
from protocaffe.ir.graph import Value
from protocaffe.random_weights import random_weights


def corpus_net(name: str) -> Path:
    path = CORPUS / name / "deploy.prototxt"
    if not path.is_file():
        pytest.skip(f"corpus net {name} not available")
    return path


def convert_random(
    prototxt: Path,
    tmp: Path,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    seed: int = 0,
) -> tuple[Conversion, Path]:
    weights = tmp / "random.caffemodel"
    random_weights(prototxt, weights, seed=seed, input_shapes=input_shapes)
    return convert(prototxt, weights, input_shapes=input_shapes), weights


def load_module(conversion: Conversion) -> torch.nn.Module:
    model: torch.nn.Module = module_from_source(conversion.source, conversion.class_name)
    state = conversion.state_dict
    if state is not None:
        model.load_state_dict(state, strict=True)
    return model.eval()


def run_capturing(
    conversion: Conversion, model: torch.nn.Module, inputs: Sequence[np.ndarray]
) -> dict[Value, np.ndarray]:
    """Every value of forward() (by the IR value it holds), captured from its locals: a copy
    of each as soon as it is assigned, since a later line may compute in place into it (a
    ReLU after a Convolution)."""
    captured: dict[str, Any] = {}

    def tracer(frame: types.FrameType, event: str, arg: Any) -> Any:
        if frame.f_code.co_name == "forward" and frame.f_locals.get("self") is model:
            if event in ("line", "return"):
                for name, value in frame.f_locals.items():
                    if name not in captured:
                        is_tensor = isinstance(value, torch.Tensor)
                        captured[name] = value.detach().clone() if is_tensor else value
            return tracer
        return None

    sys.settrace(tracer)
    try:
        with torch.no_grad():
            model(*[torch.from_numpy(np.ascontiguousarray(x)) for x in inputs])
    finally:
        sys.settrace(None)
    values: dict[Value, np.ndarray] = {}
    for value, name in conversion.emitted.locals.items():
        if name in captured and isinstance(captured[name], torch.Tensor):
            values[value] = captured[name].numpy()
    return values


def opencv_blobs(
    prototxt: Path,
    weights: Path,
    conversion: Conversion,
    inputs: Sequence[np.ndarray],
    skip: Sequence[str] = (),
) -> dict[Value, np.ndarray]:
    """OpenCV's output of the layer that produced each value (fusion off)."""
    import cv2

    net = cv2.dnn.readNetFromCaffe(str(prototxt), str(weights))
    net.enableFusion(False)
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    for value, array in zip(conversion.graph.inputs, inputs, strict=True):
        net.setInput(array, value.blob)
    names = [n.name for n in conversion.graph.nodes if n.name not in skip]
    outs = net.forward(names)
    result: dict[Value, np.ndarray] = {}
    for name, out in zip(names, outs, strict=True):
        node = next(n for n in conversion.graph.nodes if n.name == name)
        result[node.outputs[0]] = np.asarray(out)
    return result


def relative_error(ours: np.ndarray, reference: np.ndarray) -> float:
    """max |a - b| over the reference's largest magnitude (1 when it is all zeros)."""
    assert ours.shape == reference.shape, (ours.shape, reference.shape)
    scale = max(float(np.abs(reference).max(initial=0.0)), 1e-6)
    return float(np.abs(ours.astype(np.float64) - reference).max(initial=0.0)) / scale
