"""`ReferenceNet`: run a Caffe net layer by layer in numpy, with Caffe's blob memory.

What this models of Caffe's `Net` (src/caffe/net.cpp, Init / ForwardFromTo /
CopyTrainedLayersFrom; src/caffe/util/insert_splits.cpp):

* Blobs by name. A top with the name of the bottom at the same position is in place: the layer
  writes into that blob's memory. Any other top whose name already exists aborts Caffe ("Top
  blob produced by multiple sources"), and so does an in-place layer on a blob that another
  layer also reads: Caffe's InsertSplits gives each reader a split copy of the name, after which
  the layer is no longer in place.
* Shared memory. Some layers make their top share the bottom's data (`Blob::ShareData`, see
  SHARES_MEMORY); an in-place layer on such a top then changes the bottom as well, and a later
  reader of the bottom sees that. Here the top is a numpy view of the bottom, so the same happens.
* Weights. Each caffemodel layer is copied, in file order, into the first net layer with its name
  (a later one with the same name overwrites an earlier one); layers the file does not name
  have no weights. Parameters shared by name (`param { name: "w" }`) are one array for every
  layer that names them, holding the value copied last.
* The TEST phase as `read_prototxt` filtered it. Data layers do not run: their tops may be
  given as inputs. Loss, accuracy and output layers do not run either (nothing reads them).

The forward is streamed: `run` yields each layer's tops right after the layer, and drops a
blob as soon as no later layer reads it, so a comparison can stay within one layer's memory.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from protocaffe.errors import Diagnostic, ProtocaffeError, Reporter, SourceLoc
from protocaffe.frontend.caffemodel import CaffeModel, read_caffemodel
from protocaffe.frontend.prototxt import LayerDef, NetDef, read_prototxt
from protocaffe.verify.reference.registry import Array, RefLayer, RefOp, lookup

# Layers that feed data: they do not run; their tops may be given as inputs.
DATA_LAYERS = frozenset(
    {
        "AnnotatedData",
        "Data",
        "DenseImageData",  # SegNet
        "DummyData",
        "HDF5Data",
        "ImageData",
        "ImageSegData",  # DeepLab
        "MemoryData",
        "VideoData",
        "WindowData",
    }
)
# Layers that only score or save a forward: they do not run.
SINK_LAYERS = frozenset(
    {
        "Accuracy",
        "ContrastiveLoss",
        "DetectionEvaluate",
        "EuclideanLoss",
        "HDF5Output",
        "HingeLoss",
        "InfogainLoss",
        "MatWrite",  # DeepLab
        "MultiBoxLoss",
        "MultinomialLogisticLoss",
        "SigmoidCrossEntropyLoss",
        "SmoothL1Loss",
        "SoftmaxWithLoss",
    }
)

Weights = CaffeModel | Mapping[str, Sequence[npt.ArrayLike]] | None


class Step(NamedTuple):
    """One layer's result: its position in `NetDef.layers`, its name and its tops.

    The arrays are the live blobs: a later in-place layer may overwrite them (as in Caffe), and
    a blob no later layer reads is dropped after the step. Copy what must be kept."""

    layer_index: int
    name: str
    tops: dict[str, Array]


class _Planned(NamedTuple):
    layer: RefLayer
    op: RefOp
    in_place: tuple[bool, ...]
    free_after: tuple[str, ...]


def _blob_sources(net: NetDef, weights: Weights) -> dict[int, tuple[Array | None, ...]]:
    """Net layer index -> its blobs, as `Net::CopyTrainedLayersFrom` assigns them."""
    if weights is None:
        return {}
    if isinstance(weights, CaffeModel):
        source = [(layer.name, list(layer.blobs)) for layer in weights.layers]
    else:
        source = [(name, [np.asarray(b) for b in blobs]) for name, blobs in weights.items()]
    first: dict[str, int] = {}
    for index, layer in enumerate(net.layers):
        first.setdefault(layer.name, index)
    assigned: dict[int, list[Array | None]] = {}
    shared: dict[str, Array] = {}
    for name, blobs in source:
        target = first.get(name)
        if target is None:
            continue  # Caffe ignores a caffemodel layer the net does not have
        copied: list[Array | None] = [np.asarray(b) for b in blobs]
        specs = net.layers[target].param.param
        for j, blob in enumerate(copied):
            if j < len(specs) and specs[j].name and blob is not None:
                shared[specs[j].name] = blob
        assigned[target] = copied
    # Every layer that names a shared parameter sees the value copied last.
    for index, layer in enumerate(net.layers):
        specs = layer.param.param
        names = [spec.name for spec in specs]
        if not any(name in shared for name in names):
            continue
        arrays: list[Array | None] = list(assigned.get(index, []))
        if len(arrays) < len(names):
            arrays += [None] * (len(names) - len(arrays))
        for j, name in enumerate(names):
            if name in shared:
                arrays[j] = shared[name]
        assigned[index] = arrays
    return {index: tuple(arrays) for index, arrays in assigned.items()}


def _arity(layer: LayerDef, op: RefOp) -> Diagnostic | None:
    for what, n, (low, high) in (
        ("bottom", len(layer.bottoms), op.bottoms),
        ("top", len(layer.tops), op.tops),
    ):
        if n < low or (high is not None and n > high):
            bound = f"{low}" if low == high else f"{low} to {high if high is not None else 'any'}"
            return Diagnostic(
                layer.loc,
                f"Caffe aborts here: the layer takes {bound} {what} blob(s), it has {n}",
                layer.name,
                layer.type,
            )
    return None


class _Walk(NamedTuple):
    """Net::Init's pass over the layers: what runs, what is fed, what is left out."""

    plan: list[tuple[int, LayerDef, RefOp, tuple[bool, ...]]]  # (index, layer, op, in place)
    required: list[str]
    optional: list[str]
    skipped: list[int]


