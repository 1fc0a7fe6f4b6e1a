"""Lower a `NetDef` to the graph IR: typed attributes, SSA values and inferred shapes.

The walk follows the file's layer order, which Caffe requires to be a dataflow order. Each top
defines a new Value; an in-place top (a top named like the bottom at its position) defines the
next version of that blob, so earlier readers keep the version they saw. Errors found on the way
(missing bottoms, tops defined twice, in-place layers Caffe refuses, shape mismatches) carry
the layer's location.

Caffe's shared memory is tracked as memory classes of blob names: a layer whose tops share its
bottom's memory (`Layer.shares_memory`) puts them in the bottom's class. When an in-place layer
writes a blob, every other blob of its class holds the written values too; before such a blob
is read again (or returned), a `SharedMemory` node defines its next version from the written
one, so later readers see what Caffe's readers see (docs/shared-memory.md).

The steps, in order: check that every type is known (`_check_types`); declare the inputs;
lower each layer (`_Lowering.layer`: leave out training-only layers, parse, resolve bottoms,
check in-place use, infer and check output shapes, define the outputs, read its `param`
specs, follow shared memory); then settle the multipliers of shared parameters (`_Params`,
Caffe's Net::AppendParam) and find the net's outputs (`finish`).

A train_val net lowers too: its data layers are left out and their tops become the module's
inputs where a kept layer reads them (shaped by `--input-shape`, or by the layer's own shape
fields: MemoryData, DummyData); loss, accuracy and output-writing layers are left out, each with
a note, so the blobs a loss reads become outputs.
"""

from __future__ import annotations

import difflib
import math
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from protocaffe.errors import Diagnostic, ProtocaffeError, Reporter, SourceLoc, did_you_mean
from protocaffe.frontend.dialects import apply_dialects
from protocaffe.frontend.prototxt import LayerDef, NetDef
from protocaffe.ir.graph import Attrs, Graph, Node, ParamSpec, Shape, SharedParam, Value
from protocaffe.layers import Layer, lookup
from protocaffe.layers.base import Role
from protocaffe.layers.registry import registered_types
from protocaffe.layers.structure import SHARED_MEMORY, SharedMemoryAttrs

PLUGIN_DOCS = "see 'Custom layers' in the protocaffe README"

# Layers that feed data: their tops become the module's inputs where a kept layer reads them.
DATA_LAYERS = frozenset(
    {
        "AnnotatedData",
        "Data",
        "DenseImageData",  # SegNet's image + label map reader
        "HDF5Data",
        "ImageData",
        "ImageLabelmapData",  # HED's image + edge map reader
        "ImageSegData",
        "VideoData",  # C3D
        "VideoSegmentationData",  # C3D (V1)
        "VideoWithVoxelTruthData",  # C3D (V1)
        "VolumeData",  # C3D (V1)
        "WindowData",
        "WindowSegData",  # DeconvNet (V1)
    }
)
# Layers that compute a training objective: the blobs they read stay, as outputs.
LOSS_LAYERS = frozenset(
    {
        "ContrastiveLoss",
        "EuclideanLoss",
        "HingeLoss",
        "InfogainLoss",
        "MultiBoxLoss",
        "MultinomialLogisticLoss",
        "RedSoftmaxLoss",  # DeconvNet (V1)
        "SigmoidCrossEntropyLoss",
        "SmoothL1Loss",
        "SoftmaxWithLoss",
        "VoxelSoftmaxLoss",  # C3D (V1)
    }
)
# Layers that only measure or save results.
METRIC_LAYERS = frozenset(
    {
        "Accuracy",
        "BinAccuracy",  # DeconvNet (V1)
        "DetectionEvaluate",  # SSD's mAP statistics (reads the ground-truth label)
        "EltwiseAccuracy",  # DeconvNet (V1)
        "HDF5Output",
        "MatWrite",  # DeepLab's test nets write their outputs to .mat files
        "RedAccuracy",  # DeconvNet (V1)
        "SegAccuracy",  # DeepLab v1 (V1)
    }
)
# Everything a converted module leaves out.
TRAINING_ONLY = DATA_LAYERS | LOSS_LAYERS | METRIC_LAYERS

