"""Layers that move data without arithmetic: Input, Concat, Slice, Split, Silence, Flatten,
Reshape, Crop, Tile, BatchReindex, Filter, Im2col, the forks' Permute (SSD) and ShuffleChannel
(ShuffleNet), and the oracle build's Unsqueeze, Pad and PixelShuffle."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from protocaffe.ir.graph import Attrs, NoAttrs, Shape
from protocaffe.layers.base import (
    FUNCTIONAL,
    Emission,
    EmitContext,
    Layer,
    LayerSource,
    Role,
    call,
    canonical_axis,
    f32,
    fail,
    opt,
    pair,
    tuple_expr,
)
from protocaffe.layers.registry import register


@dataclass(frozen=True)
class InputAttrs(Attrs):
    shapes: tuple[Shape, ...]


@register
class Input(Layer[InputAttrs]):
    """Declares the net's inputs; the graph builder turns its tops into forward() arguments."""

    types = ("Input",)
    bottoms = (0, 0)
    tops = (1, None)

    def parse(self, layer: LayerSource) -> InputAttrs:
        shapes = [tuple(int(d) for d in s.dim) for s in layer.param.input_param.shape]
        if len(shapes) == 1 and len(layer.tops) > 1:
            shapes = shapes * len(layer.tops)
        if len(shapes) != len(layer.tops):
            raise fail(layer, f"{len(layer.tops)} tops but {len(shapes)} input_param shapes")
        return InputAttrs(tuple(shapes))

    def declared_inputs(self, attrs: InputAttrs) -> tuple[Shape, ...]:
        return attrs.shapes


@dataclass(frozen=True)
class AxisAttrs(Attrs):
    axis: int


@register
class Concat(Layer[AxisAttrs]):
    types = ("Concat",)
    role = Role.COMBINE
    bottoms = (1, None)

    def parse(self, layer: LayerSource) -> AxisAttrs:
        p = layer.param.concat_param
        return AxisAttrs(int(p.concat_dim) if p.HasField("concat_dim") else int(p.axis))

    def infer(
        self, attrs: AxisAttrs, in_shapes: Sequence[Shape], layer: LayerSource
    ) -> list[Shape]:
        first = in_shapes[0]
        axis = canonical_axis(attrs.axis, len(first), layer)
        for i, shape in enumerate(in_shapes[1:], start=1):
            if len(shape) != len(first) or any(
                a != b for d, (a, b) in enumerate(zip(shape, first, strict=True)) if d != axis
            ):
                raise fail(
                    layer,
                    f"bottom {i} '{layer.bottoms[i]}' has shape {shape}, which does not match "
                    f"bottom 0 {first} outside axis {axis}",
                )
        total = sum(s[axis] for s in in_shapes)
        return [first[:axis] + (total,) + first[axis + 1 :]]

    def emit(self, attrs: AxisAttrs, ctx: EmitContext) -> Emission:
        if len(ctx.inputs) == 1:
            return Emission(forward=ctx.x)
        axis = attrs.axis % len(ctx.in_shapes[0])
        return Emission(
            forward=f"torch.cat([{', '.join(ctx.inputs)}], dim={axis})",
            note="bottoms in prototxt order",
        )

    def fresh_output(self, attrs: AxisAttrs, in_shapes: Sequence[Shape]) -> bool:
        return len(in_shapes) > 1  # one bottom: the same tensor

    def passes_through(
        self, attrs: AxisAttrs, in_shapes: Sequence[Shape], out_shapes: Sequence[Shape]
    ) -> bool:
        return len(in_shapes) == 1

    def shares_memory(
        self, attrs: AxisAttrs, in_shapes: Sequence[Shape], out_shapes: Sequence[Shape]
    ) -> bool:
        # concat_layer.cpp Reshape: one bottom -> top[0]->ShareData(*bottom[0]).
        return len(in_shapes) == 1

    def computes_in_place(self, attrs: AxisAttrs, in_shapes: Sequence[Shape]) -> bool:
        return len(in_shapes) == 1


@dataclass(frozen=True)
class SliceAttrs(Attrs):
    axis: int
    points: tuple[int, ...]


