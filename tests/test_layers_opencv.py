"""Each standard layer against OpenCV 4.x dnn on tiny random weights.

Every case is a tiny prototxt: protocaffe's random-weights writes a .caffemodel for it, protocaffe
converts it, and OpenCV (`readNetFromCaffe`, fusion off) runs the same files on the same input.
Where OpenCV lacks a layer or disagrees with Caffe, the test says so and compares against a numpy
implementation written from BVLC Caffe's C++ source instead (protocaffe.verify.reference, the
numpy reference that is itself proven against real Caffe in test_reference_oracle.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("cv2")

from caffe_check import (
    assert_close,
    build,
    check_against_numpy,
    check_against_opencv,
    check_every_layer_against_opencv,
    layer,
    net_text,
    random_inputs,
)

from protocaffe.errors import ProtocaffeError
from protocaffe.layers import lookup
from protocaffe.verify.reference.ops.conv import col2im_deconv
from protocaffe.verify.reference.ops.neuron import bnll_values
from protocaffe.verify.reference.ops.normalization import lrn_values, mvn_values
from protocaffe.verify.reference.ops.pooling import pool2d
from protocaffe.verify.reference.ops.reduction import argmax_values, reduction_values
from protocaffe.verify.reference.ops.structure import tile_values

X = {"data": (2, 4, 9, 11)}


def conv(name: str, params: str, bottom: str = "data") -> str:
    return layer(name, "Convolution", bottom, params=f"convolution_param {{ {params} }}")


def deconv(name: str, params: str, bottom: str = "data") -> str:
    return layer(name, "Deconvolution", bottom, params=f"convolution_param {{ {params} }}")


def pool(name: str, params: str, bottom: str = "data") -> str:
    return layer(name, "Pooling", bottom, params=f"pooling_param {{ {params} }}")


def one(kind: str, params: str = "", shape: tuple[int, ...] = (2, 4, 9, 11)) -> str:
    """A net with one layer of `kind` on input `data`."""
    return net_text({"data": shape}, layer("out", kind, "data", params=params))


CONVOLUTION = {
    "basic": "num_output: 5 kernel_size: 3",
    "pad_stride": "num_output: 5 kernel_size: 3 stride: 2 pad: 1",
    "hw_fields": "num_output: 3 kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 pad_h: 1 pad_w: 0",
    "repeated_fields": "num_output: 3 kernel_size: 2 kernel_size: 3 stride: 1 stride: 2"
    " pad: 0 pad: 2",
    "group": "num_output: 6 kernel_size: 3 group: 2",
    "depthwise": "num_output: 4 kernel_size: 3 pad: 1 group: 4",
    "dilation": "num_output: 3 kernel_size: 3 dilation: 2 pad: 2",
    "dilation_hw": "num_output: 3 kernel_size: 3 dilation: 2 dilation: 1 pad: 1",
    "no_bias": "num_output: 3 kernel_size: 1 bias_term: false",
    "kernel_larger_than_stride_pad": "num_output: 2 kernel_size: 5 stride: 3 pad: 2",
}


@pytest.mark.parametrize("params", CONVOLUTION.values(), ids=CONVOLUTION.keys())
def test_convolution(tmp_path, params):
    check_against_opencv(tmp_path, net_text(X, conv("out", params)))


DECONVOLUTION = {
    "basic": "num_output: 3 kernel_size: 4 stride: 2 pad: 1",
    "hw_fields": "num_output: 2 kernel_h: 3 kernel_w: 4 stride_h: 1 stride_w: 2 pad_h: 1 pad_w: 0",
    "group": "num_output: 6 kernel_size: 3 stride: 2 group: 2",
    "depthwise_upsample": "num_output: 4 kernel_size: 4 stride: 2 pad: 1 group: 4 bias_term: false",
    "no_bias": "num_output: 3 kernel_size: 2 stride: 2 bias_term: false",
}


@pytest.mark.parametrize("params", DECONVOLUTION.values(), ids=DECONVOLUTION.keys())
def test_deconvolution(tmp_path, params):
    check_against_opencv(tmp_path, net_text(X, deconv("out", params)))


# Pooling geometries OpenCV gets right (it follows Caffe's ceil rule and window clip).
POOLING = {
    "max_ceil": ("pool: MAX kernel_size: 3 stride: 2", (2, 3, 10, 11)),
    "ave_ceil": ("pool: AVE kernel_size: 3 stride: 2", (2, 3, 10, 11)),
    "max_pad": ("pool: MAX kernel_size: 3 stride: 2 pad: 1", (2, 3, 10, 9)),
    "ave_pad": ("pool: AVE kernel_size: 3 stride: 2 pad: 1", (2, 3, 10, 9)),
    # (out - 1) * stride >= H + pad: Caffe drops the last window (5x5 -> 2x2, not 3x3).
    "max_last_window_clip": ("pool: MAX kernel_size: 3 stride: 3 pad: 1", (1, 2, 5, 5)),
    "ave_last_window_clip": ("pool: AVE kernel_size: 3 stride: 3 pad: 1", (1, 2, 5, 5)),
    "max_asymmetric": (
        "pool: MAX kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 pad_h: 1 pad_w: 0",
        (2, 3, 8, 7),
    ),
    "ave_asymmetric": (
        "pool: AVE kernel_h: 3 kernel_w: 4 stride_h: 2 stride_w: 3 pad_h: 1 pad_w: 2",
        (2, 3, 8, 13),
    ),
    # pad > kernel / 2: torch refuses this padding, so protocaffe pads explicitly.
    "max_big_pad": ("pool: MAX kernel_size: 3 stride: 2 pad: 2", (1, 3, 7, 8)),
    "ave_big_pad": ("pool: AVE kernel_size: 3 stride: 2 pad: 2", (1, 3, 7, 8)),
    "ave_big_pad_hw": (
        "pool: AVE kernel_h: 3 kernel_w: 2 pad_h: 2 pad_w: 1 stride: 1",
        (1, 2, 6, 5),
    ),
    "max_global": ("pool: MAX global_pooling: true", (2, 3, 5, 7)),
    "ave_global": ("pool: AVE global_pooling: true", (2, 3, 5, 7)),
    "ave_kernel_is_input": ("pool: AVE kernel_h: 5 kernel_w: 7", (2, 3, 5, 7)),
    "max_stride1": ("pool: MAX kernel_size: 2 stride: 1", (1, 3, 4, 5)),
    # The fork dialect (ceil_mode, default true), which OpenCV's own caffe.proto has.
    "max_ceil_mode_false": ("pool: MAX kernel_size: 3 stride: 2 ceil_mode: false", (2, 3, 10, 10)),
    "ave_ceil_mode_false_pad": (
        "pool: AVE kernel_size: 3 stride: 2 pad: 1 ceil_mode: false",
        (2, 3, 10, 10),
    ),
    "max_ceil_mode_true": ("pool: MAX kernel_size: 3 stride: 2 ceil_mode: true", (2, 3, 10, 10)),
    # pad = 0 with kernel < stride where every window still starts inside the input.
    "max_kernel_below_stride_fits": ("pool: MAX kernel_size: 2 stride: 3", (1, 2, 8, 8)),
    "ave_kernel_below_stride_fits": ("pool: AVE kernel_size: 2 stride: 3", (1, 2, 8, 8)),
}


@pytest.mark.parametrize(("params", "shape"), POOLING.values(), ids=POOLING.keys())
def test_pooling(tmp_path, params, shape):
    check_against_opencv(tmp_path, one("Pooling", f"pooling_param {{ {params} }}", shape))


# OpenCV's caffe.proto has no `round_mode` (BVLC master's field) and refuses these files, and
# it does not apply the dilation of a Deconvolution (its output is 2 pixels smaller); with
# pad = 0 and kernel < stride the last window can start past the input, where Caffe writes
# -FLT_MAX (MAX) or 0 (AVE). These compare against the numpy reference, written from Caffe's source.
NUMPY_POOLING = {
    "max_floor_round_mode": (
        "MAX",
        (3, 3),
        (2, 2),
        (0, 0),
        "round_mode: FLOOR",
        False,
        (2, 3, 10, 10),
    ),
    "ave_floor_round_mode_pad": (
        "AVE",
        (3, 3),
        (2, 2),
        (1, 1),
        "round_mode: FLOOR",
        False,
        (2, 3, 10, 10),
    ),
    "max_ceil_round_mode": (
        "MAX",
        (3, 3),
        (2, 2),
        (0, 0),
        "round_mode: CEIL",
        True,
        (2, 3, 10, 10),
    ),
    "max_kernel_below_stride": ("MAX", (2, 2), (3, 3), (0, 0), "", True, (1, 2, 9, 10)),
    "ave_kernel_below_stride": ("AVE", (2, 2), (3, 3), (0, 0), "", True, (1, 2, 9, 10)),
    "max_kernel_1_stride_2": ("MAX", (1, 1), (2, 2), (0, 0), "", True, (1, 2, 6, 5)),
    "ave_kernel_1_stride_2": ("AVE", (1, 1), (2, 2), (0, 0), "", True, (1, 2, 6, 5)),
    "ave_kernel_below_stride_hw": ("AVE", (1, 2), (2, 3), (0, 0), "", True, (1, 2, 6, 10)),
}


@pytest.mark.parametrize(
    ("method", "kernel", "stride", "pad", "extra", "ceil", "shape"),
    NUMPY_POOLING.values(),
    ids=NUMPY_POOLING.keys(),
)
def test_pooling_against_caffe_source(tmp_path, method, kernel, stride, pad, extra, ceil, shape):
    params = (
        f"pool: {method} kernel_h: {kernel[0]} kernel_w: {kernel[1]} stride_h: {stride[0]} "
        f"stride_w: {stride[1]} pad_h: {pad[0]} pad_w: {pad[1]} {extra}"
    )
    run = build(tmp_path, one("Pooling", f"pooling_param {{ {params} }}", shape))
    inputs = random_inputs(run)
    expected, _ = pool2d(inputs["data"], kernel, stride, pad, method == "AVE", ceil)
    assert_close(run.ours(inputs)["out"], expected)


def test_deconvolution_dilation_against_caffe_source(tmp_path):
    text = net_text(X, deconv("out", "num_output: 2 kernel_size: 3 dilation: 2 stride: 2 pad: 1"))
    run = build(tmp_path, text)
    inputs = random_inputs(run)
    weight, bias = run.blobs()["out"]
    expected = col2im_deconv(inputs["data"], weight, bias, (2, 2), (1, 1), (2, 2), 1)
    assert_close(run.ours(inputs)["out"], expected)


INNER_PRODUCT = {
    "flatten_4d": ("num_output: 5", (2, 3, 4, 5)),
    "axis_2": ("num_output: 3 axis: 2", (2, 3, 4, 5)),
    "axis_3": ("num_output: 2 axis: 3", (2, 3, 4, 5)),
    "axis_negative": ("num_output: 2 axis: -1", (2, 3, 4, 5)),
    "no_bias": ("num_output: 3 bias_term: false", (2, 6)),
}


@pytest.mark.parametrize(("params", "shape"), INNER_PRODUCT.values(), ids=INNER_PRODUCT.keys())
def test_inner_product(tmp_path, params, shape):
    check_against_opencv(
        tmp_path, one("InnerProduct", f"inner_product_param {{ {params} }}", shape)
    )


@pytest.mark.parametrize(("axis", "shape"), [(1, (2, 3, 2, 2)), (2, (2, 3, 4, 5))])
def test_inner_product_transpose(tmp_path, axis, shape):
    """OpenCV reads a transposed weight (K, N) as if it were (N, K): its results are wrong, so
    this follows inner_product_layer.cpp: top = bottom (M x K) * weight (K x N) + bias."""
    params = f"inner_product_param {{ num_output: 3 axis: {axis} transpose: true }}"
    run = build(tmp_path, one("InnerProduct", params, shape))
    inputs = random_inputs(run)
    weight, bias = run.blobs()["out"]
    rows = int(np.prod(shape[:axis]))
    expected = inputs["data"].reshape(rows, -1).astype(np.float64) @ weight + bias
    assert_close(run.ours(inputs)["out"], expected.reshape(*shape[:axis], 3).astype(np.float32))


ACTIVATIONS = {
    "relu": ("ReLU", ""),
    "leaky_relu": ("ReLU", "relu_param { negative_slope: 0.1 }"),
    "prelu": ("PReLU", ""),
    # PReLU with channel_shared has a 0-D weight in Caffe's files, which OpenCV 4 cannot load
    # (Mat::create of 0 dims): real Caffe checks it (test_fuzz_regressions.py, cause 1).
    "sigmoid": ("Sigmoid", ""),
    "tanh": ("TanH", ""),
    "elu": ("ELU", ""),
    "elu_alpha": ("ELU", "elu_param { alpha: 0.5 }"),
    "absval": ("AbsVal", ""),
    "bnll": ("BNLL", ""),
    "power_square": ("Power", "power_param { power: 2 scale: 0.5 shift: 1 }"),
    "power_affine": ("Power", "power_param { scale: -2 shift: 0.25 }"),
    "power_identity": ("Power", ""),
    "power_cube": ("Power", "power_param { power: 3 }"),
    "exp": ("Exp", ""),
    "exp_scaled": ("Exp", "exp_param { scale: 0.5 shift: 0.1 }"),
    "exp_base_2": ("Exp", "exp_param { base: 2 scale: 0.7 shift: -0.3 }"),
    "dropout": ("Dropout", "dropout_param { dropout_ratio: 0.3 }"),
}


@pytest.mark.parametrize(("kind", "params"), ACTIVATIONS.values(), ids=ACTIVATIONS.keys())
def test_activation(tmp_path, kind, params):
    check_against_opencv(tmp_path, one(kind, params))


def test_bnll_large_inputs(tmp_path):
    """log(1 + exp(x)) where exp(x) overflows float32: Caffe computes x + log(1 + exp(-x))."""
    run = build(tmp_path, one("BNLL", shape=(1, 1, 2, 4)))
    x = np.array([[[[-100.0, -30.0, -1.0, 0.0], [1.0, 25.0, 90.0, 200.0]]]], np.float32)
    assert_close(run.ours({"data": x})["out"], bnll_values(x))
    assert_close(run.opencv({"data": x})["out"], bnll_values(x))


def test_log_natural(tmp_path):
    # Log needs positive inputs: an Exp in front makes them so.
    text = net_text(X, layer("pos", "Exp", "data") + layer("out", "Log", "pos"))
    check_against_opencv(tmp_path, text)


LOG = {
    "base_10": (10.0, 1.0, 0.0),
    "scale_shift": (-1.0, 0.5, 3.0),
    "base_2_scale_shift": (2.0, 2.0, 0.5),
}


@pytest.mark.parametrize(("base", "scale", "shift"), LOG.values(), ids=LOG.keys())
def test_log_parameters(tmp_path, base, scale, shift):
    """OpenCV ignores log_param (it always computes ln x). log_layer.cpp: ln(shift + scale * x)
    times 1 / ln(base), with base -1 meaning e."""
    params = f"log_param {{ base: {base} scale: {scale} shift: {shift} }}"
    run = build(tmp_path, net_text(X, layer("out", "Log", "data", params=params)))
    inputs = random_inputs(run)
    inputs["data"] = np.abs(inputs["data"]) + 0.1
    x = inputs["data"].astype(np.float64)
    base_scale = 1.0 if base == -1 else 1.0 / np.log(base)
    expected = np.log(shift + scale * x) * base_scale
    assert_close(run.ours(inputs)["out"], expected.astype(np.float32))


@pytest.mark.parametrize("threshold", [0.0, 0.3, -0.5])
def test_threshold(tmp_path, threshold):
    # OpenCV 4.x has no Threshold layer: Caffe's threshold_layer.cpp is `x > threshold ? 1 : 0`.
    text = one("Threshold", f"threshold_param {{ threshold: {threshold} }}")
    run = build(tmp_path, text)
    inputs = random_inputs(run)
    inputs["data"][0, 0, 0, :3] = [threshold, np.nextafter(np.float32(threshold), 1), -9]
    expected = (inputs["data"] > np.float32(threshold)).astype(np.float32)
    assert_close(run.ours(inputs)["out"], expected)


SOFTMAX = {
    "default_axis": ("", (2, 4, 3, 5)),
    "axis_2": ("softmax_param { axis: 2 }", (2, 4, 3, 5)),
    "axis_3": ("softmax_param { axis: 3 }", (2, 4, 3, 5)),
    "axis_negative": ("softmax_param { axis: -1 }", (2, 4, 3, 5)),
    "2d": ("", (3, 7)),
}


@pytest.mark.parametrize(("params", "shape"), SOFTMAX.values(), ids=SOFTMAX.keys())
def test_softmax(tmp_path, params, shape):
    check_against_opencv(tmp_path, one("Softmax", params, shape))


# OpenCV ignores `k` and uses another default for an unset `alpha`: these set alpha and keep k = 1.
LRN = {
    "across": "lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 }",
    "across_wide": "lrn_param { local_size: 7 alpha: 1.5 beta: 0.5 }",
    "across_size_1": "lrn_param { local_size: 1 alpha: 2 beta: 0.75 }",
    "within": "lrn_param { norm_region: WITHIN_CHANNEL local_size: 3 alpha: 0.5 beta: 0.75 }",
    "within_5": "lrn_param { norm_region: WITHIN_CHANNEL local_size: 5 alpha: 2 beta: 0.9 }",
}


@pytest.mark.parametrize("params", LRN.values(), ids=LRN.keys())
def test_lrn(tmp_path, params):
    check_against_opencv(tmp_path, one("LRN", params), tol=2e-5)


LRN_NUMPY = {
    "defaults": ("", 5, 1.0, 0.75, 1.0, False),
    "across_k": ("local_size: 3 alpha: 0.5 beta: 0.75 k: 2", 3, 0.5, 0.75, 2.0, False),
    # WITHIN_CHANNEL has no k: Caffe builds it from Power layers with shift 1.
    "within_k_ignored": ("norm_region: WITHIN_CHANNEL local_size: 3 k: 5", 3, 1.0, 0.75, 5.0, True),
}


@pytest.mark.parametrize(
    ("params", "size", "alpha", "beta", "k", "within"), LRN_NUMPY.values(), ids=LRN_NUMPY.keys()
)
def test_lrn_against_caffe_source(tmp_path, params, size, alpha, beta, k, within):
    run = build(tmp_path, one("LRN", f"lrn_param {{ {params} }}"))
    inputs = random_inputs(run)
    expected = lrn_values(inputs["data"], size, alpha, beta, k, within)
    assert_close(run.ours(inputs)["out"], expected, tol=2e-5)


MVN = {
    "default": "",
    "no_variance": "mvn_param { normalize_variance: false }",
    "across_channels": "mvn_param { across_channels: true }",
    "across_channels_no_variance": "mvn_param { across_channels: true normalize_variance: false }",
}


@pytest.mark.parametrize("params", MVN.values(), ids=MVN.keys())
def test_mvn(tmp_path, params):
    check_against_opencv(tmp_path, one("MVN", params), tol=2e-5)


@pytest.mark.parametrize("across_channels", [False, True])
def test_mvn_eps_against_caffe_source(tmp_path, across_channels):
    """OpenCV divides by sqrt(var + eps); Caffe (mvn_layer.cpp) by sqrt(var) + eps. With the
    default eps (1e-9) they agree; with eps 0.1 and a small variance they do not."""
    params = f"mvn_param {{ eps: 0.1 across_channels: {str(across_channels).lower()} }}"
    run = build(tmp_path, one("MVN", params, (2, 3, 4, 5)))
    inputs = random_inputs(run)
    inputs["data"] *= np.float32(0.05)
    expected = mvn_values(inputs["data"], across_channels, True, 0.1)
    assert_close(run.ours(inputs)["out"], expected, tol=2e-5)


def bn_blobs(channels: int, factor: float, seed: int = 3) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    mean = rng.normal(0, 1, channels).astype(np.float32)
    var = rng.uniform(0.5, 2, channels).astype(np.float32)
    return [mean * np.float32(factor), var * np.float32(factor), np.array([factor], np.float32)]


BATCH_NORM = {
    "default_eps": ("", (2, 4, 9, 11), None),
    "eps": ("batch_norm_param { eps: 0.001 }", (2, 4, 9, 11), None),
    "factor_2_5": ("", (2, 4, 3, 5), 2.5),
    "use_global_stats_true": ("batch_norm_param { use_global_stats: true }", (2, 4, 3, 5), 0.5),
    "2d_input": ("", (3, 4), 1.0),
    "3d_input": ("batch_norm_param { eps: 0.01 }", (2, 4, 7), 1.0),
}


@pytest.mark.parametrize(("params", "shape", "factor"), BATCH_NORM.values(), ids=BATCH_NORM.keys())
def test_batch_norm(tmp_path, params, shape, factor):
    blobs = None if factor is None else {"out": bn_blobs(shape[1], factor)}
    check_against_opencv(tmp_path, one("BatchNorm", params, shape), blobs=blobs)


@pytest.mark.parametrize(
    ("params", "eps"),
    [
        ("batch_norm_param { eps: 0.01 }", 0.01),
        ("batch_norm_param { use_global_stats: true }", 1e-5),
    ],
)
def test_batch_norm_factor_zero(tmp_path, params, eps):
    """batch_norm_layer.cpp: scale = factor == 0 ? 0 : 1 / factor, so with a zero factor the mean
    and variance are 0 whatever the blobs hold: top = x / sqrt(0 + eps)."""
    blobs = bn_blobs(4, 1.0)
    blobs[2] = np.zeros(1, np.float32)
    run, inputs = check_against_opencv(tmp_path, one("BatchNorm", params), blobs={"out": blobs})
    expected = inputs["data"] / np.sqrt(np.float32(eps))
    assert_close(run.ours(inputs)["out"], expected, tol=1e-5)


@pytest.mark.parametrize("shape", [(2, 3, 2, 3, 2), (1, 3, 2, 2, 3, 2)], ids=["5d", "6d"])
def test_batch_norm_high_rank_against_caffe_source(tmp_path, shape):
    """batch_norm_layer.cpp treats every axis after the channel as spatial, whatever the rank
    (OpenCV does not load these): top = (x - mean / f) / sqrt(var / f + eps)."""
    blobs = bn_blobs(3, 2.0)

    def expected(values, _):
        mean, var, factor = (b.astype(np.float64) for b in blobs)
        view = (1, 3) + (1,) * (len(shape) - 2)
        centered = values["data"] - (mean / factor).reshape(view)
        return {"out": centered / np.sqrt((var / factor).reshape(view) + np.float32(1e-5))}

    check_against_numpy(tmp_path, one("BatchNorm", "", shape), expected, blobs={"out": blobs})


def test_batch_norm_local_statistics(tmp_path):
    """use_global_stats false: batch_norm_layer.cpp normalises with this batch's mean and biased
    variance over (N, H, W), then divides by sqrt(var + eps). OpenCV fails to load this."""

    def expected(inputs, blobs):
        x = inputs["data"].astype(np.float64)
        mean = x.mean(axis=(0, 2, 3), keepdims=True)
        var = ((x - mean) ** 2).mean(axis=(0, 2, 3), keepdims=True)
        return {"out": (x - mean) / np.sqrt(var + np.float32(1e-5))}

    text = one("BatchNorm", "batch_norm_param { use_global_stats: false }")
    check_against_numpy(tmp_path, text, expected, tol=2e-5)


SCALE = {
    "channel": "",
    "channel_bias": "scale_param { bias_term: true }",
    "axis_1_num_axes_2": "scale_param { axis: 1 num_axes: 2 bias_term: true }",
    "num_axes_all": "scale_param { num_axes: -1 bias_term: true }",
    "axis_0": "scale_param { axis: 0 num_axes: 2 }",
    "axis_2": "scale_param { axis: 2 bias_term: true }",
}


@pytest.mark.parametrize("params", SCALE.values(), ids=SCALE.keys())
def test_scale(tmp_path, params):
    check_against_opencv(tmp_path, one("Scale", params, (2, 3, 4, 5)))


# Scale with a second bottom: the operand's shape starts at `axis` (default 1) of bottom 0.
SCALE_TWO = {
    "channel": ((3,), ""),
    "channel_and_height": ((3, 4), ""),
    "axis_0": ((2, 3), "axis: 0"),
    "axis_2": ((4, 5), "axis: 2"),
    "whole": ((2, 3, 4, 5), "axis: 0"),
}


@pytest.mark.parametrize(("shape", "params"), SCALE_TWO.values(), ids=SCALE_TWO.keys())
def test_scale_two_bottoms(tmp_path, shape, params):
    text = net_text(
        {"data": (2, 3, 4, 5), "s": shape},
        layer("out", "Scale", ["data", "s"], params=f"scale_param {{ {params} }}"),
    )
    check_against_opencv(tmp_path, text)


def broadcast_at(operand: np.ndarray, axis: int, rank: int) -> np.ndarray:
    """scale_layer.cpp / bias_layer.cpp view bottom 0 as (outer, operand.size, inner) with the
    operand's axes starting at `axis`: in numpy terms, trailing singleton axes after it."""
    return operand.reshape(operand.shape + (1,) * (rank - axis - operand.ndim))