_LEFT_OUT = {
    **dict.fromkeys(
        DATA_LAYERS, "left out: a data layer; its tops that layers read are inputs of the module"
    ),
    **dict.fromkeys(
        LOSS_LAYERS,
        "left out: a loss; the blobs it reads are outputs of the module (--outputs chooses "
        "them): compute the loss on them in the training loop",
    ),
    **dict.fromkeys(METRIC_LAYERS, "left out: a metric, not part of the model"),
    "HDF5Output": "left out: it writes blobs to a file",
    "MatWrite": "left out: it writes blobs to a file",
}


def build_graph(
    net: NetDef,
    reporter: Reporter,
    input_shapes: Mapping[str, Shape] | None = None,
    dialects: Collection[str] = (),
) -> Graph:
    """Lower `net`; `input_shapes` overrides declared input shapes (and may name the tops of
    training-only data layers, which then become inputs); `dialects` names the fork dialects
    to read it in (frontend/dialects.py)."""
    _check_types(net)
    net = apply_dialects(net, dialects, reporter)
    lowering = _Lowering(net, reporter, input_shapes or {})
    for decl in net.inputs:
        lowering.define_input(decl.name, decl.shape, decl.loc, None)
    for index, layer in enumerate(net.layers):
        lowering.layer(index, layer)
    _note_repeated_names(net, reporter)
    return lowering.finish()


def _note_repeated_names(net: NetDef, reporter: Reporter) -> None:
    """One note when layers share a name (Caffe allows it; HED has five Crop layers called
    `crop`): tools tell such layers apart by their position, and the module's names get a
    suffix."""
    places: dict[str, list[LayerDef]] = {}
    for layer in net.layers:
        places.setdefault(layer.name, []).append(layer)
    repeated = [layers for layers in places.values() if len(layers) > 1]
    if not repeated:
        return
    first = repeated[0]
    lines = ", ".join(str(layer.loc.line) for layer in first)
    more = len(repeated) - 1
    others = f"; {more} more name{'s are' if more > 1 else ' is'} reused" if more else ""
    reporter.note(
        first[1].loc,
        f"the prototxt reuses layer name {first[0].name!r} ({len(first)} layers, lines "
        f"{lines}){others}; Caffe allows it: these layers are told apart by position, and the "
        "module's variables get _2, _3, ...",
    )


def _check_types(net: NetDef) -> None:
    """One error that lists every layer whose type protocaffe does not know."""
    missing = [
        layer
        for layer in net.layers
        if lookup(layer.type) is None and layer.type not in TRAINING_ONLY
    ]
    # SharedMemory is protocaffe's own node, never a type to suggest.
    types = [t for t in registered_types() if t != SHARED_MEMORY]
    known = [*types, *TRAINING_ONLY] if missing else []
    unknown = [
        Diagnostic(
            layer.loc,
            f"unknown layer type '{layer.type}'"
            + (did_you_mean(layer.type, known) if layer.type != "Python" else "")
            + (" (Python layers run arbitrary code)" if layer.type == "Python" else "")
            + f"; {PLUGIN_DOCS} to add it",
            layer.name,
            layer.type,
        )
        for layer in missing
    ]
    if unknown:
        raise ProtocaffeError(unknown)


def _check_arity(layer: LayerDef, kind: Layer[Any]) -> None:
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


