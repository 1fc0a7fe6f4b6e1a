"""Outputs that a comparison element by element judges wrongly: choices between equal values.

Two correct implementations of Caffe may disagree where a layer *chooses* among values that
are equal within float32 resolution, and the choice then moves values, not just rounds them:

- an argmax (ArgMax's top, MAX pooling's mask top) may pick either of two window or class
  maxima that differ by an ulp: accepted element by element where the reference's own input
  values at both positions tie within the tolerance (`index_ties`);
- DetectionOutput sorts detections by score: rows with equal scores may come in any order, and
  at the keep_top_k cut either of two tied rows may be kept (`match_detections`).

Layers after an accepted tie see other inputs than the reference's layers did (SegNet's
unpooling puts a value elsewhere); verify then checks such a layer on the module's own inputs
with the numpy reference (core.py), which is still a comparison with an independent Caffe.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from protocaffe.verify.compare import Errors, Tolerance, errors, within


def _bound(values: np.ndarray, tol: Tolerance) -> float:
    finite = values[np.isfinite(values)]
    scale = float(np.max(np.abs(finite))) if finite.size else 0.0
    return tol.atol + tol.rtol * scale


@dataclass(frozen=True)
class TieCheck:
    """How an index output compares: `differ` elements differ, `ties` of them are choices
    between values equal within tolerance."""

    differ: int
    ties: int

    @property
    def explained(self) -> bool:
        return self.differ > 0 and self.ties == self.differ


def mask_ties(
    ours: np.ndarray, ref: np.ndarray, bottom: np.ndarray, pooled: np.ndarray, tol: Tolerance
) -> TieCheck:
    """MAX pooling's mask top (Caffe's pooling_layer.cpp: the index h * W + w of the window's
    maximum in the bottom's plane): where ours and the reference's differ, the bottom's values
    at both indices must each equal the window's maximum (the reference's pooled top) within
    the bottom's tolerance."""
    if ours.shape != ref.shape or bottom.ndim != 4 or pooled.shape != ref.shape:
        return TieCheck(int(ours.size), 0)
    differ = ours != ref
    count = int(np.count_nonzero(differ))
    if count == 0:
        return TieCheck(0, 0)
    n, c, _, _ = np.nonzero(differ)
    plane = bottom.reshape(bottom.shape[0], bottom.shape[1], -1)
    size = plane.shape[2]
    mine = ours[differ].astype(np.int64)
    theirs = ref[differ].astype(np.int64)
    if np.any((mine < 0) | (mine >= size) | (theirs < 0) | (theirs >= size)):
        return TieCheck(count, 0)
    bound = _bound(bottom, tol)
    top = pooled[differ].astype(np.float64)
    a = plane[n, c, mine].astype(np.float64)
    b = plane[n, c, theirs].astype(np.float64)
    tied = (np.abs(a - top) <= bound) & (np.abs(b - top) <= bound)
    return TieCheck(count, int(np.count_nonzero(tied)))


def argmax_ties(
    ours: np.ndarray, ref: np.ndarray, bottom: np.ndarray, axis: int | None, tol: Tolerance
) -> TieCheck:
    """ArgMax's top without out_max_val (Caffe's argmax_layer.cpp: indices of the top_k largest
    values along `axis`, or over each sample flattened when no axis is set): where the indices
    differ, the bottom's values at both must tie within the bottom's tolerance."""
    if ours.shape != ref.shape:
        return TieCheck(int(ours.size), 0)
    differ = ours != ref
    count = int(np.count_nonzero(differ))
    if count == 0:
        return TieCheck(0, 0)
    bound = _bound(bottom, tol)
    if axis is None:
        flat = bottom.reshape(bottom.shape[0], -1)
        where = np.nonzero(differ)
        sample = where[0]
        width = flat.shape[1]
        mine = ours[differ].astype(np.int64)
        theirs = ref[differ].astype(np.int64)
        if np.any((mine < 0) | (mine >= width) | (theirs < 0) | (theirs >= width)):
            return TieCheck(count, 0)
        a = flat[sample, mine].astype(np.float64)
        b = flat[sample, theirs].astype(np.float64)
    else:
        axis = axis % bottom.ndim
        if ours.ndim != bottom.ndim:
            return TieCheck(count, 0)
        width = bottom.shape[axis]
        mine = ours.astype(np.int64)
        theirs = ref.astype(np.int64)
        if np.any((mine < 0) | (mine >= width) | (theirs < 0) | (theirs >= width)):
            return TieCheck(count, 0)
        a = np.take_along_axis(bottom, mine, axis=axis)[differ].astype(np.float64)
        b = np.take_along_axis(bottom, theirs, axis=axis)[differ].astype(np.float64)
    return TieCheck(count, int(np.count_nonzero(np.abs(a - b) <= bound)))


