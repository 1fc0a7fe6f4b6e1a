"""Run a tiny Caffe net through protocaffe and through a reference, and compare the outputs.

The reference is OpenCV 4.x dnn (`cv2.dnn.readNetFromCaffe`, fusion off), or an independent numpy
implementation where a test says OpenCV lacks a layer or disagrees with Caffe. Weights come from
protocaffe's own random-weights command, written as a real .caffemodel that both sides read.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from protocaffe.api import Conversion, convert, module_from_source
from protocaffe.errors import Reporter
from protocaffe.frontend.caffemodel import read_caffemodel
from protocaffe.frontend.caffemodel_writer import write_caffemodel
from protocaffe.frontend.prototxt import read_prototxt
from protocaffe.ir.graph import Graph
from protocaffe.passes import DEFAULT_PIPELINE
from protocaffe.random_weights import random_weights

Shape = tuple[int, ...]


def net_text(inputs: Mapping[str, Shape], layers: str, name: str = "t") -> str:
    """A prototxt with `input` + `input_shape` declarations followed by `layers`."""
    head = [f'name: "{name}"']
    for blob, shape in inputs.items():
        dims = " ".join(f"dim: {d}" for d in shape)
        head.append(f'input: "{blob}"\ninput_shape {{ {dims} }}')
    return "\n".join(head) + "\n" + layers


def layer(
    name: str,
    kind: str,
    bottoms: str | Sequence[str] = (),
    tops: str | Sequence[str] | None = None,
    params: str = "",
) -> str:
    """One V2 `layer {}`; tops default to the layer's name."""
    bottoms = [bottoms] if isinstance(bottoms, str) else list(bottoms)
    tops = [name] if tops is None else [tops] if isinstance(tops, str) else list(tops)
    lines = [f'layer {{ name: "{name}" type: "{kind}"']
    lines += [f'  bottom: "{b}"' for b in bottoms]
    lines += [f'  top: "{t}"' for t in tops]
    if params:
        lines.append(f"  {params}")
    return "\n".join(lines) + "\n}\n"