class _Lowering:
    """The state of one lowering: which Value each blob name holds now, and what was made."""

    def __init__(self, net: NetDef, reporter: Reporter, input_shapes: Mapping[str, Shape]):
        self.net = net
        self.reporter = reporter
        self.overrides = dict(input_shapes)
        self.named = frozenset(input_shapes)  # inputs --input-shape names stay inputs
        self.env: dict[str, Value] = {}
        self.producer: dict[str, LayerDef] = {}
        self.consumed: set[Value] = set()
        self.silenced: set[Value] = set()  # read by Silence layers only (unless also consumed)
        self.inputs: list[Value] = []
        self.fed: set[Value] = set()  # inputs made of data layers' tops: kept only if read
        self.nodes: list[Node] = []
        self.params = _Params()
        self.dropped: dict[str, LayerDef] = {}  # tops of training-only layers
        self.weighted: dict[str, LayerDef] = {}  # layers with weights, by name
        self.later_tops = _later_producers(net)
        self.read = _read_blobs(net)
        # Caffe's view of blob names: the layers that read each blob since a layer last wrote
        # it (an in-place write after such a read aborts Caffe), and which blobs share memory.
        self.readers: dict[str, list[LayerDef]] = {}
        self.memory: dict[str, int] = {}
        # blob -> (the value last written in place into its memory through another blob, the
        # layer that wrote it): the blob must be re-bound to it before its next use.
        self.stale: dict[str, tuple[Value, LayerDef]] = {}
        # Values that hold prior boxes without a positive width or height, and why.
        self.degenerate: dict[Value, str] = {}

    def define_input(
        self, name: str, shape: Shape, loc: SourceLoc, layer: LayerDef | None, fed: bool = False
    ) -> None:
        """Declare input `name`; a `fed` one (a data layer's top) stays an input only if a
        layer reads it or --input-shape names it."""
        shape = tuple(self.overrides.pop(name, shape))
        if not shape or any(d <= 0 for d in shape):
            raise ProtocaffeError.at(
                loc,
                f'input "{name}" has a non-positive dimension: {shape}',
                layer.name if layer else None,
                layer.type if layer else None,
            )
        if name in self.env:
            raise ProtocaffeError.at(loc, f'input "{name}" is declared twice')
        value = Value(name, 0, shape)
        self.env[name] = value
        self.inputs.append(value)
        self.readers[name] = []
        self.memory[name] = len(self.memory)
        if fed:
            self.fed.add(value)

    def layer(self, index: int, layer: LayerDef) -> None:
        if self._left_out(layer):
            return
        kind = lookup(layer.type)
        assert kind is not None  # _check_types found every type
        _check_arity(layer, kind)
        attrs = kind.parse(layer)
        declared = kind.declared_inputs(attrs)
        if declared is not None:
            for top, shape in zip(layer.tops, declared, strict=True):
                if kind.data_source and top not in self.read and top not in self.overrides:
                    self.dropped[top] = layer
                    self.reporter.note(
                        layer.loc,
                        f"top '{top}' is read by no layer; left out",
                        layer.name,
                        layer.type,
                    )
                    continue
                self.define_input(top, shape, layer.loc, layer)
            return
        bottoms = self._bottoms(index, layer)
        out_shapes = self._out_shapes(layer, kind, attrs, bottoms)
        self._check_in_place(layer, kind, attrs, bottoms, out_shapes)
        outputs = self._outputs(layer, out_shapes)
        self._follow_degenerate_boxes(layer, kind, attrs, bottoms, outputs)
        if kind.silences:
            self.silenced.update(bottoms)
        else:
            self.consumed.update(bottoms)
        for bottom in layer.bottoms:
            self.readers[bottom].append(layer)
        for value in outputs:
            self.env[value.blob] = value
            self.producer[value.blob] = layer
            self.readers[value.blob] = []
        in_shapes = [v.shape for v in bottoms]
        params = kind.param_names(attrs, in_shapes)
        if params:
            self._check_weighted_name(layer, len(params))
        self.params.read(len(self.nodes), layer, kind, attrs, in_shapes, self.reporter)
        self.nodes.append(
            Node(layer.type, layer.name, tuple(bottoms), tuple(outputs), attrs, layer.loc, params)
        )
        self._follow_memory(layer, kind, attrs, bottoms, outputs)

    def _left_out(self, layer: LayerDef) -> bool:
        """Training-only layers (whose tops may be fed as inputs instead) and a Silence that
        reads only their tops are left out, with a note."""
        if layer.type in TRAINING_ONLY:
            # (DummyData and MemoryData declare their shapes: layers/sources.py makes their
            # tops inputs.)
            for top in layer.tops:
                if top in self.overrides:
                    self.define_input(top, (), layer.loc, layer, fed=True)
                else:
                    self.dropped[top] = layer
            # (A transform_param becomes preprocess(): backend/preprocess.py says so itself.)
            self.reporter.note(layer.loc, _LEFT_OUT[layer.type], layer.name, layer.type)
            return True
        kind = lookup(layer.type)
        if kind is not None and kind.evaluates(layer):
            for top in layer.tops:
                self.dropped[top] = layer
            self.reporter.note(
                layer.loc,
                "evaluation-only layer (it reads labels); left out",
                layer.name,
                layer.type,
            )
            return True
        silences = kind is not None and kind.silences
        if silences and all(b in self.dropped and b not in self.env for b in layer.bottoms):
            # DeepLab's test nets silence the label tops of their data layer.
            self.reporter.note(
                layer.loc, "silences only training-only blobs; left out", layer.name, layer.type
            )
            return True
        return False

    def _bottoms(self, index: int, layer: LayerDef) -> list[Value]:
        bottoms: list[Value] = []
        for bottom in layer.bottoms:
            if bottom in self.env:
                if bottom in self.stale:
                    self._rebind(bottom)
                bottoms.append(self.env[bottom])
                continue
            raise ProtocaffeError.at(
                layer.loc,
                _missing_bottom(bottom, index, self.dropped, self.later_tops, self.env),
                layer.name,
                layer.type,
            )
        return bottoms

    def _out_shapes(
        self, layer: LayerDef, kind: Layer[Any], attrs: Attrs, bottoms: Sequence[Value]
    ) -> list[Shape]:
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
        return out_shapes

    def _outputs(self, layer: LayerDef, out_shapes: Sequence[Shape]) -> list[Value]:
        """A new Value per top: version 0 for a new blob, the next version for an in-place top."""
        outputs: list[Value] = []
        for top, shape in zip(layer.tops, out_shapes, strict=True):
            if top in self.env and top not in layer.bottoms:
                first = self.producer.get(top)
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
            version = self.env[top].version + 1 if top in self.env else 0
            outputs.append(Value(top, version, tuple(shape)))
        return outputs

    def _check_in_place(
        self,
        layer: LayerDef,
        kind: Layer[Any],
        attrs: Attrs,
        bottoms: Sequence[Value],
        out_shapes: Sequence[Shape],
    ) -> None:
        """Caffe's rules for a top named like a bottom (net.cpp AppendTop, insert_splits.cpp,
        and the layers' own CHECKs), and protocaffe's refusal of layers that compute something
        else in place."""
        for position, top in enumerate(layer.tops):
            if top not in layer.bottoms:
                continue
            if position >= len(layer.bottoms) or layer.bottoms[position] != top:
                raise ProtocaffeError.at(
                    layer.loc,
                    f"Caffe aborts here: Top blob '{top}' produced by multiple sources (an "
                    "in-place top must be at the position of its bottom)",
                    layer.name,
                    layer.type,
                )
            earlier = self.readers.get(top, [])
            if earlier or layer.bottoms.count(top) > 1:
                reader = earlier[0] if earlier else layer
                raise ProtocaffeError.at(
                    layer.loc,
                    f"Caffe aborts here: Top blob '{top}' produced by multiple sources (layer "
                    f"\"{reader.name}\" at {reader.loc.line_text} reads '{top}' too, so Caffe "
                    "gives each reader a copy and this layer no longer writes in place)",
                    layer.name,
                    layer.type,
                )
            if kind.refuses_in_place:
                raise ProtocaffeError.at(
                    layer.loc,
                    f"Caffe aborts here: {layer.type} Layer does not allow in-place computation",
                    layer.name,
                    layer.type,
                )
            in_shapes = [v.shape for v in bottoms]
            if tuple(out_shapes[position]) != bottoms[position].shape or not (
                kind.computes_in_place(attrs, in_shapes)
            ):
                raise ProtocaffeError.at(
                    layer.loc,
                    f"runs in place on '{top}', where Caffe's {layer.type} overwrites its input "
                    "before it has read all of it (or reshapes it), so Caffe does not compute "
                    "the layer there; give the top its own name",
                    layer.name,
                    layer.type,
                )

    def _follow_degenerate_boxes(
        self,
        layer: LayerDef,
        kind: Layer[Any],
        attrs: Attrs,
        bottoms: Sequence[Value],
        outputs: Sequence[Value],
    ) -> None:
        """Caffe's box decoder aborts on a prior of width or height <= 0 (PriorBox with an
        aspect ratio <= 0, or a box outside the image that clipping squeezes to nothing):
        follow such priors through the layers that only move them."""
        position = kind.decodes_boxes(attrs)
        if (
            position is not None
            and position < len(bottoms)
            and bottoms[position] in self.degenerate
        ):
            raise ProtocaffeError.at(
                layer.loc,
                f"Caffe aborts here: Check failed: prior_width > 0 (DecodeBBox; the priors hold "
                f"{self.degenerate[bottoms[position]]})",
                layer.name,
                layer.type,
            )
        reason = kind.degenerate_boxes(attrs, [v.shape for v in bottoms])
        if reason is None:
            moves = (
                kind.identity
                or kind.role is Role.COMBINE
                or kind.shares_memory(attrs, [v.shape for v in bottoms], [v.shape for v in outputs])
            )
            reason = next((self.degenerate[v] for v in bottoms if v in self.degenerate), None)
            if not moves:
                reason = None
        if reason is not None:
            for value in outputs:
                self.degenerate[value] = reason

    def _follow_memory(
        self,
        layer: LayerDef,
        kind: Layer[Any],
        attrs: Attrs,
        bottoms: Sequence[Value],
        outputs: Sequence[Value],
    ) -> None:
        """Update the memory classes after `layer` ran (see the module docstring)."""
        in_shapes = [v.shape for v in bottoms]
        out_shapes = [v.shape for v in outputs]
        shares = bool(bottoms) and kind.shares_memory(attrs, in_shapes, out_shapes)
        for position, value in enumerate(outputs):
            top = value.blob
            in_place = position < len(layer.bottoms) and layer.bottoms[position] == top
            if not in_place:
                self.memory[top] = self.memory[bottoms[0].blob] if shares else len(self.memory)
                self.stale.pop(top, None)
                continue
            if shares or kind.identity:
                continue  # the values do not change
            target = self.memory[top]
            for other, where in self.memory.items():
                if other != top and where == target:
                    self.stale[other] = (value, layer)

    def _rebind(self, blob: str) -> None:
        """Define the next version of `blob` from the values last written into its memory."""
        written, writer = self.stale.pop(blob)
        previous = self.env[blob]
        value = Value(blob, previous.version + 1, previous.shape)
        attrs = SharedMemoryAttrs(blob, written.blob, writer.name)
        self.nodes.append(
            Node(SHARED_MEMORY, writer.name, (written, previous), (value,), attrs, writer.loc)
        )
        # The previous version is superseded (never an output); the written one is not read in
        # Caffe's sense, so it can still be an output.
        self.consumed.add(previous)
        self.env[blob] = value

    def _check_weighted_name(self, layer: LayerDef, blobs: int) -> None:
        # Caffe finds a layer's weights by its name (CopyTrainedLayersFrom copies them into the
        # first layer of that name), so a name with weights must be unique -- unless every blob
        # of the later layer is shared by `param { name }`: its blobs then share the memory of
        # an earlier holder's (Net::AppendParam) and take the values Caffe loads into that.
        first = self.weighted.setdefault(layer.name, layer)
        specs = list(layer.param.param)[:blobs]
        if first is not layer and not (len(specs) == blobs and all(s.name for s in specs)):
            raise ProtocaffeError.at(
                layer.loc,
                f'layer "{first.name}" at {first.loc} has the same name; layers with weights '
                "need unique names (the caffemodel matches weights by name)",
                layer.name,
                layer.type,
            )

    def finish(self) -> Graph:
        net = self.net
        if self.overrides:
            names = ", ".join(sorted(self.overrides))
            known = ", ".join(v.blob for v in self.inputs) or "none"
            raise ProtocaffeError.at(
                SourceLoc(net.path),
                f"--input-shape names {names}, which is not an input (inputs: {known})",
            )
        # A data layer's top that no kept layer reads (the label, once the loss is left out) is
        # neither an input nor an output of the module.
        unread = {
            v
            for v in self.fed
            if v not in self.consumed and v not in self.silenced and v.blob not in self.named
        }
        inputs = [v for v in self.inputs if v not in unread]
        if not inputs:
            raise ProtocaffeError.at(SourceLoc(net.path), "the net declares no input")
        for blob in sorted(self.stale):
            value = self.env[blob]
            if value not in self.consumed and value not in self.silenced:
                self._rebind(blob)  # an output: Caffe returns the memory's last values
        outputs = self._net_outputs(unread)
        specs = self.params.settled()
        nodes = [replace(n, param_specs=specs.get(i, ())) for i, n in enumerate(self.nodes)]
        return Graph(
            net.name,
            net.path,
            tuple(inputs),
            tuple(nodes),
            tuple(outputs),
            shared_params=self.params.holders(),
            output_names=tuple(v.blob for v in outputs),
        )

    def _net_outputs(self, unread: set[Value]) -> list[Value]:
        """Caffe's outputs: blobs whose last version no layer reads, in name order (Net::Init
        keeps them in a std::set)."""
        env, consumed = self.env, self.consumed
        silenced = self.silenced | unread
        outputs = sorted(
            (v for v in env.values() if v not in consumed and v not in silenced),
            key=lambda v: v.blob,
        )
        if not outputs:
            # Caffe would run such a net and report nothing (colorization's deploy net silences
            # its only result); a module must return something, so it returns what was silenced.
            outputs = sorted(
                (v for v in env.values() if v in silenced - consumed), key=lambda v: v.blob
            )
            if outputs:
                names = ", ".join(v.blob for v in outputs)
                self.reporter.note(
                    SourceLoc(self.net.path),
                    f"every blob is consumed (Silence reads {names}); the module returns the "
                    "silenced blobs",
                )
        if not outputs:
            raise ProtocaffeError.at(SourceLoc(self.net.path), "the net has no output")
        return outputs


