"""Turn a graph into the pieces of model.py: names, `__init__` lines and `forward` lines.

All Python expressions are built here (by each layer's emitter); the template only lays them
out. Every Caffe string reaches the output in one of three forms: an identifier from the
`Namespace` allocator, a `repr()`'d literal, or text made safe for a comment or docstring.
"""

from __future__ import annotations

import ast
import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from protocaffe.backend.helpers import helper_imports, helper_names, helper_source
from protocaffe.backend.names import RESERVED, RULE, Namespace, sanitize
from protocaffe.errors import ProtocaffeError, SourceLoc
from protocaffe.ir.graph import Graph, Node, ParamSpec, Value
from protocaffe.layers import layer_of
from protocaffe.layers.base import Emission, EmitContext, call, fmt_shape, tuple_expr
from protocaffe.version import __version__

if TYPE_CHECKING:
    from protocaffe.backend.preprocess import Preprocess


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
class OutputField:
    """One field of the NamedTuple a module with several outputs returns."""

    name: str
    comment: str  # the Caffe blob's name where the field's name differs from it


@dataclass(frozen=True)
class PreprocessParts:
    """The module-level preprocess(image): its docstring and the one call it makes."""

    doc: list[str]
    call: str


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
    # The NamedTuple of a module with several outputs (None for one output) and its fields.
    outputs_class: str | None
    output_fields: list[OutputField]
    # caffe_param_groups(): one dict literal per run of blobs with the same multipliers.
    param_groups: list[str]
    preprocess: PreprocessParts | None = None


@dataclass(frozen=True)
class Emitted:
    parts: ModuleParts
    # The module attribute that holds each node's parameters, by the node's position in the
    # graph (two layers may share a name: Caffe allows it).
    attrs: dict[int, str]
    # The local variable that holds each value in forward().
    locals: dict[Value, str]


def checked_import(statement: str, node: Node) -> str:
    """An emitter's declared import, if it is exactly one `import`/`from ... import` statement
    (normalised, so that equal imports are written once)."""
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


# What a module-level function of model.py is called: no class may take the name.
PREPROCESS = "preprocess"


def checked_class_name(name: str, graph: Graph) -> str:
    """A class name the user chose (--class-name): an identifier model.py does not use."""
    if not name.isidentifier() or name in RESERVED or name in helper_names() or name == PREPROCESS:
        raise ProtocaffeError.at(
            SourceLoc(graph.source),
            f"class name {name!r} is not an identifier or is a name model.py uses itself; "
            "choose another",
        )
    return name


def shown_source(path: str) -> str:
    """How the header names the prototxt: relative paths as given, absolute ones by file name."""
    return os.path.basename(path) if os.path.isabs(path) else path.replace(os.sep, "/")


def _value_name(value: Value, node: Node | None) -> str:
    # The first version of a blob is named after the blob; later (in-place) versions after the
    # layer that wrote them, so `relu1` reads as the output of layer relu1. A blob re-bound to
    # shared memory (SharedMemory) keeps its own name, with a number.
    if value.version == 0 or node is None or layer_of(node).rebinds:
        return value.blob
    return node.name


def local_names(graph: Graph) -> dict[Value, str]:
    """The local variable that holds each value in forward(): the inputs, then each node's
    outputs in graph order. Views name values this way too, without emitting anything."""
    # A local named like a helper function would shadow it inside forward().
    names = Namespace(RESERVED | helper_names())
    local = {value: names.name(value, value.blob) for value in graph.inputs}
    for node in graph.nodes:
        for value in node.outputs:
            local[value] = names.name(value, _value_name(value, node))
    return local


def trace_text(node: Node) -> str:
    """The trace comment naming the Caffe layer(s) a node computes: `'name' Type`, followed by
    ` + 'name' Type` for each layer a pass folded into it."""
    originals = node.fused or (node,)
    return " + ".join(f"{comment_text(n.name)} {n.op}" for n in originals)


