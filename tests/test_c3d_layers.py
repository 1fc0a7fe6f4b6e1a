"""The video forks' 3-D layers (issue 15): C3D's V2 `Convolution3D` / `Deconvolution3D` (C3D
v1.1, convolution3d_param) and V1 `CONVOLUTION3D` / `DECONVOLUTION3D` (C3D v1.0, the 3-D fields
inside convolution_param); video-caffe's `NdConvolution` / `NdPooling` (kernel_shape,
stride_shape, pad_shape messages). Neither real Caffe nor OpenCV runs them: the generated module
is compared with the numpy reference's transcription of each fork's C++
(protocaffe.verify.reference.ops.conv and .pooling name the files and functions), every blob,
with seeded random weights and odd sizes; the reference itself is checked against cases worked
out by hand from the C++ (vol2col_cpu / col2vol_cpu, compute_output_shape).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from caffe_check import build
from fork_cases import compare_with_reference, layer, net_text

from protocaffe.api import convert
from protocaffe.errors import ProtocaffeError, Reporter
from protocaffe.frontend.caffemodel import read_caffemodel
from protocaffe.frontend.prototxt import read_prototxt
from protocaffe.random_weights import random_weights
from protocaffe.verify.reference import ReferenceNet

SEEDS = range(6)


def _c3d_params(rng: np.random.Generator, transposed: bool) -> str:
    k, kd = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    fields = [
        f"num_output: {int(rng.integers(1, 4)) * 2}",
        f"kernel_size: {k}",
        f"kernel_depth: {kd}",
        f"stride: {int(rng.integers(1, 4))}",
        f"temporal_stride: {int(rng.integers(1, 3))}",
        f"pad: {int(rng.integers(0, k))}",
        f"temporal_pad: {int(rng.integers(0, kd))}",
    ]
    if not transposed:
        fields.append(f"filter_group: {int(rng.choice([1, 2]))}")
    if rng.random() < 0.3:
        fields.append("bias_term: false")
    return " ".join(fields)


@pytest.mark.parametrize("kind", ["Convolution3D", "Deconvolution3D"])
@pytest.mark.parametrize("seed", SEEDS)
def test_c3d_v11_against_the_reference(kind: str, seed: int, tmp_path: Path) -> None:
    """Seeded geometries over odd (N, C, L, H, W), kernels up to 3 (larger than some inputs:
    C++'s truncating division still gives an output), strides up to 3, pads below the kernel."""
    rng = np.random.default_rng(seed * 31 + len(kind))
    shape = (int(rng.integers(1, 3)), int(rng.integers(1, 4)), 5, 7, 6)
    if seed % 2:
        shape = (shape[0], shape[1], *(int(rng.integers(1, 5)) * 2 + 1 for _ in range(3)))
    params = _c3d_params(rng, kind == "Deconvolution3D")
    text = net_text(
        {"x": shape}, layer("c", kind, "x", params=f"convolution3d_param {{ {params} }}")
    )
    x = rng.normal(size=shape).astype(np.float32)
    try:
        compare_with_reference(tmp_path, text, {"x": x}, seed=seed)
    except ProtocaffeError:
        # No output left (a kernel beyond the padded input): the reference refuses it too.
        net = read_prototxt(tmp_path / "net.prototxt", Reporter())
        with pytest.raises(ProtocaffeError):
            ReferenceNet(net, None).forward({"x": x})


def _v1_net(shape: tuple[int, ...], body: str) -> str:
    dims = " ".join(f"dim: {d}" for d in shape)
    return f'name: "c3d"\ninput: "data"\ninput_shape {{ {dims} }}\n{body}'


def _v1_layer(name: str, kind: str, bottom: str, param: str) -> str:
    lr = "" if kind == "POOLING3D" else "blobs_lr: 1 blobs_lr: 2 "
    return (
        f'layers {{ name: "{name}" type: {kind} bottom: "{bottom}" top: "{name}" '
        f"{lr}{param} }}\n"
    )


@pytest.mark.parametrize("filter_group", [1, 2])
def test_c3d_v10_net_against_the_reference(filter_group: int, tmp_path: Path) -> None:
    """A V1 C3D v1.0 net like deconv3d_ucf101_brox: CONVOLUTION3D (L 5, H 7, W 6, kernel_depth
    3, temporal_pad 1, stride 2, filter_group), ReLU, POOLING3D, DECONVOLUTION3D back up."""
    body = (
        _v1_layer(
            "conv1",
            "CONVOLUTION3D",
            "data",
            "convolution_param { num_output: 4 kernel_size: 3 kernel_depth: 3 pad: 1 "
            f"temporal_pad: 1 stride: 2 temporal_stride: 2 filter_group: {filter_group} }}",
        )
        + 'layers { name: "relu1" type: RELU bottom: "conv1" top: "conv1" }\n'
        + _v1_layer(
            "pool1",
            "POOLING3D",
            "conv1",
            "pooling_param { pool: MAX kernel_size: 2 stride: 2 kernel_depth: 1 }",
        )
        + _v1_layer(
            "deconv1",
            "DECONVOLUTION3D",
            "pool1",
            "convolution_param { num_output: 3 kernel_size: 4 kernel_depth: 3 pad: 1 "
            "temporal_pad: 1 stride: 2 temporal_stride: 1 }",
        )
    )
    shape = (2, 3, 5, 7, 6)
    x = np.random.default_rng(filter_group).normal(size=shape).astype(np.float32)
    conversion, reference = compare_with_reference(tmp_path, _v1_net(shape, body), {"data": x})
    # (5 + 2 - 3) / 2 + 1 = 3, (7 + 2 - 3) / 2 + 1 = 4, (6 + 2 - 3) / 2 + 1 = 3 (int division);
    # the pooling keeps L 3 (kernel_depth 1), H ceil((4 - 2) / 2) + 1 = 2, W 2; the
    # deconvolution: (3 - 1) * 1 - 2 + 3 = 3, (2 - 1) * 2 - 2 + 4 = 4.
    assert reference["conv1"].shape == (2, 4, 3, 4, 3)
    assert reference["deconv1"].shape == (2, 3, 3, 4, 4)
    assert "nn.Conv3d(" in conversion.source and "nn.ConvTranspose3d(" in conversion.source


def test_convolution3d_reference_by_hand(tmp_path: Path) -> None:
    """vol2col_cpu + gemm by hand: x = 0..26 as (1, 1, 3, 3, 3), weight all ones (2 filters,
    the second doubled, filter_group 2: each group still reads every channel), kernel 2 x 2 x 2,
    temporal_pad 1, pad 0, stride 1: L (3 + 2 - 2) / 1 + 1 = 4, H = W = 2. Output (l, 0, 0)
    sums x[l - 1 .. l, 0..1, 0..1] where inside: l = 0 reads only x[0] (0 + 1 + 3 + 4 = 8),
    l = 1 adds x[1] (8 + 9 + 10 + 12 + 13 = 52), l = 3 only x[2] (18 + 19 + 21 + 22 = 80)."""
    text = _v1_net(
        (1, 1, 3, 3, 3),
        _v1_layer(
            "c",
            "CONVOLUTION3D",
            "data",
            "convolution_param { num_output: 2 kernel_size: 2 kernel_depth: 2 temporal_pad: 1 "
            "filter_group: 2 }",
        ),
    )
    weight = np.ones((2, 1, 2, 2, 2), np.float32)
    weight[1] *= 2
    bias = np.array([0.5, -1], np.float32).reshape(1, 1, 1, 1, 2)
    run = build(tmp_path, text, blobs={"c": [weight, bias]})
    x = np.arange(27, dtype=np.float32).reshape(1, 1, 3, 3, 3)
    reference = ReferenceNet(
        read_prototxt(run.prototxt, Reporter()), read_caffemodel(run.caffemodel)
    ).forward({"data": x})["c"]
    assert reference.shape == (1, 2, 4, 2, 2)
    np.testing.assert_array_equal(reference[0, 0, :, 0, 0], [8.5, 52.5, 124.5, 80.5])
    np.testing.assert_array_equal(reference[0, 1, :, 0, 0], [15, 103, 247, 159])
    np.testing.assert_array_equal(run.ours({"data": x})["c"], reference)


def test_deconvolution3d_reference_by_hand(tmp_path: Path) -> None:
    """col2vol_cpu by hand: one input value 1 at (l, h, w) = (1, 0, 1) of a (1, 1, 2, 1, 2)
    blob, weight w[0, 0, a, b, c] = 100 a + 10 b + c (kernel_depth 2, kernel 2), strides 2,
    pad 1, temporal_pad 0: output L (2 - 1) * 2 + 2 = 4, H (1 - 1) * 2 - 2 + 2 = 0 -> refused;
    with pad 0: H 2, W (2 - 1) * 2 + 2 = 4. The value lands at (2 + a, b, 2 + c) with weight
    (a, b, c); every other output is the bias 0.25."""
    weight = (
        100 * np.arange(2)[:, None, None] + 10 * np.arange(2)[None, :, None] + np.arange(2)
    ).astype(np.float32)[None, None]
    bias = np.full((1, 1, 1, 1, 1), 0.25, np.float32)
    text = _v1_net(
        (1, 1, 2, 1, 2),
        _v1_layer(
            "d",
            "DECONVOLUTION3D",
            "data",
            "convolution_param { num_output: 1 kernel_size: 2 kernel_depth: 2 stride: 2 "
            "temporal_stride: 2 }",
        ),
    )
    run = build(tmp_path, text, blobs={"d": [weight, bias]})
    x = np.zeros((1, 1, 2, 1, 2), np.float32)
    x[0, 0, 1, 0, 1] = 1
    reference = ReferenceNet(
        read_prototxt(run.prototxt, Reporter()), read_caffemodel(run.caffemodel)
    ).forward({"data": x})["d"]
    expected = np.full((1, 1, 4, 2, 4), 0.25, np.float32)
    for a in range(2):
        for b in range(2):
            for c in range(2):
                expected[0, 0, 2 + a, b, 2 + c] += 100 * a + 10 * b + c
    np.testing.assert_array_equal(reference, expected)
    np.testing.assert_array_equal(run.ours({"data": x})["d"], expected)
    refused = text.replace("stride: 2 temporal", "stride: 2 pad: 1 temporal")
    with pytest.raises(ProtocaffeError, match="no output"):
        build(tmp_path, refused)


def test_deconvolution3d_reads_bias_term_from_convolution_param(tmp_path: Path) -> None:
    """C3D v1.1's Deconvolution3DLayer::LayerSetUp reads bias_term from convolution_param
    (default true): `convolution3d_param { bias_term: false }` still has a bias blob, and the
    module adds it; Convolution3D honours its own bias_term."""
    for kind, blobs in (("Deconvolution3D", 2), ("Convolution3D", 1)):
        params = (
            "convolution3d_param { num_output: 2 kernel_size: 1 kernel_depth: 1 bias_term: false }"
        )
        text = net_text({"x": (1, 2, 3, 3, 3)}, layer("c", kind, "x", params=params))
        prototxt = tmp_path / f"{kind}.prototxt"
        prototxt.write_text(text)
        weights = tmp_path / f"{kind}.caffemodel"
        random_weights(prototxt, weights, seed=0)
        shapes = [tuple(b.shape) for b in read_caffemodel(weights).layers[0].blobs]
        assert len(shapes) == blobs, (kind, shapes)
        if blobs == 2:
            assert shapes[1] == (1, 1, 1, 1, 2)
        conversion = convert(prototxt, weights)
        assert conversion.state_dict is not None
        assert ("c.bias" in conversion.state_dict) == (blobs == 2)


@pytest.mark.parametrize(
    "kind, params, shape, message",
    [
        (
            "Convolution3D",
            "convolution3d_param { num_output: 3 kernel_size: 1 kernel_depth: 1 filter_group: 2 }",
            (1, 1, 3, 3, 3),
            "filter_group",
        ),
        (
            "Convolution3D",
            "convolution3d_param { num_output: 2 kernel_size: 1 kernel_depth: 1 }",
            (1, 1, 3, 3),
            "5-D input",
        ),
        (
            "Deconvolution3D",
            "convolution3d_param { num_output: 2 kernel_size: 3 }",
            (1, 1, 3, 3, 3),
            "kernel_depth 0",
        ),
    ],
)
def test_c3d_refusals(
    kind: str, params: str, shape: tuple[int, ...], message: str, tmp_path: Path
) -> None:
    text = net_text({"x": shape}, layer("c", kind, "x", params=params))
    with pytest.raises(ProtocaffeError, match=message):
        build(tmp_path, text)


def test_v1_convolution3d_refuses_fields_c3d_lacks(tmp_path: Path) -> None:
    text = _v1_net(
        (1, 1, 3, 3, 3),
        _v1_layer(
            "c",
            "CONVOLUTION3D",
            "data",
            "convolution_param { num_output: 1 kernel_h: 1 kernel_w: 1 kernel_depth: 1 }",
        ),
    )
    with pytest.raises(ProtocaffeError, match="kernel_h: C3D's convolution_param has no such"):
        build(tmp_path, text)


def test_convolution3d_kernel_beyond_the_input(tmp_path: Path) -> None:
    """(H + 2 p - k) / s + 1 with C++ division: H 2, k 3, s 2 gives (-1) / 2 + 1 = 1 output row
    (truncation toward zero), whose window overhangs the input and reads zeros there."""
    params = "convolution3d_param { num_output: 2 kernel_size: 3 kernel_depth: 2 stride: 2 }"
    text = net_text({"x": (1, 2, 3, 2, 5)}, layer("c", "Convolution3D", "x", params=params))
    x = np.random.default_rng(7).normal(size=(1, 2, 3, 2, 5)).astype(np.float32)
    _, reference = compare_with_reference(tmp_path, text, {"x": x})
    assert reference["c"].shape == (1, 2, 2, 1, 2)


def test_video_data_transform_param_gives_no_preprocess(tmp_path: Path) -> None:
    """C3D v1.1's VideoData has a transform_param (crop and mean per frame) for a clip
    (N, C, L, H, W): preprocess() makes one image, so the net converts without it, with a
    note, instead of failing."""
    text = (
        'name: "c3d"\nlayer { name: "data" type: "VideoData" top: "data" top: "label" '
        "transform_param { crop_size: 112 mean_value: 128 } }\n"
        + layer(
            "c",
            "Convolution3D",
            "data",
            params="convolution3d_param { num_output: 2 kernel_size: 3 kernel_depth: 3 }",
        )
    )
    prototxt = tmp_path / "net.prototxt"
    prototxt.write_text(text)
    reporter = Reporter()
    conversion = convert(prototxt, input_shapes={"data": (1, 3, 4, 5, 5)}, reporter=reporter)
    assert "def preprocess" not in conversion.source
    notes = [str(d) for d in reporter.diagnostics]
    assert any("not an image (N, C, H, W): model.py gets no preprocess()" in n for n in notes)


# ---- video-caffe NdConvolution / NdPooling ------------------------------------------------------


def _dims(name: str, values: list[int]) -> str:
    return f"{name} {{ {' '.join(f'dim: {v}' for v in values)} }}"


@pytest.mark.parametrize("seed", range(8))
def test_nd_convolution_against_the_reference(seed: int, tmp_path: Path) -> None:
    """Seeded 3-D (and 2-D) geometries: odd sizes, per-axis kernel/stride/pad, groups, two
    bottoms sharing the weights; geometries the fork cannot run (an output axis of 1, which it
    drops from the top's shape) are refused by both."""
    rng = np.random.default_rng(500 + seed)
    spatial = 3 if seed % 4 else 2
    group = int(rng.choice([1, 2]))
    shape = (int(rng.integers(1, 3)), group * int(rng.integers(1, 3)))
    shape += tuple(int(rng.integers(2, 6)) * 2 + 1 for _ in range(spatial))
    kernel = [int(rng.integers(1, 4)) for _ in range(spatial)]
    fields = [f"num_output: {group * int(rng.integers(1, 3))}", f"group: {group}"]
    fields.append(_dims("kernel_shape", kernel))
    if rng.random() < 0.7:
        fields.append(_dims("stride_shape", [int(rng.integers(1, 3)) for _ in kernel]))
    if rng.random() < 0.7:
        fields.append(_dims("pad_shape", [int(rng.integers(0, k + 1)) for k in kernel]))
    if rng.random() < 0.3:
        fields.append("bias_term: false")
    two = seed % 3 == 0
    bottoms = ("x", "y") if two else ("x",)
    tops = ("c0", "c1") if two else ("c0",)
    params = f"convolution_param {{ {' '.join(fields)} }}"
    inputs = {b: rng.normal(size=shape).astype(np.float32) for b in bottoms}
    text = net_text(
        {b: shape for b in bottoms},
        layer("c", "NdConvolution", *bottoms, tops=tops, params=params),
    )
    try:
        compare_with_reference(tmp_path, text, inputs, seed=seed)
    except ProtocaffeError:
        net = read_prototxt(tmp_path / "net.prototxt", Reporter())
        with pytest.raises(ProtocaffeError):
            ReferenceNet(net, None).forward(inputs)


@pytest.mark.parametrize("seed", range(12))
def test_nd_pooling_against_the_reference(seed: int, tmp_path: Path) -> None:
    rng = np.random.default_rng(700 + seed)
    shape = (int(rng.integers(1, 3)), int(rng.integers(1, 4)))
    shape += tuple(int(rng.integers(1, 5)) * 2 + 1 for _ in range(3))
    kernel = [int(rng.integers(1, 4)) for _ in range(3)]
    method = "MAX" if seed % 2 else "AVE"
    fields = [f"pool: {method}", _dims("kernel_shape", kernel)]
    # Strides up to the kernel (a larger one leaves windows the fork's cuDNN call is refused
    # for: empty, or AVE overhanging the padding; test_nd_pooling_reference_by_hand has one).
    fields.append(_dims("stride_shape", [int(rng.integers(1, k + 1)) for k in kernel]))
    if rng.random() < 0.6:
        pad = int(rng.integers(0, min(kernel)))
        fields.append(_dims("pad_shape", [pad] * 3))
    params = f"pooling_param {{ {' '.join(fields)} }}"
    text = net_text({"x": shape}, layer("p", "NdPooling", "x", params=params))
    x = rng.normal(size=shape).astype(np.float32)
    try:
        compare_with_reference(tmp_path, text, {"x": x}, seed=seed)
    except ProtocaffeError:
        net = read_prototxt(tmp_path / "net.prototxt", Reporter())
        with pytest.raises(ProtocaffeError):
            ReferenceNet(net, None).forward({"x": x})


def test_nd_pooling_reference_by_hand(tmp_path: Path) -> None:
    """compute_output_shape by hand on x = 0..44 as (1, 1, 1, 5, 9): kernel (1, 2, 2), stride
    (1, 2, 2), pad (0, 1, 0): D 1; H ceil((5 + 2 - 2) / 2) + 1 = 4, and H has a pad: (4 - 1) *
    2 = 6 >= 5 + 1, so 3; W ceil((9 - 2) / 2) + 1 = 5. MAX window (h 0, w 4) covers row 0
    (row -1 is padding) and column 8: x[0, 8] = 8; window (h 1, w 0) rows 1..2, columns 0..1:
    x[2, 1] = 19. With W's kernel 1 and stride 3 the fork keeps ceil(8 / 3) + 1 = 4 windows on
    W (no pad there), the last starting past the input, where BVLC's rule (any pad set) drops
    it: refused."""
    params = (
        "pooling_param { pool: MAX kernel_shape { dim: 1 dim: 2 dim: 2 } "
        "stride_shape { dim: 1 dim: 2 dim: 2 } pad_shape { dim: 0 dim: 1 dim: 0 } }"
    )
    text = net_text({"x": (1, 1, 1, 5, 9)}, layer("p", "NdPooling", "x", params=params))
    x = np.arange(45, dtype=np.float32).reshape(1, 1, 1, 5, 9)
    net = read_prototxt_text_for(tmp_path, text)
    top = ReferenceNet(net, None).forward({"x": x})["p"]
    assert top.shape == (1, 1, 1, 3, 5)
    assert top[0, 0, 0, 0, 4] == 8
    assert top[0, 0, 0, 1, 0] == 19
    np.testing.assert_array_equal(build(tmp_path, text).ours({"x": x})["p"], top)
    mixed = text.replace("dim: 1 dim: 2 dim: 2 } pad", "dim: 1 dim: 2 dim: 3 } pad").replace(
        "kernel_shape { dim: 1 dim: 2 dim: 2 }", "kernel_shape { dim: 1 dim: 2 dim: 1 }"
    )
    with pytest.raises(ProtocaffeError, match="drops a last window only on axes with a pad"):
        build(tmp_path, mixed)


def read_prototxt_text_for(tmp_path: Path, text: str):  # type: ignore[no-untyped-def]
    path = tmp_path / "ref.prototxt"
    path.write_text(text)
    return read_prototxt(path, Reporter())


def test_nd_convolution_refuses_an_output_axis_of_one(tmp_path: Path) -> None:
    params = (
        "convolution_param { num_output: 2 kernel_shape { dim: 3 dim: 3 dim: 3 } "
        "pad_shape { dim: 0 dim: 1 dim: 1 } }"
    )
    text = net_text({"x": (1, 1, 3, 5, 5)}, layer("c", "NdConvolution", "x", params=params))
    with pytest.raises(ProtocaffeError, match="an output axis of size 1"):
        build(tmp_path, text)


def test_video_caffe_c3d_block_against_the_reference(tmp_path: Path) -> None:
    """A c3d_ucf101_deploy-like block: NdConvolution 3x3x3 pad 1, ReLU, NdPooling (1, 2, 2),
    NdConvolution, NdPooling 2x2x2 (ceil: L 3 -> 2), InnerProduct."""
    conv = (
        "convolution_param {{ num_output: {n} kernel_shape {{ dim: 3 dim: 3 dim: 3 }} "
        "stride_shape {{ dim: 1 dim: 1 dim: 1 }} pad_shape {{ dim: 1 dim: 1 dim: 1 }} }}"
    )
    body = (
        layer("conv1a", "NdConvolution", "data", params=conv.format(n=4))
        + layer("relu1a", "ReLU", "conv1a", tops=("conv1a",))
        + layer(
            "pool1",
            "NdPooling",
            "conv1a",
            params="pooling_param { pool: MAX kernel_shape { dim: 1 dim: 2 dim: 2 } "
            "stride_shape { dim: 1 dim: 2 dim: 2 } }",
        )
        + layer("conv2a", "NdConvolution", "pool1", params=conv.format(n=6))
        + layer(
            "pool2",
            "NdPooling",
            "conv2a",
            params="pooling_param { pool: MAX kernel_shape { dim: 2 dim: 2 dim: 2 } "
            "stride_shape { dim: 2 dim: 2 dim: 2 } }",
        )
        + layer("fc", "InnerProduct", "pool2", params="inner_product_param { num_output: 5 }")
    )
    shape = (2, 3, 3, 9, 7)
    x = np.random.default_rng(3).normal(size=shape).astype(np.float32)
    _, reference = compare_with_reference(tmp_path, net_text({"data": shape}, body), {"data": x})
    # pool1: (3, 5, 4) by ceil; pool2: (2, 3, 2).
    assert reference["pool1"].shape == (2, 4, 3, 5, 4)
    assert reference["pool2"].shape == (2, 6, 2, 3, 2)
