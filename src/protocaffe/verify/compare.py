"""Compare one blob with its reference, and name the likely cause when they differ.

Errors are measured against the reference blob's largest magnitude: a blob matches when
max|ours - ref| <= atol + rtol * max|ref|. The "relative error" reported is max|ours - ref| /
max|ref|, which stays meaningful where elementwise ratios blow up near zero.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_RTOL = 1e-4
DEFAULT_ATOL = 1e-6


class Status(str, enum.Enum):
    MATCH = "match"
    MISMATCH = "mismatch"
    SHAPE = "shape mismatch"
    MISSING = "not computed"  # the module never assigned this blob (e.g. a hand-edited file)
    NO_REFERENCE = "no reference"  # the reference does not expose it (OpenCV: a second top)
    # Not computed, and a blob computed from it diverges: the layer was dropped or bypassed.
    SKIPPED = "not computed; later blobs diverge"
    # Differs only by a choice between values equal within tolerance (see ties.py).
    TIE = "match (near tie)"
    # A layer --optimize folded into a later line, which is compared with the last layer's blob.
    FOLDED = "folded"

    @property
    def failed(self) -> bool:
        return self in (Status.MISMATCH, Status.SHAPE, Status.SKIPPED)

    @property
    def compared(self) -> bool:
        return self in (Status.MATCH, Status.TIE, Status.MISMATCH, Status.SHAPE)


@dataclass(frozen=True)
class Tolerance:
    rtol: float = DEFAULT_RTOL
    atol: float = DEFAULT_ATOL


@dataclass(frozen=True)
class Errors:
    max_abs: float
    max_rel: float  # max_abs relative to the reference's largest magnitude
    ref_max: float


# Elements compared at a time: float64 copies of a whole 60 MB blob would cost 6x its size.
_CHUNK = 1 << 20


def errors(ours: np.ndarray, ref: np.ndarray) -> Errors:
    """The largest |ours - ref| (in float64) and the reference's largest magnitude; equal
    non-finite values (NaN where both are NaN, the same infinity) count as no error."""
    a = np.ascontiguousarray(ours).reshape(-1)
    b = np.ascontiguousarray(ref).reshape(-1)
    ref_max = 0.0
    max_abs = 0.0
    for start in range(0, max(a.size, b.size), _CHUNK):
        x = a[start : start + _CHUNK].astype(np.float64)
        y = b[start : start + _CHUNK].astype(np.float64)
        finite = y[np.isfinite(y)]
        if finite.size:
            ref_max = max(ref_max, float(np.max(np.abs(finite))))
        if not x.size:
            continue
        with np.errstate(invalid="ignore"):  # inf - inf where both are the same infinity
            diff = np.abs(x - y)
        if not np.all(np.isfinite(diff)):
            same_nonfinite = np.array_equal(np.isfinite(x), np.isfinite(y)) and np.array_equal(
                x[~np.isfinite(x)], y[~np.isfinite(y)], equal_nan=True
            )
            if not same_nonfinite:
                return Errors(float("inf"), float("inf"), ref_max)
            diff = np.where(np.isfinite(diff), diff, 0.0)
        max_abs = max(max_abs, float(np.max(diff)))
    if a.size == 0:
        return Errors(0.0, 0.0, ref_max)
    return Errors(max_abs, max_abs / ref_max if ref_max > 0 else max_abs, ref_max)


def within(err: Errors, tol: Tolerance) -> bool:
    return err.max_abs <= tol.atol + tol.rtol * err.ref_max


def comparable(ours: np.ndarray, ref: np.ndarray) -> np.ndarray | None:
    """`ref` in our layout when only the way it is written differs: OpenCV drops or keeps
    trailing unit axes (an InnerProduct's (N, C) vs (N, C, 1, 1)); the element count and the
    non-unit axes must agree."""
    if ours.shape == ref.shape:
        return ref
    squeeze = [d for d in ours.shape if d != 1]
    if ours.size == ref.size and squeeze == [d for d in ref.shape if d != 1]:
        return ref.reshape(ours.shape)
    return None


# --- Diagnoses: each returns a sentence, or None when its pattern does not fit. ---


def diagnose_shape(op: str, ours: Sequence[int], ref: Sequence[int]) -> str:
    if (
        len(ours) == len(ref) >= 3
        and tuple(ours[:2]) == tuple(ref[:2])
        and all(abs(a - b) <= 1 for a, b in zip(ours[2:], ref[2:], strict=True))
    ):
        where = "after pooling" if op == "Pooling" else f"in this {op} layer"
        return (
            f"spatial size off by one {where} ({tuple(ours)} vs {tuple(ref)}): rounding mode "
            "(Caffe rounds pooling sizes up: ceil_mode / round_mode)"
        )
    return f"shape mismatch ({tuple(ours)} vs reference {tuple(ref)}): values cannot be compared"


def diagnose_permutation(ours: np.ndarray, ref: np.ndarray, tol: Tolerance) -> str | None:
    """The same channels (axis 1) in a different order: concat or slice order."""
    if ours.ndim < 2 or ours.shape != ref.shape or ours.shape[1] < 2:
        return None
    channels = ours.shape[1]
    a = np.moveaxis(ours.astype(np.float64), 1, 0).reshape(channels, -1)
    b = np.moveaxis(ref.astype(np.float64), 1, 0).reshape(channels, -1)
    bound = tol.atol + tol.rtol * float(np.max(np.abs(b)))
    # Match channels by a fingerprint (their sums, then their values), then check exactly.
    key_a = np.lexsort((a[:, 0], np.round(a.sum(axis=1), 4)))
    key_b = np.lexsort((b[:, 0], np.round(b.sum(axis=1), 4)))
    perm = np.empty(channels, dtype=np.int64)
    perm[key_a] = key_b  # ours channel i should be reference channel perm[i]
    if np.array_equal(perm, np.arange(channels)):
        return None
    if float(np.max(np.abs(a - b[perm]))) > bound:
        return None
    moved = [i for i in range(channels) if perm[i] != i]
    first = moved[0]
    return (
        f"same values in a different channel order ({len(moved)} of {channels} channels moved; "
        f"ours channel {first} is reference channel {int(perm[first])}): concat or slice order"
    )


def _fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """Least squares y ~ a*x + b; returns (a, b, max residual)."""
    design = np.stack([x, np.ones_like(x)], axis=1)
    (a, b), *_ = np.linalg.lstsq(design, y, rcond=None)
    return float(a), float(b), float(np.max(np.abs(a * x + b - y)))


def diagnose_affine(ours: np.ndarray, ref: np.ndarray, tol: Tolerance) -> str | None:
    """ours = a*ref + b, for the whole blob or per channel: BatchNorm factor/eps or Scale."""
    if ours.shape != ref.shape or ours.size < 2:
        return None
    x = ref.astype(np.float64).ravel()
    y = ours.astype(np.float64).ravel()
    bound = 10 * (tol.atol + tol.rtol * max(float(np.max(np.abs(y))), float(np.max(np.abs(x)))))
    a, b, residual = _fit(x, y)
    if residual <= bound and np.ptp(x) > 0:
        return (
            f"a constant scale or shift (ours = {a:.6g} * reference + {b:.6g}): "
            "BatchNorm moving-average factor, eps or Scale"
        )
    if ours.ndim < 2 or ours.shape[1] < 2:
        return None
    scales: list[float] = []
    shifts: list[float] = []
    for c in range(ours.shape[1]):
        xc = np.take(ref, c, axis=1).astype(np.float64).ravel()
        yc = np.take(ours, c, axis=1).astype(np.float64).ravel()
        if xc.size < 2 or np.ptp(xc) == 0:
            return None
        ac, bc, rc = _fit(xc, yc)
        if rc > bound:
            return None
        scales.append(ac)
        shifts.append(bc)
    return (
        "a constant scale or shift per channel (scale "
        f"{min(scales):.6g}..{max(scales):.6g}, shift {min(shifts):.6g}..{max(shifts):.6g}): "
        "BatchNorm moving-average factor, eps or Scale"
    )


def diagnose_combination(
    ours: np.ndarray, bottoms: Sequence[np.ndarray], coeffs: Sequence[float], tol: Tolerance
) -> str | None:
    """For an Eltwise SUM: the coefficients our output fits as a combination of the inputs."""
    if not bottoms or any(b.shape != ours.shape for b in bottoms):
        return None
    design = np.stack([b.astype(np.float64).ravel() for b in bottoms], axis=1)
    y = ours.astype(np.float64).ravel()
    fitted, *_ = np.linalg.lstsq(design, y, rcond=None)
    residual = float(np.max(np.abs(design @ fitted - y)))
    if residual > 10 * (tol.atol + tol.rtol * float(np.max(np.abs(y)))):
        return None
    if np.allclose(fitted, coeffs, rtol=1e-3, atol=1e-4):
        return None
    shown = ", ".join(f"{c:.6g}" for c in fitted)
    want = ", ".join(f"{c:.6g}" for c in coeffs)
    return f"ours sums the inputs with coefficients [{shown}], Caffe with [{want}]: Eltwise coeff"
