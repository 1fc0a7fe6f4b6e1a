"""Element-wise layers (Caffe's "neuron" layers): one bottom, one top of the same shape.

Sources: BVLC caffe 9b89154, src/caffe/layers/<name>_layer.cpp, Forward_cpu (and LayerSetUp
where it reads parameters): relu, sigmoid (0.5 * tanh(0.5 x) + 0.5 since 2017), tanh, absval
(no in-place), bnll, elu, power, exp, log, threshold, prelu, dropout (TEST: a copy).
ReLU6: brocolli-caffe 9.0.2 (the oracle's build) src/caffe/layers/relu6_layer.cpp, the same
formula as rog93/Caffe-MobileNetV2-ReLU6's with the threshold made a parameter.
Arithmetic is float32 where Caffe's is (Dtype), double where Caffe writes double literals.
"""

from __future__ import annotations

import math

import numpy as np

from protocaffe.verify.reference.params import as_f32, f32, legacy_shape
from protocaffe.verify.reference.registry import Array, RefLayer, register


@register("ReLU")
def relu(layer: RefLayer, bottoms: list[Array]) -> list[Array]:
    """max(x, 0) + negative_slope * min(x, 0)."""
    x = as_f32(bottoms[0])
    slope = f32(layer.param.relu_param.negative_slope)
    return [np.maximum(x, f32(0)) + slope * np.minimum(x, f32(0))]


@register("ReLU6")
def relu6(layer: RefLayer, bottoms: list[Array]) -> list[Array]:
    """min(max(x, 0) + negative_slope * min(x, 0), threshold)."""
    p = layer.param.relu6_param
    x = as_f32(bottoms[0])
    value = np.maximum(x, f32(0)) + f32(p.negative_slope) * np.minimum(x, f32(0))
    return [np.minimum(value, f32(p.threshold))]


@register("Sigmoid")
def sigmoid(layer: RefLayer, bottoms: list[Array]) -> list[Array]:
    """0.5 * tanh(0.5 * x) + 0.5, in double (the literals are double)."""
    x = bottoms[0].astype(np.float64)
    return [(0.5 * np.tanh(0.5 * x) + 0.5).astype(np.float32)]


@register("TanH")
def tanh(layer: RefLayer, bottoms: list[Array]) -> list[Array]:
    return [np.tanh(bottoms[0].astype(np.float64)).astype(np.float32)]


@register("AbsVal", in_place=False)
def absval(layer: RefLayer, bottoms: list[Array]) -> list[Array]:
    return [np.abs(as_f32(bottoms[0]))]


def bnll_values(x: Array) -> Array:
    """x > 0 ? x + log(1 + exp(-x)) : log(1 + exp(x)), in double (the literals are double)."""
    x64 = x.astype(np.float64)
    with np.errstate(over="ignore"):
        positive = x64 + np.log(1.0 + np.exp(-np.abs(x64)))
        negative = np.log(1.0 + np.exp(np.minimum(x64, 0.0)))
    return np.where(x64 > 0, positive, negative).astype(np.float32)


@register("BNLL")
def bnll(layer: RefLayer, bottoms: list[Array]) -> list[Array]:
    return [bnll_values(bottoms[0])]


@register("ELU")
def elu(layer: RefLayer, bottoms: list[Array]) -> list[Array]:
    """max(x, 0) + alpha * (exp(min(x, 0)) - 1)."""
    x = as_f32(bottoms[0])
    alpha = f32(layer.param.elu_param.alpha)
    return [np.maximum(x, f32(0)) + alpha * (np.exp(np.minimum(x, f32(0))) - f32(1))]


@register("Power")
def power(layer: RefLayer, bottoms: list[Array]) -> list[Array]:
    """(shift + scale * x) ^ power, each step skipped when it is the identity; a constant when
    power * scale == 0 (1 when power == 0, else shift ^ power)."""
    p = layer.param.power_param
    pw, scale, shift = f32(p.power), f32(p.scale), f32(p.shift)
    x = as_f32(bottoms[0])
    if pw * scale == f32(0):
        with np.errstate(invalid="ignore", divide="ignore"):
            value = f32(1) if pw == f32(0) else np.power(shift, pw)
        return [np.full(x.shape, value, np.float32)]
    top = x.copy()
    if scale != f32(1):
        top = top * scale
    if shift != f32(0):
        top = top + shift
    if pw != f32(1):
        with np.errstate(invalid="ignore", divide="ignore"):
            top = np.power(top, pw)
    return [top]


def _log_base(layer: RefLayer, base: np.float32) -> np.float32:
    if base != f32(-1):
        layer.check(float(base) > 0, "base must be strictly positive.")
    log_base: np.float32 = f32(1) if base == f32(-1) else f32(math.log(float(base)))
    layer.check(
        math.isfinite(float(log_base)),
        f"log(base) = log({base}) is not finite",
    )
    return log_base


@register("Exp")
def exp(layer: RefLayer, bottoms: list[Array]) -> list[Array]:
    """base ^ (scale * x + shift) as exp(inner_scale * x) * outer_scale (ExpLayer)."""
    p = layer.param.exp_param
    base, scale, shift = f32(p.base), f32(p.scale), f32(p.shift)
    inner = _log_base(layer, base) * scale
    if shift == f32(0):
        outer = f32(1)
    elif base != f32(-1):
        outer = f32(float(base) ** float(shift))
    else:
        outer = f32(math.exp(float(shift)))
    x = as_f32(bottoms[0])
    with np.errstate(over="ignore"):
        top = np.exp(x) if inner == f32(1) else np.exp(x * inner)
    if outer != f32(1):
        top = top * outer
    return [top]


