"""DenseNet's dense block as one fork layer: senlinuc/caffe_ocr's `DenseBlock`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from protocaffe.ir.graph import Attrs, Shape
from protocaffe.layers.base import (
    BlobSpec,
    Emission,
    EmitContext,
    Init,
    Layer,
    LayerSource,
    Role,
    call,
    f32,
    fail,
)
from protocaffe.layers.registry import register

if TYPE_CHECKING:  # numpy only where weights are converted (see Layer.state)
    import numpy as np

# The blob groups of DenseBlockLayer::LayerSetUp, each `transitions` blobs long, in the order
# of `this->blobs_` (group g holds blobs g * transitions ... g * transitions + transitions - 1),
# with their state_dict names in the helper's `_DenseTransition`. The bottleneck (use_BC) adds
# the last five groups; one moving-average factor blob follows them all.
_GROUPS = ("weight", "scale", "bias", "global_mean", "global_var")
_BC_GROUPS = ("bc_weight", "bc_scale", "bc_bias", "bc_global_mean", "bc_global_var")
_STATISTICS = ("global_mean", "global_var", "bc_global_mean", "bc_global_var")
DENSEBLOCK_GPU = "denseblock-gpu"  # protocaffe.frontend.dialects.DENSEBLOCK_GPU (a floor above)


@dataclass(frozen=True)
class DenseBlockAttrs(Attrs):
    transitions: int
    growth_rate: int
    bottleneck: bool  # use_BC: BN-ReLU-Conv1x1 (4 * growth_rate) before each 3x3
    dropout: bool  # use_dropout: the fork's Forward_cpu never applies it
    moving_average_fraction: float
    # --dialect denseblock-gpu: the fork's Forward_gpu (cuDNN) instead of its Forward_cpu.
    gpu: bool = False
    dropout_amount: float = 0.0  # cuDNN dropout of each transition's new channels, TRAIN only


@register
class DenseBlock(Layer[DenseBlockAttrs]):
    """`transitions` times x = concat(x, Conv3x3(ReLU(BN(x)))) along the channels, the new
    `growth_rate` channels after the old ones; with use_BC, BN-ReLU-Conv1x1 to 4 * growth_rate
    channels and a second BN-ReLU come before each 3x3.

    The BN is the fork's own (BN_inf_Fwd): it divides the stored mean and variance by the
    moving-average factor (the last blob; 0 when the factor is 0), eps 1e-5, then applies the
    per-channel scaler and bias blobs. The convolutions (convolution_Fwd, and cuDNN's
    CUDNN_CONVOLUTION in the .cu) are true convolutions: the 3x3 kernel is applied flipped,
    which the module does with `weight.flip`. initChannel is read from the bottom, not the
    parameter; the pad, stride and filter size fields are never read (3x3, pad 1, stride 1).
    Dropout is applied by neither Forward_cpu nor the TEST phase of the GPU forward.

    `--dialect denseblock-gpu` follows Forward_gpu (DenseBlock_layer.cu) instead: in TEST,
    cudnnBatchNormalizationForwardInference on the stored mean and variance as they are (the
    factor blob is never read), eps CUDNN_BN_MIN_EPSILON (1e-5 in the cuDNN 6 and 7 headers
    the fork ships); in TRAIN, cudnnBatchNormalizationForwardTraining (the batch's biased
    variance normalises) with the running statistics updated as global = f * batch +
    (1 - f) * global (caffe_gpu_axpby; cuDNN's batch variance there is the unbiased one), the
    factor left as it is, and, with use_dropout, cuDNN dropout of dropout_amount on each
    transition's new channels. GPU training never updates the factor, so a model trained
    there has factor 0, which the CPU path reads as zero statistics: the weights get a note.

    Source: senlinuc/caffe_ocr @ 81642f61, src/caffe/layers/DenseBlock_layer.cpp
    (LayerSetUp, Reshape, Forward_cpu, BN_inf_Fwd, BN_train_Fwd, convolution_Fwd) and
    DenseBlock_layer.cu (Forward_gpu)."""

    types = ("DenseBlock",)
    role = Role.CONVOLUTION

    def parse(self, layer: LayerSource) -> DenseBlockAttrs:
        p = layer.param.denseblock_param
        if len(layer.param.param) != 0:
            raise fail(
                layer,
                "Caffe aborts here: DenseBlock sets its own param specs (LayerSetUp CHECKs "
                f'"Nope" when the layer gives any; this one gives {len(layer.param.param)})',
            )
        transitions, growth = int(p.numTransition), int(p.growthRate)
        if transitions < 1 or growth < 1:
            raise fail(
                layer,
                f"numTransition ({transitions}) and growthRate ({growth}) must be positive",
            )
        gpu = DENSEBLOCK_GPU in layer.dialects
        return DenseBlockAttrs(
            transitions,
            growth,
            bool(p.use_BC),
            bool(p.use_dropout),
            f32(p.moving_average_fraction),
            gpu,
            f32(p.dropout_amount) if gpu and p.use_dropout else 0.0,
        )

    def infer(
        self, attrs: DenseBlockAttrs, in_shapes: Sequence[Shape], layer: LayerSource
    ) -> list[Shape]:
        x = in_shapes[0]
        if len(x) != 4:
            raise fail(layer, f"expects a 4-D input (N, C, H, W), got {x}")
        n, c, h, w = x
        return [(n, c + attrs.transitions * attrs.growth_rate, h, w)]

    def computes_in_place(self, attrs: DenseBlockAttrs, in_shapes: Sequence[Shape]) -> bool:
        # Reshape gives the top more channels than the bottom.
        return False

    def _channels(self, attrs: DenseBlockAttrs, in_shapes: Sequence[Shape]) -> list[int]:
        """The input channels of each transition's BN."""
        c = in_shapes[0][1]
        return [c + t * attrs.growth_rate for t in range(attrs.transitions)]

    def blobs(self, attrs: DenseBlockAttrs, in_shapes: Sequence[Shape]) -> list[BlobSpec]:
        g, channels = attrs.growth_rate, self._channels(attrs, in_shapes)
        quad = 4 * g
        conv_in = [quad if attrs.bottleneck else c for c in channels]
        specs = [BlobSpec((g, i, 3, 3), Init.FAN_IN, 9 * i) for i in conv_in]
        specs += [BlobSpec((1, c, 1, 1), Init.ONE) for c in channels]
        specs += [BlobSpec((1, c, 1, 1), Init.SMALL) for c in channels]
        specs += [BlobSpec((1, c, 1, 1), Init.SMALL) for c in channels]
        specs += [BlobSpec((1, c, 1, 1), Init.POSITIVE) for c in channels]
        if attrs.bottleneck:
            specs += [BlobSpec((quad, c, 1, 1), Init.FAN_IN, c) for c in channels]
            for init in (Init.ONE, Init.SMALL, Init.SMALL, Init.POSITIVE):
                specs += [BlobSpec((1, quad, 1, 1), init) for _ in channels]
        specs.append(BlobSpec((1,), Init.UNIT))
        return specs

    def param_names(self, attrs: DenseBlockAttrs, in_shapes: Sequence[Shape]) -> tuple[str, ...]:
        groups = _GROUPS + (_BC_GROUPS if attrs.bottleneck else ())
        names = [f"transitions.{t}.{group}" for group in groups for t in range(attrs.transitions)]
        return (*names, "factor")

    def learnable(
        self, attrs: DenseBlockAttrs, in_shapes: Sequence[Shape]
    ) -> tuple[str | None, ...]:
        # LayerSetUp gives the statistics and the factor lr_mult 0 and decay_mult 0, the
        # filters, scalers and biases 1 and 1: the first are buffers, the others parameters.
        return tuple(
            None if name == "factor" or name.rsplit(".", 1)[1] in _STATISTICS else name
            for name in self.param_names(attrs, in_shapes)
        )

    def state(
        self, attrs: DenseBlockAttrs, in_shapes: Sequence[Shape], blobs: Sequence[np.ndarray]
    ) -> dict[str, np.ndarray]:
        # Blob for blob: the module divides the statistics by the factor as BN_inf_Fwd does.
        names = self.param_names(attrs, in_shapes)
        specs = self.blobs(attrs, in_shapes)
        return {
            name: blob.reshape(spec.shape)
            for name, blob, spec in zip(names, blobs, specs, strict=True)
        }

    def weight_notes(
        self, attrs: DenseBlockAttrs, in_shapes: Sequence[Shape], blobs: Sequence[np.ndarray]
    ) -> tuple[str, ...]:
        # BN_inf_Fwd takes the statistics as 0 when the factor is 0; Forward_gpu reads them
        # as they are and its training never touches the factor (LayerSetUp's 0 stays).
        factor = float(blobs[-1].reshape(-1)[0])
        if attrs.gpu and factor != 0:
            return (
                f"the moving-average factor blob is {factor:g}, which only the fork's CPU "
                f"training updates: the model was trained on the CPU, whose forward divides the "
                f"stored statistics by it; --dialect {DENSEBLOCK_GPU} reads them undivided",
            )
        if attrs.gpu or factor != 0:
            return ()
        names = self.param_names(attrs, in_shapes)
        statistics = [
            blob
            for name, blob in zip(names, blobs, strict=True)
            if name.rsplit(".", 1)[-1] in _STATISTICS
        ]
        if not any(bool(blob.any()) for blob in statistics):
            return ()
        return (
            "the moving-average factor blob is 0 while the BN means or variances are not "
            "all 0: the fork's CPU path (followed here) then normalises with zero statistics, "
            "its GPU path with the stored ones; a model trained on the GPU (whose training "
            f"never updates the factor) needs --dialect {DENSEBLOCK_GPU}",
        )

    def emit(self, attrs: DenseBlockAttrs, ctx: EmitContext) -> Emission:
        init = call(
            "CaffeDenseBlock",
            repr(ctx.in_shapes[0][1]),
            repr(attrs.growth_rate),
            repr(attrs.transitions),
            bottleneck=True if attrs.bottleneck else None,
            moving_average_fraction=attrs.moving_average_fraction,
            gpu=True if attrs.gpu else None,
            dropout=attrs.dropout_amount if attrs.dropout_amount else None,
        )
        if not attrs.dropout:
            note = ""
        elif attrs.gpu:
            note = "use_dropout: the fork's GPU forward drops new channels in TRAIN only"
        else:
            note = "use_dropout: the fork's forward applies none"
        return Emission(
            forward=f"self.{ctx.attr}({ctx.x})",
            init=init,
            note=note,
            helpers=("CaffeDenseBlock",),
        )

    def multiply_adds(
        self, attrs: DenseBlockAttrs, in_shapes: Sequence[Shape], out_shapes: Sequence[Shape]
    ) -> int:
        n, _, h, w = in_shapes[0]
        g, total = attrs.growth_rate, 0
        for c in self._channels(attrs, in_shapes):
            conv_in = 4 * g if attrs.bottleneck else c
            total += g * conv_in * 9 + (4 * g * c if attrs.bottleneck else 0)
        return n * h * w * total