# OpenCV fails to load a scalar (num_axes: 0) or axis -1 Scale, and adds the bias of a
# two-bottom Scale wrongly; it has no working Caffe Bias layer. These follow scale_layer.cpp
# and bias_layer.cpp; a scalar operand (num_axes 0) uses axis 0 there.
BROADCAST_NUMPY = {
    "scale_scalar": ("Scale", "scale_param { num_axes: 0 }", None, 0),
    "scale_scalar_bias": ("Scale", "scale_param { num_axes: 0 bias_term: true }", None, 0),
    "scale_axis_negative": ("Scale", "scale_param { axis: -1 bias_term: true }", None, 3),
    "scale_two_bottoms_bias": ("Scale", "scale_param { bias_term: true }", (3,), 1),
    "scale_two_bottoms_axis_2_bias": (
        "Scale",
        "scale_param { axis: 2 bias_term: true }",
        (4, 5),
        2,
    ),
    "bias_channel": ("Bias", "", None, 1),
    "bias_axis_2_num_axes_2": ("Bias", "bias_param { axis: 2 num_axes: 2 }", None, 2),
    "bias_num_axes_all": ("Bias", "bias_param { axis: 1 num_axes: -1 }", None, 1),
    "bias_scalar": ("Bias", "bias_param { num_axes: 0 }", None, 0),
    "bias_two_bottoms": ("Bias", "", (3,), 1),
    "bias_two_bottoms_axis_0": ("Bias", "bias_param { axis: 0 }", (2, 3, 4), 0),
}


