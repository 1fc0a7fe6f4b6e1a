"""The front-end: prototxt formats, input declarations, phases, input shapes, legacy weights,
and the order of forward()'s arguments and results. Numbers are checked against OpenCV."""

from __future__ import annotations

import ast

import numpy as np
import pytest
import torch

pytest.importorskip("cv2")

from caffe_check import (
    Run,
    assert_close,
    build,
    check_against_opencv,
    layer,
    net_text,
    random_inputs,
)

from protocaffe.api import convert, module_from_source
from protocaffe.errors import ProtocaffeError, Reporter
from protocaffe.proto.schema import message_class
from protocaffe.random_weights import random_weights

# One net written in each format: conv -> ReLU -> MAX pool (ceil) -> LRN -> InnerProduct -> Softmax.
V2 = """name: "formats"
input: "data"
input_dim: 2 input_dim: 3 input_dim: 9 input_dim: 9
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
  pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "norm1" type: "LRN" bottom: "pool1" top: "norm1"
  lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 } }
layer { name: "fc" type: "InnerProduct" bottom: "norm1" top: "fc"
  inner_product_param { num_output: 5 } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
"""
V1 = """name: "formats"
input: "data"
input_dim: 2 input_dim: 3 input_dim: 9 input_dim: 9
layers { name: "conv1" type: CONVOLUTION bottom: "data" top: "conv1"
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layers { name: "relu1" type: RELU bottom: "conv1" top: "conv1" }
layers { name: "pool1" type: POOLING bottom: "conv1" top: "pool1"
  pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layers { name: "norm1" type: LRN bottom: "pool1" top: "norm1"
  lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 } }
layers { name: "fc" type: INNER_PRODUCT bottom: "norm1" top: "fc"
  inner_product_param { num_output: 5 } }
layers { name: "prob" type: SOFTMAX bottom: "fc" top: "prob" }
"""
V0 = """name: "formats"
input: "data"
input_dim: 2 input_dim: 3 input_dim: 9 input_dim: 9
layers { layer { name: "conv1" type: "conv" num_output: 4 kernelsize: 3 pad: 1 }
  bottom: "data" top: "conv1" }
layers { layer { name: "relu1" type: "relu" } bottom: "conv1" top: "conv1" }
layers { layer { name: "pool1" type: "pool" pool: MAX kernelsize: 3 stride: 2 }
  bottom: "conv1" top: "pool1" }
layers { layer { name: "norm1" type: "lrn" local_size: 3 alpha: 0.5 beta: 0.75 }
  bottom: "pool1" top: "norm1" }
layers { layer { name: "fc" type: "innerproduct" num_output: 5 } bottom: "norm1" top: "fc" }
layers { layer { name: "prob" type: "softmax" } bottom: "fc" top: "prob" }
"""


def body(source: str) -> str:
    """model.py without its module docstring (which names the prototxt file)."""
    return source.split('"""', 2)[2]


def test_v2_v1_v0_formats_give_the_same_module(tmp_path):
    weights = tmp_path / "w.caffemodel"
    (tmp_path / "v2.prototxt").write_text(V2)
    random_weights(tmp_path / "v2.prototxt", weights, seed=4)
    sources = {}
    for name, text in {"v2": V2, "v1": V1, "v0": V0}.items():
        folder = tmp_path / name
        folder.mkdir()
        (folder / "net.prototxt").write_text(text)
        (folder / "net.caffemodel").write_bytes(weights.read_bytes())
        run = Run.load(folder / "net.prototxt", folder / "net.caffemodel")
        inputs = random_inputs(run)
        assert_close(run.ours(inputs)["prob"], run.opencv(inputs)["prob"], what=name)
        sources[name] = body(run.conversion.source)
    assert sources["v1"] == sources["v2"]
    assert sources["v0"] == sources["v2"]


