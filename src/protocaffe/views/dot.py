"""`protocaffe graph`: the net as a Graphviz picture, drawn as model.py computes it.

- One box per layer (folded layers share one box), with its Caffe name, type and output shape.
- Edges are the SSA values of the generated code, labelled with model.py's local variable
  names, so an in-place chain (conv1 -> relu1 on the same Caffe blob) reads as distinct values.
- A layer with several inputs (Concat, Eltwise, Scale, Crop, ...) numbers its incoming edges in
  bottom order: "[0] a", "[1] b". Netron does not show this order.

The DOT text is deterministic; pictures come from the system's Graphviz `dot`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
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


def graph_dot(graph: Graph, local: Mapping[Value, str]) -> str:
    """The DOT text of `graph`; `local` names each value as model.py does."""
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
    for i, node in enumerate(graph.nodes):
        node_id = f"layer{i}"
        lines.append(f"  {node_id} [label={_node_label(node)}, fillcolor={_colour(node)}];")
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
    lines.append("}")
    return "\n".join(lines) + "\n"


def _node_label(node: Node) -> str:
    originals = node.fused or (node,)
    names = [n.name for n in originals]
    types = " + ".join(n.op for n in originals)
    shapes = " ".join(_shape(v.shape) for v in node.outputs)
    return _quoted(*names, types, shapes)


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


def write_picture(
    prototxt: str | os.PathLike[str],
    output: Path,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    optimize: bool = False,
    reporter: Reporter | None = None,
) -> None:
    """Write the picture of `prototxt` to `output`; its suffix picks DOT text or a format."""
    from protocaffe import api
    from protocaffe.passes import DEFAULT_PIPELINE, OPTIMIZE_PIPELINE

    fmt = output.suffix.lower().lstrip(".")
    if fmt not in (*PICTURE_FORMATS, "dot", "gv"):
        raise ProtocaffeError.at(
            SourceLoc(output.as_posix()),
            f"unknown picture format {output.suffix!r}: use .svg, .png, .pdf or .dot",
        )
    graph = api.compile(
        prototxt,
        input_shapes=input_shapes,
        passes=OPTIMIZE_PIPELINE if optimize else DEFAULT_PIPELINE,
        reporter=reporter,
    )
    text = graph_dot(graph, local_names(graph))
    content = text.encode("utf-8") if fmt in ("dot", "gv") else render_dot(text, fmt, output)
    write_bytes(output, content)