@pytest.mark.parametrize(
    ("kind", "params", "second", "axis"), BROADCAST_NUMPY.values(), ids=BROADCAST_NUMPY.keys()
)
def test_scale_and_bias_against_caffe_source(tmp_path, kind, params, second, axis):
    inputs = {"data": (2, 3, 4, 5)} | ({"b": second} if second else {})
    bottoms = ["data", "b"] if second else ["data"]

    def expected(values, blobs):
        x = values["data"].astype(np.float64)
        learned = list(blobs.get("out", []))
        if kind == "Bias":
            bias = values["b"] if second else learned[0]
            return {"out": x + broadcast_at(bias, axis, 4)}
        scale = values["b"] if second else learned.pop(0)
        y = x * broadcast_at(scale, axis, 4)
        if "bias_term: true" in params:
            y = y + broadcast_at(learned[0], axis, 4)
        return {"out": y}

    check_against_numpy(
        tmp_path, net_text(inputs, layer("out", kind, bottoms, params=params)), expected
    )


ABC = {"a": (2, 3, 4, 5), "b": (2, 3, 4, 5), "c": (2, 3, 4, 5)}
ELTWISE = {
    "sum": (["a", "b"], ""),
    "sum_three": (["a", "b", "c"], "operation: SUM"),
    "sum_coeff": (["a", "b"], "coeff: 1 coeff: -1"),
    "sum_coeff_three": (["c", "a", "b"], "coeff: 0.5 coeff: 2 coeff: -0.25"),
    "prod": (["a", "b", "c"], "operation: PROD"),
    "max": (["a", "b", "c"], "operation: MAX"),
    "max_same_bottom": (["a", "a"], "operation: MAX"),
}