@register("Log")
def log(layer: RefLayer, bottoms: list[Array]) -> list[Array]:
    """log(shift + scale * x) / log(base) (LogLayer)."""
    p = layer.param.log_param
    base_scale = f32(1) / _log_base(layer, f32(p.base))
    layer.check(math.isfinite(float(base_scale)), "1/log(base) is not finite")
    scale, shift = f32(p.scale), f32(p.shift)
    top = as_f32(bottoms[0]).copy()
    if scale != f32(1):
        top = top * scale
    if shift != f32(0):
        top = top + shift
    with np.errstate(invalid="ignore", divide="ignore"):
        top = np.log(top)
    if base_scale != f32(1):
        top = top * base_scale
    return [top]


@register("Threshold")
def threshold(layer: RefLayer, bottoms: list[Array]) -> list[Array]:
    """x > threshold ? 1 : 0."""
    t = f32(layer.param.threshold_param.threshold)
    return [(as_f32(bottoms[0]) > t).astype(np.float32)]


@register("PReLU")
def prelu(layer: RefLayer, bottoms: list[Array]) -> list[Array]:
    """max(x, 0) + slope[c] * min(x, 0); the slope blob is 0-D when channel_shared, else (C,).
    Channels are the legacy channels() (so more than four axes abort)."""
    x = as_f32(bottoms[0])
    layer.check(x.ndim >= 2, "Number of axes of bottom blob of PReLU layer must be >=2")
    channels = legacy_shape(layer, x.shape)[1]
    shared = layer.param.prelu_param.channel_shared
    (slope,) = layer.weights(() if shared else (channels,))
    slope = slope.reshape((1,) if shared else (1, channels) + (1,) * (x.ndim - 2))
    return [np.maximum(x, f32(0)) + slope * np.minimum(x, f32(0))]


@register("Dropout")
def dropout(layer: RefLayer, bottoms: list[Array]) -> list[Array]:
    """TEST phase: a copy of the input (Caffe scales during training only)."""
    return [bottoms[0]]


@register("Mish")
def mish(layer: RefLayer, bottoms: list[Array]) -> list[Array]:
    """ChenYingpeng/darknet2caffe @ f6d9ea33, caffe_layers/mish_layer/mish_layer.cpp
    (Forward_cpu): x * tanh_activate(softplus_activate(x, 20)) in float, softplus x above 20,
    expf(x) below -20, else logf(expf(x) + 1); tanh_activate(v) = 2 / (1 + expf(-2v)) - 1."""
    x = as_f32(bottoms[0])
    with np.errstate(over="ignore"):
        softplus = np.where(
            x > f32(20), x, np.where(x < f32(-20), np.exp(x), np.log(np.exp(x) + f32(1)))
        ).astype(np.float32)
        tanh_sp = f32(2) / (f32(1) + np.exp(f32(-2) * softplus)) - f32(1)
    return [(x * tanh_sp).astype(np.float32)]


# BVLC master (not in the oracle build): src/caffe/layers/clip_layer.cpp, swish_layer.cpp.
# brocolli-caffe 9.0.2 (the oracle's build): src/caffe/layers/hardsigmoid_layer.cpp,
# hardswish_layer.cpp.


@register("Clip")
def clip(layer: RefLayer, bottoms: list[Array]) -> list[Array]:
    """std::max(min, std::min(x, max)): std::min(x, max) keeps x unless max < x (so NaN stays
    NaN), std::max(min, y) keeps min unless min < y (so NaN becomes min)."""
    p = layer.param.clip_param
    layer.check(p.HasField("min") and p.HasField("max"), "clip_param min and max are required")
    low, high = f32(p.min), f32(p.max)
    x = as_f32(bottoms[0])
    inner = np.where(high < x, high, x)
    return [np.where(low < inner, inner, low).astype(np.float32)]


@register("Swish")
def swish(layer: RefLayer, bottoms: list[Array]) -> list[Array]:
    """x * sigmoid(beta * x): the scaled copy goes through Caffe's SigmoidLayer
    (0.5 * tanh(0.5 x) + 0.5, in double), then caffe_mul."""
    x = as_f32(bottoms[0])
    scaled = (x * f32(layer.param.swish_param.beta)).astype(np.float64)
    return [x * (0.5 * np.tanh(0.5 * scaled) + 0.5).astype(np.float32)]


@register("HardSigmoid")
def hard_sigmoid(layer: RefLayer, bottoms: list[Array]) -> list[Array]:
    """std::max(0, std::min(1, x * alpha + beta)), alpha and beta floats."""
    p = layer.param.hardsigmoid_param
    value = as_f32(bottoms[0]) * f32(p.alpha) + f32(p.beta)
    inner = np.where(value < f32(1), value, f32(1))
    return [np.where(f32(0) < inner, inner, f32(0)).astype(np.float32)]


@register("HardSwish")
def hard_swish(layer: RefLayer, bottoms: list[Array]) -> list[Array]:
    """x * std::max(0, std::min(1, x / 6 + 0.5)), in float."""
    x = as_f32(bottoms[0])
    gate = x / f32(6) + f32(0.5)
    inner = np.where(gate < f32(1), gate, f32(1))
    return [x * np.where(f32(0) < inner, inner, f32(0)).astype(np.float32)]
