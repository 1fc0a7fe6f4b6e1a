"""Lower a `NetDef` to the graph IR: typed attributes, SSA values and inferred shapes.

The walk follows the file's layer order, which Caffe requires to be a dataflow order. Each top
defines a new Value; an in-place top (a name that is also a bottom) defines the next version of
that blob, so earlier readers keep the version they saw. Errors found on the way (missing
bottoms, tops defined twice, shape mismatches) carry the layer's location.
"""

from __future__ import annotations

import difflib
from collections import Counter
from collections.abc import Iterable, Mapping

from protocaffe.errors import Diagnostic, ProtocaffeError, Reporter, SourceLoc
from protocaffe.frontend.prototxt import LayerDef, NetDef
from protocaffe.ir.graph import Graph, Node, Shape, Value
from protocaffe.layers import Layer, lookup
from protocaffe.layers.structure import InputAttrs

PLUGIN_DOCS = "see 'Custom layers' in the protocaffe README"

# Layers that only matter for training or for feeding data: left out of a deploy graph.
TRAINING_ONLY = frozenset(
    {
        "Accuracy",
        "AnnotatedData",
        "ContrastiveLoss",
        "Data",
        "DummyData",
        "EuclideanLoss",
        "HDF5Data",
        "HDF5Output",
        "HingeLoss",
        "ImageData",
        "ImageSegData",
        "InfogainLoss",
        "MatWrite",  # DeepLab's test nets write their outputs to .mat files
        "MemoryData",
        "MultiBoxLoss",
        "MultinomialLogisticLoss",
        "SigmoidCrossEntropyLoss",
        "SmoothL1Loss",
        "SoftmaxWithLoss",
        "WindowData",
    }
)


def _check_types(net: NetDef) -> None:
    """One error that lists every layer whose type protocaffe does not know."""
    unknown = [
        Diagnostic(
            layer.loc,
            f"unknown layer type '{layer.type}'"
            + (" (Python layers run arbitrary code)" if layer.type == "Python" else "")
            + f"; {PLUGIN_DOCS} to add it",
            layer.name,
            layer.type,
        )
        for layer in net.layers
        if lookup(layer.type) is None and layer.type not in TRAINING_ONLY
    ]
    if unknown:
        raise ProtocaffeError(unknown)


def _check_arity(layer: LayerDef, kind: Layer) -> None:
    bounds = {"bottom": kind.bottoms, "top": kind.tops}
    for what, count in (("bottom", len(layer.bottoms)), ("top", len(layer.tops))):
        low, high = bounds[what]
        if count < low or (high is not None and count > high):
            expected = (
                f"{low}" if low == high else f"{low} to {high if high is not None else 'any'}"
            )
            raise ProtocaffeError.at(
                layer.loc, f"has {count} {what}s, expects {expected}", layer.name, layer.type
            )