def emit_module(
    graph: Graph,
    regenerate: str | None = None,
    source_name: str | None = None,
    class_name: str | None = None,
    preprocess: Preprocess | None = None,
) -> Emitted:
    """The pieces of model.py for `graph`. `regenerate` is the command line the header shows;
    `source_name` how it names the prototxt (default: `shown_source(graph.source)`);
    `class_name` the class's name (default: the net's, made an identifier); `preprocess` the
    module-level preprocess(image) to write (none by default).

    The steps: name every value (`local_names`), emit each node's lines (`_emit_body`), gather
    the imports the emissions and helpers declare (`module_imports`), and write the module's
    and the class's docstrings (`_module_docstring`, `_class_docstring`)."""
    local = local_names(graph)
    body = _emit_body(graph, local)
    body.forward[:0] = channels_last_lines(graph, local)
    class_name = (
        checked_class_name(class_name, graph)
        if class_name is not None
        else class_name_for(graph.name)
    )
    if preprocess is not None and "blob_from_image" not in body.helpers:
        body.helpers.append("blob_from_image")
        body.imports.update(helper_imports("blob_from_image"))
    results = [f"{local[v]}.contiguous()" if len(v.shape) == 4 else local[v] for v in graph.outputs]
    typing = {"Any"}  # caffe_param_groups' annotation
    outputs_class: str | None = None
    fields: list[OutputField] = []
    if len(results) > 1:
        outputs_class, fields = _outputs_tuple(graph, class_name)
        typing.add("NamedTuple")
    body.imports.add(f"from typing import {', '.join(sorted(typing))}")
    parts = ModuleParts(
        docstring=_module_docstring(graph, regenerate, source_name),
        imports=module_imports(body.imports),
        helpers=[helper_source(name) for name in body.helpers],
        class_name=class_name,
        class_doc=_class_docstring(graph),
        init=body.init,
        signature=", ".join(["self"] + [f"{local[v]}: torch.Tensor" for v in graph.inputs]),
        forward=body.forward,
        result=(results[0] if outputs_class is None else f"{outputs_class}({', '.join(results)})"),
        return_type="torch.Tensor" if outputs_class is None else outputs_class,
        outputs_class=outputs_class,
        output_fields=fields,
        param_groups=_param_groups(body.learnable),
        preprocess=_preprocess_parts(preprocess) if preprocess is not None else None,
    )
    return Emitted(parts, body.attrs, local)


# Why forward() starts by laying out its 4-D inputs channels-last (NHWC). torch keeps that
# layout from layer to layer (convolutions, pooling and elementwise ops write their outputs in the
# layout of their input), and its CPU kernels for pooling (10x), depthwise convolution (1.5x) and
# per-channel arithmetic (3x) are much faster in it; values and shapes do not change. The 4-D
# outputs are made contiguous again (a no-op where they already are), as a caller expects.
CHANNELS_LAST_NOTE = "channels-last memory: the same values, faster CPU kernels"


def channels_last_lines(graph: Graph, local: Mapping[Value, str]) -> list[Line]:
    """forward()'s first lines: each 4-D input, laid out channels-last."""
    return [
        Line(
            f"{local[v]} = {local[v]}.contiguous(memory_format=torch.channels_last)",
            CHANNELS_LAST_NOTE,
        )
        for v in graph.inputs
        if len(v.shape) == 4
    ]


# Names a NamedTuple field may not take: tuple's own methods (a field would hide them).
_TUPLE_ATTRS = frozenset({"count", "index"})


def _outputs_tuple(graph: Graph, class_name: str) -> tuple[str, list[OutputField]]:
    """The NamedTuple class a module with several outputs returns: one field per output, in
    the module's output order, named after its Caffe blob (sanitised; NamedTuple fields may
    not start with "_", so such a name gets an "out" prefix, and tuple's own `count` and
    `index` get a "_" suffix, as Python's names do)."""
    taken = helper_names() | {class_name}
    tuple_name = class_name + "Outputs"
    while tuple_name in taken:
        tuple_name += "_"
    names = Namespace()
    fields = []
    for index, value in enumerate(graph.outputs):
        wanted = sanitize(value.blob)
        if wanted.startswith("_"):
            wanted = "out" + wanted
        if wanted in _TUPLE_ATTRS:
            wanted += "_"
        field_name = names.name(index, wanted)
        comment = comment_text(value.blob) if field_name != value.blob else ""
        fields.append(OutputField(field_name, comment))
    return tuple_name, fields


@dataclass(frozen=True)
class _Learnable:
    """One learnable Caffe blob as the module holds it: `self.<expr>`, and its ParamSpec."""

    expr: str
    spec: ParamSpec


def _param_groups(learnable: list[_Learnable]) -> list[str]:
    """caffe_param_groups' dicts: the blobs in Caffe's order of learnable parameters
    (Net::AppendParam: layer by layer, blob by blob, a shared one where it first appears),
    without those with lr_mult 0, one dict per run with the same multipliers."""
    runs: list[tuple[ParamSpec, list[str]]] = []
    for blob in learnable:
        if blob.spec.lr_mult == 0:
            continue
        key = ParamSpec(blob.spec.lr_mult, blob.spec.decay_mult)
        if runs and runs[-1][0] == key:
            runs[-1][1].append(blob.expr)
        else:
            runs.append((key, [blob.expr]))
    return [
        f'{{"params": [{", ".join(exprs)}], "lr_mult": {key.lr_mult!r}, '
        f'"decay_mult": {key.decay_mult!r}}}'
        for key, exprs in runs
    ]