INPUT_STYLES = {
    "input_dim": 'input: "data"\ninput_dim: 2\ninput_dim: 3\ninput_dim: 6\ninput_dim: 7\n',
    "input_shape": 'input: "data"\ninput_shape { dim: 2 dim: 3 dim: 6 dim: 7 }\n',
    "input_layer": 'layer { name: "data" type: "Input" top: "data"\n'
    "  input_param { shape { dim: 2 dim: 3 dim: 6 dim: 7 } } }\n",
}
AFTER_INPUT = layer(
    "conv", "Convolution", "data", params="convolution_param { num_output: 2 kernel_size: 3 }"
)


def test_input_declarations_are_equivalent(tmp_path):
    bodies = set()
    for name, head in INPUT_STYLES.items():
        folder = tmp_path / name
        folder.mkdir()
        run, _ = check_against_opencv(folder, f'name: "inputs"\n{head}{AFTER_INPUT}')
        assert run.input_names == ["data"]
        assert run.conversion.graph.inputs[0].shape == (2, 3, 6, 7)
        bodies.add(body(run.conversion.source))
    assert len(bodies) == 1


def test_phase_rules_select_the_test_net(tmp_path):
    """Deploy means TEST: include TRAIN, exclude TEST, and a stage nobody sets leave layers
    out; include TEST and exclude TRAIN keep them."""
    text = net_text(
        {"data": (1, 2, 3, 3)},
        layer("train_only", "AbsVal", "data", "data", params="include { phase: TRAIN }")
        + layer("not_test", "TanH", "data", "data", params="exclude { phase: TEST }")
        + layer("staged", "Sigmoid", "data", "data", params='include { stage: "deploy" }')
        + layer(
            "test_only",
            "Power",
            "data",
            "data",
            params="include { phase: TEST } " "power_param { scale: 3 }",
        )
        + layer(
            "not_train",
            "Power",
            "data",
            "out",
            params="exclude { phase: TRAIN } " "power_param { shift: 1 }",
        ),
    )
    run = build(tmp_path, text)
    inputs = random_inputs(run)
    assert_close(run.ours(inputs)["out"], inputs["data"] * 3 + 1)
    kept = [node.name for node in run.conversion.graph.nodes]
    assert kept == ["test_only", "not_train"]
    notes = [str(d) for d in run.conversion.diagnostics]
    assert sum("not in the TEST phase; left out" in note for note in notes) == 3


# Every size-dependent step: padding, ceil pooling, a deconvolution cropped back to its input,
# concat, global pooling before an InnerProduct (whose input size is then fixed).
RESIZABLE = """name: "resizable"
input: "data"
input_shape { dim: 1 dim: 3 dim: 16 dim: 16 }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool"
  pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "up" type: "Deconvolution" bottom: "pool" top: "up"
  convolution_param { num_output: 4 kernel_size: 4 stride: 2 } }
layer { name: "crop" type: "Crop" bottom: "up" bottom: "conv" top: "crop"
  crop_param { axis: 2 offset: 1 } }
layer { name: "cat" type: "Concat" bottom: "crop" bottom: "conv" top: "cat" }
layer { name: "pool2" type: "Pooling" bottom: "cat" top: "pool2"
  pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "flat" type: "Reshape" bottom: "pool2" top: "flat"
  reshape_param { shape { dim: 0 dim: 0 dim: -1 } } }
layer { name: "gap" type: "Pooling" bottom: "cat" top: "gap"
  pooling_param { pool: AVE global_pooling: true } }
layer { name: "fc" type: "InnerProduct" bottom: "gap" top: "fc"
  inner_product_param { num_output: 3 } }
"""


@pytest.mark.parametrize("size", [(16, 16), (37, 45), (20, 17)])
def test_generated_module_runs_at_other_input_sizes(tmp_path, size):
    """Caffe reshapes nets at run time, so the module converted at the declared 16x16 must
    compute what Caffe computes at any size."""
    run = build(tmp_path, RESIZABLE)
    rng = np.random.default_rng(5)
    inputs = {"data": rng.standard_normal((2, 3, *size)).astype(np.float32)}
    ours, theirs = run.ours(inputs), run.opencv(inputs)
    assert sorted(ours) == ["fc", "flat"]
    for name in ours:
        assert_close(ours[name], theirs[name], what=name)