@pytest.mark.parametrize(("bottoms", "params"), ELTWISE.values(), ids=ELTWISE.keys())
def test_eltwise(tmp_path, bottoms, params):
    text = net_text(ABC, layer("out", "Eltwise", bottoms, params=f"eltwise_param {{ {params} }}"))
    unused = sorted(set(ABC) - set(bottoms))
    text += layer("silence", "Silence", unused, []) if unused else ""
    check_against_opencv(tmp_path, text)


CONCAT = {
    "channels": ({"a": (2, 1, 3, 4), "b": (2, 3, 3, 4), "c": (2, 2, 3, 4)}, ["a", "b", "c"], ""),
    "order": ({"a": (2, 1, 3, 4), "b": (2, 3, 3, 4), "c": (2, 2, 3, 4)}, ["c", "a", "b"], ""),
    "axis_2": ({"a": (2, 3, 1, 4), "b": (2, 3, 2, 4)}, ["b", "a"], "concat_param { axis: 2 }"),
    "axis_0": ({"a": (1, 3, 2), "b": (2, 3, 2)}, ["b", "a"], "concat_param { axis: 0 }"),
    "axis_negative": ({"a": (2, 3, 1), "b": (2, 3, 2)}, ["b", "a"], "concat_param { axis: -1 }"),
    "same_bottom_twice": ({"a": (2, 2, 3)}, ["a", "a"], ""),
}


