"""Random small Caffe nets (2-6 layers) around one focus layer type.

A net grows layer by layer over the blobs defined so far, so the layers come in dataflow order.
The generator draws: the input's rank and odd sizes, how the input is declared (an Input layer,
`input` + `input_shape`, or `input` + `input_dim`), each layer's bottoms (recent or older blobs,
the same blob twice), in-place tops (also on blobs already read, and on layers that may not run
in place), aliases (Reshape, Flatten, Split, a one-bottom Concat, a one-top Slice, an identity
Permute) followed by an in-place layer on the alias and a reader of the original, multi-output
layers, and shared parameters (`param { name: ... }`).

Shapes are estimated here only to steer the draw towards valid nets (equal shapes for Eltwise,
a reference for Crop, sizes for kernels); the estimate may be wrong or unknown, and real Caffe
decides what is valid. The recipes know Caffe's arity and shape rules, never protocaffe's.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from google.protobuf import text_format
from google.protobuf.message import Message

from .params import Draw, ParamDrawer

Shape = tuple[int, ...]

FLOATS = (0.0, 0.1, -0.3, 0.5, 1.0, 1.5, 2.0, -1.0)
AXES = (1, 1, -1, 0, 2, 3)


@dataclass
class LayerSpec:
    name: str
    type: str
    bottoms: list[str]
    tops: list[str]
    param_field: str | None = None
    param: Message | None = None
    raw: list[str] = field(default_factory=list)  # raw lines inside the parameter block
    extra: list[str] = field(default_factory=list)  # raw lines inside the layer block

    def text(self) -> str:
        lines = [f'layer {{ name: "{self.name}" type: "{self.type}"']
        lines += [f'  bottom: "{b}"' for b in self.bottoms]
        lines += [f'  top: "{t}"' for t in self.tops]
        lines += [f"  {e}" for e in self.extra]
        if self.param_field is not None and (self.param is not None or self.raw):
            body = text_format.MessageToString(self.param, as_one_line=True) if self.param else ""
            body = " ".join(p for p in [body, *self.raw] if p)
            lines.append(f"  {self.param_field} {{ {body} }}")
        return "\n".join(lines) + "\n}"


@dataclass
class NetSpec:
    """A generated net: inputs, how they are declared, layers, and how to fill the inputs."""

    name: str
    inputs: dict[str, Shape]
    layers: list[LayerSpec]
    input_style: str = "layer"  # layer | input_shape | input_dim
    roi_inputs: dict[str, Shape] = field(default_factory=dict)  # name -> (N, C, H, W) of image
    focus: str = ""
    seed: int = 0

    def prototxt(self) -> str:
        head = [f'name: "{self.name}"']
        if self.input_style == "layer":
            for name, shape in self.inputs.items():
                dims = " ".join(f"dim: {d}" for d in shape)
                head.append(
                    f'layer {{ name: "{name}" type: "Input" top: "{name}" '
                    f"input_param {{ shape {{ {dims} }} }} }}"
                )
        elif self.input_style == "input_shape":
            for name, shape in self.inputs.items():
                dims = " ".join(f"dim: {d}" for d in shape)
                head.append(f'input: "{name}"\ninput_shape {{ {dims} }}')
        else:
            head += [f'input: "{name}"' for name in self.inputs]
            head += [f"input_dim: {d}" for shape in self.inputs.values() for d in shape]
        return "\n".join(head + [layer.text() for layer in self.layers]) + "\n"

    def input_arrays(self) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(self.seed)
        arrays = {}
        for name, shape in self.inputs.items():
            if name in self.roi_inputs:
                arrays[name] = rois(rng, shape[0], self.roi_inputs[name])
            else:
                arrays[name] = rng.standard_normal(shape).astype(np.float32)
        return arrays

    def with_layers(self, layers: list[LayerSpec]) -> NetSpec:
        return NetSpec(
            self.name,
            dict(self.inputs),
            layers,
            self.input_style,
            dict(self.roi_inputs),
            self.focus,
            self.seed,
        )


def rois(rng: np.random.Generator, count: int, image: Shape) -> np.ndarray:
    """ROIPooling's boxes: [batch index, x1, y1, x2, y2] in image pixels (some outside)."""
    n, _, h, w = image
    out = np.zeros((count, 5), np.float32)
    out[:, 0] = rng.integers(0, n, count)
    xs = np.sort(rng.uniform(-2, w + 2, (count, 2)), axis=1)
    ys = np.sort(rng.uniform(-2, h + 2, (count, 2)), axis=1)
    out[:, 1], out[:, 3] = xs[:, 0], xs[:, 1]
    out[:, 2], out[:, 4] = ys[:, 0], ys[:, 1]
    return np.round(out * 2) / 2


def canon(axis: int, rank: int) -> int | None:
    return axis + rank if -rank <= axis < 0 else axis if 0 <= axis < rank else None


class NetGenerator:
    """Draws nets. `types` are the layer types both protocaffe and the oracle know."""

    def __init__(self, drawer: ParamDrawer, types: set[str] | frozenset[str]) -> None:
        self.drawer = drawer
        self.types = sorted(t for t in types if t in RECIPES)

    def net(self, seed: int, focus: str) -> NetSpec:
        return _Builder(self, random.Random(seed), seed, focus).build()


