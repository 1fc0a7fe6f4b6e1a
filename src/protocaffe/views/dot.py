"""`protocaffe graph`: the net as a Graphviz picture, drawn as model.py computes it.

- One box per layer (folded layers share one box), with its Caffe name, type and output shape.
- Edges are the SSA values of the generated code, labelled with model.py's local variable
  names, so an in-place chain (conv1 -> relu1 on the same Caffe blob) reads as distinct values.
- A layer with several inputs (Concat, Eltwise, Scale, Crop, ...) numbers its incoming edges in
  bottom order: "[0] a", "[1] b". Netron does not show this order.

The DOT text is deterministic; pictures come from the system's Graphviz `dot`.

`verify --graph` draws the same picture with each layer filled by how its blobs compared
(`BlobMark`, one per top in graph order): the error as a fraction of what the tolerance allows,
green well within it, yellow near it, red beyond it, grey where nothing was compared; the
first divergence has a thick red border.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from protocaffe.atomic import write_bytes
from protocaffe.backend.emit import local_names
from protocaffe.errors import ProtocaffeError, Reporter, SourceLoc
from protocaffe.ir.graph import Graph, Node, Shape, Value
from protocaffe.layers import layer_of
from protocaffe.layers.base import Role

PICTURE_FORMATS = ("svg", "png", "pdf")

# Fill colours by what a layer does (`Layer.role`), so that the eye finds convolutions, merges
# and pooling.
_COLOURS: dict[Role, str] = {
    Role.CONVOLUTION: "#cfe2f3",
    Role.DENSE: "#d9d2e9",
    Role.POOLING: "#d9ead3",
    Role.COMBINE: "#fce5cd",
    Role.NORMALIZATION: "#fff2cc",
    Role.PROBABILITY: "#f4cccc",
    Role.OTHER: "#eeeeee",
}


def _quoted(*lines: str) -> str:
    """A DOT string with one line per argument. Each line is made one printable line, then
    backslashes and quotes are escaped, so no Caffe name can break out of the string or use
    Graphviz's own escapes."""
    safe = [
        line.encode("unicode_escape").decode("ascii").replace("\\", "\\\\").replace('"', '\\"')
        for line in lines
    ]
    return '"' + "\\n".join(safe) + '"'


def _shape(shape: Shape) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"


@dataclass(frozen=True)
class BlobMark:
    """How one top compared in `verify`: its error as a fraction of what the tolerance
    allows (None: not compared), the status's words, and whether it is the first divergence."""

    ratio: float | None
    status: str
    failed: bool = False
    first: bool = False


# (largest ratio, fill) in order: the first bucket the worst top of a layer falls in.
_ERROR_COLOURS: tuple[tuple[float, str], ...] = (
    (0.1, "#b6d7a8"),  # well within the tolerance
    (0.5, "#d9ead3"),
    (1.0, "#fff2cc"),  # near it
    (100.0, "#f4cccc"),  # beyond it
    (float("inf"), "#e06666"),  # far beyond it
)
_NOT_COMPARED = "#eeeeee"
_LEGEND = (
    ("error <= 0.1 x tolerance", "#b6d7a8"),
    ("<= 0.5 x", "#d9ead3"),
    ("<= 1 x", "#fff2cc"),
    ("> 1 x (differs)", "#f4cccc"),
    ("> 100 x", "#e06666"),
    ("not compared", _NOT_COMPARED),
)


def _error_fill(marks: Sequence[BlobMark]) -> str:
    ratios = [m.ratio for m in marks if m.ratio is not None]
    if not ratios:
        return _ERROR_COLOURS[3][1] if any(m.failed for m in marks) else _NOT_COMPARED
    worst = max(ratios)
    if any(m.failed for m in marks):
        worst = max(worst, 1.0 + 1e-9)
    return next(colour for limit, colour in _ERROR_COLOURS if worst <= limit)


def _mark_lines(marks: Sequence[BlobMark]) -> list[str]:
    lines = []
    for mark in marks:
        text = mark.status if mark.ratio is None else f"error {mark.ratio:.2g} x tol"
        if mark.ratio is not None and mark.status not in ("match",):
            text += f" ({mark.status})"
        lines.append(text)
    if any(m.first for m in marks):
        lines.append("FIRST DIVERGENCE")
    return lines