@pytest.mark.parametrize(("inputs", "bottoms", "params"), CONCAT.values(), ids=CONCAT.keys())
def test_concat(tmp_path, inputs, bottoms, params):
    check_against_opencv(tmp_path, net_text(inputs, layer("out", "Concat", bottoms, params=params)))


def test_concat_dim_against_numpy(tmp_path):
    """The legacy name of `axis`; OpenCV ignores it (and concatenates channels)."""
    text = net_text(
        {"a": (2, 3, 1, 4), "b": (2, 3, 2, 4)},
        layer("out", "Concat", ["b", "a"], params="concat_param { concat_dim: 2 }"),
    )
    check_against_numpy(
        tmp_path, text, lambda v, _: {"out": np.concatenate([v["b"], v["a"]], axis=2)}
    )


SLICE = {
    "points_channels": ((2, 6, 3, 4), ["p", "q", "r"], "slice_point: 1 slice_point: 4"),
    "axis_2": ((2, 3, 5, 4), ["q", "p"], "axis: 2 slice_point: 2"),
}


@pytest.mark.parametrize(("shape", "tops", "params"), SLICE.values(), ids=SLICE.keys())
def test_slice(tmp_path, shape, tops, params):
    text = net_text(
        {"data": shape}, layer("out", "Slice", "data", tops, params=f"slice_param {{ {params} }}")
    )
    check_against_opencv(tmp_path, text)