class _Builder:
    def __init__(self, gen: NetGenerator, rng: random.Random, seed: int, focus: str) -> None:
        self.gen = gen
        self.rng = rng
        self.spec = NetSpec(f"fuzz{seed}", {}, [], focus=focus, seed=seed)
        self.shapes: dict[str, Shape | None] = {}
        self.read: set[str] = set()
        self.order: list[str] = []  # blob names, most recent write last
        self.layer_count = 0
        self.blob_count = 0

    # -- helpers used by the recipes ------------------------------------------------------------

    def new_blob(self) -> str:
        self.blob_count += 1
        return f"b{self.blob_count}"

    def add_input(self, shape: Shape, roi_image: Shape | None = None) -> str:
        name = "data" if not self.spec.inputs else f"in{len(self.spec.inputs)}"
        self.spec.inputs[name] = shape
        if roi_image is not None:
            self.spec.roi_inputs[name] = roi_image
        self.shapes[name] = shape
        self.order.append(name)
        return name

    def pick(self, want: Callable[[Shape | None], bool] = lambda s: True) -> str | None:
        """A bottom: mostly the latest blob, else an older one (aliases get read this way)."""
        fitting = [b for b in self.order if want(self.shapes[b])]
        if not fitting:
            return None
        if self.rng.random() < 0.55:
            return fitting[-1]
        return self.rng.choice(fitting)

    def spatial(self) -> str:
        """A 4-D bottom; when there is none, mostly a new 4-D input, sometimes any blob."""
        found = self.pick(lambda s: s is not None and len(s) == 4)
        if found is None and self.rng.random() < 0.75:
            found = self.add_input(self.input_shape(4))
        found = found or self.pick()
        assert found is not None
        return found

    def draw(self, message: str, how: Draw, bottom: Shape | None) -> tuple[Message, list[str]]:
        larger = (max(bottom) + 2) if bottom else 10
        return self.gen.drawer.draw(self.rng, message, how, larger)

    def emit(
        self,
        kind: str,
        bottoms: list[str],
        tops: list[str],
        shapes: list[Shape | None],
        param_field: str | None = None,
        param: Message | None = None,
        raw: list[str] | None = None,
        extra: list[str] | None = None,
    ) -> LayerSpec:
        name = f"l{self.layer_count}"
        self.layer_count += 1
        layer = LayerSpec(name, kind, bottoms, tops, param_field, param, raw or [], extra or [])
        self.spec.layers.append(layer)
        self.read.update(bottoms)
        for top, shape in zip(tops, shapes, strict=True):
            if shape is not None and (not shape or min(shape) <= 0):
                shape = None  # an estimate Caffe would refuse: unknown from here on
            self.shapes[top] = shape
            self.read.discard(top)
            if top in self.order:
                self.order.remove(top)
            self.order.append(top)
        return layer

    def top_for(self, bottom: str, p_inplace: float = 0.25) -> str:
        """In place (rarely on a blob already read, which Caffe refuses) or a new blob."""
        if bottom in self.read:
            p_inplace *= 0.2
        if self.rng.random() < p_inplace:
            return bottom
        return self.new_blob()

    # -- the net --------------------------------------------------------------------------------

    def build(self) -> NetSpec:
        rng = self.rng
        rank = rng.choices((4, 2, 3, 5), (0.78, 0.1, 0.06, 0.06))[0]
        self.add_input(self.input_shape(rank))
        self.spec.input_style = rng.choices(("layer", "input_shape", "input_dim"), (7, 2, 1))[0]
        if self.spec.input_style == "input_dim" and rank != 4:
            self.spec.input_style = "input_shape"
        count = rng.randint(2, 6)
        focus_at = rng.randrange(count)
        others = [t for t in self.gen.types if t != self.spec.focus]
        weights = [COMMON.get(t, 1.0) for t in others]
        index = 0
        while len(self.spec.layers) < count:
            if index == focus_at or not others:
                kind = self.spec.focus
            elif rng.random() < 0.06:
                self.alias_motif()
                index += 1
                continue
            else:
                kind = rng.choices(others, weights)[0]
            RECIPES[kind](self, kind)
            index += 1
            if index > count + 4 and any(
                layer.type == self.spec.focus for layer in self.spec.layers
            ):
                break
        if self.spec.input_style == "input_dim" and any(
            len(s) != 4 for s in self.spec.inputs.values()
        ):
            self.spec.input_style = "input_shape"
        self.share_parameters()
        return self.spec

    def input_shape(self, rank: int) -> Shape:
        rng = self.rng
        sizes = (1, 2, 3, 4, 5, 6, 7, 9, 11)
        odd = (1, 3, 5, 7, 9)
        n = rng.choice((1, 1, 2, 3))
        c = rng.choice((1, 2, 3, 4, 5, 6))
        if rank == 2:
            return (n, rng.choice((1, 3, 4, 6, 7, 10)))
        if rank == 3:
            return (n, c, rng.choice(sizes))
        if rank == 5:
            return (n, c, rng.choice((1, 2, 3)), rng.choice(odd), rng.choice(sizes))
        return (n, c, rng.choice(sizes + odd), rng.choice(sizes + odd))

    def alias_motif(self) -> None:
        """x -> alias (shares memory in Caffe); an in-place layer on the alias; a reader of x."""
        rng = self.rng
        source = self.pick(lambda s: s is not None and len(s) == 4) or self.pick()
        assert source is not None
        shape = self.shapes[source]
        sharing = ("Reshape", "Flatten", "Split", "Concat", "Slice", "Permute")
        kind = rng.choice([k for k in sharing if k in self.gen.types] or ["Split"])
        alias = self.new_blob()
        if kind == "Reshape":
            message, _ = self.draw("ReshapeParameter", Draw(p_set=0.0), shape)
            message.shape.dim.extend([0, -1])  # type: ignore[attr-defined]
            out = None if shape is None else (shape[0], math.prod(shape[1:]))
            self.emit(kind, [source], [alias], [out], "reshape_param", message)
        elif kind == "Flatten":
            out = None if shape is None else (shape[0], math.prod(shape[1:]))
            self.emit(kind, [source], [alias], [out])
        elif kind == "Permute":
            order = list(range(len(shape))) if shape else [0, 1, 2, 3]
            raw = [f"order: {o}" for o in order[: rng.randint(0, len(order))]]
            self.emit(kind, [source], [alias], [shape], "permute_param", None, raw)
        else:
            self.emit(kind, [source], [alias], [shape])
        activation = rng.choice(["ReLU", "TanH", "Sigmoid", "Power", "Scale"])
        if activation not in self.gen.types:
            activation = "ReLU"
        if activation == "Power":
            message, _ = self.draw("PowerParameter", Draw(fixed={"scale": 2.0}, p_set=0.0), None)
            self.emit(activation, [alias], [alias], [self.shapes[alias]], "power_param", message)
        elif activation == "Scale":
            self.emit(activation, [alias], [alias], [self.shapes[alias]])
        else:
            self.emit(activation, [alias], [alias], [self.shapes[alias]])
        reader = rng.choice(["TanH", "Sigmoid", "AbsVal", "Power"])
        reader = reader if reader in self.gen.types else "ReLU"
        self.emit(reader, [source], [self.new_blob()], [shape])

    def share_parameters(self) -> None:
        """Sometimes give two layers of one type with weights the same `param { name }`s."""
        rng = self.rng
        weighted = ("Convolution", "InnerProduct", "Scale", "Bias", "PReLU", "Deconvolution")
        by_type: dict[str, list[LayerSpec]] = {}
        for layer in self.spec.layers:
            if layer.type in weighted and len(layer.bottoms) == 1:
                by_type.setdefault(layer.type, []).append(layer)
        for group in by_type.values():
            if len(group) >= 2 and rng.random() < 0.5:
                first, second = rng.sample(group, 2)
                blobs = rng.choice((1, 2, 2))
                for layer in (first, second):
                    layer.param = _copy(first.param)
                    layer.raw = list(first.raw)
                    layer.extra = [f'param {{ name: "shared_{i}" }}' for i in range(blobs)]


