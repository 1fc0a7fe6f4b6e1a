"""The verification report: one row per Caffe blob, as a table for people and JSON for tools.

The JSON records what is needed to run the same verification again: protocaffe's version,
the sha256 of the prototxt and the caffemodel, the module, the reference and its version, the
inputs (a seed, .npy files with their sha256, or an image with its preprocessing) and the
tolerance.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from protocaffe.ir.graph import Shape
from protocaffe.verify.compare import Status, Tolerance

# Rows shown before and after the first divergence by the brief view.
CONTEXT_ROWS = 2


@dataclass(frozen=True)
class BlobRow:
    """One top of one Caffe layer, ours against the reference's."""

    layer: str
    type: str
    blob: str
    ours_shape: Shape | None
    ref_shape: Shape | None
    max_abs: float | None
    max_rel: float | None
    status: Status
    diagnosis: str | None = None
    line: int | None = None  # the model.py line that computed it
    position: int | None = None  # the layer's position in the prototxt (names may repeat)
    tolerance_ratio: float | None = None  # max abs error / what the tolerance allows
    note: str | None = None  # how a row that matches was matched (ties, folding)


@dataclass(frozen=True)
class ReferenceChoice:
    """Which reference ran the net, and why: the rule that picked it, and the reason each
    reference tried before it could not run the net."""

    name: str
    version: str
    why: str
    skipped: tuple[tuple[str, str], ...] = ()  # (reference, one-line reason)


@dataclass
class VerifyReport:
    prototxt: str
    module: str  # "generated", "generated (--optimize)" or the model.py path
    reference: str  # "caffe", "opencv" or "numpy"
    tolerance: Tolerance
    inputs: dict[str, Shape]
    rows: list[BlobRow] = field(default_factory=list)
    choice: ReferenceChoice | None = None
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def compared(self) -> list[BlobRow]:
        return [r for r in self.rows if r.status.compared]

    @property
    def ok(self) -> bool:
        return bool(self.compared) and not any(r.status.failed for r in self.rows)

    @property
    def first_divergent(self) -> BlobRow | None:
        return next((r for r in self.rows if r.status.failed), None)

    @property
    def largest_error(self) -> float:
        """The largest error relative to its blob's largest magnitude, over compared blobs."""
        values = [r.max_rel for r in self.compared if r.max_rel is not None]
        return max(values, default=0.0)

    @property
    def output_error(self) -> float | None:
        """The error of the last compared blob (the net's last output), relative as above."""
        rows = [r for r in self.compared if r.max_rel is not None]
        return rows[-1].max_rel if rows else None

    def reference_line(self) -> str:
        """`reference: numpy (...version...): why`, with the references skipped before it."""
        if self.choice is None:
            return f"reference: {self.reference}"
        text = f"reference: {self.choice.name} ({self.choice.version}): {self.choice.why}"
        for name, reason in self.choice.skipped:
            text += f"\n  {name} skipped: {reason}"
        return text

    def summary(self) -> str:
        counts = f"{len(self.compared)} blobs compared against {self.reference}"
        ties = sum(1 for r in self.rows if r.status is Status.TIE)
        folded = sum(1 for r in self.rows if r.status is Status.FOLDED)
        extra = "".join(
            [
                f", {ties} through near ties" if ties else "",
                f", {folded} folded" if folded else "",
            ]
        )
        if self.ok:
            return f"OK: {counts}{extra}, largest error {self.largest_error:.3g} of the blob's max"
        first = self.first_divergent
        if first is None:
            return f"NOTHING COMPARED: {counts}"
        text = f"MISMATCH: {counts}; first divergent blob {first.blob!r} (layer {first.layer!r}"
        text += f" {first.type}{f', model.py line {first.line}' if first.line else ''})"
        return text + (f": {first.diagnosis}" if first.diagnosis else "")

    def table(self, brief: bool = False) -> str:
        """One line per blob; `brief`: only the failed ones, the first divergence with
        CONTEXT_ROWS rows either side, the diagnoses and the summary."""
        header = ["layer", "type", "blob", "shape (ours)", "shape (ref)", "max abs", "max rel"]
        header.append("status")
        first = self.first_divergent
        shown = list(range(len(self.rows)))
        if brief:
            around: set[int] = set()
            if first is not None:
                at = self.rows.index(first)
                around = set(range(max(0, at - CONTEXT_ROWS), at + CONTEXT_ROWS + 1))
            shown = [i for i, r in enumerate(self.rows) if r.status.failed or i in around]
        rows = [header]
        previous = -1
        gaps: list[int] = []
        for i in shown:
            row = self.rows[i]
            if brief and previous >= 0 and i != previous + 1:
                gaps.append(len(rows))
            previous = i
            status = row.status.value
            if row.status is Status.FOLDED and row.note:
                status = row.note
            if row is first:
                status += "  <- first divergence"
            rows.append(
                [
                    row.layer,
                    row.type,
                    row.blob,
                    _shape(row.ours_shape),
                    _shape(row.ref_shape),
                    _number(row.max_abs),
                    _number(row.max_rel),
                    status,
                ]
            )
        if brief and len(rows) == 1:
            return self.summary()
        widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
        lines = [
            "  ".join([*(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)), r[-1]])
            for r in rows
        ]
        for at in reversed(gaps):
            lines.insert(at, "...")
        lines.insert(1, "-" * len(lines[0]))
        if not brief:
            lines.insert(0, self.reference_line())
        diagnosed = [r for r in self.rows if r.diagnosis]
        for row in diagnosed[:5]:
            lines.append(f"diagnosis for {row.blob!r} (layer {row.layer!r}): {row.diagnosis}")
        if not brief:
            noted = [r for r in self.rows if r.note and r.status is not Status.FOLDED]
            for row in noted[:5]:
                lines.append(f"note on {row.blob!r} (layer {row.layer!r}): {row.note}")
        lines.append(self.summary())
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        first = self.first_divergent
        choice = self.choice
        return {
            **self.provenance,
            "prototxt": self.prototxt,
            "module": self.module,
            "reference": self.reference,
            "reference_version": choice.version if choice else None,
            "reference_why": choice.why if choice else None,
            "references_skipped": (
                [{"reference": n, "reason": r} for n, r in choice.skipped] if choice else []
            ),
            "tolerance": {"rtol": self.tolerance.rtol, "atol": self.tolerance.atol},
            "input_shapes": {k: list(v) for k, v in self.inputs.items()},
            "ok": self.ok,
            "blobs_compared": len(self.compared),
            "largest_error": _finite(self.largest_error),
            "first_divergent": (
                None
                if first is None
                else {"layer": first.layer, "blob": first.blob, "position": first.position}
            ),
            "rows": [
                {
                    "layer": r.layer,
                    "position": r.position,
                    "type": r.type,
                    "blob": r.blob,
                    "ours_shape": None if r.ours_shape is None else list(r.ours_shape),
                    "ref_shape": None if r.ref_shape is None else list(r.ref_shape),
                    "max_abs": _finite(r.max_abs),
                    "max_rel": _finite(r.max_rel),
                    "tolerance_ratio": _finite(r.tolerance_ratio),
                    "status": r.status.value,
                    "diagnosis": r.diagnosis,
                    "note": r.note,
                    "line": r.line,
                }
                for r in self.rows
            ],
        }

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=1)


def _finite(value: float | None) -> float | str | None:
    if value is None or math.isfinite(value):
        return value
    return str(value)


def _shape(shape: Shape | None) -> str:
    return "-" if shape is None else "x".join(str(d) for d in shape)


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"
