"""The typed graph IR: SSA values, nodes with ordered inputs, and the graph that holds them.

A `Value` is one immutable tensor. Caffe's in-place layers (top == bottom) update a blob; here
each update defines a new Value with the same `blob` name and a higher `version`, so a reader
sees exactly the version that existed when it ran. Node inputs are a tuple: their order is
data (Concat's bottoms stay in prototxt order). Nodes hold no back-pointers: `users()` derives
them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property

from protocaffe.errors import SourceLoc

Shape = tuple[int, ...]


@dataclass(frozen=True)
class Value:
    """One SSA tensor: version `version` of Caffe blob `blob`, with its inferred shape."""

    blob: str
    version: int
    shape: Shape

    def __str__(self) -> str:
        return f"%{self.blob}.{self.version}"


@dataclass(frozen=True)
class Attrs:
    """Base class of the typed attributes of each layer family."""


@dataclass(frozen=True)
class NoAttrs(Attrs):
    pass


@dataclass(frozen=True)
class ParamSpec:
    """How Caffe trains one weight blob of a layer, as the net settles it (Net::AppendParam):
    its learning-rate and weight-decay multipliers and, for a blob tied to other layers' by
    `param { name }`, that name (`share`): every blob with one name is one parameter."""

    lr_mult: float = 1.0
    decay_mult: float = 1.0
    share: str = ""


@dataclass(frozen=True)
class SharedParam:
    """One blob that layers share by `param { name }`: every (layer name, blob index) that
    holds a copy of it in the whole net, in layer order. Kept on the graph, so that a pass that
    leaves layers out (--outputs) still loads the copy the whole net loads."""

    name: str
    holders: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class Node:
    """One Caffe layer: `op` is the Caffe type (V2 spelling), `name` the layer name verbatim."""

    op: str
    name: str
    inputs: tuple[Value, ...]
    outputs: tuple[Value, ...]
    attrs: Attrs
    loc: SourceLoc
    # Names of the weight blobs this node owns, in Caffe blob order (e.g. ("weight", "bias")).
    params: tuple[str, ...] = ()
    # Set by fusion passes: the original nodes this one stands for, the layer whose module it
    # keeps first, then the layers folded into it in dataflow order. Their Caffe weights make
    # its state (see passes/fold.py); empty for a node that is one Caffe layer.
    fused: tuple[Node, ...] = ()
    # One per Caffe weight blob, in blob order (empty for a layer without weights).
    param_specs: tuple[ParamSpec, ...] = ()


@dataclass(frozen=True)
class Graph:
    name: str
    source: str
    inputs: tuple[Value, ...]
    nodes: tuple[Node, ...]
    outputs: tuple[Value, ...]
    # Values that a pass replaced by another (e.g. Dropout's output by its input), kept so that
    # tools can still map every Caffe blob to the value that now holds it.
    aliases: tuple[tuple[Value, Value], ...] = field(default=())
    # Caffe's names of the outputs, in `outputs` order, set by the lowering. A pass that
    # replaces an output Value by another (Dropout's by its input) keeps the name Caffe gives
    # it; empty: each output is named by its Value's blob.
    output_names: tuple[str, ...] = field(default=())
    # The blobs the net's layers share by name (set by the lowering; passes keep it).
    shared_params: tuple[SharedParam, ...] = field(default=())
    # Layers of the net that a pass left out as not needed (--outputs): their weights in a
    # caffemodel are expected, not a sign of a mismatched file.
    left_out: tuple[str, ...] = field(default=())

    def __str__(self) -> str:
        """One line per node (see printer.py), as `protocaffe inspect --ir` prints it."""
        from protocaffe.ir.printer import format_graph

        return format_graph(self)

    def output_name(self, index: int) -> str:
        """Caffe's name of output `index` (the blob name Net::Init reports)."""
        if self.output_names:
            return self.output_names[index]
        return self.outputs[index].blob

    def users(self, value: Value) -> Iterator[Node]:
        """The nodes that read `value`, in graph order (each once)."""
        return iter(self._users.get(value, ()))

    def producer(self, value: Value) -> Node | None:
        return self._producers.get(value)

    # Indexes made on first use (a Graph never changes), so that a pass asking about every
    # node's users costs O(n), not O(n^2). cached_property stores them in the instance's
    # __dict__, outside the dataclass fields: equality and hashing ignore them.
    @cached_property
    def _users(self) -> dict[Value, tuple[Node, ...]]:
        found: dict[Value, list[Node]] = {}
        for node in self.nodes:
            for value in dict.fromkeys(node.inputs):
                found.setdefault(value, []).append(node)
        return {value: tuple(nodes) for value, nodes in found.items()}

    @cached_property
    def _producers(self) -> dict[Value, Node]:
        found: dict[Value, Node] = {}
        for node in self.nodes:
            for value in node.outputs:
                found.setdefault(value, node)  # the first, as the linear search found it
        return found
