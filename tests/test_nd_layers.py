"""N-D convolution and 3-D pooling (issue 15): Convolution and Deconvolution over 1 to 3 spatial
axes against real Caffe (the oracle's BaseConvolutionLayer is N-D), every blob compared; the
3-D pooling of the forks (3D-Caffe's 5-D Pooling and PoolingND, C3D's Pooling3D and V1
POOLING3D), which neither the oracle nor OpenCV runs, against the numpy reference's
transcription of the forks' C++ (protocaffe.verify.reference.ops.pooling names the sources),
and that transcription against small cases worked out by hand from the C++.

Geometries are drawn with a seed: odd sizes, per-axis lists, pads, strides larger than the
kernel, dilation (0 included), groups, a channel axis other than 1, several bottoms, kernels
larger than the padded input (Caffe's truncating division).
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from caffe_check import build, layer, net_text
from caffe_fuzz.oracle import Oracle, available
from caffe_fuzz.regress import check, explain

from protocaffe.errors import ProtocaffeError, Reporter
from protocaffe.frontend.prototxt import read_prototxt_text
from protocaffe.verify.reference import run_all

needs_oracle = pytest.mark.skipif(not available(), reason="no real-Caffe oracle (../shared/oracle)")


@pytest.fixture(scope="module")
def oracle():  # type: ignore[no-untyped-def]
    with Oracle() as running:
        yield running


def _list(name: str, values: list[int]) -> str:
    return " ".join(f"{name}: {v}" for v in values)


def _conv_case(rng: random.Random, kind: str) -> str:
    """A random 3-D (or 1-D, 2-D) Convolution/Deconvolution net that Caffe accepts."""
    spatial = rng.choice([3, 3, 3, 2, 1])
    axis = rng.choice([1, 1, 1, 2]) if spatial < 3 else 1
    lead = [rng.randint(1, 2) for _ in range(axis)]
    group = rng.choice([1, 1, 2])
    channels = group * rng.randint(1, 2)
    sizes = [rng.randint(1, 6) for _ in range(spatial)]
    per_axis = rng.random() < 0.5
    count = spatial if per_axis else 1
    kernel = [rng.randint(1, 3) for _ in range(count)]
    stride = [rng.randint(1, 3) for _ in range(count)] if rng.random() < 0.7 else []
    pad = [rng.randint(0, 2) for _ in range(count)] if rng.random() < 0.6 else []
    dilation = [rng.choice([1, 1, 2, 0]) for _ in range(count)] if rng.random() < 0.4 else []
    params = " ".join(
        [
            f"num_output: {group * rng.randint(1, 2)}",
            _list("kernel_size", kernel),
            _list("stride", stride),
            _list("pad", pad),
            _list("dilation", dilation),
            f"group: {group}" if group > 1 else "",
            f"axis: {axis}" if axis != 1 else "",
            "bias_term: false" if rng.random() < 0.2 else "",
        ]
    )
    shape = [*lead, channels, *sizes]
    bottoms = ["data", "t"] if rng.random() < 0.2 else ["data"]
    tops = ["c0", "c1"][: len(bottoms)]
    body = layer("t", "TanH", "data")
    body += layer("c", kind, bottoms, tops, params=f"convolution_param {{ {params} }}")
    return net_text({"data": tuple(shape)}, body)


@needs_oracle
@pytest.mark.parametrize("kind", ["Convolution", "Deconvolution"])
@pytest.mark.parametrize("seed", range(12))
def test_nd_convolution_against_caffe(oracle: Oracle, tmp_path: Path, kind: str, seed: int) -> None:
    """Every blob equals real Caffe's; where Caffe refuses the geometry (an output size <= 0),
    protocaffe refuses it too, in one located line."""
    rng = random.Random(seed * 7919 + len(kind))
    text = _conv_case(rng, kind)
    verdict, _ = check(oracle, tmp_path, text)
    assert verdict.outcome in ("match", "both-reject"), explain(verdict) + "\n" + text


@needs_oracle
def test_a_3d_net_against_caffe(oracle: Oracle, tmp_path: Path) -> None:
    """The issue's "Must show": a 3-D convolution/deconvolution net (a V-Net-like block:
    convolution, ReLU (Caffe's PReLU uses the 4-D legacy accessors, so it refuses 5-D blobs),
    strided down-convolution, deconvolution back up, Eltwise) equal to real
    Caffe blob by blob."""
    body = (
        layer(
            "conv",
            "Convolution",
            "data",
            params="convolution_param { num_output: 4 " "kernel_size: 3 pad: 1 }",
        )
        + layer("relu", "ReLU", "conv", "conv")
        + layer(
            "down",
            "Convolution",
            "conv",
            params="convolution_param { num_output: 8 " "kernel_size: 2 stride: 2 }",
        )
        + layer(
            "up",
            "Deconvolution",
            "down",
            params="convolution_param { num_output: 4 "
            "kernel_size: 2 kernel_size: 2 kernel_size: 2 stride: 2 }",
        )
        + layer("sum", "Eltwise", ["conv", "up"])
    )
    text = net_text({"data": (1, 2, 8, 6, 4)}, body)
    verdict, _ = check(oracle, tmp_path, text)
    assert verdict.outcome == "match", explain(verdict)


# -- 3-D pooling against the numpy reference --------------------------------------------------


def _pool_layer(rng: random.Random) -> tuple[str, str, tuple[int, ...], bool]:
    """(type, parameters, input shape, with a mask top)."""
    kind = rng.choice(["Pooling", "PoolingND", "Pooling3D"])
    method = rng.choice(["MAX", "AVE"])
    sizes = tuple(rng.randint(1, 7) for _ in range(3))
    shape = (rng.randint(1, 2), rng.randint(1, 3), *sizes)
    if kind == "Pooling3D":
        k, kd = rng.randint(1, 3), rng.randint(1, 3)
        pad = rng.randint(0, k - 1) if method == "AVE" else 0
        params = (
            f"pooling3d_param {{ pool: {method} kernel_size: {k} kernel_depth: {kd} "
            f"stride: {rng.randint(1, 3)} temporal_stride: {rng.randint(1, 3)} pad: {pad} }}"
        )
        return kind, params, shape, False
    if kind == "Pooling":
        if rng.random() < 0.15:
            return kind, f"pooling_param {{ pool: {method} global_pooling: true }}", shape, False
        k = rng.randint(1, 3)
        params = (
            f"pooling_param {{ pool: {method} kernel_size: {k} stride: {rng.randint(1, 3)} "
            f"pad: {rng.randint(0, k - 1)} }}"
        )
        return kind, params, shape, method == "MAX" and rng.random() < 0.4
    kernel = [rng.randint(1, 3) for _ in range(3)]
    pads = [rng.randint(0, k - 1) for k in kernel]
    strides = [rng.randint(1, 3) for _ in range(3)]
    params = (
        f"pooling_nd_param {{ pool: {method} {_list('kernel_size', kernel)} "
        f"{_list('stride', strides)} {_list('pad', pads)} }}"
    )
    return kind, params, shape, False  # PoolingND has one top (pooling_nd_layer.cpp)


@pytest.mark.parametrize("seed", range(60))
def test_3d_pooling_against_the_reference(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    kind, params, shape, mask = _pool_layer(rng)
    tops = ["out", "mask"] if mask else ["out"]
    text = net_text({"data": shape}, layer("p", kind, "data", tops, params=params))
    net = read_prototxt_text(text, "net.prototxt", Reporter())
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    try:
        expected = run_all(net, None, {"data": x})
    except ProtocaffeError:
        # The reference refuses (no window left): protocaffe must refuse it too.
        with pytest.raises(ProtocaffeError):
            build(tmp_path, text)
        return
    run = build(tmp_path, text)
    ours = run.ours({"data": x})
    for top in tops:
        assert ours[top].shape == expected[top].shape, (top, text)
        np.testing.assert_allclose(ours[top], expected[top], rtol=1e-5, atol=1e-6, err_msg=text)
    # At another input size too: the generated code computes Caffe's rule at run time.
    bigger = (
        np.random.default_rng(seed + 1)
        .standard_normal((shape[0] + 1, shape[1], *(d + 2 for d in shape[2:])))
        .astype(np.float32)
    )
    expected = run_all(net, None, {"data": bigger})
    ours = run.ours({"data": bigger})
    for top in tops:
        np.testing.assert_allclose(ours[top], expected[top], rtol=1e-5, atol=1e-6, err_msg=text)


def _reference(kind: str, params: str, x: np.ndarray, tops: tuple[str, ...] = ("out",)) -> dict:
    text = net_text({"data": x.shape}, layer("p", kind, "data", list(tops), params=params))
    return run_all(read_prototxt_text(text, "net.prototxt", Reporter()), None, {"data": x})


def test_c3d_pooling_by_hand() -> None:
    """C3D pool3d_layer.cpp on a (1, 1, 3, 2, 3) ramp: kernel_depth 2 x 2 x 2, stride 2,
    temporal_stride 2, ceil sizes without Caffe's last-window rule: (2, 1, 2) windows. MAX
    windows are clipped to the input; AVE with pad 1 divides by the window clipped at
    size + pad (pad counted, temporal axis unpadded) and sums the part inside."""
    x = np.arange(18, dtype=np.float32).reshape(1, 1, 3, 2, 3)
    params = "pooling3d_param { pool: MAX kernel_size: 2 kernel_depth: 2 stride: 2 }"
    top = _reference("Pooling3D", params + "", x)["out"]
    # l in {0,1} / {2}; h in {0,1}; w in {0,1} / {2}
    expected = np.array([[10, 11], [16, 17]], np.float32).reshape(1, 1, 2, 1, 2)
    np.testing.assert_array_equal(top, expected)
    params = "pooling3d_param { pool: AVE kernel_size: 2 kernel_depth: 3 stride: 2 pad: 1 }"
    top = _reference("Pooling3D", params, x)["out"]
    # Sizes: L ceil((3-3)/1)+1 = 1; H ceil((2+2-2)/2)+1 = 2; W ceil((3+2-2)/2)+1 = 3 (kept:
    # C3D has no last-window rule). Window (h -1..0, w -1..0): divisor 3*2*2 = 12, the sum of
    # x[:, 0, 0] = 0 + 6 + 12 = 18 -> 1.5.
    assert top.shape == (1, 1, 1, 2, 3)
    assert top[0, 0, 0, 0, 0] == np.float32(18 / 12)
    # The last W window starts at 3 = W: hend = min(3 + 2, 3 + 1) = 4, divisor 3 * 2 * 1, and
    # it holds no input value: 0.
    assert top[0, 0, 0, 0, 2] == 0


def test_3d_caffe_pooling_by_hand() -> None:
    """3D-Caffe pooling_layer.cpp on a (1, 1, 2, 2, 3) ramp, kernel 2, stride 2, pad 1: ceil
    sizes (2, 2, 2), the last-window rule keeps them ((2 - 1) * 2 < size + 1); MAX's mask is
    (h * W + w) * D + d over the (2, 2, 3) volume."""
    x = np.arange(12, dtype=np.float32).reshape(1, 1, 2, 2, 3)
    out = _reference(
        "Pooling", "pooling_param { pool: MAX kernel_size: 2 stride: 2 pad: 1 }", x, ("out", "mask")
    )
    assert out["out"].shape == (1, 1, 2, 2, 2)
    # Window (0, 0, 0) covers only x[0, 0, 0]; window (1, 1, 1) covers x[1, 1, 1:3].
    assert out["out"][0, 0, 0, 0, 0] == 0 and out["mask"][0, 0, 0, 0, 0] == 0
    assert out["out"][0, 0, 1, 1, 1] == 11 and out["mask"][0, 0, 1, 1, 1] == 11
    ave = _reference("Pooling", "pooling_param { pool: AVE kernel_size: 2 stride: 2 pad: 1 }", x)
    # Window (0, 0, 0): starts -1, ends 1 on every axis: divisor 8, sum x[0, 0, 0] = 0.
    assert ave["out"][0, 0, 1, 1, 1] == np.float32((10 + 11) / 8)


def test_v1_pooling3d_reads_kernel_depth(tmp_path: Path) -> None:
    """C3D v1.0's V1 POOLING3D keeps kernel_depth and temporal_stride in pooling_param."""
    text = (
        'name: "c3d"\ninput: "data"\ninput_dim: 1\ninput_dim: 2\ninput_dim: 4\ninput_dim: 5\n'
        "input_dim: 5\n"
    )
    # A V1 net with 5-D input_dim is not legal Caffe; declare the input with input_shape.
    text = (
        'name: "c3d"\ninput: "data"\ninput_shape { dim: 1 dim: 2 dim: 4 dim: 5 dim: 5 }\n'
        'layers { name: "pool1" type: POOLING3D bottom: "data" top: "pool1" '
        "pooling_param { pool: MAX kernel_size: 2 stride: 2 kernel_depth: 2 temporal_stride: 2 "
        "} }\n"
    )
    run = build(tmp_path, text)
    x = np.random.default_rng(0).standard_normal((1, 2, 4, 5, 5)).astype(np.float32)
    expected = _reference(
        "Pooling3D",
        "pooling3d_param { pool: MAX kernel_size: 2 stride: 2 kernel_depth: 2 "
        "temporal_stride: 2 }",
        x,
    )["out"]
    np.testing.assert_array_equal(run.ours({"data": x})["pool1"], expected)


def test_pooling_over_more_axes_is_refused(tmp_path: Path) -> None:
    text = net_text(
        {"data": (1, 1, 2, 2, 2, 2)},
        layer("p", "Pooling", "data", params="pooling_param { kernel_size: 2 }"),
    )
    with pytest.raises(ProtocaffeError, match="Input must have 4 axes"):
        build(tmp_path, text)


def test_convolution_over_four_spatial_axes_is_refused(tmp_path: Path) -> None:
    text = net_text(
        {"data": (1, 1, 2, 2, 2, 2)},
        layer(
            "c",
            "Convolution",
            "data",
            params="convolution_param { num_output: 1 " "kernel_size: 1 }",
        ),
    )
    with pytest.raises(ProtocaffeError, match="at most 3"):
        build(tmp_path, text)