def _preprocess_parts(spec: Preprocess) -> PreprocessParts:
    """preprocess(image): one call of the blob_from_image helper, and a docstring that says
    which cv2.dnn.blobFromImage call it equals and where its arguments came from."""
    kind = "gray or BGR:" if spec.gray else "BGR as cv2.imread reads it:"
    same = call(
        "cv2.dnn.blobFromImage",
        "image",
        repr(spec.scale),
        tuple_expr(spec.size),
        tuple_expr(spec.mean),
        swapRB=spec.swap_rb,
        crop=spec.crop,
    )
    units = ["Input", doc_text(spec.input), fmt_shape(spec.shape), "from", "an", "H", "x", "W"]
    units += ["x", "C", "(or", "H", "x", "W)", "uint8", "or", "float", "image,", *kind.split()]
    units += ["what", *same.split(" "), "makes", "of", "it."]
    if spec.gray:
        gray = "(A BGR image is made gray first, as cv2.cvtColor does.)"
        units += gray.split(" ")
    origin = []
    if spec.transform_layer is not None:
        name, line = spec.transform_layer
        origin.append(f"the transform_param of layer {doc_text(name)} (line {line})")
    if spec.options:
        origin.append("convert's options")
    sources = ["Arguments", "from", *" and from ".join(origin).split(" ")]
    if spec.mean_file is not None:
        sources[-1] += ";"
        sources += ["mean:", "the", "per-channel", "average", "of", doc_text(spec.mean_file)]
    sources[-1] += "."
    doc = [*wrap_units(units, LINE_LENGTH - 4), "", *wrap_units(sources, LINE_LENGTH - 4)]
    expression = call(
        "blob_from_image",
        "image",
        size=spec.size,
        scale=spec.scale,
        mean=spec.mean,
        swap_rb=spec.swap_rb,
        crop=spec.crop,
        gray=spec.gray,
    )
    return PreprocessParts(doc, expression)


@dataclass
class _Body:
    """The class body's lines and what they need."""

    init: list[Line] = field(default_factory=list)
    forward: list[Line] = field(default_factory=list)
    helpers: list[str] = field(default_factory=list)  # in order of first use
    imports: set[str] = field(default_factory=set)  # declared by emitters and helpers
    attrs: dict[int, str] = field(default_factory=dict)  # node position -> module attribute
    learnable: list[_Learnable] = field(default_factory=list)  # Caffe's order
    # Each shared parameter's first holder (`param { name }` -> self.<expr>, layer name).
    shared: dict[str, tuple[str, str]] = field(default_factory=dict)


def _emit_body(graph: Graph, local: Mapping[Value, str]) -> _Body:
    """One `forward` line per node (and an `__init__` line for a node with a module), each
    with its trace comment."""
    attrs_ns = Namespace()
    body = _Body()
    overwritable = _overwritable(graph)
    for index, node in enumerate(graph.nodes):
        # Keyed by the node itself: two layers may share a name (Caffe allows it).
        attr = attrs_ns.name(("node", index), node.name)
        ctx = EmitContext(
            attr=attr,
            inputs=tuple(local[v] for v in node.inputs),
            in_shapes=tuple(v.shape for v in node.inputs),
            out_shapes=tuple(v.shape for v in node.outputs),
            overwritable=bool(node.inputs) and node.inputs[0] in overwritable,
        )
        emission = layer_of(node).emit(node.attrs, ctx)
        for helper in emission.helpers:
            if helper not in body.helpers:
                body.helpers.append(helper)
                body.imports.update(helper_imports(helper))
        body.imports.update(checked_import(statement, node) for statement in emission.imports)
        trace = trace_text(node)
        if emission.init is not None:
            body.attrs[index] = attr
            comment = trace if attr != node.name else ""
            body.init.append(Line(f"self.{attr} = {emission.init}", comment))
            _training_lines(node, attr, body)
        body.forward.append(_forward_line(node, emission, local, trace))
    return body


def _attribute_path(key: str) -> str:
    """The Python path of a state_dict key under a module: `.transitions[0].weight` for
    `transitions.0.weight` (a key through an nn.ModuleList)."""
    return "".join(f"[{part}]" if part.isdigit() else f".{part}" for part in key.split("."))


def _overwritable(graph: Graph) -> set[Value]:
    """The values a line may overwrite, in eval() and train() alike: read by one line only,
    no input or output of the module, and made by a layer whose line gives a new tensor
    that its backward does not read (`Layer.fresh_output`). Computing in place into them
    (a ReLU after a Convolution, BatchNorm or Scale) saves an allocation and a pass over
    memory; every earlier version that verify compares is copied when its line runs."""
    readers: dict[Value, int] = {}
    for node in graph.nodes:
        for value in node.inputs:
            readers[value] = readers.get(value, 0) + 1
    kept = set(graph.inputs) | set(graph.outputs)
    found: set[Value] = set()
    for node in graph.nodes:
        if not layer_of(node).fresh_output(node.attrs, [v.shape for v in node.inputs]):
            continue
        found.update(v for v in node.outputs if readers.get(v, 0) == 1 and v not in kept)
    return found