def _copy(message: Message | None) -> Message | None:
    if message is None:
        return None
    clone = type(message)()
    clone.CopyFrom(message)
    return clone


# -- recipes --------------------------------------------------------------------------------------
# Each recipe appends one layer (or a few: helpers such as DetectionOutput's PriorBox) of its
# type to the builder. Shapes returned are estimates (None where the recipe does not know).

Recipe = Callable[[_Builder, str], None]
RECIPES: dict[str, Recipe] = {}
# Relative frequency of a type as a filler layer around the focus type.
COMMON: dict[str, float] = {
    "ReLU": 3.0,
    "Convolution": 2.0,
    "Pooling": 2.0,
    "Eltwise": 1.5,
    "Concat": 1.5,
    "Split": 1.5,
    "Reshape": 1.5,
    "Flatten": 1.2,
    "Slice": 1.2,
    "Scale": 1.2,
    "BatchNorm": 1.2,
    "TanH": 1.2,
    "Sigmoid": 1.0,
    "DetectionOutput": 0.3,
    "PriorBox": 0.5,
    "ROIPooling": 0.3,
    "Silence": 0.3,
}


def recipe(*types: str) -> Callable[[Recipe], Recipe]:
    def register(fn: Recipe) -> Recipe:
        for kind in types:
            RECIPES[kind] = fn
        return fn

    return register


UNARY: dict[str, tuple[str | None, str | None, Draw]] = {
    # type: (layer parameter field, message name, how to draw it)
    "ReLU": ("relu_param", "ReLUParameter", Draw(hints={"negative_slope": (0.0, 0.1, -0.5, 1.5)})),
    "Sigmoid": (None, None, Draw()),
    "TanH": (None, None, Draw()),
    "AbsVal": (None, None, Draw()),
    "BNLL": (None, None, Draw()),
    "ELU": ("elu_param", "ELUParameter", Draw(hints={"alpha": (1.0, 0.5, 0.0, -1.0, 2.0)})),
    "Power": (
        "power_param",
        "PowerParameter",
        Draw(
            hints={
                "power": (1.0, 2.0, 0.5, 0.0, -1.0, 3.0, 1.5),
                "scale": FLOATS,
                "shift": FLOATS + (3.0,),
            },
            p_set=0.6,
        ),
    ),
    "Exp": (
        "exp_param",
        "ExpParameter",
        Draw(
            hints={"base": (-1.0, 2.0, 0.5, 10.0, 1.0), "scale": FLOATS, "shift": FLOATS},
            p_set=0.5,
        ),
    ),
    "Log": (
        "log_param",
        "LogParameter",
        Draw(
            hints={"base": (-1.0, 2.0, 0.5, 10.0, 1.0), "scale": FLOATS, "shift": (0.0, 3.0, 5.0)},
            p_set=0.5,
        ),
    ),
    "Threshold": ("threshold_param", "ThresholdParameter", Draw(hints={"threshold": FLOATS})),
    "Dropout": (
        "dropout_param",
        "DropoutParameter",
        Draw(hints={"dropout_ratio": (0.5, 0.0, 0.9, 1.0)}),
    ),
    "ReLU6": (
        "relu6_param",
        "ReLU6Parameter",
        Draw(hints={"negative_slope": (0.0, 0.1), "threshold": (6.0, 1.0, 0.5, 0.0)}),
    ),
    "PReLU": ("prelu_param", "PReLUParameter", Draw(p_set=0.5)),
    "BatchNorm": (
        "batch_norm_param",
        "BatchNormParameter",
        Draw(
            hints={
                "eps": (1e-5, 1e-3, 0.0, 0.1),
                "moving_average_fraction": (0.999, 0.5),
                "use_global_stats": (True, True, False),
            },
            p_set=0.4,
        ),
    ),
    "MVN": ("mvn_param", "MVNParameter", Draw(hints={"eps": (1e-9, 1e-3, 0.1)}, p_set=0.5)),
    "LRN": (
        "lrn_param",
        "LRNParameter",
        Draw(
            hints={
                "local_size": (1, 3, 5, 7),
                "alpha": (1.0, 0.5, 1e-4, 2.0),
                "beta": (0.75, 0.5, 1.0),
                "k": (1.0, 2.0, 0.5),
            },
            p_set=0.5,
        ),
    ),
    "Softmax": ("softmax_param", "SoftmaxParameter", Draw(hints={"axis": AXES}, p_set=0.5)),
    "Normalize": (
        "norm_param",
        "NormalizeParameter",
        Draw(hints={"eps": (1e-10, 1e-3, 0.5)}, p_set=0.5),
    ),
}