def test_input_shape_override(tmp_path):
    (tmp_path / "net.prototxt").write_text(RESIZABLE)
    random_weights(tmp_path / "net.prototxt", tmp_path / "w.caffemodel")
    conversion = convert(
        tmp_path / "net.prototxt", tmp_path / "w.caffemodel", input_shapes={"data": (2, 3, 24, 30)}
    )
    assert conversion.graph.inputs[0].shape == (2, 3, 24, 30)
    assert "'data' (2, 3, 24, 30)" in conversion.source
    shapes = {v.blob: v.shape for node in conversion.graph.nodes for v in node.outputs}
    assert shapes["pool"] == (2, 4, 12, 15)  # ceil((24 - 3) / 2) + 1, ceil((30 - 3) / 2) + 1
    # pool2 (pad 1): ceil((24 + 2 - 3) / 2) + 1 = 13 and ceil((30 + 2 - 3) / 2) + 1 = 16
    assert shapes["flat"] == (2, 8, 13 * 16)


def v1_blob(array: np.ndarray, dims: tuple[int, int, int, int], double: bool) -> object:
    """A BlobProto with the legacy num/channels/height/width fields."""
    blob = message_class("BlobProto")()
    blob.num, blob.channels, blob.height, blob.width = dims
    values = array.reshape(-1).tolist()
    (blob.double_data if double else blob.data).extend(values)
    return blob


def test_legacy_v1_caffemodel_dims_and_double_data(tmp_path):
    """A V1 binary stores 4-D dims (num, channels, height, width): an InnerProduct weight as
    (1, 1, N, K) and biases as (1, 1, 1, N). Some writers used double_data."""
    text = net_text(
        {"data": (2, 3, 4, 4)},
        layer(
            "conv",
            "Convolution",
            "data",
            params="convolution_param { num_output: 2 kernel_size: 3 }",
        )
        + layer("fc", "InnerProduct", "conv", params="inner_product_param { num_output: 5 }"),
    )
    v2 = build(tmp_path, text)
    blobs = v2.blobs()
    net = message_class("NetParameter")()
    net.name = "legacy"
    v1_enum = message_class("V1LayerParameter").DESCRIPTOR.enum_types_by_name["LayerType"]
    conv_w, conv_b = blobs["conv"]
    fc_w, fc_b = blobs["fc"]
    for name, kind, pieces in [
        ("conv", "CONVOLUTION", [(conv_w, conv_w.shape, False), (conv_b, (1, 1, 1, 2), True)]),
        ("fc", "INNER_PRODUCT", [(fc_w, (1, 1, 5, 8), True), (fc_b, (1, 1, 1, 5), False)]),
    ]:
        entry = net.layers.add()
        entry.name = name
        entry.type = v1_enum.values_by_name[kind].number
        for array, dims, double in pieces:
            entry.blobs.append(v1_blob(array, dims, double))
    legacy = tmp_path / "legacy.caffemodel"
    legacy.write_bytes(net.SerializeToString())
    run = Run.load(v2.prototxt, legacy)
    inputs = random_inputs(run)
    # OpenCV cannot read double_data; it checks the same weights in their V2 form.
    assert_close(run.ours(inputs)["fc"], v2.opencv(inputs)["fc"])
    assert_close(run.ours(inputs)["fc"], v2.ours(inputs)["fc"], tol=1e-6)


