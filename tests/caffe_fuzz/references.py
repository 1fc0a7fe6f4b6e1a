"""The float-only rules: when a difference is Caffe's float32 arithmetic, not semantics.

Rule (stated once, applied by classify.py): a value difference at a layer of type T is
float-only when a float64 evaluation of T's formula on Caffe's own input to the layer agrees
with protocaffe and not with Caffe (Caffe's float32 evaluation order lost the digits), or, for
MVN, when every differing value lies in a normalisation group whose spread is below 1e-4 of its
magnitude (the normalised values are then float32 rounding noise of the mean, amplified by
1 / (std + eps); no float32 implementation agrees with another there), or, for LRN, when the
sum of squares of a window can exceed FLT_MAX (Caffe's running sum then computes inf - inf).

The formulas are transcribed from BVLC Caffe (master 9b89154): LRNLayer::CrossChannelForward_cpu
(lrn_layer.cpp) and MVNLayer::Forward_cpu (mvn_layer.cpp). They are not used as references for
the comparison itself: real Caffe is.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from google.protobuf.message import Message

from .compare import close

FLT_MAX = float(np.finfo(np.float32).max)


def lrn_across_channels(
    x: np.ndarray, size: int, alpha: float, beta: float, k: float
) -> np.ndarray:
    """y = x * (k + alpha / size * sum of x^2 over `size` channels centred on c) ^ -beta."""
    x = x.astype(np.float64)
    pre = (size - 1) // 2
    square = np.zeros((x.shape[0], x.shape[1] + size - 1, *x.shape[2:]))
    square[:, pre : pre + x.shape[1]] = x**2
    window = sum(square[:, i : i + x.shape[1]] for i in range(size))
    return np.asarray(x * (k + alpha / size * window) ** -beta)


def mvn(x: np.ndarray, across_channels: bool, normalize_variance: bool, eps: float) -> np.ndarray:
    x = x.astype(np.float64)
    groups = (
        x.reshape(x.shape[0], -1) if across_channels else x.reshape(x.shape[0] * x.shape[1], -1)
    )
    centred = groups - groups.mean(axis=1, keepdims=True)
    if normalize_variance:
        std = np.sqrt((centred**2).mean(axis=1, keepdims=True))
        centred = centred / (std + eps)
    return np.asarray(centred.reshape(x.shape))


def _lrn_rule(layer: Message, bottom: np.ndarray, ours: np.ndarray, theirs: np.ndarray) -> str:
    p = layer.lrn_param  # type: ignore[attr-defined]
    if p.norm_region != 0 or bottom.ndim != 4 or ours.shape != bottom.shape:
        return ""
    exact = lrn_across_channels(bottom, p.local_size, p.alpha, p.beta, p.k)
    if close(ours, exact)[0] and not close(theirs, exact)[0]:
        return "float-only: LRN's float32 running sum of squares (protocaffe equals float64)"
    if (bottom.astype(np.float64) ** 2 * p.local_size > FLT_MAX).any():
        return "float-only: LRN's sum of squares overflows float32 (inf - inf in Caffe)"
    return ""


def _mvn_rule(layer: Message, bottom: np.ndarray, ours: np.ndarray, theirs: np.ndarray) -> str:
    p = layer.mvn_param  # type: ignore[attr-defined]
    if ours.shape != bottom.shape or bottom.ndim < 2:
        return ""
    exact = mvn(bottom, p.across_channels, p.normalize_variance, p.eps)
    if close(ours, exact)[0] and not close(theirs, exact)[0]:
        return "float-only: MVN in float32 (protocaffe equals float64)"
    rows = bottom.shape[0] if p.across_channels else bottom.shape[0] * bottom.shape[1]
    groups = bottom.astype(np.float64).reshape(rows, -1)
    spread = groups.max(axis=1) - groups.min(axis=1)
    magnitude = np.abs(groups).max(axis=1)
    flat = spread <= 1e-4 * np.maximum(magnitude, 1e-30)
    differ = ~np.isclose(ours.reshape(rows, -1), theirs.reshape(rows, -1), rtol=1e-4, atol=1e-5)
    if differ.any() and flat[differ.any(axis=1)].all():
        return "float-only: MVN of a (nearly) constant group amplifies float32 rounding"
    return ""


def _reduction_rule(
    layer: Message, bottom: np.ndarray, ours: np.ndarray, theirs: np.ndarray
) -> str:
    """A SUM or MEAN whose terms cancel: both results lie within float32 rounding of the sum of
    the terms' magnitudes, so their difference carries no information."""
    p = layer.reduction_param  # type: ignore[attr-defined]
    if p.operation not in (1, 4) or ours.shape != theirs.shape:  # SUM, MEAN
        return ""
    axis = p.axis + bottom.ndim if p.axis < 0 else p.axis
    terms = np.abs(bottom.astype(np.float64)).reshape(*bottom.shape[:axis], -1).sum(axis=-1)
    if p.operation == 4:
        terms = terms / max(1, int(np.prod(bottom.shape[axis:])))
    noise = 1e-6 * abs(p.coeff) * terms
    if (np.abs(ours.astype(np.float64) - theirs) <= noise + 1e-30).all():
        return "float-only: Reduction of terms that cancel (difference within float32 rounding)"
    return ""


def _batch_norm_rule(
    layer: Message, bottom: np.ndarray, ours: np.ndarray, theirs: np.ndarray
) -> str:
    """eps 0 and a zero (stored) variance: x / 0 is +-inf in Caffe's (x - mean) / std and NaN
    in a fused x * (1 / std) - mean / std; neither is a value."""
    p = layer.batch_norm_param  # type: ignore[attr-defined]
    if p.eps == 0 and not np.isfinite(theirs).all():
        return "float-only: BatchNorm dividing by a zero variance (eps 0): inf vs NaN"
    return ""


Rule = Callable[[Message, np.ndarray, np.ndarray, np.ndarray], str]
FLOAT_ONLY: dict[str, Rule] = {
    "LRN": _lrn_rule,
    "MVN": _mvn_rule,
    "Reduction": _reduction_rule,
    "BatchNorm": _batch_norm_rule,
}
