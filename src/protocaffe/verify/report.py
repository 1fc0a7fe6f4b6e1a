"""The verification report: one row per Caffe blob, as a table for people and JSON for tools."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from protocaffe.ir.graph import Shape
from protocaffe.verify.compare import Status, Tolerance


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


@dataclass
class VerifyReport:
    prototxt: str
    module: str  # "generated" or the model.py path
    reference: str  # "opencv" or "caffe"
    tolerance: Tolerance
    inputs: dict[str, Shape]
    rows: list[BlobRow] = field(default_factory=list)

    @property
    def compared(self) -> list[BlobRow]:
        return [r for r in self.rows if r.status in (Status.MATCH, Status.MISMATCH, Status.SHAPE)]

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

    def summary(self) -> str:
        counts = f"{len(self.compared)} blobs compared against {self.reference}"
        if self.ok:
            return f"OK: {counts}, largest error {self.largest_error:.3g} of the blob's max"
        first = self.first_divergent
        if first is None:
            return f"NOTHING COMPARED: {counts}"
        text = f"MISMATCH: {counts}; first divergent blob {first.blob!r} (layer {first.layer!r}"
        text += f" {first.type}{f', model.py line {first.line}' if first.line else ''})"
        return text + (f": {first.diagnosis}" if first.diagnosis else "")

    def table(self) -> str:
        header = ["layer", "type", "blob", "shape (ours)", "shape (ref)", "max abs", "max rel"]
        header.append("status")
        rows = [header]
        first = self.first_divergent
        for row in self.rows:
            status = row.status.value
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
        widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
        lines = [
            "  ".join([*(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)), r[-1]])
            for r in rows
        ]
        lines.insert(1, "-" * len(lines[0]))
        diagnosed = [r for r in self.rows if r.diagnosis]
        for row in diagnosed[:5]:
            lines.append(f"diagnosis for {row.blob!r} (layer {row.layer!r}): {row.diagnosis}")
        lines.append(self.summary())
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        first = self.first_divergent
        return {
            "prototxt": self.prototxt,
            "module": self.module,
            "reference": self.reference,
            "tolerance": {"rtol": self.tolerance.rtol, "atol": self.tolerance.atol},
            "inputs": {k: list(v) for k, v in self.inputs.items()},
            "ok": self.ok,
            "blobs_compared": len(self.compared),
            "largest_error": _finite(self.largest_error),
            "first_divergent": (
                None if first is None else {"layer": first.layer, "blob": first.blob}
            ),
            "rows": [
                {
                    "layer": r.layer,
                    "type": r.type,
                    "blob": r.blob,
                    "ours_shape": None if r.ours_shape is None else list(r.ours_shape),
                    "ref_shape": None if r.ref_shape is None else list(r.ref_shape),
                    "max_abs": _finite(r.max_abs),
                    "max_rel": _finite(r.max_rel),
                    "status": r.status.value,
                    "diagnosis": r.diagnosis,
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
