"""`protocaffe inspect`: one row per layer of the generated module, and the totals.

Rows follow the graph that model.py computes (identity layers such as Dropout are gone), and
name values as model.py's local variables do, so the table and the code read alike.
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass

from protocaffe import api
from protocaffe.backend.emit import local_names
from protocaffe.errors import Reporter
from protocaffe.ir.graph import Shape
from protocaffe.passes import DEFAULT_PIPELINE, Pass
from protocaffe.views.cost import multiply_adds, parameter_count


@dataclass(frozen=True)
class Row:
    name: str  # Caffe layer name, verbatim
    type: str  # Caffe type(s), "Convolution + BatchNorm" after folding
    inputs: list[str]  # model.py local variables, in bottom order
    outputs: list[str]
    output_shapes: list[list[int]]
    params: int
    mult_adds: int


@dataclass(frozen=True)
class Table:
    net: str
    inputs: list[tuple[str, list[int]]]
    rows: list[Row]

    @property
    def params(self) -> int:
        return sum(r.params for r in self.rows)

    @property
    def mult_adds(self) -> int:
        return sum(r.mult_adds for r in self.rows)


def layer_table(
    prototxt: str | os.PathLike[str],
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    reporter: Reporter | None = None,
    passes: Sequence[Pass] = DEFAULT_PIPELINE,
    dialects: Collection[str] = (),
) -> Table:
    graph = api.compile(
        prototxt, input_shapes=input_shapes, passes=passes, reporter=reporter, dialects=dialects
    )
    local = local_names(graph)
    rows = [
        Row(
            name=node.name,
            type=" + ".join(n.op for n in node.fused or (node,)),
            inputs=[local[v] for v in node.inputs],
            outputs=[local[v] for v in node.outputs],
            output_shapes=[list(v.shape) for v in node.outputs],
            params=parameter_count(node),
            mult_adds=multiply_adds(node),
        )
        for node in graph.nodes
    ]
    inputs = [(local[v], list(v.shape)) for v in graph.inputs]
    return Table(graph.name, inputs, rows)


def table_json(table: Table) -> str:
    data = {
        "net": table.net,
        "inputs": [{"name": name, "shape": shape} for name, shape in table.inputs],
        "layers": [asdict(row) for row in table.rows],
        "totals": {"params": table.params, "mult_adds": table.mult_adds},
    }
    return json.dumps(data, indent=2) + "\n"


def _shape(shape: Shape | Sequence[int]) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"


def _count(n: int) -> str:
    return f"{n:,}"


def table_text(table: Table) -> str:
    header = ("layer", "type", "inputs", "output shape", "params", "mult-adds")
    body = [
        (
            row.name.encode("unicode_escape").decode("ascii"),
            row.type,
            ", ".join(row.inputs),
            " ".join(_shape(s) for s in row.output_shapes),
            _count(row.params),
            _count(row.mult_adds),
        )
        for row in table.rows
    ]
    inputs = ", ".join(f"{name} {_shape(shape)}" for name, shape in table.inputs)
    total = (
        "total",
        f"{len(table.rows)} layers",
        "",
        "",
        _count(table.params),
        _count(table.mult_adds),
    )
    widths = [max(len(r[i]) for r in [header, *body, total]) for i in range(len(header))]
    numeric = {4, 5}

    def line(cells: Sequence[str]) -> str:
        parts = [
            cell.rjust(width) if i in numeric else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    lines = [f"net {table.net!r}: inputs {inputs}", line(header), rule]
    lines += [line(r) for r in body]
    lines += [rule, line(total)]
    return "\n".join(lines) + "\n"
