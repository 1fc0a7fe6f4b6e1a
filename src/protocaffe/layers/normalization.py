"""Softmax, LRN, BatchNorm and MVN."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from protocaffe.frontend.prototxt import LayerDef
from protocaffe.ir.graph import Attrs, Shape
from protocaffe.layers.base import (
    BlobSpec,
    Emission,
    EmitContext,
    Init,
    Layer,
    call,
    canonical_axis,
    f32,
    fail,
    register,
)

if TYPE_CHECKING:  # numpy only where weights are converted (see Layer.state)
    import numpy as np


@dataclass(frozen=True)
class SoftmaxAttrs(Attrs):
    axis: int


@register
class Softmax(Layer):
    types = ("Softmax",)

    def parse(self, layer: LayerDef) -> SoftmaxAttrs:
        return SoftmaxAttrs(int(layer.param.softmax_param.axis))

    def infer(self, attrs: Attrs, in_shapes: Sequence[Shape], layer: LayerDef) -> list[Shape]:
        assert isinstance(attrs, SoftmaxAttrs)
        canonical_axis(attrs.axis, len(in_shapes[0]), layer)
        return [in_shapes[0]]

    def emit(self, attrs: Attrs, ctx: EmitContext) -> Emission:
        assert isinstance(attrs, SoftmaxAttrs)
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
class LRN(Layer):
    types = ("LRN",)

    def parse(self, layer: LayerDef) -> LRNAttrs:
        p = layer.param.lrn_param
        if p.local_size % 2 == 0:
            raise fail(layer, f"local_size must be odd, got {p.local_size}")
        return LRNAttrs(int(p.local_size), f32(p.alpha), f32(p.beta), f32(p.k), int(p.norm_region))

    def infer(self, attrs: Attrs, in_shapes: Sequence[Shape], layer: LayerDef) -> list[Shape]:
        if len(in_shapes[0]) != 4:
            raise fail(layer, f"expects a 4-D input, got {in_shapes[0]}")
        return [in_shapes[0]]

    def emit(self, attrs: Attrs, ctx: EmitContext) -> Emission:
        assert isinstance(attrs, LRNAttrs)
        x = ctx.x
        if attrs.region == ACROSS_CHANNELS:
            # torch divides alpha by size, as Caffe does for ACROSS_CHANNELS.
            forward = call(
                "F.local_response_norm",
                x,
                size=attrs.size,
                alpha=attrs.alpha,
                beta=attrs.beta,
                k=attrs.k,
            )
            return Emission(forward=forward)
        # WITHIN_CHANNEL: x / (1 + alpha * mean of x^2 over a padded size x size window)^beta.
        pad = (attrs.size - 1) // 2
        pooled = f"F.avg_pool2d({x} * {x}, {attrs.size}, stride=1, padding={pad})"
        return Emission(
            forward=f"{x} * (1.0 + {attrs.alpha!r} * {pooled}).pow({-attrs.beta!r})",
            note="WITHIN_CHANNEL",
        )


@dataclass(frozen=True)
class BatchNormAttrs(Attrs):
    eps: float
    use_global_stats: bool


@register
class BatchNorm(Layer):
    """Caffe's BatchNorm: normalisation only (the affine part is a separate Scale layer).

    Its blobs are mean, variance and a one-element moving-average factor; the statistics are
    the blobs divided by the factor (or zero when the factor is zero).
    """

    types = ("BatchNorm",)

    def parse(self, layer: LayerDef) -> BatchNormAttrs:
        p = layer.param.batch_norm_param
        use_global = bool(p.use_global_stats) if p.HasField("use_global_stats") else True
        return BatchNormAttrs(f32(p.eps), use_global)

    def infer(self, attrs: Attrs, in_shapes: Sequence[Shape], layer: LayerDef) -> list[Shape]:
        if len(in_shapes[0]) < 2:
            raise fail(layer, f"expects an input with a channel axis, got {in_shapes[0]}")
        return [in_shapes[0]]

    def blobs(self, attrs: Attrs, in_shapes: Sequence[Shape]) -> list[BlobSpec]:
        c = in_shapes[0][1]
        return [
            BlobSpec((c,), Init.SMALL),
            BlobSpec((c,), Init.POSITIVE),
            BlobSpec((1,), Init.UNIT),
        ]

    def param_names(self, attrs: Attrs, in_shapes: Sequence[Shape]) -> tuple[str, ...]:
        assert isinstance(attrs, BatchNormAttrs)
        return ("running_mean", "running_var") if attrs.use_global_stats else ()

    def state(
        self, attrs: Attrs, in_shapes: Sequence[Shape], blobs: Sequence[np.ndarray]
    ) -> dict[str, np.ndarray]:
        assert isinstance(attrs, BatchNormAttrs)
        if not attrs.use_global_stats:
            return {}
        import numpy as np

        factor = float(blobs[2].reshape(-1)[0])
        scale = np.float32(0.0 if factor == 0 else 1.0 / factor)
        return {"running_mean": blobs[0] * scale, "running_var": blobs[1] * scale}

    def emit(self, attrs: Attrs, ctx: EmitContext) -> Emission:
        assert isinstance(attrs, BatchNormAttrs)
        shape = ctx.in_shapes[0]
        if not attrs.use_global_stats:
            forward = f"F.batch_norm({ctx.x}, None, None, training=True, eps={attrs.eps!r})"
            return Emission(
                forward=forward, note="statistics of this batch (use_global_stats false)"
            )
        cls = {2: "nn.BatchNorm1d", 3: "nn.BatchNorm1d", 4: "nn.BatchNorm2d", 5: "nn.BatchNorm3d"}
        init = call(
            cls.get(len(shape), "nn.BatchNorm1d"), repr(shape[1]), eps=attrs.eps, affine=False
        )
        if len(shape) in cls:
            return Emission(forward=f"self.{ctx.attr}({ctx.x})", init=init)
        # Caffe normalises any rank over the axes after the channel; torch has no 4-D-spatial
        # module, so those axes are flattened into one.
        forward = f"self.{ctx.attr}(torch.flatten({ctx.x}, 2)).reshape({ctx.x}.shape)"
        return Emission(forward=forward, init=init)


@dataclass(frozen=True)
class MVNAttrs(Attrs):
    across_channels: bool
    normalize_variance: bool
    eps: float


@register
class MVN(Layer):
    types = ("MVN",)

    def parse(self, layer: LayerDef) -> MVNAttrs:
        p = layer.param.mvn_param
        return MVNAttrs(bool(p.across_channels), bool(p.normalize_variance), f32(p.eps))

    def infer(self, attrs: Attrs, in_shapes: Sequence[Shape], layer: LayerDef) -> list[Shape]:
        # MVNLayer reads its input through the legacy (num, channels, height, width)
        # accessors: missing axes count as 1, the top is always 4-D, and more axes are refused.
        shape = in_shapes[0]
        if len(shape) > 4:
            raise fail(layer, f"expects at most 4 axes (Caffe's legacy N, C, H, W), got {shape}")
        return [shape + (1,) * (4 - len(shape))]

    def emit(self, attrs: Attrs, ctx: EmitContext) -> Emission:
        assert isinstance(attrs, MVNAttrs)
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