def _check_types(net: NetDef) -> None:
    """One located error per layer whose type has no reference (or a wrong blob count)."""
    problems: list[Diagnostic] = []
    for layer in net.layers:
        if layer.type in DATA_LAYERS or layer.type in SINK_LAYERS or layer.type == "Input":
            continue
        op = lookup(layer.type)
        if op is None:
            problems.append(
                Diagnostic(
                    layer.loc,
                    f"the numpy reference has no implementation of layer type {layer.type!r}; "
                    "a plugin can add one (protocaffe.verify.reference.register)",
                    layer.name,
                    layer.type,
                )
            )
        elif (arity := _arity(layer, op)) is not None:
            problems.append(arity)
    if problems:
        raise ProtocaffeError(problems)


def _readers(net: NetDef) -> Counter[tuple[int, int]]:
    """How many bottoms read each blob version (the (layer, top) that wrote it), over every
    layer of the net: Caffe's InsertSplits counts the same way."""
    version: dict[str, tuple[int, int]] = {i.name: (-1, k) for k, i in enumerate(net.inputs)}
    readers: Counter[tuple[int, int]] = Counter()
    for index, layer in enumerate(net.layers):
        for bottom in layer.bottoms:
            if bottom in version:
                readers[version[bottom]] += 1
        for j, top in enumerate(layer.tops):
            version[top] = (index, j)
    return readers