def test_weights_for_absent_layers_are_ignored_with_a_note(tmp_path):
    """MTCNN's det2.caffemodel has an extra conv5-3: its weights are ignored, with a note."""
    full = net_text(
        {"data": (1, 3, 4, 4)},
        layer(
            "conv",
            "Convolution",
            "data",
            params="convolution_param { num_output: 2 kernel_size: 1 }",
        )
        + layer("conv5-3", "InnerProduct", "conv", params="inner_product_param { num_output: 4 }"),
    )
    run = build(tmp_path, full)
    (tmp_path / "deploy.prototxt").write_text(full.split('layer { name: "conv5-3"')[0])
    reporter = Reporter()
    conversion = convert(tmp_path / "deploy.prototxt", run.caffemodel, reporter=reporter)
    assert conversion.arrays is not None
    assert sorted(conversion.arrays) == ["conv.bias", "conv.weight"]
    (note,) = reporter.diagnostics
    assert str(note).endswith(
        'note: layer "conv5-3" (InnerProduct): has weights but no layer of that name in the '
        "prototxt needs them; ignored"
    )


def test_several_inputs_in_caffe_order(tmp_path):
    """`input:` declarations first, then Input layers, each in file order (not by name)."""
    text = (
        'name: "inputs"\ninput: "zeta"\ninput_shape { dim: 2 dim: 3 dim: 4 dim: 5 }\n'
        'input: "alpha"\ninput_shape { dim: 2 dim: 1 dim: 4 dim: 5 }\n'
        + layer(
            "mid",
            "Input",
            [],
            "mid",
            params="input_param { shape { dim: 2 dim: 2 dim: 4 dim: 5 } }",
        )
        + layer("out", "Concat", ["alpha", "mid", "zeta"])
    )
    run, _ = check_against_opencv(tmp_path, text)
    assert run.input_names == ["zeta", "alpha", "mid"]
    assert forward_arguments(run.conversion.source) == ["self", "zeta", "alpha", "mid"]


def forward_arguments(source: str) -> list[str]:
    (forward,) = (
        node
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.FunctionDef) and node.name == "forward"
    )
    return [arg.arg for arg in forward.args.args]


def test_several_outputs_in_caffe_order(tmp_path):
    """pycaffe's net.outputs: the blobs no layer consumes, in name order (a std::set)."""
    text = net_text(
        {"data": (1, 2, 3, 3)},
        layer("zz", "TanH", "data")
        + layer("aa", "Sigmoid", "data")
        + layer("mm", "AbsVal", "data")
        + layer("b_used", "ReLU", "data")
        + layer("Bb", "Power", "b_used", params="power_param { scale: 2 }"),
    )
    run, inputs = check_against_opencv(tmp_path, text)
    assert run.output_names == ["Bb", "aa", "mm", "zz"]
    assert [v.blob for v in run.conversion.graph.outputs] == run.output_names
    module = module_from_source(run.conversion.source, run.conversion.class_name)
    results = module(torch.from_numpy(inputs["data"]))
    expected = [
        inputs["data"] * 2 * (inputs["data"] > 0),
        1 / (1 + np.exp(-inputs["data"])),
        np.abs(inputs["data"]),
        np.tanh(inputs["data"]),
    ]
    for result, value in zip(results, expected, strict=True):
        assert_close(result.numpy(), value.astype(np.float32))


def test_reader_before_an_in_place_update_sees_the_old_value(tmp_path):
    """`a` reads data before the in-place ReLU. Real Caffe refuses this net once it inserts
    Split layers (issue 13 finding A); protocaffe refuses it as Caffe does, although OpenCV
    runs it."""
    text = net_text(
        {"data": (1, 2, 3, 4)},
        layer("a", "Power", "data", params="power_param { scale: 2 }")
        + layer("relu", "ReLU", "data", "data")
        + layer("b", "Power", "data", params="power_param { shift: 1 }")
        + layer("scale", "Power", "data", "data", params="power_param { scale: -1 }")
        + layer("out", "Concat", ["a", "b", "data"]),
    )
    with pytest.raises(ProtocaffeError, match="produced by multiple sources"):
        check_against_opencv(tmp_path, text)