@dataclass
class _SharedParam:
    """A `param { name }` as Net::AppendParam records it: the blob of the layer that named it
    first (the owner), and the multipliers the net settles on (None while none was given)."""

    owner: LayerDef
    index: int
    shape: Shape
    lr_mult: float | None
    decay_mult: float | None


@dataclass(frozen=True)
class _BlobSpec:
    share: str
    lr_mult: float | None  # None: not given (Caffe's default 1, or the shared blob's value)
    decay_mult: float | None


PERMISSIVE = 1  # ParamSpec.DimCheckMode


class _Params:
    """The layers' `param {}` specs, settled as Caffe's Net::Init and Net::AppendParam
    (net.cpp) settle them: the n-th spec applies to the n-th weight blob (1 and 1 when it is
    missing); more specs than blobs abort; a `name` seen before ties this blob to the first
    layer's (shapes must match; a multiplier given on both sides must agree, and one given by
    any layer of the tie applies to all)."""

    def __init__(self) -> None:
        self.shared: dict[str, _SharedParam] = {}
        self.blobs: dict[int, tuple[_BlobSpec, ...]] = {}  # by the node's index
        self.holding: dict[str, list[tuple[str, int]]] = {}  # share name -> (layer, blob index)
        # Names given to blobs the module keeps as buffers (BatchNorm's statistics): harmless
        # while one layer holds the name, a tie protocaffe cannot make once a second does.
        self.buffer_names: dict[str, LayerDef] = {}

    def read(
        self,
        node: int,
        layer: LayerDef,
        kind: Layer[Any],
        attrs: Attrs,
        in_shapes: Sequence[Shape],
        reporter: Reporter,
    ) -> None:
        blobs = kind.blobs(attrs, in_shapes)
        given = layer.param.param
        if len(given) > len(blobs):
            raise _error(
                layer,
                f"Caffe aborts here: Too many params specified for layer ({len(given)} param "
                f"specs, {len(blobs)} weight blob{'' if len(blobs) == 1 else 's'})",
            )
        learnable = kind.learnable(attrs, in_shapes)
        specs: list[_BlobSpec] = []
        for index, blob in enumerate(blobs):
            if index >= len(given):
                specs.append(_BlobSpec("", None, None))
                continue
            spec = given[index]
            lr = float(spec.lr_mult) if spec.HasField("lr_mult") else None
            decay = float(spec.decay_mult) if spec.HasField("decay_mult") else None
            if learnable[index] is None and lr not in (None, 0.0):
                reporter.note(
                    layer.loc,
                    f"param {index} has lr_mult {lr:g}, but blob {index} is not trained here "
                    "(BVLC Caffe refuses lr_mult on BatchNorm statistics; older Caffe let weight "
                    "decay shrink them): the module keeps it as a buffer",
                    layer.name,
                    layer.type,
                )
            share = spec.name
            if share:
                first = self.buffer_names.get(share)
                if learnable[index] is None or first is not None:
                    if first is not None or share in self.shared:
                        raise _error(
                            layer,
                            f"param {share!r} ties blob {index} to an earlier layer's, and one "
                            "of them is a blob the module keeps as a buffer; protocaffe ties "
                            "learnable parameters only",
                        )
                    self.buffer_names[share] = layer
                    share = ""  # one holder: nothing is tied
                else:
                    self._share(layer, spec, index, blob.shape, lr, decay)
                    self.holding.setdefault(share, []).append((layer.name, index))
            specs.append(_BlobSpec(share, lr, decay))
        if specs:
            self.blobs[node] = tuple(specs)

    def _share(
        self,
        layer: LayerDef,
        spec: Any,
        index: int,
        shape: Shape,
        lr: float | None,
        decay: float | None,
    ) -> None:
        name = spec.name
        first = self.shared.get(name)
        if first is None:
            self.shared[name] = _SharedParam(layer, index, shape, lr, decay)
            return
        where = f"Cannot share param {name!r} owned by layer {first.owner.name!r} with this layer"
        if spec.share_mode == PERMISSIVE:
            if math.prod(shape) != math.prod(first.shape):
                raise _error(
                    layer,
                    f"Caffe aborts here: {where}; count mismatch (owner {first.shape}, here "
                    f"{shape})",
                )
            if shape != first.shape:
                raise _error(
                    layer,
                    f"param {name!r} has shape {shape} here and {first.shape} in layer "
                    f"{first.owner.name!r} (share_mode PERMISSIVE); protocaffe ties parameters "
                    "of one shape only",
                )
        elif shape != first.shape:
            raise _error(
                layer,
                f"Caffe aborts here: {where}; shape mismatch (owner {first.shape}, here {shape})",
            )
        for field, value in (("lr_mult", lr), ("decay_mult", decay)):
            settled = getattr(first, field)
            if value is None:
                continue
            if settled is None:
                setattr(first, field, value)
            elif settled != value:
                raise _error(
                    layer,
                    f"Caffe aborts here: Shared param {name!r} has mismatched {field} "
                    f"({value:g} here, {settled:g} before)",
                )

    def holders(self) -> tuple[SharedParam, ...]:
        return tuple(SharedParam(name, tuple(found)) for name, found in self.holding.items())

    def settled(self) -> dict[int, tuple[ParamSpec, ...]]:
        """Each node's ParamSpecs (by its index) with the multipliers the net settled on."""

        def one(blob: _BlobSpec) -> ParamSpec:
            lr, decay = blob.lr_mult, blob.decay_mult
            if blob.share:
                shared = self.shared[blob.share]
                lr, decay = shared.lr_mult, shared.decay_mult
            return ParamSpec(1.0 if lr is None else lr, 1.0 if decay is None else decay, blob.share)

        return {name: tuple(one(blob) for blob in blobs) for name, blobs in self.blobs.items()}


def _error(layer: LayerDef, message: str) -> ProtocaffeError:
    return ProtocaffeError.at(layer.loc, message, layer.name, layer.type)


def _read_blobs(net: NetDef) -> set[str]:
    """The blobs that some layer reads and computes with: training-only layers and Silence
    do not count (a data layer's label that only a loss reads is no input of a deploy net)."""
    read: set[str] = set()
    for layer in net.layers:
        kind = lookup(layer.type)
        if layer.type in TRAINING_ONLY or kind is None or kind.silences:
            continue
        read.update(layer.bottoms)
    return read


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