def _walk(net: NetDef) -> _Walk:
    """Net::Init's blob rules (AppendBottom, AppendTop after InsertSplits), layer by layer."""
    readers = _readers(net)
    walk = _Walk([], [i.name for i in net.inputs], [], [])
    version: dict[str, tuple[int, int]] = {n: (-1, k) for k, n in enumerate(walk.required)}

    def abort(layer: LayerDef, message: str) -> ProtocaffeError:
        return ProtocaffeError.at(
            layer.loc, f"Caffe aborts here: {message}", layer.name, layer.type
        )

    for index, layer in enumerate(net.layers):
        for bottom in layer.bottoms:
            if bottom not in version:
                raise abort(layer, f"unknown bottom blob {bottom!r}")
        op = lookup(layer.type)
        in_place: list[bool] = []
        for j, top in enumerate(layer.tops):
            same = j < len(layer.bottoms) and layer.bottoms[j] == top
            if same and readers[version[top]] > 1:
                raise abort(
                    layer,
                    f"top blob {top!r} produced by multiple sources ({top!r} is read by another "
                    "layer as well, so Caffe gives this layer a split copy of it and the layer "
                    "is no longer in place)",
                )
            if not same and top in version:
                raise abort(layer, f"top blob {top!r} produced by multiple sources")
            if same and op is not None and not op.in_place:
                raise abort(layer, f"{layer.type} Layer does not allow in-place computation")
            in_place.append(same)
            version[top] = (index, j)
        if layer.type == "Input":
            walk.required.extend(layer.tops)
        elif layer.type in DATA_LAYERS:
            walk.optional.extend(layer.tops)
            walk.skipped.append(index)
        elif layer.type in SINK_LAYERS:
            walk.skipped.append(index)
        else:
            assert op is not None  # _check_types ran first
            walk.plan.append((index, layer, op, tuple(in_place)))
    return walk