@dataclass
class Run:
    """The files and the conversion of one tiny net."""

    prototxt: Path
    caffemodel: Path
    conversion: Conversion
    module: torch.nn.Module

    @classmethod
    def load(
        cls, prototxt: Path, caffemodel: Path, input_shapes: Mapping[str, Shape] | None = None
    ) -> Run:
        """Convert existing files and load the module with strict=True."""
        conversion = convert(prototxt, caffemodel, input_shapes=input_shapes)
        module = module_from_source(conversion.source, conversion.class_name)
        state = conversion.state_dict
        assert state is not None
        module.load_state_dict(state, strict=True)
        return cls(prototxt, caffemodel, conversion, module.eval())

    @property
    def output_names(self) -> list[str]:
        """Caffe's output blobs, found as Net::Init finds them (not with protocaffe's code):
        every bottom is taken from a set of available blobs and every top put back; what is
        left, in std::set (name) order, is the output."""
        net = read_prototxt(self.prototxt, Reporter())
        available = {i.name for i in net.inputs}
        for one in net.layers:
            available.difference_update(one.bottoms)
            available.update(one.tops)
        return sorted(available)

    @property
    def input_names(self) -> list[str]:
        return [v.blob for v in self.conversion.graph.inputs]

    def blobs(self) -> dict[str, list[np.ndarray]]:
        """The weight blobs random-weights wrote, by layer name (float32, Caffe shapes)."""
        return {
            layer.name: [np.asarray(b, dtype=np.float32) for b in layer.blobs]
            for layer in read_caffemodel(self.caffemodel).layers
        }

    def ours(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        args = [torch.from_numpy(np.ascontiguousarray(inputs[n])) for n in self.input_names]
        with torch.no_grad():
            result = self.module(*args)
        results = result if isinstance(result, tuple) else (result,)
        assert len(results) == len(self.output_names)
        return {n: r.numpy() for n, r in zip(self.output_names, results, strict=True)}

    def opencv(
        self, inputs: Mapping[str, np.ndarray], blobs: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """OpenCV's values of `blobs` (default: the net's outputs). Each blob is read from the
        last layer (in file order) that has it as a top, with forwardAndRetrieve, which returns
        all of a layer's tops (plain forward(name) returns only the first)."""
        import cv2

        net = cv2.dnn.readNetFromCaffe(str(self.prototxt), str(self.caffemodel))
        net.enableFusion(False)
        net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
        for name, value in inputs.items():
            net.setInput(np.ascontiguousarray(value), name)
        wanted = list(blobs or self.output_names)
        writers = self.last_writers()
        layers = sorted({writers[b][0] for b in wanted})
        results = dict(zip(layers, net.forwardAndRetrieve(layers), strict=True))
        return {b: np.asarray(results[writers[b][0]][writers[b][1]]) for b in wanted}

    def last_writers(self) -> dict[str, tuple[str, int]]:
        """Blob name -> (the last layer, in file order, with that top; the top's index)."""
        net = read_prototxt(self.prototxt, Reporter())
        return {top: (one.name, i) for one in net.layers for i, top in enumerate(one.tops)}


def _expose_every_value(graph: Graph) -> Graph:
    """A pass for tests: every value a node defines becomes an output of the module."""
    return replace(
        graph, outputs=tuple(v for node in graph.nodes for v in node.outputs), output_names=()
    )


def check_every_layer_against_opencv(
    run: Run, inputs: Mapping[str, np.ndarray], tol: float = 1e-5
) -> int:
    """Compare the output of every layer (each in-place step included) with what OpenCV's
    forwardAndRetrieve gives for that layer. Returns how many values were compared."""
    import cv2

    conversion = convert(
        run.prototxt, run.caffemodel, passes=(*DEFAULT_PIPELINE, _expose_every_value)
    )
    module = module_from_source(conversion.source, conversion.class_name)
    assert conversion.state_dict is not None
    module.load_state_dict(conversion.state_dict, strict=True)
    args = [torch.from_numpy(inputs[v.blob]) for v in conversion.graph.inputs]
    with torch.no_grad():
        ours = module.eval()(*args)
    ours = ours if isinstance(ours, tuple) else (ours,)
    net = cv2.dnn.readNetFromCaffe(str(run.prototxt), str(run.caffemodel))
    net.enableFusion(False)
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    for name, value in inputs.items():
        net.setInput(np.ascontiguousarray(value), name)
    nodes = conversion.graph.nodes
    theirs = net.forwardAndRetrieve([node.name for node in nodes])
    ours_by_value = dict(zip(conversion.graph.outputs, ours, strict=True))
    compared = 0
    for node, tops in zip(nodes, theirs, strict=True):
        # OpenCV's MAX pooling may add its argmax mask as an extra top: compare Caffe's tops.
        assert len(tops) >= len(node.outputs), node.name
        for value, top in zip(node.outputs, tops, strict=False):
            what = f"layer {node.name!r} top {value.blob!r}"
            assert_close(ours_by_value[value].numpy(), np.asarray(top), tol, what=what)
            compared += 1
    return compared


def build(
    tmp_path: Path,
    text: str,
    seed: int = 0,
    input_shapes: Mapping[str, Shape] | None = None,
    blobs: Mapping[str, Sequence[np.ndarray]] | None = None,
) -> Run:
    """Write `text`, random weights for it (with the layers in `blobs` given these blobs
    instead), convert, and load the module with strict=True."""
    prototxt = tmp_path / "net.prototxt"
    prototxt.write_text(text)
    caffemodel = tmp_path / "net.caffemodel"
    random_weights(prototxt, caffemodel, seed=seed, input_shapes=input_shapes)
    if blobs:
        model = read_caffemodel(caffemodel)
        layers = [(one.name, one.type, blobs.get(one.name, one.blobs)) for one in model.layers]
        write_caffemodel(caffemodel, model.net_name, layers)
    return Run.load(prototxt, caffemodel, input_shapes)


def random_inputs(run: Run, seed: int = 1, shapes: Mapping[str, Shape] | None = None) -> dict:
    rng = np.random.default_rng(seed)
    shapes = shapes or {v.blob: v.shape for v in run.conversion.graph.inputs}
    return {n: rng.standard_normal(s).astype(np.float32) for n, s in shapes.items()}


def assert_close(
    actual: np.ndarray, expected: np.ndarray, tol: float = 1e-5, what: str = ""
) -> None:
    """Equal shapes, NaN in the same places (Caffe's AVE pooling divides 0 by 0 for a window
    that starts at the end of the input), and the other values within `tol` of the larger of 1
    and the expected magnitude."""
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    nan = np.isnan(expected)
    assert np.array_equal(np.isnan(actual), nan), f"{what}: NaN in different places"
    actual, expected = actual[~nan], expected[~nan]
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    err = float(np.abs(actual.astype(np.float64) - expected).max(initial=0.0))
    assert err <= tol * scale, f"{what}: max error {err:.3g} (scale {scale:.3g})"


def check_against_opencv(
    tmp_path: Path,
    text: str,
    tol: float = 1e-5,
    seed: int = 0,
    blobs: Mapping[str, Sequence[np.ndarray]] | None = None,
) -> tuple[Run, dict[str, np.ndarray]]:
    """Build `text`, run both sides on the same random inputs, compare every output."""
    run = build(tmp_path, text, seed=seed, blobs=blobs)
    inputs = random_inputs(run)
    ours = run.ours(inputs)
    theirs = run.opencv(inputs)
    for name in run.output_names:
        assert_close(ours[name], theirs[name], tol, what=name)
    return run, inputs


def check_against_numpy(
    tmp_path: Path,
    text: str,
    expected: Callable[[dict[str, np.ndarray], dict[str, list[np.ndarray]]], dict[str, np.ndarray]],
    tol: float = 1e-5,
    blobs: Mapping[str, Sequence[np.ndarray]] | None = None,
) -> tuple[Run, dict[str, np.ndarray]]:
    """Build `text` and compare every output with `expected(inputs, weight blobs by layer)`."""
    run = build(tmp_path, text, blobs=blobs)
    inputs = random_inputs(run)
    ours = run.ours(inputs)
    theirs = expected(inputs, run.blobs())
    assert sorted(theirs) == run.output_names
    for name in run.output_names:
        assert_close(ours[name], np.asarray(theirs[name], dtype=np.float32), tol, what=name)
    return run, inputs
