"""Turn a graph into the pieces of model.py: names, `__init__` lines and `forward` lines.

All Python expressions are built here (by each layer's emitter); the template only lays them
out. Every Caffe string reaches the output in one of three forms: an identifier from the
`Namespace` allocator, a `repr()`'d literal, or text made safe for a comment or docstring.
"""

from __future__ import annotations

import ast
import os
import re
from dataclasses import dataclass

from protocaffe.backend.helpers import helper_names, helper_source
from protocaffe.backend.names import RESERVED, RULE, Namespace, sanitize
from protocaffe.errors import ProtocaffeError
from protocaffe.ir.graph import Graph, Node, Value
from protocaffe.layers import lookup
from protocaffe.layers.base import EmitContext, fmt_shape
from protocaffe.version import __version__


def comment_text(text: str) -> str:
    """`text` as a quoted literal that cannot end a comment line (repr escapes line breaks)."""
    return repr(text)


def doc_text(text: str) -> str:
    """`text` quoted for a docstring, so that the docstring's value holds its repr() and not the
    raw characters (help() must not print a name's newlines or terminal escapes): repr() escapes
    them, its backslashes are doubled, and every double quote is escaped so that no triple quote
    can close the docstring early."""
    return repr(text).replace("\\", "\\\\").replace('"', '\\"')


# Where black wraps lines in the generated file; a trace comment that would not fit after its
# code goes on its own line above it instead, so that black never splits the code around it.
LINE_LENGTH = 88
BODY_INDENT = 8


def wrap_units(units: list[str], width: int) -> list[str]:
    """Pack `units` into lines of at most `width` characters, joined by spaces. A unit is never
    split (one longer than `width` gets a line of its own), so a quoted name stays whole."""
    lines: list[str] = []
    for unit in units:
        if lines and len(lines[-1]) + 1 + len(unit) <= width:
            lines[-1] += " " + unit
        else:
            lines.append(unit)
    return lines


@dataclass(frozen=True)
class Line:
    code: str
    comment: str = ""

    @property
    def comment_above(self) -> bool:
        width = BODY_INDENT + len(self.code) + len("  # ") + len(self.comment)
        return bool(self.comment) and width > LINE_LENGTH


@dataclass(frozen=True)
class ModuleParts:
    """What the template lays out."""

    docstring: list[str]
    imports: list[str]
    helpers: list[str]
    class_name: str
    class_doc: list[str]
    init: list[Line]
    signature: str
    forward: list[Line]
    result: str
    return_type: str


@dataclass(frozen=True)
class Emitted:
    parts: ModuleParts
    # The module attribute that holds each node's parameters (node name -> attribute).
    attrs: dict[str, str]
    # The local variable that holds each value in forward().
    locals: dict[Value, str]


def checked_import(statement: str, node: Node) -> str:
    """A plugin's declared import, if it is exactly one `import`/`from ... import` statement."""
    try:
        tree = ast.parse(statement)
    except SyntaxError:
        tree = None
    if (
        tree is None
        or len(tree.body) != 1
        or not isinstance(tree.body[0], ast.Import | ast.ImportFrom)
    ):
        raise ProtocaffeError.at(
            node.loc,
            f"the emitter declares {statement!r}, which is not one import statement",
            node.name,
            node.op,
        )
    return ast.unparse(tree.body[0])


def class_name_for(net_name: str) -> str:
    ident = sanitize(net_name) if net_name else "Net"
    ident = ident.strip("_") or "Net"
    if ident[0].isdigit():
        ident = "Net" + ident
    ident = ident[0].upper() + ident[1:]
    # Capitalising can make a reserved name ("none" -> None, "f" -> F) or a helper's name.
    return ident + "Net" if ident in RESERVED or ident in helper_names() else ident


def shown_source(path: str) -> str:
    """How the header names the prototxt: relative paths as given, absolute ones by file name."""
    return os.path.basename(path) if os.path.isabs(path) else path.replace(os.sep, "/")


def _value_name(value: Value, node: Node | None) -> str:
    # The first version of a blob is named after the blob; later (in-place) versions after the
    # layer that wrote them, so `relu1` reads as the output of layer relu1.
    if value.version == 0 or node is None:
        return value.blob
    return node.name


def trace_text(node: Node) -> str:
    """The trace comment naming the Caffe layer(s) a node computes: `'name' Type`, followed by
    ` + 'name' Type` for each layer a pass folded into it."""
    originals = node.fused or (node,)
    return " + ".join(f"{comment_text(n.name)} {n.op}" for n in originals)