def build_graph(
    net: NetDef, reporter: Reporter, input_shapes: Mapping[str, Shape] | None = None
) -> Graph:
    """Lower `net`; `input_shapes` overrides declared input shapes (and may name the tops of
    training-only data layers, which then become inputs)."""
    _check_types(net)
    overrides = dict(input_shapes or {})
    env: dict[str, Value] = {}
    producer: dict[str, LayerDef] = {}
    consumed: set[Value] = set()
    silenced: set[Value] = set()  # read by Silence layers only (unless also in `consumed`)
    inputs: list[Value] = []
    nodes: list[Node] = []
    dropped: dict[str, LayerDef] = {}
    weighted: dict[str, LayerDef] = {}
    later_tops = _later_producers(net)

    def define_input(name: str, shape: Shape, loc: SourceLoc, layer: LayerDef | None) -> None:
        shape = tuple(overrides.pop(name, shape))
        if not shape or any(d <= 0 for d in shape):
            raise ProtocaffeError.at(
                loc,
                f'input "{name}" has a non-positive dimension: {shape}',
                layer.name if layer else None,
                layer.type if layer else None,
            )
        if name in env:
            raise ProtocaffeError.at(loc, f'input "{name}" is declared twice')
        value = Value(name, 0, shape)
        env[name] = value
        inputs.append(value)

    for decl in net.inputs:
        define_input(decl.name, decl.shape, decl.loc, None)

    for index, layer in enumerate(net.layers):
        if layer.type in TRAINING_ONLY:
            fed = [t for t in layer.tops if t in overrides]
            for top in fed:
                define_input(top, overrides[top], layer.loc, layer)
            for top in layer.tops:
                if top not in fed:
                    dropped[top] = layer
            reporter.note(layer.loc, "training-only layer; left out", layer.name, layer.type)
            continue
        if layer.type == "Silence" and all(b in dropped and b not in env for b in layer.bottoms):
            # DeepLab's test nets silence the label tops of their data layer.
            reporter.note(
                layer.loc, "silences only training-only blobs; left out", layer.name, layer.type
            )
            continue
        kind = lookup(layer.type)
        assert kind is not None
        _check_arity(layer, kind)
        attrs = kind.parse(layer)
        if isinstance(attrs, InputAttrs):
            for top, shape in zip(layer.tops, attrs.shapes, strict=True):
                define_input(top, shape, layer.loc, layer)
            continue
        bottoms: list[Value] = []
        for bottom in layer.bottoms:
            if bottom in env:
                bottoms.append(env[bottom])
                continue
            raise ProtocaffeError.at(
                layer.loc,
                _missing_bottom(bottom, index, dropped, later_tops, env),
                layer.name,
                layer.type,
            )
        repeated = sorted(top for top, count in Counter(layer.tops).items() if count > 1)
        if repeated:
            raise ProtocaffeError.at(
                layer.loc, f"top '{repeated[0]}' is listed more than once", layer.name, layer.type
            )
        out_shapes = kind.infer(attrs, [v.shape for v in bottoms], layer)
        for top, shape in zip(layer.tops, out_shapes, strict=True):
            if any(d <= 0 for d in shape):
                raise ProtocaffeError.at(
                    layer.loc,
                    f"top '{top}' would have shape {tuple(shape)}: every dimension must be "
                    "positive",
                    layer.name,
                    layer.type,
                )
        outputs: list[Value] = []
        for top, shape in zip(layer.tops, out_shapes, strict=True):
            if top in env and top not in layer.bottoms:
                first = producer.get(top)
                where = (
                    f' by layer "{first.name}" at {first.loc.line_text}'
                    if first
                    else " as an input"
                )
                raise ProtocaffeError.at(
                    layer.loc,
                    f"top '{top}' is already produced{where}; only an in-place layer (top == "
                    "bottom) may write a blob again",
                    layer.name,
                    layer.type,
                )
            version = env[top].version + 1 if top in env else 0
            value = Value(top, version, tuple(shape))
            outputs.append(value)
        if layer.type == "Silence":
            silenced.update(bottoms)
        else:
            consumed.update(bottoms)
        for value in outputs:
            env[value.blob] = value
            producer[value.blob] = layer
        params = kind.param_names(attrs, [v.shape for v in bottoms])
        if params:
            # Caffe finds a layer's weights by its name, so a name with weights must be unique.
            first = weighted.setdefault(layer.name, layer)
            if first is not layer:
                raise ProtocaffeError.at(
                    layer.loc,
                    f'layer "{first.name}" at {first.loc} has the same name; layers with weights '
                    "need unique names (the caffemodel matches weights by name)",
                    layer.name,
                    layer.type,
                )
        nodes.append(
            Node(layer.type, layer.name, tuple(bottoms), tuple(outputs), attrs, layer.loc, params)
        )

    if overrides:
        names = ", ".join(sorted(overrides))
        known = ", ".join(v.blob for v in inputs) or "none"
        raise ProtocaffeError.at(
            SourceLoc(net.path),
            f"--input-shape names {names}, which is not an input (inputs: {known})",
        )
    if not inputs:
        raise ProtocaffeError.at(SourceLoc(net.path), "the net declares no input")
    # Caffe's outputs: blobs whose last version no layer reads, in name order (Net::Init keeps
    # them in a std::set).
    outputs = sorted(
        (v for v in env.values() if v not in consumed and v not in silenced), key=lambda v: v.blob
    )
    if not outputs:
        # Caffe would run such a net and report nothing (colorization's deploy net silences its
        # only result); a module must return something, so it returns what was silenced.
        outputs = sorted(
            (v for v in env.values() if v in silenced - consumed), key=lambda v: v.blob
        )
        if outputs:
            names = ", ".join(v.blob for v in outputs)
            reporter.note(
                SourceLoc(net.path),
                f"every blob is consumed (Silence reads {names}); the module returns the "
                "silenced blobs",
            )
    if not outputs:
        raise ProtocaffeError.at(SourceLoc(net.path), "the net has no output")
    return Graph(net.name, net.path, tuple(inputs), tuple(nodes), tuple(outputs))


def _later_producers(net: NetDef) -> dict[str, list[tuple[int, LayerDef]]]:
    found: dict[str, list[tuple[int, LayerDef]]] = {}
    for index, layer in enumerate(net.layers):
        for top in layer.tops:
            found.setdefault(top, []).append((index, layer))
    return found


def _missing_bottom(
    bottom: str,
    index: int,
    dropped: Mapping[str, LayerDef],
    later: Mapping[str, list[tuple[int, LayerDef]]],
    known: Iterable[str],
) -> str:
    if bottom in dropped:
        source = dropped[bottom]
        origin = f'training-only layer "{source.name}" ({source.type}) at {source.loc.line_text}'
        if source.type.endswith("Data"):
            return (
                f"bottom '{bottom}' comes from {origin}; give its shape with --input-shape "
                f"{bottom}=N,C,H,W to make it an input"
            )
        # A loss or an accuracy has no value at deploy time: nothing can stand in for it.
        return (
            f"bottom '{bottom}' is the output of {origin}, which a deploy net leaves out; "
            "remove the layers that use it"
        )
    for later_index, layer in later.get(bottom, []):
        if later_index >= index:
            return (
                f"bottom '{bottom}' is only produced later, by layer \"{layer.name}\" at "
                f"{layer.loc.line_text}; layers must come in dataflow order, and a cycle cannot run"
            )
    message = f"bottom '{bottom}' is not produced by any layer or input before it"
    close = difflib.get_close_matches(bottom, sorted(known), n=1)
    return message + (f" (did you mean '{close[0]}'?)" if close else "")