@dataclass(frozen=True)
class DetectionMatch:
    """The result of matching detection rows: the errors over matched rows, whether every row
    found its partner, and a note on rows matched out of order or left at a tied cut."""

    err: Errors
    matched: bool
    note: str | None


def match_detections(
    ours: np.ndarray, ref: np.ndarray, tol: Tolerance, keep_top_k: int | None
) -> DetectionMatch | None:
    """DetectionOutput's rows [image, label, score, xmin, ymin, xmax, ymax], matched per image
    by label, score and box (SSD's detection_output_layer.cpp sorts by score only, so tied rows
    may come in any order; when keep_top_k cut a run of tied scores, either row may be kept).
    None when the blobs are not detection tables of the same size, or when their images and
    scores differ row by row (then rows moved across different scores)."""
    if ours.size % 7 or ref.size % 7 or ours.size != ref.size:
        return None
    a = ours.reshape(-1, 7).astype(np.float64)
    b = ref.reshape(-1, 7).astype(np.float64)
    score_bound = _bound(b[:, 2], tol)
    box_bound = _bound(b[:, 3:], tol)
    # Both tables are sorted by score: row by row, the images and the scores must agree, so
    # that rows move only among equal scores.
    if not np.array_equal(a[:, 0], b[:, 0]) or np.any(np.abs(a[:, 2] - b[:, 2]) > score_bound):
        return None
    used = np.zeros(len(a), dtype=bool)
    pairs: list[tuple[int, int]] = []
    unmatched: list[int] = []
    for j in range(len(b)):
        candidates = np.nonzero(
            ~used
            & (a[:, 0] == b[j, 0])
            & (a[:, 1] == b[j, 1])
            & (np.abs(a[:, 2] - b[j, 2]) <= score_bound)
            & np.all(np.abs(a[:, 3:] - b[j, 3:]) <= box_bound, axis=1)
        )[0]
        if candidates.size == 0:
            unmatched.append(j)
            continue
        # The nearest in position among equals keeps an unpermuted table unpermuted.
        i = int(candidates[np.argmin(np.abs(candidates - j))])
        used[i] = True
        pairs.append((i, j))
    moved = sum(1 for i, j in pairs if i != j)
    cut = _tied_cut(a, b, unmatched, used, score_bound, keep_top_k)
    matched = not unmatched or cut
    if pairs:
        mine = np.stack([a[i] for i, _ in pairs])
        theirs = np.stack([b[j] for _, j in pairs])
        err = errors(mine.astype(np.float32), theirs.astype(np.float32))
        err = Errors(err.max_abs, err.max_rel, float(np.max(np.abs(b)) if b.size else 0.0))
    else:
        err = errors(ours, ref) if not matched else Errors(0.0, 0.0, 0.0)
    notes = []
    if moved:
        notes.append(f"{moved} of {len(b)} rows in another order among equal scores")
    if unmatched and cut:
        notes.append(f"{len(unmatched)} rows differ at the keep_top_k cut, among tied scores")
    return DetectionMatch(err, matched, "; ".join(notes) or None)


def _tied_cut(
    a: np.ndarray,
    b: np.ndarray,
    unmatched: list[int],
    used: np.ndarray,
    score_bound: float,
    keep_top_k: int | None,
) -> bool:
    """Whether the rows left unmatched are explained by keep_top_k cutting a run of tied
    scores: every such row (on both sides) has its image's lowest score, and that image kept
    exactly keep_top_k rows."""
    if not unmatched or not keep_top_k or keep_top_k < 0:
        return False
    leftover = [(b, j) for j in unmatched] + [(a, int(i)) for i in np.nonzero(~used)[0]]
    for table, row in leftover:
        image = table[row, 0]
        rows = table[table[:, 0] == image]
        if len(rows) != keep_top_k:
            return False
        if abs(table[row, 2] - float(np.min(rows[:, 2]))) > score_bound:
            return False
    return True


def detection_errors(ours: np.ndarray, ref: np.ndarray, tol: Tolerance) -> bool:
    """Whether the tables are equal element by element (then no matching is needed)."""
    return ours.shape == ref.shape and within(errors(ours, ref), tol)
