"""Normalisation: Softmax, LRN, BatchNorm, MVN, the segmentation forks' BN and SSD's
Normalize."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from protocaffe.ir.graph import Attrs, Shape
from protocaffe.layers.base import (
    FUNCTIONAL,
    BlobSpec,
    ChannelWeightAttrs,
    ChannelWeightLayer,
    Emission,
    EmitContext,
    Init,
    Layer,
    LayerSource,
    Role,
    call,
    canonical_axis,
    f32,
    fail,
    tuple_expr,
)
from protocaffe.layers.registry import register

if TYPE_CHECKING:  # numpy only where weights are converted (see Layer.state)
    import numpy as np


@dataclass(frozen=True)
class SoftmaxAttrs(Attrs):
    axis: int


@register
class Softmax(Layer[SoftmaxAttrs]):
    types = ("Softmax",)
    role = Role.PROBABILITY

    def parse(self, layer: LayerSource) -> SoftmaxAttrs:
        return SoftmaxAttrs(int(layer.param.softmax_param.axis))

    def infer(
        self, attrs: SoftmaxAttrs, in_shapes: Sequence[Shape], layer: LayerSource
    ) -> list[Shape]:
        canonical_axis(attrs.axis, len(in_shapes[0]), layer)
        return [in_shapes[0]]

    def emit(self, attrs: SoftmaxAttrs, ctx: EmitContext) -> Emission:
        axis = attrs.axis % len(ctx.in_shapes[0])
        return Emission(forward=f"torch.softmax({ctx.x}, dim={axis})")


ACROSS_CHANNELS, WITHIN_CHANNEL = 0, 1


@dataclass(frozen=True)
class LRNAttrs(Attrs):
    size: int
    alpha: float
    beta: float
    k: float
    region: int


@register
class LRN(Layer[LRNAttrs]):
    types = ("LRN",)

    def computes_in_place(self, attrs: LRNAttrs, in_shapes: Sequence[Shape]) -> bool:
        # Across channels it writes scale^-beta into the top, then multiplies by the bottom.
        return False

    def parse(self, layer: LayerSource) -> LRNAttrs:
        p = layer.param.lrn_param
        if p.local_size % 2 == 0:
            raise fail(layer, f"local_size must be odd, got {p.local_size}")
        return LRNAttrs(int(p.local_size), f32(p.alpha), f32(p.beta), f32(p.k), int(p.norm_region))

    def infer(self, attrs: LRNAttrs, in_shapes: Sequence[Shape], layer: LayerSource) -> list[Shape]:
        if len(in_shapes[0]) != 4:
            raise fail(layer, f"expects a 4-D input, got {in_shapes[0]}")
        return [in_shapes[0]]

    def emit(self, attrs: LRNAttrs, ctx: EmitContext) -> Emission:
        x = ctx.x
        if attrs.region == ACROSS_CHANNELS:
            # F.local_response_norm's arithmetic, 5x faster on CPU (see the helper).
            forward = call(
                "caffe_lrn", x, size=attrs.size, alpha=attrs.alpha, beta=attrs.beta, k=attrs.k
            )
            return Emission(forward=forward, helpers=("caffe_lrn",))
        # WITHIN_CHANNEL: x / (1 + alpha * mean of x^2 over a padded size x size window)^beta.
        pad = (attrs.size - 1) // 2
        pooled = f"F.avg_pool2d({x} * {x}, {attrs.size}, stride=1, padding={pad})"
        return Emission(
            forward=f"{x} * (1.0 + {attrs.alpha!r} * {pooled}).pow({-attrs.beta!r})",
            note="WITHIN_CHANNEL",
            imports=(FUNCTIONAL,),
        )

    def multiply_adds(
        self, attrs: LRNAttrs, in_shapes: Sequence[Shape], out_shapes: Sequence[Shape]
    ) -> int:
        return sum(math.prod(s) for s in out_shapes)


@dataclass(frozen=True)
class BatchNormAttrs(Attrs):
    eps: float
    # Caffe's optional field: None (unset) uses batch statistics in TRAIN and the stored ones
    # in TEST; True the stored ones in both; False the batch's in both.
    use_global_stats: bool | None
    moving_average_fraction: float


@register
class BatchNorm(Layer[BatchNormAttrs]):
    """Caffe's BatchNorm: normalisation only (the affine part is a separate Scale layer).
    Source: BVLC/caffe, src/caffe/layers/batch_norm_layer.cpp.

    Its blobs are the sums of means and of variances and a one-element moving-average factor;
    the statistics are the sums divided by the factor (zero when the factor is zero). The
    module keeps the statistics (running_mean, running_var: the quotients) and the factor as
    buffers, which train() updates with Caffe's rule (templates/helpers/CaffeBatchNorm.py);
    with use_global_stats true they stay frozen (FrozenBatchNorm.py).
    """

    types = ("BatchNorm",)
    role = Role.NORMALIZATION

    def parse(self, layer: LayerSource) -> BatchNormAttrs:
        p = layer.param.batch_norm_param
        use_global = bool(p.use_global_stats) if p.HasField("use_global_stats") else None
        if p.eps < 0:
            raise fail(
                layer,
                f"eps {f32(p.eps)} is negative: Caffe takes sqrt(variance + eps), NaN wherever "
                "the variance is below -eps; protocaffe does not convert a negative eps",
            )
        return BatchNormAttrs(f32(p.eps), use_global, f32(p.moving_average_fraction))

    def infer(
        self, attrs: BatchNormAttrs, in_shapes: Sequence[Shape], layer: LayerSource
    ) -> list[Shape]:
        if len(in_shapes[0]) < 2:
            raise fail(layer, f"expects an input with a channel axis, got {in_shapes[0]}")
        return [in_shapes[0]]

    def blobs(self, attrs: BatchNormAttrs, in_shapes: Sequence[Shape]) -> list[BlobSpec]:
        c = in_shapes[0][1]
        return [
            BlobSpec((c,), Init.SMALL),
            BlobSpec((c,), Init.POSITIVE),
            BlobSpec((1,), Init.UNIT),
        ]

    def param_names(self, attrs: BatchNormAttrs, in_shapes: Sequence[Shape]) -> tuple[str, ...]:
        return ("running_mean", "running_var", "factor")

    def learnable(self, attrs: BatchNormAttrs, in_shapes: Sequence[Shape]) -> tuple[None, ...]:
        # Statistics, never trained (BVLC's LayerSetUp forces lr_mult 0 on all three).
        return (None, None, None)

    def state(
        self, attrs: BatchNormAttrs, in_shapes: Sequence[Shape], blobs: Sequence[np.ndarray]
    ) -> dict[str, np.ndarray]:
        import numpy as np

        # Caffe's global-statistics Forward: scale = factor == 0 ? 0 : 1 / factor, in float32.
        factor = blobs[2].reshape(1)
        value = float(factor[0])
        scale = np.float32(0.0 if value == 0 else np.float32(1.0) / np.float32(value))
        return {
            "running_mean": blobs[0] * scale,
            "running_var": blobs[1] * scale,
            "factor": factor,
        }

    def emit(self, attrs: BatchNormAttrs, ctx: EmitContext) -> Emission:
        channels = repr(ctx.in_shapes[0][1])
        if attrs.use_global_stats:
            return Emission(
                forward=f"self.{ctx.attr}({ctx.x})",
                init=call("FrozenBatchNorm", channels, eps=attrs.eps),
                note="use_global_stats true: frozen in train() too",
                helpers=("FrozenBatchNorm",),
            )
        in_eval = attrs.use_global_stats is False
        init = call(
            "CaffeBatchNorm",
            channels,
            eps=attrs.eps,
            moving_average_fraction=attrs.moving_average_fraction,
            batch_stats_in_eval=True if in_eval else None,
        )
        return Emission(
            forward=f"self.{ctx.attr}({ctx.x})",
            init=init,
            note="use_global_stats false: batch statistics in eval() too" if in_eval else "",
            helpers=("CaffeBatchNorm",),
        )

    def fresh_output(self, attrs: BatchNormAttrs, in_shapes: Sequence[Shape]) -> bool:
        return True

    def channel_affine(self, attrs: BatchNormAttrs, in_shapes: Sequence[Shape]) -> bool:
        # What eval() computes; with use_global_stats false it depends on the batch.
        return attrs.use_global_stats is not False

    def affine_coefficients(
        self, attrs: BatchNormAttrs, state: Mapping[str, np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray]:
        import numpy as np

        mean = state["running_mean"].astype(np.float64)
        # Caffe and torch add eps to the float32 variance; do the same before widening.
        variance = (state["running_var"] + np.float32(attrs.eps)).astype(np.float64)
        scale = 1.0 / np.sqrt(variance)
        return scale, -mean * scale

    def multiply_adds(
        self, attrs: BatchNormAttrs, in_shapes: Sequence[Shape], out_shapes: Sequence[Shape]
    ) -> int:
        return sum(math.prod(s) for s in out_shapes)


@dataclass(frozen=True)
class MVNAttrs(Attrs):
    across_channels: bool
    normalize_variance: bool
    eps: float


@register
class MVN(Layer[MVNAttrs]):
    types = ("MVN",)

    def parse(self, layer: LayerSource) -> MVNAttrs:
        p = layer.param.mvn_param
        return MVNAttrs(bool(p.across_channels), bool(p.normalize_variance), f32(p.eps))

    def infer(self, attrs: MVNAttrs, in_shapes: Sequence[Shape], layer: LayerSource) -> list[Shape]:
        # MVNLayer reads its input through the legacy (num, channels, height, width)
        # accessors: missing axes count as 1, the top is always 4-D, and more axes are refused.
        shape = in_shapes[0]
        if len(shape) > 4:
            raise fail(layer, f"expects at most 4 axes (Caffe's legacy N, C, H, W), got {shape}")
        return [shape + (1,) * (4 - len(shape))]

    def emit(self, attrs: MVNAttrs, ctx: EmitContext) -> Emission:
        missing = 4 - len(ctx.in_shapes[0])
        x = f"{ctx.x}[{', '.join(['...'] + ['None'] * missing)}]" if missing else ctx.x
        forward = call(
            "caffe_mvn",
            x,
            across_channels=attrs.across_channels,
            normalize_variance=attrs.normalize_variance,
            eps=attrs.eps,
        )
        return Emission(forward=forward, helpers=("caffe_mvn",))


LEARN, INFERENCE = 0, 1


# SegNet's BN hard-codes its variance epsilon (bn_layer.cpp: var_eps_ = 1e-9).
SEGNET_EPS = 1e-9


_PSPNET_FIELDS = ("slope_filler", "bias_filler", "momentum", "eps", "frozen")


@dataclass(frozen=True)
class BNAttrs(Attrs):
    """`dialect` is "segnet" (scale, shift; bn_mode) or "pspnet" (slope, bias, mean, variance)."""

    dialect: str
    inference: bool
    eps: float


@register
class BN(Layer[BNAttrs]):
    """The `BN` layer of caffe-segnet / caffe-enet and of PSPNet: two different layers that share
    a name. SegNet's (blobs: scale, shift) in INFERENCE mode is x * scale + shift (the statistics
    were folded into them); in LEARN mode it normalises with the batch's own statistics. PSPNet's
    (blobs: slope, bias, moving mean, moving variance) is a batch norm with stored statistics at
    test time. The dialect is told by the fields the layer sets.

    Sources: alexgkendall/caffe-segnet (and TimoSaemann/caffe-enet), src/caffe/layers/bn_layer.cpp;
    hszhao/PSPNet, src/caffe/layers/bn_layer.cpp.
    """

    types = ("BN",)

    def parse(self, layer: LayerSource) -> BNAttrs:
        p = layer.param.bn_param
        pspnet = not p.HasField("bn_mode") and (
            any(p.HasField(name) for name in _PSPNET_FIELDS) or len(layer.param.param) == 4
        )
        if pspnet:
            return BNAttrs("pspnet", True, f32(p.eps))
        return BNAttrs("segnet", p.bn_mode == INFERENCE, SEGNET_EPS)

    def infer(self, attrs: BNAttrs, in_shapes: Sequence[Shape], layer: LayerSource) -> list[Shape]:
        if len(in_shapes[0]) != 4:
            raise fail(layer, f"expects a 4-D input, got {in_shapes[0]}")
        return [in_shapes[0]]

    def blobs(self, attrs: BNAttrs, in_shapes: Sequence[Shape]) -> list[BlobSpec]:
        shape = (1, in_shapes[0][1], 1, 1)
        specs = [BlobSpec(shape, Init.ONE), BlobSpec(shape, Init.SMALL)]
        if attrs.dialect == "pspnet":
            specs += [BlobSpec(shape, Init.SMALL), BlobSpec(shape, Init.POSITIVE)]
        return specs

    def param_names(self, attrs: BNAttrs, in_shapes: Sequence[Shape]) -> tuple[str, ...]:
        if attrs.dialect == "pspnet":
            return ("weight", "bias", "running_mean", "running_var")
        return ("weight", "bias")

    def learnable(self, attrs: BNAttrs, in_shapes: Sequence[Shape]) -> tuple[str | None, ...]:
        # PSPNet's moving mean and variance are nn.BatchNorm2d's buffers.
        return ("weight", "bias", None, None) if attrs.dialect == "pspnet" else ("weight", "bias")

    def state(
        self, attrs: BNAttrs, in_shapes: Sequence[Shape], blobs: Sequence[np.ndarray]
    ) -> dict[str, np.ndarray]:
        names = self.param_names(attrs, in_shapes)
        return {name: blob.reshape(-1) for name, blob in zip(names, blobs, strict=True)}

    def emit(self, attrs: BNAttrs, ctx: EmitContext) -> Emission:
        channels = ctx.in_shapes[0][1]
        if attrs.dialect == "pspnet":
            init = call("nn.BatchNorm2d", repr(channels), eps=attrs.eps)
            return Emission(forward=f"self.{ctx.attr}({ctx.x})", init=init, note="PSPNet BN")
        init = call("Scale", tuple_expr((channels,)), trailing=2, bias=True)
        if attrs.inference:
            return Emission(
                forward=f"self.{ctx.attr}({ctx.x})",
                init=init,
                note="SegNet BN, INFERENCE: x * scale + shift",
                helpers=("Scale",),
            )
        normalised = f"F.batch_norm({ctx.x}, None, None, training=True, eps={attrs.eps!r})"
        return Emission(
            forward=f"self.{ctx.attr}({normalised})",
            init=init,
            note="SegNet BN, LEARN: statistics of this batch",
            helpers=("Scale",),
            imports=(FUNCTIONAL,),
        )


@dataclass(frozen=True)
class NormalizeAttrs(ChannelWeightAttrs):
    across_spatial: bool
    eps: float


@register
class Normalize(ChannelWeightLayer[NormalizeAttrs]):
    """L2 normalisation, then a learned scale: x / sqrt(sum(x^2) + eps) * scale, the sum taken
    over channels at each position, or over all of C, H, W with `across_spatial`.

    Source: weiliu89/caffe (branch ssd), src/caffe/layers/normalize_layer.cpp.
    """

    types = ("Normalize",)

    def parse(self, layer: LayerSource) -> NormalizeAttrs:
        p = layer.param.norm_param
        return NormalizeAttrs(
            channel_shared=bool(p.channel_shared),
            across_spatial=bool(p.across_spatial),
            eps=f32(p.eps),
        )

    def emit(self, attrs: NormalizeAttrs, ctx: EmitContext) -> Emission:
        init = call(
            "Normalize",
            repr(self.channels(attrs, ctx.in_shapes)),
            across_spatial=attrs.across_spatial,
            eps=attrs.eps,
        )
        return Emission(forward=f"self.{ctx.attr}({ctx.x})", init=init, helpers=("Normalize",))


@dataclass(frozen=True)
class BatchNormKyleAttrs(Attrs):
    eps: float
    use_global_stats: bool
    use_alpha_beta: bool


@register
class BatchNormKyle(Layer[BatchNormKyleAttrs]):
    """BatchNorm with, under use_alpha_beta, its own per-channel scale (alpha) and shift (beta):
    an affine BatchNorm in one layer. Blobs: mean, variance, the moving-average factor (as
    BatchNorm's), then alpha and beta.

    Source: brocolli-caffe 9.0.2 (the oracle's build), src/caffe/layers/batch_norm_kyle_layer.cpp
    (LayerSetUp, Reshape, Forward_cpu).
    """

    types = ("BatchNormKyle",)
    role = Role.NORMALIZATION

    def parse(self, layer: LayerSource) -> BatchNormKyleAttrs:
        p = layer.param.batch_norm_param
        use_global = bool(p.use_global_stats) if p.HasField("use_global_stats") else True
        return BatchNormKyleAttrs(f32(p.eps), use_global, bool(p.use_alpha_beta))

    def infer(
        self, attrs: BatchNormKyleAttrs, in_shapes: Sequence[Shape], layer: LayerSource
    ) -> list[Shape]:
        if len(in_shapes[0]) < 2:  # Reshape reads shape(1) of any input with an axis
            raise fail(layer, f"expects an input with a channel axis, got {in_shapes[0]}")
        return [in_shapes[0]]

    def blobs(self, attrs: BatchNormKyleAttrs, in_shapes: Sequence[Shape]) -> list[BlobSpec]:
        c = in_shapes[0][1]
        specs = [
            BlobSpec((c,), Init.SMALL),
            BlobSpec((c,), Init.POSITIVE),
            BlobSpec((1,), Init.UNIT),
        ]
        if attrs.use_alpha_beta:
            specs += [BlobSpec((c,), Init.ONE), BlobSpec((c,), Init.SMALL)]
        return specs

    def param_names(self, attrs: BatchNormKyleAttrs, in_shapes: Sequence[Shape]) -> tuple[str, ...]:
        affine = ("weight", "bias") if attrs.use_alpha_beta else ()
        return affine + (("running_mean", "running_var") if attrs.use_global_stats else ())

    def state(
        self, attrs: BatchNormKyleAttrs, in_shapes: Sequence[Shape], blobs: Sequence[np.ndarray]
    ) -> dict[str, np.ndarray]:
        import numpy as np

        state: dict[str, np.ndarray] = {}
        if attrs.use_alpha_beta:
            state = {"weight": blobs[3], "bias": blobs[4]}
        if attrs.use_global_stats:
            factor = float(blobs[2].reshape(-1)[0])
            scale = np.float32(0.0 if factor == 0 else 1.0 / factor)
            state |= {"running_mean": blobs[0] * scale, "running_var": blobs[1] * scale}
        return state

    def emit(self, attrs: BatchNormKyleAttrs, ctx: EmitContext) -> Emission:
        shape = ctx.in_shapes[0]
        cls = {2: "nn.BatchNorm1d", 3: "nn.BatchNorm1d", 4: "nn.BatchNorm2d", 5: "nn.BatchNorm3d"}
        # Without global statistics Caffe normalises by this batch's (biased) variance, as a
        # torch BatchNorm that tracks no running statistics does in any mode.
        init = call(
            cls.get(len(shape), "nn.BatchNorm1d"),
            repr(shape[1]),
            eps=attrs.eps,
            affine=attrs.use_alpha_beta,
            track_running_stats=None if attrs.use_global_stats else False,
        )
        note = "" if attrs.use_global_stats else "statistics of this batch (use_global_stats false)"
        if len(shape) in cls:
            return Emission(forward=f"self.{ctx.attr}({ctx.x})", init=init, note=note)
        # Caffe normalises any rank over the axes after the channel (see BatchNorm).
        forward = f"self.{ctx.attr}(torch.flatten({ctx.x}, 2)).reshape({ctx.x}.shape)"
        return Emission(forward=forward, init=init, note=note)

    def multiply_adds(
        self, attrs: BatchNormKyleAttrs, in_shapes: Sequence[Shape], out_shapes: Sequence[Shape]
    ) -> int:
        return sum(math.prod(s) for s in out_shapes) * (2 if attrs.use_alpha_beta else 1)