@recipe(*UNARY)
def unary(b: _Builder, kind: str) -> None:
    field_name, message_name, how = UNARY[kind]
    bottom = b.spatial() if kind in ("LRN", "Normalize") else b.pick()
    assert bottom is not None
    shape = b.shapes[bottom]
    param = raw = None
    if message_name is not None:
        param, raw = b.draw(message_name, how, shape)
    extra = []
    if kind == "BatchNorm" and b.rng.random() < 0.3:
        extra = ["param { lr_mult: 0 }"] * 3
    b.emit(kind, [bottom], [b.top_for(bottom)], [shape], field_name, param, raw, extra)


@recipe("Scale", "Bias")
def scale_bias(b: _Builder, kind: str) -> None:
    rng = b.rng
    bottom = b.pick()
    assert bottom is not None
    shape = b.shapes[bottom]
    message_name = "ScaleParameter" if kind == "Scale" else "BiasParameter"
    field_name = "scale_param" if kind == "Scale" else "bias_param"
    hints = {"axis": (1, 1, 0, -1, 2, 3), "num_axes": (1, 1, 0, -1, 2), "bias_term": (True, False)}
    param, raw = b.draw(message_name, Draw(hints=hints, p_set=0.5), shape)
    bottoms = [bottom]
    if shape is not None and rng.random() < 0.3:
        # The second bottom is the multiplier: bottom's shape from axis over num_axes.
        axis = canon(param.axis, len(shape))  # type: ignore[attr-defined]
        if axis is not None:
            num = param.num_axes  # type: ignore[attr-defined]
            end = len(shape) if num == -1 else axis + num
            if end <= len(shape) and num >= -1:
                factor = shape[axis:end]
                if rng.random() < 0.05 and factor:
                    factor = (factor[0] + 1,) + factor[1:]  # a mismatch Caffe must refuse
                bottoms.append(b.add_input(factor) if factor else b.add_input((1,)))
    b.emit(kind, bottoms, [b.top_for(bottom, 0.2)], [shape], field_name, param, raw)


@recipe("Eltwise")
def eltwise(b: _Builder, kind: str) -> None:
    rng = b.rng
    first = b.pick()
    assert first is not None
    shape = b.shapes[first]
    same = [x for x in b.order if shape is not None and b.shapes[x] == shape and x != first]
    count = rng.choice((2, 2, 2, 3, 4))
    bottoms = [first]
    for _ in range(count - 1):
        if same and rng.random() < 0.7:
            bottoms.append(rng.choice(same))
        else:
            bottoms.append(first)  # a repeated bottom
    rng.shuffle(bottoms)
    param, raw = b.draw(
        "EltwiseParameter",
        Draw(
            hints={"operation": ("SUM", "PROD", "MAX"), "coeff": (1.0, -1.0, 0.5, 2.0, 0.0)},
            p_set=0.5,
            max_repeated=len(bottoms),
        ),
        shape,
    )
    coeff = param.coeff  # type: ignore[attr-defined]
    if len(coeff) and rng.random() < 0.7:  # mostly one coefficient per bottom
        del coeff[:]
        coeff.extend(rng.choice((1.0, -1.0, 0.5, 2.0)) for _ in bottoms)
    b.emit(kind, bottoms, [b.top_for(bottoms[0], 0.15)], [shape], "eltwise_param", param, raw)


@recipe("Concat")
def concat(b: _Builder, kind: str) -> None:
    rng = b.rng
    first = b.pick()
    assert first is not None
    shape = b.shapes[first]
    count = rng.choice((1, 2, 2, 3))
    bottoms = [first]
    axis_hint = 1
    if shape is not None:
        # Blobs equal to `first` except along one axis can be joined along it.
        near = {}
        for x in b.order:
            other = b.shapes[x]
            if x == first or other is None or len(other) != len(shape):
                continue
            diff = [i for i in range(len(shape)) if other[i] != shape[i]]
            if len(diff) <= 1:
                near[x] = diff[0] if diff else None
        axis_hint = rng.choice([a for a in near.values() if a is not None] or [1])
        for _ in range(count - 1):
            fits = [x for x, a in near.items() if a in (None, axis_hint)]
            bottoms.append(rng.choice(fits) if fits and rng.random() < 0.7 else first)
    else:
        bottoms += [first] * (count - 1)
    rng.shuffle(bottoms)
    param, raw = b.draw(
        "ConcatParameter",
        Draw(
            hints={"axis": (axis_hint, axis_hint, -1, 0), "concat_dim": (axis_hint, 0, 1)},
            groups=[[(1, ()), (3, ("axis",)), (1, ("concat_dim",))]],
            p_set=0.0,
        ),
        shape,
    )
    out = None
    if shape is not None:
        axis = canon(
            param.concat_dim if param.HasField("concat_dim") else param.axis,  # type: ignore
            len(shape),
        )
        shapes = [b.shapes[x] for x in bottoms]
        if axis is not None and all(s is not None and len(s) == len(shape) for s in shapes):
            total = sum(s[axis] for s in shapes if s is not None)
            out = shape[:axis] + (total,) + shape[axis + 1 :]
    top = b.top_for(bottoms[0], 0.1)
    b.emit(kind, bottoms, [top], [out], "concat_param", param, raw)