def emit_module(
    graph: Graph, regenerate: str | None = None, source_name: str | None = None
) -> Emitted:
    """The pieces of model.py for `graph`. `regenerate` is the command line the header shows;
    `source_name` how it names the prototxt (default: `shown_source(graph.source)`)."""
    attrs_ns = Namespace()
    # A local named like a helper function would shadow it inside forward().
    locals_ns = Namespace(RESERVED | helper_names())
    local: dict[Value, str] = {}
    for value in graph.inputs:
        local[value] = locals_ns.name(value, value.blob)

    init: list[Line] = []
    forward: list[Line] = []
    helpers: list[str] = []
    extra_imports: set[str] = set()  # declared by plugin emitters
    node_attrs: dict[str, str] = {}
    for index, node in enumerate(graph.nodes):
        kind = lookup(node.op)
        assert kind is not None, node.op
        # Keyed by the node itself: two layers may share a name (Caffe allows it).
        attr = attrs_ns.name(("node", index), node.name)
        ctx = EmitContext(
            attr=attr,
            inputs=tuple(local[v] for v in node.inputs),
            in_shapes=tuple(v.shape for v in node.inputs),
            out_shapes=tuple(v.shape for v in node.outputs),
        )
        emission = kind.emit(node.attrs, ctx)
        for helper in emission.helpers:
            if helper not in helpers:
                helpers.append(helper)
        for statement in emission.imports:
            extra_imports.add(checked_import(statement, node))
        trace = trace_text(node)
        if emission.init is not None:
            node_attrs[node.name] = attr
            init.append(Line(f"self.{attr} = {emission.init}", trace if attr != node.name else ""))
        for value in node.outputs:
            local[value] = locals_ns.name(value, _value_name(value, node))
        targets = ", ".join(local[v] for v in node.outputs)
        comment = trace
        shapes = [v.shape for v in node.outputs]
        if not node.inputs or shapes != [node.inputs[0].shape] * len(shapes):
            comment += " -> " + ", ".join(fmt_shape(s) for s in shapes)
        if emission.note:
            comment += f": {emission.note}"
        forward.append(Line(f"{targets} = {emission.forward}", comment))

    results = [local[v] for v in graph.outputs]
    result = results[0] if len(results) == 1 else ", ".join(results)
    return_type = (
        "torch.Tensor"
        if len(results) == 1
        else "tuple[" + ", ".join(["torch.Tensor"] * len(results)) + "]"
    )
    signature = ", ".join(["self"] + [f"{local[v]}: torch.Tensor" for v in graph.inputs])

    helper_texts = [helper_source(name) for name in helpers]
    code = "\n".join(line.code for line in init + forward) + "\n".join(helper_texts)
    # isort's order (plain imports before from-imports), so that `ruff check` accepts the file.
    imports = ["import torch", "from torch import nn"]
    if re.search(r"\bF\.", code):
        imports.insert(1, "import torch.nn.functional as F")
    if "Optional[" in code:
        imports.insert(0, "from typing import Optional")
        imports.insert(1, "")
    imports += sorted(extra_imports - set(imports))

    name = graph.name or "net"
    regenerate_lines = (
        # The command stays one unit, so that it can be copied from one line.
        ["", *wrap_units(["Regenerate", "with:", doc_text(regenerate)], LINE_LENGTH)]
        if regenerate is not None
        else []
    )
    docstring = [
        *wrap_units(
            [f"{doc_text(name)},", "generated", "by", "protocaffe", __version__, "from"]
            + [f"{doc_text(source_name or shown_source(graph.source))}."]
            + ["Do", "not", "edit;", "regenerate."],
            LINE_LENGTH - len('"""'),
        ),
        *regenerate_lines,
        "",
        *wrap_units(RULE.split(), LINE_LENGTH),
    ]
    inputs = [f"{doc_text(v.blob)} {fmt_shape(v.shape)}," for v in graph.inputs]
    outputs = [f"{doc_text(v.blob)}," for v in graph.outputs]
    class_doc = wrap_units(
        ["Caffe", "net", f"{doc_text(name)}:", "inputs"]
        + [*inputs[:-1], inputs[-1][:-1] + ";", "outputs"]
        + [*outputs[:-1], outputs[-1][:-1], "(Caffe's", "order)."],
        LINE_LENGTH - 4 - len('"""'),
    )
    parts = ModuleParts(
        docstring=docstring,
        imports=imports,
        helpers=helper_texts,
        class_name=class_name_for(graph.name),
        class_doc=class_doc,
        init=init,
        signature=signature,
        forward=forward,
        result=result,
        return_type=return_type,
    )
    return Emitted(parts, node_attrs, local)