class ReferenceNet:
    """A Caffe net ready to run in numpy. `weights` is a caffemodel (as `read_caffemodel`
    returns it), a mapping from layer name to that layer's blobs, or None for a net without
    weights. Errors (an unknown layer type, a net Caffe would refuse) are raised here, each one
    located; weight shapes are checked when their layer runs, as they depend on its inputs."""

    def __init__(self, net: NetDef, weights: Weights = None) -> None:
        self.net = net
        _check_types(net)
        walk = _walk(net)
        self.skipped: tuple[int, ...] = tuple(walk.skipped)
        self.inputs: tuple[str, ...] = tuple(walk.required)
        self.optional_inputs: tuple[str, ...] = tuple(walk.optional)

        # Caffe's outputs: blobs that no (running) layer reads, sorted as std::set sorts them.
        available = set(walk.required) | set(walk.optional)
        for _, layer, _, _ in walk.plan:
            available.difference_update(layer.bottoms)
            available.update(layer.tops)
        self.outputs: tuple[str, ...] = tuple(sorted(available))

        # Liveness: after the step that reads a blob last, nobody needs it (outputs excepted).
        last_use: dict[str, int] = {}
        for step, (_, layer, _, _) in enumerate(walk.plan):
            for name in layer.bottoms + layer.tops:
                last_use[name] = step
        keep = set(self.outputs)
        sources = _blob_sources(net, weights)
        self._plan: list[_Planned] = []
        for step, (index, layer, op, in_place) in enumerate(walk.plan):
            names = dict.fromkeys(layer.bottoms + layer.tops)
            free = tuple(n for n in names if last_use[n] == step and n not in keep)
            ref = RefLayer(
                index=index,
                name=layer.name,
                type=layer.type,
                param=layer.param,
                loc=layer.loc,
                bottoms=layer.bottoms,
                tops=layer.tops,
                source=sources.get(index),
                model_given=weights is not None,
            )
            self._plan.append(_Planned(ref, op, in_place, free))
        read = {n for p in self._plan for n in p.layer.bottoms}
        self._unread_inputs = tuple(
            n for n in self.inputs + self.optional_inputs if n not in read and n not in keep
        )

    @classmethod
    def load(
        cls,
        prototxt: str | os.PathLike[str],
        caffemodel: str | os.PathLike[str] | None = None,
    ) -> ReferenceNet:
        net = read_prototxt(prototxt, Reporter())
        return cls(net, read_caffemodel(caffemodel) if caffemodel is not None else None)

    def _start(self, inputs: Mapping[str, npt.ArrayLike]) -> dict[str, Array]:
        env: dict[str, Array] = {}
        for name in self.inputs:
            if name not in inputs:
                raise ProtocaffeError.at(
                    self._input_loc(name), f"the reference needs a value for input {name!r}"
                )
        known = set(self.inputs) | set(self.optional_inputs)
        for name, value in inputs.items():
            if name not in known:
                raise ProtocaffeError.at(
                    SourceLoc(self.net.path),
                    f"{name!r} is not an input of the net (inputs: {', '.join(sorted(known))})",
                )
            # Caffe copies the input into its own blob; an in-place layer changes that copy.
            env[name] = np.array(value, dtype=np.float32, order="C", copy=True)
        return env

    def _input_loc(self, name: str) -> SourceLoc:
        for decl in self.net.inputs:
            if decl.name == name:
                return decl.loc
        for layer in self.net.layers:
            if name in layer.tops:
                return layer.loc
        return SourceLoc(self.net.path)

    def run(self, inputs: Mapping[str, npt.ArrayLike], *, keep_all: bool = False) -> Iterator[Step]:
        """Run the net on `inputs` (by blob name) and yield each layer's tops after it ran."""
        env = self._start(inputs)
        yield from self._execute(env, keep_all)

    def forward(self, inputs: Mapping[str, npt.ArrayLike]) -> dict[str, Array]:
        """Every blob's value after the forward pass, as pycaffe's `net.blobs` holds them
        (an in-place layer's blob has its last value)."""
        env = self._start(inputs)
        for _ in self._execute(env, keep_all=True):
            pass
        return {name: value.copy() for name, value in env.items()}

    def _execute(self, env: dict[str, Array], keep_all: bool) -> Iterator[Step]:
        if not keep_all:
            for name in self._unread_inputs:
                env.pop(name, None)
        for planned in self._plan:
            step = self._run_layer(planned, env)
            if not keep_all:  # before the yield, so that the step is all the consumer holds
                for name in planned.free_after:
                    env.pop(name, None)
            if step is not None:
                yield step
            del step

    def _run_layer(self, planned: _Planned, env: dict[str, Array]) -> Step | None:
        """Run one layer on the blobs in env and store its tops there; None for a Silence of a
        blob no one gave (a data layer's label)."""
        layer = planned.layer
        missing = [name for name in layer.bottoms if name not in env]
        if missing and layer.type == "Silence":
            return None
        if missing:
            raise layer.fail(
                f"reads blob {missing[0]!r}, which a data layer produces in Caffe; give it as "
                "an input"
            )
        bottoms = [env[name] for name in layer.bottoms]
        self._store(planned, bottoms, planned.op.forward(layer, bottoms), env)
        if layer.source and not layer.weights_read:
            raise layer.fail(
                f"Caffe aborts here: incompatible number of blobs: the caffemodel has "
                f"{len(layer.source)}, the layer has none"
            )
        return Step(layer.index, layer.name, {t: env[t] for t in layer.tops})

    @staticmethod
    def _store(
        planned: _Planned, bottoms: Sequence[Array], tops: Sequence[Array], env: dict[str, Array]
    ) -> None:
        layer = planned.layer
        if len(tops) != len(layer.tops):
            raise layer.fail(
                f"the reference computed {len(tops)} tops for {len(layer.tops)} (internal error)"
            )
        for name, value, in_place in zip(layer.tops, tops, planned.in_place, strict=True):
            value = np.asarray(value)
            if value.dtype != np.float32 or not value.flags.c_contiguous:
                value = np.ascontiguousarray(value, dtype=np.float32)
            if in_place:
                dst = env[name]
                if value is dst:
                    continue
                if value.shape == dst.shape:
                    np.copyto(dst, value)  # into the blob's memory, which others may share
                elif value.size == dst.size:
                    flat = dst.reshape(-1)
                    flat[...] = value.reshape(-1)
                    env[name] = flat.reshape(value.shape)
                else:  # Caffe reallocates a blob that grows: a shared view no longer follows
                    env[name] = value
                continue
            if not planned.op.shares_memory and any(np.may_share_memory(value, b) for b in bottoms):
                value = value.copy()
            env[name] = value


def run_all(net: NetDef, weights: Weights, inputs: Mapping[str, npt.ArrayLike]) -> dict[str, Array]:
    """Every blob of `net` after one forward pass (see `ReferenceNet.forward`)."""
    return ReferenceNet(net, weights).forward(inputs)