@recipe("Slice")
def slice_(b: _Builder, kind: str) -> None:
    rng = b.rng
    bottom = b.pick()
    assert bottom is not None
    shape = b.shapes[bottom]
    tops = rng.choice((1, 2, 2, 3))
    axis = rng.choice((1, 1, 0, -1, 2)) if shape is None else rng.randrange(len(shape))
    dim = shape[axis] if shape is not None else 4
    points = sorted(rng.sample(range(1, dim), tops - 1)) if 1 < tops <= dim else []
    if rng.random() < 0.1:
        points = [rng.choice((0, dim, dim + 1))] + points[1:]
    param, raw = b.draw(
        "SliceParameter",
        Draw(
            hints={"axis": (axis,), "slice_dim": (axis,)},
            groups=[[(3, ("axis",)), (1, ("slice_dim",)), (1, ())]],
            p_set=0.0,
        ),
        shape,
    )
    if rng.random() < 0.85:
        param.slice_point.extend(points)  # type: ignore[attr-defined]
    names = [b.new_blob() for _ in range(tops)]
    out: list[Shape | None] = [None] * tops
    if shape is not None and axis == (param.axis if param.HasField("axis") else 1):  # type: ignore
        bounds = [0, *param.slice_point, dim]  # type: ignore[attr-defined]
        if len(bounds) == tops + 1 or (tops > 1 and not param.slice_point):  # type: ignore
            if not param.slice_point and dim % tops == 0:  # type: ignore[attr-defined]
                bounds = [i * dim // tops for i in range(tops + 1)]
            if len(bounds) == tops + 1:
                out = [
                    shape[:axis] + (hi - lo,) + shape[axis + 1 :]
                    for lo, hi in itertools.pairwise(bounds)
                ]
    if tops == 1 and rng.random() < 0.2:
        names = [bottom]  # in place: Caffe refuses it
    b.emit(kind, [bottom], names, out, "slice_param", param, raw)


@recipe("Split")
def split(b: _Builder, kind: str) -> None:
    bottom = b.pick()
    assert bottom is not None
    tops = b.rng.choice((1, 2, 2, 3))
    names = [b.new_blob() for _ in range(tops)]
    if b.rng.random() < 0.08:
        names[0] = bottom  # in place: Caffe refuses it
    b.emit(kind, [bottom], names, [b.shapes[bottom]] * tops)


@recipe("Flatten")
def flatten(b: _Builder, kind: str) -> None:
    bottom = b.pick()
    assert bottom is not None
    shape = b.shapes[bottom]
    param, raw = b.draw(
        "FlattenParameter",
        Draw(hints={"axis": (1, 0, 2, -1, -2), "end_axis": (-1, 1, 2, 3, -2)}, p_set=0.35),
        shape,
    )
    out = None
    if shape is not None:
        start = canon(param.axis, len(shape))  # type: ignore[attr-defined]
        end = canon(param.end_axis, len(shape))  # type: ignore[attr-defined]
        if start is not None and end is not None and start <= end:
            out = shape[:start] + (math.prod(shape[start : end + 1]),) + shape[end + 1 :]
    b.emit(kind, [bottom], [b.top_for(bottom, 0.08)], [out], "flatten_param", param, raw)


@recipe("Reshape")
def reshape(b: _Builder, kind: str) -> None:
    rng = b.rng
    bottom = b.pick()
    assert bottom is not None
    shape = b.shapes[bottom]
    param, raw = b.draw(
        "ReshapeParameter",
        Draw(hints={"axis": (0, 1, -1, 2), "num_axes": (-1, 0, 1, 2)}, p_set=0.2),
        shape,
    )
    dims: list[int]
    if shape is None:
        dims = rng.choice(([0, -1], [-1], [0, 0, -1]))
    else:
        count = math.prod(shape)
        options = [[0, -1], [-1], [0, 0, -1], [count], [1, -1], [-1, 1], [*shape[::-1]]]
        if len(shape) >= 2:
            options.append([shape[0], -1, 1])
            options.append([0, *shape[2:], shape[1]])
        dims = rng.choice(options)
        if rng.random() < 0.08:
            dims = [-1, -1] if rng.random() < 0.5 else [count + 1]
    param.shape.dim.extend(dims)  # type: ignore[attr-defined]
    out = None
    if shape is not None and not param.HasField("axis") and not param.HasField("num_axes"):
        fixed = [shape[i] if d == 0 and i < len(shape) else d for i, d in enumerate(dims)]
        known = math.prod(d for d in fixed if d != -1)
        if fixed.count(-1) <= 1 and known > 0 and math.prod(shape) % known == 0:
            out = tuple(math.prod(shape) // known if d == -1 else d for d in fixed)
            if math.prod(out) != math.prod(shape):
                out = None
    b.emit(kind, [bottom], [b.top_for(bottom, 0.08)], [out], "reshape_param", param, raw)


@recipe("Crop")
def crop(b: _Builder, kind: str) -> None:
    rng = b.rng
    bottom = b.pick(lambda s: s is not None and len(s) >= 2) or b.pick()
    assert bottom is not None
    shape = b.shapes[bottom]
    param, raw = b.draw(
        "CropParameter",
        Draw(hints={"axis": (2, 2, 1, 0, -1, 3), "offset": (0, 1, 2, 3)}, p_set=0.6),
        shape,
    )
    if shape is None:
        reference = b.pick() or bottom
        out = None
    else:
        axis = canon(param.axis, len(shape)) or 0  # type: ignore[attr-defined]
        ref = list(shape)
        for i in range(axis, len(shape)):
            ref[i] = max(1, shape[i] - rng.choice((0, 1, 2, 3)))
        if rng.random() < 0.1:
            ref[-1] += 1  # larger than the input: Caffe refuses
        others = [
            x for x in b.order if b.shapes[x] is not None and len(b.shapes[x] or ()) == len(shape)
        ]
        reference = rng.choice(others) if others and rng.random() < 0.3 else b.add_input(tuple(ref))
        refshape = b.shapes[reference]
        out = None if refshape is None else tuple(shape[:axis]) + tuple(refshape[axis:])
    b.emit(kind, [bottom, reference], [b.new_blob()], [out], "crop_param", param, raw)


@recipe("Tile")
def tile(b: _Builder, kind: str) -> None:
    bottom = b.pick()
    assert bottom is not None
    shape = b.shapes[bottom]
    param, raw = b.draw(
        "TileParameter",
        Draw(hints={"axis": (1, 0, -1, 2, 3), "tiles": (1, 2, 3)}, p_set=0.5),
        shape,
    )
    if not param.HasField("tiles") and b.rng.random() < 0.85:
        param.tiles = b.rng.choice((1, 2, 3))  # type: ignore[attr-defined]
    out = None
    if shape is not None:
        axis = canon(param.axis, len(shape))  # type: ignore[attr-defined]
        if axis is not None and param.tiles > 0:  # type: ignore[attr-defined]
            out = shape[:axis] + (shape[axis] * param.tiles,) + shape[axis + 1 :]  # type: ignore
    b.emit(kind, [bottom], [b.top_for(bottom, 0.08)], [out], "tile_param", param, raw)


@recipe("ArgMax")
def argmax(b: _Builder, kind: str) -> None:
    bottom = b.pick()
    assert bottom is not None
    shape = b.shapes[bottom]
    param, raw = b.draw(
        "ArgMaxParameter",
        Draw(hints={"axis": (1, 0, -1, 2, 3), "top_k": (1, 2, 3)}, p_set=0.5),
        shape,
    )
    # Ties come from blobs with equal values upstream (ReLU's zeros, Threshold, Pooling).
    b.emit(kind, [bottom], [b.top_for(bottom, 0.08)], [None], "argmax_param", param, raw)


@recipe("Reduction")
def reduction(b: _Builder, kind: str) -> None:
    bottom = b.pick()
    assert bottom is not None
    shape = b.shapes[bottom]
    param, raw = b.draw(
        "ReductionParameter",
        Draw(
            hints={
                "operation": ("SUM", "ASUM", "SUMSQ", "MEAN"),
                "axis": (0, 1, -1, 2, 3),
                "coeff": (1.0, -2.0, 0.5),
            },
            p_set=0.5,
        ),
        shape,
    )
    out = None
    if shape is not None:
        axis = canon(param.axis, len(shape))  # type: ignore[attr-defined]
        out = None if axis is None else shape[:axis]
    b.emit(kind, [bottom], [b.top_for(bottom, 0.08)], [out], "reduction_param", param, raw)


@recipe("Permute")
def permute(b: _Builder, kind: str) -> None:
    rng = b.rng
    bottom = b.pick()
    assert bottom is not None
    shape = b.shapes[bottom]
    rank = len(shape) if shape is not None else 4
    order = list(range(rank))
    choice = rng.random()
    if choice < 0.55:
        rng.shuffle(order)
    elif choice < 0.7:
        order = order[: rng.randint(0, rank)]  # a prefix: Caffe completes it
    elif choice < 0.8:
        order = [order[0], order[0]] + order[2:]  # repeated: Caffe refuses
    elif choice < 0.85:
        order = [*order, rank]  # out of range
    # else: the identity, which shares memory in Caffe
    full = order + [i for i in range(rank) if i not in order]
    out = None
    if shape is not None and sorted(full) == list(range(rank)):
        out = tuple(shape[i] for i in full)
    raw = [f"order: {o}" for o in order]
    b.emit(kind, [bottom], [b.top_for(bottom, 0.08)], [out], "permute_param", None, raw)


@recipe("InnerProduct")
def inner_product(b: _Builder, kind: str) -> None:
    bottom = b.pick()
    assert bottom is not None
    shape = b.shapes[bottom]
    param, raw = b.draw(
        "InnerProductParameter",
        Draw(
            hints={
                "num_output": (1, 2, 3, 5),
                "axis": (1, 1, 2, -1, 0),
                "transpose": (False, True),
                "bias_term": (True, False),
            },
            p_set=0.4,
        ),
        shape,
    )
    if not param.HasField("num_output") and b.rng.random() < 0.9:
        param.num_output = b.rng.choice((1, 2, 3, 5))  # type: ignore[attr-defined]
    out = None
    if shape is not None:
        axis = canon(param.axis, len(shape))  # type: ignore[attr-defined]
        if axis is not None:
            out = shape[:axis] + (param.num_output,)  # type: ignore[attr-defined]
    b.emit(kind, [bottom], [b.top_for(bottom, 0.05)], [out], "inner_product_param", param, raw)


def _geometry_groups() -> list[list[tuple[float, tuple[str, ...]]]]:
    """kernel/pad/stride spellings: one value, the _h/_w pair, half a pair, or both kinds."""
    return [
        [
            (6, ("kernel_size",)),
            (3, ("kernel_h", "kernel_w")),
            (0.4, ("kernel_h",)),
            (0.4, ("kernel_w",)),
            (0.4, ("kernel_size", "kernel_h", "kernel_w")),
            (0.2, ()),
        ],
        [
            (5, ()),
            (3, ("pad",)),
            (2, ("pad_h", "pad_w")),
            (0.6, ("pad_h",)),
            (0.6, ("pad_w",)),
            (0.3, ("pad", "pad_h")),
        ],
        [
            (4, ()),
            (4, ("stride",)),
            (2, ("stride_h", "stride_w")),
            (0.5, ("stride_h",)),
            (0.5, ("stride_w",)),
            (0.3, ("stride", "stride_w")),
        ],
    ]


def _pair(message: Message, name: str, default: int) -> tuple[int, int] | None:
    """A geometry pair read the way Caffe's pooling/convolution reads it (estimate only)."""
    whole = "kernel_size" if name == "kernel" else name
    single = getattr(message, whole)
    h, w = getattr(message, f"{name}_h"), getattr(message, f"{name}_w")
    if message.HasField(f"{name}_h") or message.HasField(f"{name}_w"):
        return (h, w)
    if isinstance(single, int):
        return (single, single) if message.HasField(whole) else (default, default)
    values = list(single)
    if not values:
        return (default, default)
    return (values[0], values[-1])


@recipe("Convolution", "Deconvolution")
def convolution(b: _Builder, kind: str) -> None:
    rng = b.rng
    bottom = b.spatial()
    assert bottom is not None
    shape = b.shapes[bottom]
    channels = max(1, shape[1]) if shape is not None and len(shape) > 1 else 1
    groups = [g for g in (1, 2, 3) if channels % g == 0] + [channels]
    group = rng.choice(groups)
    small = min(shape[2:]) if shape is not None and len(shape) > 2 else 3
    param, raw = b.draw(
        "ConvolutionParameter",
        Draw(
            hints={
                "num_output": tuple(group * m for m in (1, 2, 3)),
                "kernel_size": (1, 2, 3, 3, min(5, small)),
                "kernel_h": (1, 2, 3),
                "kernel_w": (1, 2, 3),
                "pad": (0, 1, 2),
                "pad_h": (0, 1, 2),
                "pad_w": (0, 1, 2),
                "stride": (1, 2, 3),
                "stride_h": (1, 2, 3),
                "stride_w": (1, 2, 3),
                "dilation": (1, 2),
                "group": (group,),
                "bias_term": (True, False),
                "axis": (1,),
            },
            groups=_geometry_groups(),
            p_set=0.3,
            max_repeated=2,
        ),
        shape,
    )
    if not param.HasField("num_output") and rng.random() < 0.9:
        param.num_output = group * rng.choice((1, 2))  # type: ignore[attr-defined]
    out = None
    if shape is not None and len(shape) == 4 and param.axis == 1:  # type: ignore[attr-defined]
        kernel = _pair(param, "kernel", 0)
        stride = _pair(param, "stride", 1)
        pad = _pair(param, "pad", 0)
        dil = list(param.dilation) or [1]  # type: ignore[attr-defined]
        dilation = (dil[0], dil[-1])
        if kernel and stride and pad and min(kernel) > 0 and min(stride) > 0:
            sizes = []
            for i in range(2):
                extent = dilation[i] * (kernel[i] - 1) + 1
                if kind == "Convolution":
                    sizes.append((shape[2 + i] + 2 * pad[i] - extent) // stride[i] + 1)
                else:
                    sizes.append(stride[i] * (shape[2 + i] - 1) + extent - 2 * pad[i])
            out = (shape[0], param.num_output, sizes[0], sizes[1])  # type: ignore[attr-defined]
            if min(out) <= 0:
                out = None
    if rng.random() < 0.04:
        # BaseConvolutionLayer runs the same weights over each bottom/top pair.
        b.emit(
            kind,
            [bottom, bottom],
            [b.new_blob(), b.new_blob()],
            [out, out],
            "convolution_param",
            param,
            raw,
        )
        return
    b.emit(kind, [bottom], [b.top_for(bottom, 0.05)], [out], "convolution_param", param, raw)


@recipe("Pooling")
def pooling(b: _Builder, kind: str) -> None:
    rng = b.rng
    bottom = b.spatial()
    assert bottom is not None
    shape = b.shapes[bottom]
    small = min(shape[2:]) if shape is not None and len(shape) > 2 else 3
    groups = _geometry_groups()
    groups.append([(4, ()), (2, ("round_mode",)), (2, ("ceil_mode",))])
    param, raw = b.draw(
        "PoolingParameter",
        Draw(
            hints={
                "pool": ("MAX", "AVE", "MAX", "AVE", "STOCHASTIC"),
                "kernel_size": (1, 2, 3, min(4, small)),
                "kernel_h": (1, 2, 3),
                "kernel_w": (1, 2, 3),
                "pad": (0, 1, 2),
                "pad_h": (0, 1),
                "pad_w": (0, 1),
                "stride": (1, 2, 3),
                "stride_h": (1, 2, 3),
                "stride_w": (1, 2, 3),
                "global_pooling": (False, False, False, True),
                "round_mode": ("CEIL", "FLOOR"),
                "ceil_mode": (True, False),
            },
            groups=groups,
            p_set=0.4,
        ),
        shape,
    )
    tops = [b.top_for(bottom, 0.05)]
    if rng.random() < 0.08:
        tops.append(b.new_blob())  # the argmax mask top
    out = None
    if shape is not None and len(shape) == 4:
        if param.global_pooling:  # type: ignore[attr-defined]
            out = (shape[0], shape[1], 1, 1)
        else:
            kernel = _pair(param, "kernel", 0)
            stride = _pair(param, "stride", 1)
            pad = _pair(param, "pad", 0)
            ceil = param.ceil_mode if param.HasField("ceil_mode") else param.round_mode == 0  # type: ignore
            if kernel and stride and pad and min(kernel) > 0 and min(stride) > 0:
                sizes = []
                for i in range(2):
                    span = shape[2 + i] + 2 * pad[i] - kernel[i]
                    size = (math.ceil(span / stride[i]) if ceil else span // stride[i]) + 1
                    if (pad[0] or pad[1]) and (size - 1) * stride[i] >= shape[2 + i] + pad[i]:
                        size -= 1
                    sizes.append(size)
                out = (shape[0], shape[1], sizes[0], sizes[1])
                if min(out) <= 0:
                    out = None
    b.emit(kind, [bottom], tops, [out] * len(tops), "pooling_param", param, raw)


def _prior_count(param: Message) -> int:
    ratios = [1.0]
    for ar in param.aspect_ratio:  # type: ignore[attr-defined]
        if all(abs(ar - r) >= 1e-6 for r in ratios):
            ratios.append(ar)
            if param.flip:  # type: ignore[attr-defined]
                ratios.append(1.0 / ar if ar else math.inf)
    count = len(ratios) * len(param.min_size)  # type: ignore[attr-defined]
    return count + len(param.max_size)  # type: ignore[attr-defined]


def _prior_box(b: _Builder, feature: str, image: str) -> tuple[str, int]:
    rng = b.rng
    param, raw = b.draw(
        "PriorBoxParameter",
        Draw(
            hints={
                "min_size": (21.28, 30.0, 10.5, 7.0, 4.0, 60.0),
                "aspect_ratio": (2.0, 3.0, 0.5, 1.0, 1.5),
                "flip": (True, False),
                "clip": (False, True),
                "variance": (0.1, 0.2, 0.5),
                "img_size": (304, 300, 9, 16),
                "img_h": (300, 16),
                "img_w": (300, 20),
                "step": (8.0, 16.0, 3.5, 32.0),
                "step_h": (8.0, 3.0),
                "step_w": (16.0, 3.0),
                "offset": (0.5, 0.0, 0.25, 1.0),
            },
            groups=[
                [(4, ()), (1, ("img_size",)), (1, ("img_h", "img_w")), (0.2, ("img_h",))],
                [(4, ()), (1, ("step",)), (1, ("step_h", "step_w")), (0.2, ("step", "step_h"))],
            ],
            p_set=0.45,
            max_repeated=2,
            skip=frozenset({"max_size"}),
        ),
        b.shapes[feature],
    )
    if not param.min_size and rng.random() < 0.9:  # type: ignore[attr-defined]
        param.min_size.append(rng.choice((21.28, 30.0, 10.5, 7.0)))  # type: ignore[attr-defined]
    if rng.random() < 0.5:
        for low in param.min_size:  # type: ignore[attr-defined]
            param.max_size.append(rng.choice((low * 2.14, low + 15.0, low - 1.0)))  # type: ignore
    if len(param.variance) == 2:  # type: ignore[attr-defined]
        param.variance.extend((0.2, 0.2))  # type: ignore[attr-defined]
    count = _prior_count(param)
    shape = b.shapes[feature]
    out = None
    if shape is not None and len(shape) == 4:
        out = (1, 2, shape[2] * shape[3] * count * 4)
    top = b.new_blob()
    b.emit("PriorBox", [feature, image], [top], [out], "prior_box_param", param, raw)
    return top, count


@recipe("PriorBox")
def prior_box(b: _Builder, kind: str) -> None:
    feature = b.spatial()
    assert feature is not None
    images = [x for x in b.spec.inputs if len(b.spec.inputs[x]) == 4]
    image = b.rng.choice(images) if images else b.add_input((1, 3, 19, 23))
    _prior_box(b, feature, image)


@recipe("DetectionOutput")
def detection_output(b: _Builder, kind: str) -> None:
    """A miniature SSD head: PriorBox over a feature map, loc and conf as extra inputs."""
    rng = b.rng
    feature = b.pick(lambda s: s is not None and len(s) == 4)
    if feature is None:
        feature = b.add_input((1, 2, rng.choice((1, 2, 3)), rng.choice((2, 3))))
    shape = b.shapes[feature]
    assert shape is not None
    image = b.add_input((shape[0], 3, 32, 32)) if rng.random() < 0.5 else feature
    priors, count = _prior_box(b, feature, image)
    total = shape[2] * shape[3] * count
    classes = rng.choice((2, 3, 4))
    share = rng.random() < 0.8
    loc = b.add_input((shape[0], total * 4 * (1 if share else classes)))
    conf = b.add_input((shape[0], total * classes))
    if rng.random() < 0.5:
        soft = b.new_blob()
        conf_param, _ = b.draw("SoftmaxParameter", Draw(p_set=0.0), None)
        b.emit("Softmax", [conf], [soft], [b.shapes[conf]], "softmax_param", conf_param)
        conf = soft
    param, raw = b.draw(
        "DetectionOutputParameter",
        Draw(
            hints={
                "background_label_id": (0, 0, -1, 1),
                "code_type": ("CENTER_SIZE", "CENTER_SIZE", "CORNER", "CORNER_SIZE"),
                "variance_encoded_in_target": (False, False, True),
                "keep_top_k": (-1, 5, 20, 200),
                "confidence_threshold": (0.01, 0.3, 0.0),
                "clip": (False,),
            },
            fixed={"num_classes": classes, "share_location": share},
            p_set=0.5,
        ),
        None,
    )
    nms = param.nms_param  # type: ignore[attr-defined]
    nms.nms_threshold = rng.choice((0.45, 0.3, 0.7, 1.0))
    if rng.random() < 0.6:
        nms.top_k = rng.choice((5, 20, 400, -1))
    out = b.new_blob()
    b.emit(kind, [loc, conf, priors], [out], [None], "detection_output_param", param, raw)
    # Its row count is known only at run time; Caffe aborts when a later layer's weights were
    # shaped for the row count at set-up. No layer reads it here.
    b.order.remove(out)


@recipe("ROIPooling")
def roi_pooling(b: _Builder, kind: str) -> None:
    rng = b.rng
    feature = b.pick(lambda s: s is not None and len(s) == 4)
    if feature is None:
        feature = b.add_input((1, 2, 5, 7))
    shape = b.shapes[feature]
    assert shape is not None
    scale = rng.choice((1.0, 0.5, 0.25, 1.0 / 16))
    image = (shape[0], shape[1], int(shape[2] / scale), int(shape[3] / scale))
    count = rng.choice((1, 2, 3))
    boxes = b.add_input((count, 5), roi_image=image)
    param, raw = b.draw(
        "ROIPoolingParameter",
        Draw(
            hints={"pooled_h": (1, 2, 3), "pooled_w": (1, 2, 3), "spatial_scale": (scale,)},
            p_set=0.8,
            p_boundary=0.05,
        ),
        shape,
    )
    out = (count, shape[1], param.pooled_h, param.pooled_w)  # type: ignore[attr-defined]
    b.emit(kind, [feature, boxes], [b.new_blob()], [out], "roi_pooling_param", param, raw)


@recipe("Upsample")
def upsample(b: _Builder, kind: str) -> None:
    bottom = b.spatial()
    assert bottom is not None
    param, raw = b.draw(
        "UpsampleParameter",
        # Always explicit: the default differs between forks (2 in SegNet's, 1 in the oracle's).
        Draw(fixed={"scale": b.rng.choice((1, 2, 3))}, p_set=0.5),
        b.shapes[bottom],
    )
    b.emit(kind, [bottom], [b.new_blob()], [None], "upsample_param", param, raw)


@recipe("Silence")
def silence(b: _Builder, kind: str) -> None:
    bottoms = [x for x in [b.pick(), b.pick()] if x is not None]
    b.emit(kind, sorted(set(bottoms)), [], [])