# OpenCV fails on equal parts (no slice_point), on slice_dim, on a negative axis and on one top.
SLICE_NUMPY = {
    "equal_parts": ((2, 6, 3, 4), ["p", "q", "r"], "", 1, 3),
    "slice_dim": ((2, 3, 5, 4), ["p", "q"], "slice_dim: 3 slice_point: 3", 3, [3]),
    "axis_negative": ((2, 3, 6), ["p", "q"], "axis: -1", 2, 2),
    "one_top": ((2, 3, 6), ["p"], "", 1, 1),
}


@pytest.mark.parametrize(
    ("shape", "tops", "params", "axis", "sections"), SLICE_NUMPY.values(), ids=SLICE_NUMPY.keys()
)
def test_slice_against_numpy(tmp_path, shape, tops, params, axis, sections):
    text = net_text(
        {"data": shape}, layer("out", "Slice", "data", tops, params=f"slice_param {{ {params} }}")
    )

    def expected(values, _):
        return dict(zip(tops, np.split(values["data"], sections, axis=axis), strict=True))

    check_against_numpy(tmp_path, text, expected)


def test_split_feeds_two_layers(tmp_path):
    text = net_text(
        {"data": (2, 3, 4, 5)},
        layer("split", "Split", "data", ["x1", "x2"])
        + layer("neg", "Power", "x1", params="power_param { scale: -1 }")
        + layer("sq", "Power", "x2", params="power_param { power: 2 }")
        + layer("out", "Eltwise", ["neg", "sq"]),
    )
    check_against_opencv(tmp_path, text)


def test_split_tops_are_outputs(tmp_path):
    text = net_text({"data": (2, 3, 4, 5)}, layer("split", "Split", "data", ["x2", "x1"]))
    run, _ = check_against_numpy(tmp_path, text, lambda v, _: {"x1": v["data"], "x2": v["data"]})
    assert run.output_names == ["x1", "x2"]


CROP = {
    "spatial_offsets": ((2, 3, 9, 11), (2, 3, 4, 5), "offset: 2 offset: 3"),
    "one_offset": ((2, 3, 9, 11), (2, 3, 4, 5), "offset: 3"),
    "no_offset": ((2, 3, 9, 11), (2, 3, 4, 5), ""),
    "axis_1": ((2, 5, 9, 11), (2, 3, 4, 5), "axis: 1 offset: 1 offset: 2 offset: 3"),
    "axis_3": ((2, 3, 9, 11), (1, 1, 1, 5), "axis: 3 offset: 4"),
    "axis_negative": ((2, 3, 9, 11), (1, 1, 1, 5), "axis: -1 offset: 6"),
}


@pytest.mark.parametrize(("shape", "ref", "params"), CROP.values(), ids=CROP.keys())
def test_crop(tmp_path, shape, ref, params):
    text = net_text(
        {"data": shape, "ref": ref},
        layer("out", "Crop", ["data", "ref"], params=f"crop_param {{ {params} }}"),
    )
    check_against_opencv(tmp_path, text)


FLATTEN = {
    "default": "",
    "axis_2": "flatten_param { axis: 2 }",
    "axis_1_end_2": "flatten_param { axis: 1 end_axis: 2 }",
    "end_negative": "flatten_param { axis: 1 end_axis: -2 }",
}


@pytest.mark.parametrize("params", FLATTEN.values(), ids=FLATTEN.keys())
def test_flatten(tmp_path, params):
    check_against_opencv(tmp_path, one("Flatten", params, (2, 3, 4, 5)))