@register
class Slice(Layer[SliceAttrs]):
    types = ("Slice",)
    role = Role.COMBINE
    tops = (1, None)

    def parse(self, layer: LayerSource) -> SliceAttrs:
        p = layer.param.slice_param
        axis = int(p.slice_dim) if p.HasField("slice_dim") else int(p.axis)
        points = tuple(int(v) for v in p.slice_point)
        if points and len(points) != len(layer.tops) - 1:
            raise fail(
                layer,
                f"{len(points)} slice points need {len(points) + 1} tops, got {len(layer.tops)}",
            )
        return SliceAttrs(axis, points)

    def infer(
        self, attrs: SliceAttrs, in_shapes: Sequence[Shape], layer: LayerSource
    ) -> list[Shape]:
        shape = in_shapes[0]
        axis = canonical_axis(attrs.axis, len(shape), layer)
        size = shape[axis]
        if attrs.points:
            bounds = (0, *attrs.points, size)
            if any(b <= a for a, b in itertools.pairwise(bounds)):
                raise fail(
                    layer,
                    f"slice points {list(attrs.points)} must increase strictly inside (0, {size}) "
                    f"on axis {axis}",
                )
            widths = [b - a for a, b in itertools.pairwise(bounds)]
        else:
            n = len(layer.tops)
            if size % n:
                raise fail(layer, f"axis {axis} of size {size} does not split into {n} equal parts")
            widths = [size // n] * n
        return [shape[:axis] + (w,) + shape[axis + 1 :] for w in widths]

    def emit(self, attrs: SliceAttrs, ctx: EmitContext) -> Emission:
        axis = attrs.axis % len(ctx.in_shapes[0])
        if len(ctx.out_shapes) == 1:
            return Emission(forward=ctx.x)
        if attrs.points:
            points = ", ".join(str(p) for p in attrs.points)
            return Emission(forward=f"torch.tensor_split({ctx.x}, [{points}], dim={axis})")
        return Emission(forward=f"torch.chunk({ctx.x}, {len(ctx.out_shapes)}, dim={axis})")

    def passes_through(
        self, attrs: SliceAttrs, in_shapes: Sequence[Shape], out_shapes: Sequence[Shape]
    ) -> bool:
        return len(out_shapes) == 1

    def shares_memory(
        self, attrs: SliceAttrs, in_shapes: Sequence[Shape], out_shapes: Sequence[Shape]
    ) -> bool:
        # slice_layer.cpp Reshape: one top -> top[0]->ShareData(*bottom[0]).
        return len(out_shapes) == 1

    def computes_in_place(self, attrs: SliceAttrs, in_shapes: Sequence[Shape]) -> bool:
        return False  # several tops: the first is the bottom, reshaped before the copies


@register
class Split(Layer[NoAttrs]):
    """Copies its bottom to every top: removed by a pass (the tops alias the bottom)."""

    types = ("Split",)
    tops = (1, None)
    identity = True
    refuses_in_place = True  # split_layer.cpp Reshape

    def infer(self, attrs: NoAttrs, in_shapes: Sequence[Shape], layer: LayerSource) -> list[Shape]:
        return [in_shapes[0]] * len(layer.tops)

    def shares_memory(
        self, attrs: NoAttrs, in_shapes: Sequence[Shape], out_shapes: Sequence[Shape]
    ) -> bool:
        return True  # split_layer.cpp Forward_cpu: top[i]->ShareData(*bottom[0])


@register
class Silence(Layer[NoAttrs]):
    """Consumes blobs so that Caffe does not report them as outputs: removed by a pass."""

    types = ("Silence",)
    bottoms = (1, None)
    tops = (0, 0)
    identity = True
    silences = True

    def infer(self, attrs: NoAttrs, in_shapes: Sequence[Shape], layer: LayerSource) -> list[Shape]:
        return []


@dataclass(frozen=True)
class FlattenAttrs(Attrs):
    axis: int
    end_axis: int


@register
class Flatten(Layer[FlattenAttrs]):
    """Merges axes `axis` to `end_axis` into one (flatten_layer.cpp Reshape). With end_axis
    just before axis, count(axis, end_axis + 1) is 1 and Caffe inserts an axis of 1 there."""

    types = ("Flatten",)
    refuses_in_place = True  # flatten_layer.cpp Reshape

    def parse(self, layer: LayerSource) -> FlattenAttrs:
        p = layer.param.flatten_param
        return FlattenAttrs(int(p.axis), int(p.end_axis))

    def infer(
        self, attrs: FlattenAttrs, in_shapes: Sequence[Shape], layer: LayerSource
    ) -> list[Shape]:
        shape = in_shapes[0]
        start = canonical_axis(attrs.axis, len(shape), layer)
        end = canonical_axis(attrs.end_axis, len(shape), layer)
        if end < start - 1:
            # Blob::count(start, end + 1) CHECKs start <= end + 1.
            raise fail(
                layer,
                f"Caffe aborts here: end_axis {attrs.end_axis} comes before axis {attrs.axis} "
                "(Blob::count checks start_axis <= end_axis)",
            )
        return [shape[:start] + (math.prod(shape[start : end + 1]),) + shape[end + 1 :]]

    def emit(self, attrs: FlattenAttrs, ctx: EmitContext) -> Emission:
        rank = len(ctx.in_shapes[0])
        start, end = attrs.axis % rank, attrs.end_axis % rank
        if end < start:
            return Emission(forward=f"{ctx.x}.unsqueeze({start})", note="Caffe inserts an axis")
        args = f"{start}" if end == rank - 1 else f"{start}, {end}"
        return Emission(forward=f"torch.flatten({ctx.x}, {args})")

    def shares_memory(
        self, attrs: FlattenAttrs, in_shapes: Sequence[Shape], out_shapes: Sequence[Shape]
    ) -> bool:
        return True  # flatten_layer.cpp Forward_cpu: top[0]->ShareData(*bottom[0])


@dataclass(frozen=True)
class ReshapeAttrs(Attrs):
    dims: tuple[int, ...]
    axis: int
    num_axes: int


def reshape_plan(attrs: ReshapeAttrs, shape: Shape) -> list[int | str]:
    """Caffe's Reshape rule as a list of output dims: an int is a literal, "copy:i" copies input
    dim i, "infer" is the one -1 dimension. Raises ValueError when the rule cannot apply."""
    rank = len(shape)
    start = attrs.axis if attrs.axis >= 0 else rank + attrs.axis + 1
    if not 0 <= start <= rank:
        raise ValueError(f"axis {attrs.axis} is out of range for a {rank}-D input")
    end = rank if attrs.num_axes == -1 else start + attrs.num_axes
    if attrs.num_axes < -1 or end > rank:
        raise ValueError(f"num_axes {attrs.num_axes} is out of range for a {rank}-D input")
    if sum(1 for d in attrs.dims if d == -1) > 1:
        raise ValueError("at most one dimension can be -1")
    plan: list[int | str] = [f"copy:{i}" for i in range(start)]
    for i, d in enumerate(attrs.dims):
        if d == 0:
            if start + i >= rank:
                raise ValueError(f"dim {i} is 0 (copy) but the input has no axis {start + i}")
            plan.append(f"copy:{start + i}")
        elif d == -1:
            plan.append("infer")
        elif d < -1:
            raise ValueError(f"dim {d} is not allowed (use -1 to infer or 0 to copy)")
        else:
            plan.append(d)
    plan.extend(f"copy:{i}" for i in range(end, rank))
    return plan


@register
class Reshape(Layer[ReshapeAttrs]):
    types = ("Reshape",)
    refuses_in_place = True  # reshape_layer.cpp LayerSetUp

    def shares_memory(
        self, attrs: ReshapeAttrs, in_shapes: Sequence[Shape], out_shapes: Sequence[Shape]
    ) -> bool:
        return True  # reshape_layer.cpp Reshape: top[0]->ShareData(*bottom[0])

    def parse(self, layer: LayerSource) -> ReshapeAttrs:
        p = layer.param.reshape_param
        return ReshapeAttrs(tuple(int(d) for d in p.shape.dim), int(p.axis), int(p.num_axes))

    def infer(
        self, attrs: ReshapeAttrs, in_shapes: Sequence[Shape], layer: LayerSource
    ) -> list[Shape]:
        shape = in_shapes[0]
        try:
            plan = reshape_plan(attrs, shape)
        except ValueError as exc:
            raise fail(layer, str(exc)) from None
        known = [shape[int(d[5:])] if isinstance(d, str) and d != "infer" else d for d in plan]
        fixed = math.prod(d for d in known if isinstance(d, int))
        total = math.prod(shape)
        if "infer" in known:
            if fixed == 0 or total % fixed:
                raise fail(layer, f"cannot reshape {shape} ({total} elements) to {plan}")
            known = [total // fixed if d == "infer" else d for d in known]
        out = tuple(int(d) for d in known)
        if math.prod(out) != total:
            raise fail(layer, f"cannot reshape {shape} ({total} elements) to {out}")
        return [out]

    def emit(self, attrs: ReshapeAttrs, ctx: EmitContext) -> Emission:
        plan = reshape_plan(attrs, ctx.in_shapes[0])
        dims = [
            "-1" if d == "infer" else f"{ctx.x}.shape[{d[5:]}]" if isinstance(d, str) else str(d)
            for d in plan
        ]
        return Emission(forward=f"{ctx.x}.reshape({', '.join(dims)})")


@dataclass(frozen=True)
class CropAttrs(Attrs):
    axis: int
    offsets: tuple[int, ...]


@register
class Crop(Layer[CropAttrs]):
    """Crops bottom 0 to the shape of bottom 1 from `axis` on, at the given offsets."""

    types = ("Crop",)
    role = Role.COMBINE
    bottoms = (2, 2)

    def computes_in_place(self, attrs: CropAttrs, in_shapes: Sequence[Shape]) -> bool:
        return False

    def parse(self, layer: LayerSource) -> CropAttrs:
        p = layer.param.crop_param
        return CropAttrs(int(p.axis), tuple(int(o) for o in p.offset))

    @staticmethod
    def _offsets(attrs: CropAttrs, rank: int) -> tuple[int, list[int]]:
        """The first cropped axis and one offset per cropped axis (validated by `infer`)."""
        axis = attrs.axis % rank
        count = rank - axis
        if len(attrs.offsets) > 1:
            return axis, list(attrs.offsets)
        offsets = [attrs.offsets[0] if attrs.offsets else 0] * count
        return axis, offsets

    def infer(
        self, attrs: CropAttrs, in_shapes: Sequence[Shape], layer: LayerSource
    ) -> list[Shape]:
        shape, ref = in_shapes
        if len(shape) != len(ref):
            raise fail(layer, f"bottoms have different ranks: {shape} and {ref}")
        canonical_axis(attrs.axis, len(shape), layer)
        count = len(shape) - attrs.axis % len(shape)
        if len(attrs.offsets) > 1 and len(attrs.offsets) != count:
            raise fail(layer, f"{len(attrs.offsets)} offsets for {count} cropped axes")
        axis, offsets = self._offsets(attrs, len(shape))
        out = list(shape)
        for i, offset in enumerate(offsets):
            d = axis + i
            if offset + ref[d] > shape[d]:
                raise fail(
                    layer,
                    f"crop of axis {d} at offset {offset} to size {ref[d]} exceeds the input "
                    f"size {shape[d]}",
                )
            out[d] = ref[d]
        return [tuple(out)]

    def emit(self, attrs: CropAttrs, ctx: EmitContext) -> Emission:
        x, ref = ctx.inputs
        axis, offsets = self._offsets(attrs, len(ctx.in_shapes[0]))
        index = [":"] * axis
        for i, offset in enumerate(offsets):
            start = str(offset) if offset else ""
            stop = f"{offset} + {ref}.shape[{axis + i}]" if offset else f"{ref}.shape[{axis + i}]"
            index.append(f"{start}:{stop}")
        return Emission(forward=f"{x}[{', '.join(index)}]")


@register
class AutoCrop(Layer[CropAttrs]):
    """RCF's AutoCrop: crops bottom 0 to bottom 1's height and width at offsets that Caffe
    derives from the layers between the two bottoms (their coordinate maps), which is the
    old two-bottom Crop of s9xie/hed under another name (and DeconvNet's V1 CROP). The offsets
    are computed on the NetDef (`protocaffe.frontend.dialects`), which writes them into the
    layer's crop_param; the layer is then a Crop from axis 2.

    Source: yun-liu/rcf @ ce460ff6, src/caffe/layers/auto_crop_layer.cpp (LayerSetUp, Reshape,
    Forward_cpu) and include/caffe/util/coords.hpp.
    """

    types = ("AutoCrop",)
    role = Role.COMBINE
    bottoms = (2, 2)
    _crop = Crop()

    def parse(self, layer: LayerSource) -> CropAttrs:
        p = layer.param.crop_param
        if len(p.offset) != 2 or p.axis != 2:
            raise fail(
                layer,
                "AutoCrop's offsets come from the net's geometry, which protocaffe resolves "
                "when it lowers the whole net (build_graph); this layer was not resolved",
            )
        return self._crop.parse(layer)

    def infer(
        self, attrs: CropAttrs, in_shapes: Sequence[Shape], layer: LayerSource
    ) -> list[Shape]:
        if len(in_shapes[0]) != 4:
            raise fail(layer, f"expects 4-D bottoms, got {in_shapes[0]}")
        return self._crop.infer(attrs, in_shapes, layer)

    def emit(self, attrs: CropAttrs, ctx: EmitContext) -> Emission:
        emission = self._crop.emit(attrs, ctx)
        offsets = ", ".join(str(o) for o in attrs.offsets)
        return replace(emission, note=f"offsets {offsets} from the geometry")


@dataclass(frozen=True)
class TileAttrs(Attrs):
    axis: int
    tiles: int


@register
class Tile(Layer[TileAttrs]):
    types = ("Tile",)

    def computes_in_place(self, attrs: TileAttrs, in_shapes: Sequence[Shape]) -> bool:
        return False  # it reshapes the blob it reads (and corrupts the heap doing so)

    def parse(self, layer: LayerSource) -> TileAttrs:
        p = layer.param.tile_param
        if not p.HasField("tiles") or p.tiles <= 0:
            raise fail(layer, "tile_param.tiles must be a positive number")
        return TileAttrs(int(p.axis), int(p.tiles))

    def infer(
        self, attrs: TileAttrs, in_shapes: Sequence[Shape], layer: LayerSource
    ) -> list[Shape]:
        shape = in_shapes[0]
        axis = canonical_axis(attrs.axis, len(shape), layer)
        return [shape[:axis] + (shape[axis] * attrs.tiles,) + shape[axis + 1 :]]

    def emit(self, attrs: TileAttrs, ctx: EmitContext) -> Emission:
        rank = len(ctx.in_shapes[0])
        reps = ["1"] * rank
        reps[attrs.axis % rank] = str(attrs.tiles)
        return Emission(forward=f"{ctx.x}.repeat({', '.join(reps)})")


@dataclass(frozen=True)
class PermuteAttrs(Attrs):
    order: tuple[int, ...]


@register
class Permute(Layer[PermuteAttrs]):
    """Reorders axes; axes the `order` leaves out follow in their original order.

    Source: weiliu89/caffe (branch ssd), src/caffe/layers/permute_layer.cpp.
    """

    types = ("Permute",)

    def parse(self, layer: LayerSource) -> PermuteAttrs:
        order = tuple(int(v) for v in layer.param.permute_param.order)
        if len(set(order)) != len(order):
            raise fail(layer, f"order {list(order)} repeats an axis")
        return PermuteAttrs(order)

    def _full(self, attrs: PermuteAttrs, rank: int) -> tuple[int, ...]:
        return attrs.order + tuple(a for a in range(rank) if a not in attrs.order)

    def infer(
        self, attrs: PermuteAttrs, in_shapes: Sequence[Shape], layer: LayerSource
    ) -> list[Shape]:
        shape = in_shapes[0]
        if any(a >= len(shape) for a in attrs.order):
            raise fail(
                layer, f"order {list(attrs.order)} names an axis beyond a {len(shape)}-D input"
            )
        return [tuple(shape[a] for a in self._full(attrs, len(shape)))]

    def emit(self, attrs: PermuteAttrs, ctx: EmitContext) -> Emission:
        order = self._full(attrs, len(ctx.in_shapes[0]))
        if order == tuple(range(len(order))):
            return Emission(forward=ctx.x)
        return Emission(forward=f"{ctx.x}.permute{tuple_expr(order)}")

    def _identity(self, attrs: PermuteAttrs, in_shapes: Sequence[Shape]) -> bool:
        order = self._full(attrs, len(in_shapes[0]))
        return order == tuple(range(len(order)))

    def shares_memory(
        self, attrs: PermuteAttrs, in_shapes: Sequence[Shape], out_shapes: Sequence[Shape]
    ) -> bool:
        # permute_layer.cpp (SSD) Forward_cpu: without a permutation, ShareData.
        return self._identity(attrs, in_shapes)

    def computes_in_place(self, attrs: PermuteAttrs, in_shapes: Sequence[Shape]) -> bool:
        return self._identity(attrs, in_shapes)


@dataclass(frozen=True)
class GroupAttrs(Attrs):
    group: int


@register
class ShuffleChannel(Layer[GroupAttrs]):
    """Channel shuffle: view channels as (group, C / group), transpose, flatten back.

    Source: farmingyard/ShuffleNet, shuffle_channel_layer.cpp.
    """

    types = ("ShuffleChannel",)

    def parse(self, layer: LayerSource) -> GroupAttrs:
        group = int(layer.param.shuffle_channel_param.group)
        if group <= 0:
            raise fail(layer, f"group must be positive, got {group}")
        return GroupAttrs(group)

    def infer(
        self, attrs: GroupAttrs, in_shapes: Sequence[Shape], layer: LayerSource
    ) -> list[Shape]:
        shape = in_shapes[0]
        if len(shape) < 2 or shape[1] % attrs.group:
            raise fail(layer, f"channels of {shape} are not divisible by group {attrs.group}")
        return [shape]

    def computes_in_place(self, attrs: GroupAttrs, in_shapes: Sequence[Shape]) -> bool:
        return attrs.group == 1  # it copies channels from the bottom into the top

    def emit(self, attrs: GroupAttrs, ctx: EmitContext) -> Emission:
        x = ctx.x
        if attrs.group == 1:
            return Emission(forward=x)
        split = f"{x}.unflatten(1, ({attrs.group}, -1))"
        return Emission(forward=f"{split}.transpose(1, 2).flatten(1, 2)")


@dataclass(frozen=True)
class UnsqueezeAttrs(Attrs):
    dim: int


@register
class Unsqueeze(Layer[UnsqueezeAttrs]):
    """Inserts an axis of size 1 before axis `dim` (a negative dim counts from the end + 1).

    Source: brocolli-caffe 9.0.2 (the oracle's build), src/caffe/layers/unsqueeze.cpp."""

    types = ("Unsqueeze",)

    def parse(self, layer: LayerSource) -> UnsqueezeAttrs:
        p = layer.param.unsqueeze_param
        if not p.HasField("dim"):
            raise fail(layer, "Caffe aborts here: unsqueeze_param.dim must be set")
        return UnsqueezeAttrs(int(p.dim))

    @staticmethod
    def _index(attrs: UnsqueezeAttrs, rank: int) -> int:
        return attrs.dim + rank + 1 if attrs.dim < 0 else attrs.dim

    def infer(
        self, attrs: UnsqueezeAttrs, in_shapes: Sequence[Shape], layer: LayerSource
    ) -> list[Shape]:
        shape = in_shapes[0]
        index = self._index(attrs, len(shape))
        if not 0 <= index <= len(shape):
            raise fail(
                layer,
                f"Caffe aborts here: dim {attrs.dim} is out of range for a {len(shape)}-D input",
            )
        return [shape[:index] + (1,) + shape[index:]]

    def emit(self, attrs: UnsqueezeAttrs, ctx: EmitContext) -> Emission:
        index = self._index(attrs, len(ctx.in_shapes[0]))
        return Emission(forward=f"{ctx.x}.unsqueeze({index})")


PAD_MODES = {0: "constant", 1: "replicate", 2: "reflect"}


@dataclass(frozen=True)
class PadAttrs(Attrs):
    mode: str  # "constant", "replicate" or "reflect"
    pads: tuple[int, int, int, int]  # up, down, left, right; all >= 0, or all < 0 (a crop)
    value: float


@register
class Pad(Layer[PadAttrs]):
    """Pads H by (pad_u, pad_d) and W by (pad_l, pad_r) with a constant, the edge values
    (REPLICATE) or their mirror images (REFLECT); all four negative crops instead.

    Source: brocolli-caffe 9.0.2 (the oracle's build), src/caffe/layers/pad_layer.cpp
    (Reshape, Forward_cpu)."""

    types = ("Pad",)

    def parse(self, layer: LayerSource) -> PadAttrs:
        p = layer.param.pad_param
        if layer.tops[0] == layer.bottoms[0]:
            raise fail(layer, "Caffe aborts here: Pad Layer does not allow in-place computation")
        pads = (int(p.pad_u), int(p.pad_d), int(p.pad_l), int(p.pad_r))
        if not (all(v >= 0 for v in pads) or all(v < 0 for v in pads)):
            raise fail(
                layer,
                f"pads (u, d, l, r) = {pads} mix signs: Caffe crops only when all four are "
                "negative, and otherwise writes outside the blob",
            )
        return PadAttrs(PAD_MODES[int(p.pad_type)], pads, f32(p.pad_value))

    def infer(self, attrs: PadAttrs, in_shapes: Sequence[Shape], layer: LayerSource) -> list[Shape]:
        shape = in_shapes[0]
        if len(shape) != 4:
            raise fail(layer, f"Caffe's Pad indexes 4-D blobs only (N, C, H, W), got {shape}")
        n, c, h, w = shape
        up, down, left, right = attrs.pads
        if (
            attrs.mode == "reflect"
            and min(attrs.pads) >= 0
            and (max(up, down) >= h or max(left, right) >= w)
        ):
            raise fail(
                layer,
                f"REFLECT pads {attrs.pads} must be smaller than the input's {h}x{w} (Caffe "
                "reads outside the image there)",
            )
        return [(n, c, h + up + down, w + left + right)]

    def emit(self, attrs: PadAttrs, ctx: EmitContext) -> Emission:
        up, down, left, right = attrs.pads
        if up < 0:
            return Emission(forward=f"{ctx.x}[:, :, {-up}:{down}, {-left}:{right}]", note="crop")
        forward = call(
            "F.pad",
            ctx.x,
            repr((left, right, up, down)),
            mode=attrs.mode if attrs.mode != "constant" else None,
            value=attrs.value if attrs.mode == "constant" and attrs.value != 0 else None,
        )
        return Emission(forward=forward, imports=(FUNCTIONAL,))

    def passes_through(
        self, attrs: PadAttrs, in_shapes: Sequence[Shape], out_shapes: Sequence[Shape]
    ) -> bool:
        return attrs.pads == (0, 0, 0, 0)


@dataclass(frozen=True)
class PixelShuffleAttrs(Attrs):
    factor: int


@register
class PixelShuffle(Layer[PixelShuffleAttrs]):
    """(N, C, H, W) -> (N, C / r^2, H * r, W * r): out[n, p, i * r + a, j * r + b] =
    in[n, p * r^2 + a * r + b, i, j], as torch's pixel_shuffle. Caffe checks only that r
    divides C; the channels past (C / r^2) * r^2 are not read.

    Source: brocolli-caffe 9.0.2 (the oracle's build), src/caffe/layers/pixelshuffle_layer.cpp."""

    types = ("PixelShuffle",)

    def parse(self, layer: LayerSource) -> PixelShuffleAttrs:
        p = layer.param.pixelshuffle_param
        if not p.HasField("upscale_factor"):
            raise fail(layer, "pixelshuffle_param.upscale_factor is required")
        if p.upscale_factor <= 0:
            raise fail(layer, f"upscale_factor must be positive, got {p.upscale_factor}")
        return PixelShuffleAttrs(int(p.upscale_factor))

    def infer(
        self, attrs: PixelShuffleAttrs, in_shapes: Sequence[Shape], layer: LayerSource
    ) -> list[Shape]:
        shape, r = in_shapes[0], attrs.factor
        if len(shape) != 4:
            raise fail(layer, f"Caffe's PixelShuffle indexes 4-D blobs only, got {shape}")
        n, c, h, w = shape
        if c % r:
            raise fail(layer, f"Caffe aborts here: channels {c} are not divisible by {r}")
        return [(n, c // (r * r), h * r, w * r)]

    def emit(self, attrs: PixelShuffleAttrs, ctx: EmitContext) -> Emission:
        r, channels = attrs.factor, ctx.in_shapes[0][1]
        used = channels // (r * r) * r * r
        x = ctx.x if used == channels else f"{ctx.x}[:, :{used}]"
        note = "" if used == channels else f"Caffe reads only the first {used} channels"
        return Emission(forward=f"F.pixel_shuffle({x}, {r})", note=note, imports=(FUNCTIONAL,))


@register
class BatchReindex(Layer[NoAttrs]):
    """top[m] = x[int(idx[m])]: items of x picked (and repeated) by a 1-D index blob.

    Source: BVLC/caffe, src/caffe/layers/batch_reindex_layer.cpp."""

    types = ("BatchReindex",)
    bottoms = (2, 2)

    def infer(self, attrs: NoAttrs, in_shapes: Sequence[Shape], layer: LayerSource) -> list[Shape]:
        x, index = in_shapes
        if len(index) != 1:
            raise fail(layer, f"Caffe aborts here: the index blob {index} must have 1 axis")
        return [index + x[1:]]

    def emit(self, attrs: NoAttrs, ctx: EmitContext) -> Emission:
        x, index = ctx.inputs
        return Emission(
            forward=f"torch.index_select({x}, 0, {index}.long())",
            note="Caffe aborts on an index outside [0, N)",
        )


@register
class Filter(Layer[NoAttrs]):
    """Keeps the items (axis 0) of each bottom where the last bottom, the selector (N, 1, ...),
    is non-zero; the number of items out is known only at run time (the shapes shown are the
    most there can be).

    Source: BVLC/caffe, src/caffe/layers/filter_layer.cpp."""

    types = ("Filter",)
    bottoms = (2, None)
    tops = (1, None)

    def parse(self, layer: LayerSource) -> NoAttrs:
        if len(layer.tops) != len(layer.bottoms) - 1:
            raise fail(
                layer,
                f"Caffe aborts here: {len(layer.tops)} tops for {len(layer.bottoms)} bottoms "
                "(one top per bottom but the selector)",
            )
        return NoAttrs()

    def infer(self, attrs: NoAttrs, in_shapes: Sequence[Shape], layer: LayerSource) -> list[Shape]:
        selector = in_shapes[-1]
        if any(d != 1 for d in selector[1:]):
            raise fail(
                layer,
                f"Caffe aborts here: the selector {selector} must be 1 on every axis but the first",
            )
        for i, shape in enumerate(in_shapes[:-1]):
            if shape[0] != selector[0]:
                raise fail(
                    layer,
                    f"Caffe aborts here: bottom {i} {shape} must have the selector's "
                    f"{selector[0]} items",
                )
        return list(in_shapes[:-1])

    def emit(self, attrs: NoAttrs, ctx: EmitContext) -> Emission:
        keep = f"{ctx.inputs[-1]}.flatten() != 0"
        picked = [f"{x}[{keep}]" for x in ctx.inputs[:-1]]
        forward = picked[0] if len(picked) == 1 else ", ".join(picked)
        return Emission(forward=forward, note="items where the selector is non-zero")


@dataclass(frozen=True)
class Im2colAttrs(Attrs):
    kernel: tuple[int, int]
    stride: tuple[int, int]
    pad: tuple[int, int]
    dilation: tuple[int, int]


def _conv_field(layer: LayerSource, name: str, default: int) -> tuple[int, int]:
    """kernel/stride/pad/dilation of a 2-D convolution_param with Caffe's CHECKs
    (base_conv_layer.cpp, im2col_layer.cpp LayerSetUp)."""
    p = layer.param.convolution_param
    repeated = list(getattr(p, "kernel_size" if name == "kernel" else name))
    h = opt(p, f"{name}_h") if name != "dilation" else None
    w = opt(p, f"{name}_w") if name != "dilation" else None
    if h is not None or w is not None:
        if repeated:
            raise fail(
                layer,
                f"Caffe aborts here: either {name} or {name}_h/w should be specified; not both",
            )
        return (default if h is None else h, default if w is None else w)
    allowed = (1, 2) if name == "kernel" else (0, 1, 2)
    if len(repeated) not in allowed:
        raise fail(
            layer,
            f"Caffe aborts here: {name} must be specified once, or once per spatial dimension "
            f"({len(repeated)} given for 2)",
        )
    if not repeated:
        return (default, default)
    return (repeated[0], repeated[-1])


@register
class Im2col(Layer[Im2colAttrs]):
    """The columns a convolution multiplies: (N, C * kh * kw, out_h, out_w), channel
    c * kh * kw + i * kw + j, zero outside the image (torch's unfold order).

    Source: BVLC/caffe, src/caffe/layers/im2col_layer.cpp, src/caffe/util/im2col.cpp."""

    types = ("Im2col",)

    def parse(self, layer: LayerSource) -> Im2colAttrs:
        p = layer.param.convolution_param
        if p.axis != 1:
            raise fail(layer, f"Im2col over axis {p.axis} is not supported (only axis 1)")
        kernel = _conv_field(layer, "kernel", 0)
        stride = _conv_field(layer, "stride", 1)
        if min(kernel) <= 0:
            raise fail(layer, "Caffe aborts here: Filter dimensions must be nonzero.")
        if min(stride) <= 0:
            raise fail(layer, "Caffe aborts here: Stride dimensions must be nonzero.")
        return Im2colAttrs(
            kernel, stride, _conv_field(layer, "pad", 0), _conv_field(layer, "dilation", 1)
        )

    @staticmethod
    def _out(attrs: Im2colAttrs, size: int, axis: int) -> int:
        extent = attrs.dilation[axis] * (attrs.kernel[axis] - 1) + 1
        span = size + 2 * attrs.pad[axis] - extent
        # C++ integer division truncates toward zero: a span of -1 still gives one column.
        return int(span / attrs.stride[axis]) + 1

    def infer(
        self, attrs: Im2colAttrs, in_shapes: Sequence[Shape], layer: LayerSource
    ) -> list[Shape]:
        shape = in_shapes[0]
        if len(shape) != 4:
            raise fail(layer, f"Im2col is supported on 4-D inputs (2 spatial axes), got {shape}")
        n, c, h, w = shape
        kh, kw = attrs.kernel
        return [(n, c * kh * kw, self._out(attrs, h, 0), self._out(attrs, w, 1))]

    def emit(self, attrs: Im2colAttrs, ctx: EmitContext) -> Emission:
        h, w = ctx.in_shapes[0][2:]
        out_h, out_w = ctx.out_shapes[0][2:]
        # Where the last window overhangs the padded input, pad it further (those taps read 0).
        extra = [
            max(0, (out - 1) * s + d * (k - 1) + 1 - size - 2 * p)
            for out, s, d, k, size, p in zip(
                (out_h, out_w),
                attrs.stride,
                attrs.dilation,
                attrs.kernel,
                (h, w),
                attrs.pad,
                strict=True,
            )
        ]
        x, pad = ctx.x, attrs.pad
        if any(extra):
            x = f"F.pad({x}, {tuple_expr((pad[1], pad[1] + extra[1], pad[0], pad[0] + extra[0]))})"
            pad = (0, 0)
        unfold = call(
            "F.unfold",
            x,
            repr(pair(attrs.kernel)),
            dilation=pair(attrs.dilation) if attrs.dilation != (1, 1) else None,
            padding=pair(pad) if pad != (0, 0) else None,
            stride=pair(attrs.stride) if attrs.stride != (1, 1) else None,
        )
        return Emission(forward=f"{unfold}.unflatten(2, ({out_h}, {out_w}))", imports=(FUNCTIONAL,))


@dataclass(frozen=True)
class SharedMemoryAttrs(Attrs):
    """`blob` shows the values that layer `writer` wrote in place into `written`, a blob that
    shares its memory in Caffe."""

    blob: str
    written: str
    writer: str


SHARED_MEMORY = "SharedMemory"


@register
class SharedMemory(Layer[SharedMemoryAttrs]):
    """Not a Caffe layer: the lowering inserts it where an in-place layer wrote into a blob
    whose memory another blob shares (Split, Reshape, Flatten, a one-bottom Concat, a one-top
    Slice, an identity Permute), before the other blob is read again or returned. Its output
    is the next version of that other blob: input 0 (the written values), reshaped like input 1
    (the blob's previous version). See docs/shared-memory.md."""

    types = (SHARED_MEMORY,)
    bottoms = (2, 2)
    rebinds = True

    def parse(self, layer: LayerSource) -> SharedMemoryAttrs:
        raise fail(layer, f"'{SHARED_MEMORY}' is protocaffe's own node, not a Caffe layer type")

    def infer(
        self, attrs: SharedMemoryAttrs, in_shapes: Sequence[Shape], layer: LayerSource
    ) -> list[Shape]:
        return [in_shapes[1]]

    def emit(self, attrs: SharedMemoryAttrs, ctx: EmitContext) -> Emission:
        written, previous = ctx.inputs
        same = ctx.in_shapes[0] == ctx.in_shapes[1]
        forward = written if same else f"{written}.reshape({previous}.shape)"
        comment = (
            f"Caffe: {attrs.blob!r} shares memory with {attrs.written!r}, written by "
            f"{attrs.writer!r}"
        )
        return Emission(forward=forward, comment=comment)