def graph_dot(
    graph: Graph, local: Mapping[Value, str], marks: Sequence[BlobMark] | None = None
) -> str:
    """The DOT text of `graph`; `local` names each value as model.py does. With `marks` (one per
    top of each node, in graph order), layers are filled by how verify compared them."""
    lines = [
        f"digraph {_quoted(graph.name or 'net')} {{",
        "  rankdir=TB;",
        '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=10];',
        '  edge [fontname="Helvetica", fontsize=9, color="#555555"];',
    ]
    source: dict[Value, str] = {}
    for i, value in enumerate(graph.inputs):
        node_id = f"input{i}"
        source[value] = node_id
        label = _quoted(local[value], "input", _shape(value.shape))
        lines.append(f'  {node_id} [label={label}, shape=ellipse, fillcolor="#ffffff"];')
    marked = _split_marks(graph, marks)
    for i, node in enumerate(graph.nodes):
        node_id = f"layer{i}"
        if marked is None:
            lines.append(f"  {node_id} [label={_node_label(node)}, fillcolor={_colour(node)}];")
        else:
            own = marked[i]
            style = ', color="#cc0000", penwidth=4' if any(m.first for m in own) else ""
            label = _node_label(node, _mark_lines(own))
            lines.append(f'  {node_id} [label={label}, fillcolor="{_error_fill(own)}"{style}];')
        many = len(node.inputs) > 1
        for order, value in enumerate(node.inputs):
            text = f"[{order}] {local[value]}" if many else local[value]
            lines.append(f"  {source[value]} -> {node_id} [label={_quoted(text)}];")
        for value in node.outputs:
            source[value] = node_id
    for i, value in enumerate(graph.outputs):
        node_id = f"output{i}"
        label = _quoted(graph.output_name(i), "output", _shape(value.shape))
        lines.append(f'  {node_id} [label={label}, shape=ellipse, fillcolor="#ffffff"];')
        lines.append(f"  {source[value]} -> {node_id} [label={_quoted(local[value])}];")
    if marked is not None:
        lines.append("  subgraph cluster_legend {")
        lines.append(f"    label={_quoted('verify: error / tolerance')}; fontsize=10;")
        for k, (text, colour) in enumerate(_LEGEND):
            lines.append(f'    legend{k} [label={_quoted(text)}, fillcolor="{colour}"];')
        lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _split_marks(graph: Graph, marks: Sequence[BlobMark] | None) -> list[list[BlobMark]] | None:
    if marks is None:
        return None
    count = sum(len(node.outputs) for node in graph.nodes)
    if len(marks) != count:
        raise ValueError(f"{len(marks)} marks for {count} tops")
    split: list[list[BlobMark]] = []
    at = 0
    for node in graph.nodes:
        split.append(list(marks[at : at + len(node.outputs)]))
        at += len(node.outputs)
    return split


def _node_label(node: Node, extra: Sequence[str] = ()) -> str:
    originals = node.fused or (node,)
    names = [n.name for n in originals]
    types = " + ".join(n.op for n in originals)
    shapes = " ".join(_shape(v.shape) for v in node.outputs)
    return _quoted(*names, types, shapes, *extra)


def _colour(node: Node) -> str:
    return '"' + _COLOURS[layer_of(node).role] + '"'


def render_dot(dot_text: str, fmt: str, where: Path) -> bytes:
    """Run Graphviz `dot -T<fmt>` on the text. A missing `dot` is one diagnostic."""
    executable = shutil.which("dot")
    if executable is None:
        raise ProtocaffeError.at(
            SourceLoc(where.as_posix()),
            "Graphviz 'dot' is not on PATH (install graphviz), or write the DOT text with "
            "-o NAME.dot",
        )
    done = subprocess.run(
        [executable, f"-T{fmt}"], input=dot_text.encode("utf-8"), capture_output=True, check=False
    )
    if done.returncode != 0:
        reason = done.stderr.decode("utf-8", errors="replace").strip().splitlines()
        raise ProtocaffeError.at(
            SourceLoc(where.as_posix()),
            f"Graphviz 'dot' failed: {reason[0] if reason else f'exit {done.returncode}'}",
        )
    return done.stdout


def check_picture_path(output: Path) -> str:
    """The format `output`'s suffix asks for; an unknown one is one diagnostic."""
    fmt = output.suffix.lower().lstrip(".")
    if fmt not in (*PICTURE_FORMATS, "dot", "gv"):
        raise ProtocaffeError.at(
            SourceLoc(output.as_posix()),
            f"unknown picture format {output.suffix!r}: use .svg, .png, .pdf or .dot",
        )
    return fmt


def write_verify_picture(
    prototxt: str | os.PathLike[str],
    output: Path,
    input_shapes: Mapping[str, Sequence[int]],
    marks: Sequence[BlobMark],
) -> None:
    """`verify --graph`: the net (as verify compiled it, without --optimize: one box per Caffe
    layer) with each layer filled by its error relative to the tolerance."""
    from protocaffe import api

    fmt = check_picture_path(output)
    graph = api.compile(prototxt, input_shapes=input_shapes, reporter=Reporter())
    text = graph_dot(graph, local_names(graph), marks)
    content = text.encode("utf-8") if fmt in ("dot", "gv") else render_dot(text, fmt, output)
    write_bytes(output, content)


def write_picture(
    prototxt: str | os.PathLike[str],
    output: Path,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    optimize: bool = False,
    reporter: Reporter | None = None,
    dialects: Collection[str] = (),
) -> None:
    """Write the picture of `prototxt` to `output`; its suffix picks DOT text or a format."""
    from protocaffe import api
    from protocaffe.passes import DEFAULT_PIPELINE, OPTIMIZE_PIPELINE

    fmt = check_picture_path(output)
    graph = api.compile(
        prototxt,
        input_shapes=input_shapes,
        passes=OPTIMIZE_PIPELINE if optimize else DEFAULT_PIPELINE,
        reporter=reporter,
        dialects=dialects,
    )
    text = graph_dot(graph, local_names(graph))
    content = text.encode("utf-8") if fmt in ("dot", "gv") else render_dot(text, fmt, output)
    write_bytes(output, content)