RESHAPE = {
    "copy_and_infer": "shape { dim: 0 dim: -1 dim: 5 }",
    "explicit": "shape { dim: 2 dim: 12 dim: 5 }",
    "add_axes": "shape { dim: 0 dim: 0 dim: 2 dim: 2 dim: -1 }",
    "axis_1_num_axes_1": "shape { dim: 3 dim: 1 } axis: 1 num_axes: 1",
    "axis_2_num_axes_2": "shape { dim: -1 } axis: 2 num_axes: 2",
    "copy_after_axis": "shape { dim: 0 dim: -1 } axis: 1",
}


@pytest.mark.parametrize("params", RESHAPE.values(), ids=RESHAPE.keys())
def test_reshape(tmp_path, params):
    check_against_opencv(tmp_path, one("Reshape", f"reshape_param {{ {params} }}", (2, 3, 4, 5)))


# OpenCV turns 1-D results into (N, 1) and fails on inserted axes; the expected shapes here are
# worked out by hand from reshape_layer.cpp (start = axis, or rank + axis + 1 when negative;
# `num_axes` input axes from there are replaced by `shape`) and flatten_layer.cpp.
SHAPES_NUMPY = {
    "reshape_flatten_all": ("Reshape", "reshape_param { shape { dim: -1 } }", (120,)),
    "reshape_axis_negative": (
        "Reshape",
        "reshape_param { shape { dim: 5 dim: 1 } axis: -2 }",
        (2, 3, 4, 5, 1),
    ),
    "reshape_insert": (
        "Reshape",
        "reshape_param { shape { dim: 1 } axis: 1 num_axes: 0 }",
        (2, 1, 3, 4, 5),
    ),
    "reshape_insert_at_end": (
        "Reshape",
        "reshape_param { shape { dim: 1 dim: 1 } axis: -1 num_axes: 0 }",
        (2, 3, 4, 5, 1, 1),
    ),
    "reshape_infer_middle": (
        "Reshape",
        "reshape_param { shape { dim: 2 dim: -1 } axis: 1 num_axes: 2 }",
        (2, 2, 6, 5),
    ),
    "flatten_axis_0": ("Flatten", "flatten_param { axis: 0 }", (120,)),
    "flatten_middle": ("Flatten", "flatten_param { axis: 1 end_axis: 2 }", (2, 12, 5)),
}


@pytest.mark.parametrize(
    ("kind", "params", "shape"), SHAPES_NUMPY.values(), ids=SHAPES_NUMPY.keys()
)
def test_reshape_against_numpy(tmp_path, kind, params, shape):
    text = one(kind, params, (2, 3, 4, 5))
    check_against_numpy(tmp_path, text, lambda v, _: {"out": v["data"].reshape(shape)})


def test_dropout_is_kept_and_silence_removed(tmp_path):
    """Dropout is a module (nn.Dropout: the identity in eval(), as in Caffe's TEST phase;
    test_training_caffe.py checks its train()); Silence computes nothing and is removed."""
    text = net_text(
        {"data": (2, 3, 4, 5)},
        layer("drop", "Dropout", "data", "data")
        + layer("side", "AbsVal", "data")
        + layer("silence", "Silence", "side", [])
        + layer("out", "TanH", "data"),
    )
    run, _ = check_against_opencv(tmp_path, text)
    assert run.output_names == ["out"]
    assert "self.drop = nn.Dropout(p=0.5)" in run.conversion.source
    assert "Silence" not in run.conversion.source


# OpenCV 4.x's Caffe importer has no ArgMax, Reduction or Tile: these follow argmax_layer.cpp,
# reduction_layer.cpp and tile_layer.cpp (the numpy reference).
ARGMAX = {
    "axis_1": ((2, 5, 3, 4), 1, False, 1),
    "axis_1_top_3": ((2, 5, 3, 4), 3, False, 1),
    "axis_3_values": ((2, 5, 3, 4), 2, True, 3),
    "axis_negative": ((2, 5, 3, 4), 1, False, -2),
    "no_axis": ((2, 5, 3, 4), 1, False, None),
    "no_axis_top_4": ((2, 5, 3, 4), 4, False, None),
    "no_axis_values": ((2, 5, 3, 4), 3, True, None),
    "no_axis_2d": ((3, 7), 1, True, None),
    "no_axis_5d": ((2, 3, 2, 2, 2), 2, False, None),
}


@pytest.mark.parametrize(
    ("shape", "top_k", "out_max_val", "axis"), ARGMAX.values(), ids=ARGMAX.keys()
)
def test_argmax(tmp_path, shape, top_k, out_max_val, axis):
    params = f"top_k: {top_k} out_max_val: {str(out_max_val).lower()}"
    params += f" axis: {axis}" if axis is not None else ""
    text = one("ArgMax", f"argmax_param {{ {params} }}", shape)

    def expected(values, _):
        return {"out": argmax_values(values["data"], top_k, out_max_val, axis)}

    check_against_numpy(tmp_path, text, expected)


REDUCTION = {
    "sum_all": ("SUM", 0, 1.0),
    "sum_axis_1": ("SUM", 1, 1.0),
    "asum": ("ASUM", 2, 1.0),
    "sumsq": ("SUMSQ", 1, 0.5),
    "mean": ("MEAN", -1, 1.0),
    "mean_coeff": ("MEAN", 2, -2.0),
}


@pytest.mark.parametrize(("operation", "axis", "coeff"), REDUCTION.values(), ids=REDUCTION.keys())
def test_reduction(tmp_path, operation, axis, coeff):
    params = f"reduction_param {{ operation: {operation} axis: {axis} coeff: {coeff} }}"

    def expected(values, _):
        return {"out": reduction_values(values["data"], operation, axis, coeff)}

    check_against_numpy(tmp_path, one("Reduction", params, (2, 3, 4, 5)), expected)


