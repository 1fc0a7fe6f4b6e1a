"""The graph IR as text: one line per node, for people and for diffs.

    graph 'TinyNet' from deploy.prototxt
    inputs: %data.0 (1, 3, 32, 32)
    %conv1.0 = Convolution['conv1'](%data.0) {num_output=16, ...}  # (1, 16, 32, 32) ...:10
    ...
    outputs: %prob.0

A value is `%blob.version` (an in-place layer writes the next version of its blob); a node is
`outputs = Type['layer name'](inputs) {attributes}`, with a comment that gives the output shapes
and where the layer is written. A layer's `param {}` specs follow its attributes when any is
not Caffe's default (`param=[lr_mult/decay_mult 'shared name', ...]`). A node that --optimize
folded together lists the layers it
absorbed after its own attributes (`+ BatchNorm['bn'] {...}`). Values a pass replaced by another
are listed last as aliases. Every Caffe name is printed as a repr() when it is not a plain
name, so one node is always one line.
"""

from __future__ import annotations

import dataclasses
import os
import re

from protocaffe.ir.graph import Attrs, Graph, Node, ParamSpec, Shape, Value

_PLAIN = re.compile(r"[A-Za-z0-9_./\-]+")


def format_graph(graph: Graph) -> str:
    """The text of `graph` (ends with a newline)."""
    lines = [f"graph {graph.name!r} from {_file(graph.source)}"]
    lines.append("inputs: " + ", ".join(f"{_value(v)} {_shape(v.shape)}" for v in graph.inputs))
    lines += [format_node(node) for node in graph.nodes]
    lines.append("outputs: " + ", ".join(_value(v) for v in graph.outputs))
    if graph.aliases:
        lines.append(
            "aliases: " + ", ".join(f"{_value(a)} = {_value(b)}" for a, b in graph.aliases)
        )
    return "\n".join(lines) + "\n"


def format_node(node: Node) -> str:
    """`outputs = Type['name'](inputs) {attrs}  # shapes file:line` on one line."""
    outputs = ", ".join(_value(v) for v in node.outputs) or "()"
    inputs = ", ".join(_value(v) for v in node.inputs)
    originals = node.fused or (node,)
    head = f"{outputs} = {_op(node)}({inputs}){_attrs(node.attrs)}{_params(node)}"
    folded = "".join(f" + {_op(n)}{_attrs(n.attrs)}" for n in originals[1:])
    shapes = ", ".join(_shape(v.shape) for v in node.outputs)
    where = f"{_file(node.loc.file)}:" + ",".join(str(n.loc.line) for n in originals)
    comment = " ".join(part for part in (shapes, where) if part)
    return f"{head}{folded}  # {comment}"


def _op(node: Node) -> str:
    return f"{node.op}[{node.name!r}]"


def _params(node: Node) -> str:
    specs = node.param_specs
    if all(spec == ParamSpec() for spec in specs):
        return ""

    def one(spec: ParamSpec) -> str:
        share = f" {spec.share!r}" if spec.share else ""
        return f"{spec.lr_mult:g}/{spec.decay_mult:g}{share}"

    return " param=[" + ", ".join(one(spec) for spec in specs) + "]"


def _value(value: Value) -> str:
    blob = value.blob if _PLAIN.fullmatch(value.blob) else repr(value.blob)
    return f"%{blob}.{value.version}"


def _attrs(attrs: Attrs) -> str:
    fields = dataclasses.fields(attrs)
    if not fields:
        return ""
    return " {" + ", ".join(f"{f.name}={getattr(attrs, f.name)!r}" for f in fields) + "}"


def _shape(shape: Shape) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"


def _file(path: str) -> str:
    """A file by its name only, so that the text does not depend on where the net lies."""
    name = os.path.basename(path)
    return name if _PLAIN.fullmatch(name) else repr(name)
