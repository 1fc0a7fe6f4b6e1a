"""The float-only rules: when a difference is Caffe's float32 arithmetic, not semantics.

Rule (stated once, applied by classify.py): a value difference at a layer of type T is
float-only when a float64 evaluation of T's formula on Caffe's own input to the layer agrees
with protocaffe and not with Caffe (Caffe's float32 evaluation order lost the digits), or, for
MVN, when every difference is within what float32 rounding of the inputs (2^-24 of the group's
magnitude, times 16) becomes after division by the group's std + eps (a (nearly) constant group
normalises rounding noise; no float32 implementation agrees with another there); for Power with
scale 0, when only the sign of a zero or an infinity differs, or, for LRN, when the
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
    if ours.size != bottom.size or theirs.size != bottom.size or bottom.ndim < 2:
        return ""
    # Caffe's MVN top has the legacy 4 axes of a 3-D bottom ((N, C, L) -> (N, C, L, 1)).
    ours, theirs = ours.reshape(bottom.shape), theirs.reshape(bottom.shape)
    exact = mvn(bottom, p.across_channels, p.normalize_variance, p.eps)
    if close(ours, exact)[0] and not close(theirs, exact)[0]:
        return "float-only: MVN in float32 (protocaffe equals float64)"
    rows = bottom.shape[0] if p.across_channels else bottom.shape[0] * bottom.shape[1]
    groups = bottom.astype(np.float64).reshape(rows, -1)
    magnitude = np.abs(groups).max(axis=1, keepdims=True)
    std = groups.std(axis=1, keepdims=True)
    # A float32 rounding of the inputs (2^-24 of their magnitude) moves a normalised value by
    # that over (std + eps); 16 of them cover the mean, the variance and the division.
    bound = 16 * 2.0**-24 * magnitude / (std + p.eps if p.normalize_variance else 1.0)
    error = np.abs(ours.reshape(rows, -1).astype(np.float64) - theirs.reshape(rows, -1))
    limit = np.maximum(bound, 1e-4 * np.abs(theirs.reshape(rows, -1)) + 1e-6)
    if (error <= limit).all():
        if (std <= 1e-4 * np.maximum(magnitude, 1e-30))[(error > 1e-5).any(axis=1)].all():
            return "float-only: MVN of a (nearly) constant group amplifies float32 rounding"
        return "float-only: MVN of an ill-conditioned group (std << magnitude)"
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


def _power_rule(layer: Message, bottom: np.ndarray, ours: np.ndarray, theirs: np.ndarray) -> str:
    """scale 0: PowerLayer::Forward_cpu sets shift^power everywhere; a formula evaluating
    (0 * x + shift)^power gets -0 for negative x, so 0^-1 is -inf there: signed zeros only."""
    p = layer.power_param  # type: ignore[attr-defined]
    if p.scale != 0 or ours.shape != theirs.shape:
        return ""
    same = np.isclose(np.abs(ours), np.abs(theirs), rtol=1e-4, atol=1e-6, equal_nan=True)
    if same.all():
        return "float-only: Power with scale 0 (the sign of 0 ^ negative power)"
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
    "Power": _power_rule,
}