@pytest.mark.parametrize(("axis", "tiles"), [(1, 3), (0, 2), (3, 2), (-2, 4)])
def test_tile(tmp_path, axis, tiles):
    params = f"tile_param {{ axis: {axis} tiles: {tiles} }}"

    def expected(values, _):
        return {"out": tile_values(values["data"], axis % values["data"].ndim, tiles)}

    check_against_numpy(tmp_path, one("Tile", params, (2, 3, 4, 5)), expected)


def test_in_place_chain(tmp_path):
    """conv -> BatchNorm -> Scale -> ReLU all in place on one blob, then pooling with ceil."""
    text = net_text(
        X,
        conv("conv", "num_output: 6 kernel_size: 3 pad: 1")
        + layer("bn", "BatchNorm", "conv", "conv", params="batch_norm_param { eps: 0.001 }")
        + layer("scale", "Scale", "conv", "conv", params="scale_param { bias_term: true }")
        + layer("relu", "ReLU", "conv", "conv", params="relu_param { negative_slope: 0.2 }")
        + layer("drop", "Dropout", "conv", "conv")
        + pool("pool", "pool: MAX kernel_size: 3 stride: 2", "conv"),
    )
    run, inputs = check_against_opencv(tmp_path, text, blobs={"bn": bn_blobs(6, 3.0)})
    assert check_every_layer_against_opencv(run, inputs) == 6  # Dropout too: a copy in eval()


@pytest.mark.parametrize(
    "prototxt",
    [
        "examples/tinynet/deploy.prototxt",
        "tests/fixtures/inception_block.prototxt",
        "tests/fixtures/resnet_block.prototxt",
        "tests/fixtures/legacy_v1.prototxt",
    ],
    ids=["tinynet", "inception_block", "resnet_block", "legacy_v1"],
)
def test_every_layer_of_the_golden_nets(tmp_path, prototxt):
    """Every intermediate value, not only the outputs: a wrong layer cannot hide behind a
    global pooling or a softmax."""
    text = (Path(__file__).resolve().parents[1] / prototxt).read_text()
    run = build(tmp_path, text)
    assert check_every_layer_against_opencv(run, random_inputs(run)) >= 9


def test_readers_between_in_place_updates(tmp_path):
    """An in-place update after another layer read the blob: real Caffe aborts ("Top blob
    'conv' produced by multiple sources", net.cpp AppendTop after InsertSplits; issue 13
    finding A, checked against the oracle in test_fuzz_regressions.py), so protocaffe refuses
    it too, although OpenCV runs it."""
    text = net_text(
        X,
        conv("conv", "num_output: 3 kernel_size: 1")
        + layer("relu", "ReLU", "conv", "conv")
        + layer("a", "Power", "conv", params="power_param { scale: 2 }")
        + layer("shift", "Power", "conv", "conv", params="power_param { shift: -0.5 }")
        + layer("b", "AbsVal", "conv")
        + layer("squash", "TanH", "conv", "conv")
        + layer("c", "Power", "conv", params="power_param { scale: 3 }")
        + layer("out", "Concat", ["c", "a", "b"]),
    )
    with pytest.raises(ProtocaffeError, match="produced by multiple sources"):
        check_against_opencv(tmp_path, text)


def test_concat_of_branches_keeps_bottom_order(tmp_path):
    """Inception-style: branches of different widths concatenated in the order of `bottom`."""
    text = net_text(
        X,
        conv("b1", "num_output: 2 kernel_size: 1")
        + conv("b3", "num_output: 3 kernel_size: 3 pad: 1")
        + pool("bp", "pool: MAX kernel_size: 3 stride: 1 pad: 1")
        + layer("out", "Concat", ["b3", "bp", "b1"]),
    )
    run, _ = check_against_opencv(tmp_path, text)
    assert "torch.cat([b3, bp, b1], dim=1)" in run.conversion.source


@pytest.mark.parametrize(
    ("shape", "across_channels", "normalize_variance"),
    [
        ((3, 4), False, True),
        ((3, 4), True, True),
        ((2, 3, 5), False, True),
        ((2, 3, 5), True, False),
    ],
    ids=["2d", "2d_across", "3d", "3d_across_no_variance"],
)
def test_mvn_other_ranks_against_caffe_source(tmp_path, shape, across_channels, normalize_variance):
    """mvn_layer.cpp reads the input as (num, channels, height, width), missing axes being 1,
    and its top is that 4-D shape: a 2-D input has one value per (sample, channel), which
    normalises to 0."""
    params = (
        f"mvn_param {{ across_channels: {str(across_channels).lower()} "
        f"normalize_variance: {str(normalize_variance).lower()} }}"
    )
    legacy = shape + (1,) * (4 - len(shape))

    def expected(values, _):
        x = values["data"].reshape(legacy)
        return {"out": mvn_values(x, across_channels, normalize_variance, 1e-9)}

    check_against_numpy(tmp_path, one("MVN", params, shape), expected, tol=2e-5)


# The list of standard Caffe layers: each must be registered and appear as a layer type
# in a numerical test (here, in test_frontend.py or in test_real_caffe.py).
STANDARD_LAYERS = """
    Input Convolution Deconvolution Pooling InnerProduct ReLU PReLU Sigmoid TanH ELU AbsVal BNLL
    Power Exp Log Threshold Softmax LRN BatchNorm Scale Bias Eltwise Concat Slice Split Crop
    Flatten Reshape Dropout Silence ArgMax Reduction Tile MVN
""".split()  # noqa: SIM905 - a list of 34 names reads better as text


def test_every_standard_layer_is_registered_and_tested():
    here = Path(__file__).parent
    texts = "".join(
        (here / name).read_text()
        for name in ("test_layers_opencv.py", "test_frontend.py", "test_real_caffe.py")
    )
    missing = [t for t in STANDARD_LAYERS if lookup(t) is None]
    assert not missing, f"not registered: {missing}"
    untested = [t for t in STANDARD_LAYERS if f'"{t}"' not in texts]
    assert not untested, f"no numerical test: {untested}"