def _training_lines(node: Node, attr: str, body: _Body) -> None:
    """After a node's module: a line per blob it shares with an earlier layer (`param { name
    }`: one parameter, used by both), and `requires_grad_(False)` for blobs with lr_mult 0
    (the whole module's when all of its own are); the learnable blobs in Caffe's order."""
    kind = layer_of(node)
    originals = node.fused or (node,)
    keys = kind.learnable(node.attrs, [v.shape for v in node.inputs])
    specs = originals[0].param_specs
    frozen: list[str] = []
    own: list[str] = []
    for index, key in enumerate(keys):
        if key is None:
            continue
        spec = specs[index] if index < len(specs) else ParamSpec()
        expr = f"{attr}{_attribute_path(key)}"
        if spec.share and spec.share in body.shared:
            owner, owner_layer = body.shared[spec.share]
            body.init.append(
                Line(
                    f"self.{expr} = self.{owner}",
                    f"Caffe: param {comment_text(spec.share)} is shared with "
                    f"{comment_text(owner_layer)}",
                )
            )
            continue
        if spec.share:
            body.shared[spec.share] = (expr, node.name)
        body.learnable.append(_Learnable(f"self.{expr}", spec))
        own.append(expr)
        if spec.lr_mult == 0:
            frozen.append(expr)
    if frozen and frozen == own and len(own) == len([k for k in keys if k is not None]):
        body.init.append(Line(f"self.{attr}.requires_grad_(False)", "lr_mult 0"))
        return
    for expr in frozen:
        body.init.append(Line(f"self.{expr}.requires_grad_(False)", "lr_mult 0"))


def _forward_line(node: Node, emission: Emission, local: Mapping[Value, str], trace: str) -> Line:
    targets = ", ".join(local[v] for v in node.outputs)
    if emission.comment is not None:
        return Line(f"{targets} = {emission.forward}", emission.comment)
    comment = trace
    shapes = [v.shape for v in node.outputs]
    if not node.inputs or shapes != [node.inputs[0].shape] * len(shapes):
        comment += " -> " + ", ".join(fmt_shape(s) for s in shapes)
    if emission.note:
        comment += f": {emission.note}"
    return Line(f"{targets} = {emission.forward}", comment)


# Every generated module imports these; `F` comes in when an emitter or helper declares it.
TORCH_IMPORTS = ("import torch", "from torch import nn")


def module_imports(declared: Iterable[str]) -> list[str]:
    """The module's import lines in isort's order, so that `ruff check` accepts the file: the
    standard library's (`typing`), a blank line, then the others (torch's); within each group
    plain imports before from-imports, by module. Every module imports torch and nn."""
    wanted = set(declared) | set(TORCH_IMPORTS)
    standard = sorted((s for s in wanted if _is_standard(s)), key=_import_order)
    others = sorted((s for s in wanted if not _is_standard(s)), key=_import_order)
    return [*standard, *([""] if standard else []), *others]


def _imported_module(statement: str) -> str:
    """`a.b` of `import a.b as c` or `from a.b import c` (statements are normalised)."""
    return statement.split()[1]


def _is_standard(statement: str) -> bool:
    return _imported_module(statement).split(".")[0] in sys.stdlib_module_names


def _import_order(statement: str) -> tuple[bool, str, str]:
    return statement.startswith("from "), _imported_module(statement), statement


def _module_docstring(graph: Graph, regenerate: str | None, source_name: str | None) -> list[str]:
    name = graph.name or "net"
    regenerate_lines = (
        # The command stays one unit, so that it can be copied from one line.
        [
            "",
            *wrap_units(
                [*["Regenerate", "in", "this", "file's", "folder", "with:"], doc_text(regenerate)],
                LINE_LENGTH,
            ),
        ]
        if regenerate is not None
        else []
    )
    return [
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


def _class_docstring(graph: Graph) -> list[str]:
    name = graph.name or "net"
    inputs = [f"{doc_text(v.blob)} {fmt_shape(v.shape)}," for v in graph.inputs]
    outputs = [f"{doc_text(graph.output_name(i))}," for i in range(len(graph.outputs))]
    return wrap_units(
        ["Caffe", "net", f"{doc_text(name)}:", "inputs"]
        + [*inputs[:-1], inputs[-1][:-1] + ";", "outputs"]
        + [*outputs[:-1], outputs[-1][:-1], "(Caffe's", "order)."],
        LINE_LENGTH - 4 - len('"""'),
    )
