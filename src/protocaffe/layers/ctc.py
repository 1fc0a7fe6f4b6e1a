"""Sequence decoding: the CTC greedy decoder of the OCR forks."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from protocaffe.ir.graph import Attrs, Shape
from protocaffe.layers.base import Emission, EmitContext, Layer, LayerSource, call, fail
from protocaffe.layers.registry import register


@dataclass(frozen=True)
class CTCDecoderAttrs(Attrs):
    blank_index: int  # < 0: the last class
    merge_repeated: bool


@register
class CTCGreedyDecoder(Layer[CTCDecoderAttrs]):
    """Best path decoding of (T, N, C) class scores: per sequence n, the argmax class at each
    step t (the first maximum), kept unless it is the blank or (with ctc_merge_repeated) the
    same as the step before; output (N, T, 1, 1), the kept classes first, then -1.

    With two bottoms (scores and labels) the fork's layer computes an edit-distance accuracy
    instead: an evaluation layer, left out of the module like Accuracy.

    Source: senlinuc/caffe_ocr @ 81642f61, src/caffe/layers/ctc_decoder_layer.cpp
    (CTCDecoderLayer::LayerSetUp, Reshape, Forward_cpu; CTCGreedyDecoderLayer::Decode, the
    3-argument overload); ctc_decoder_param: blank_index (default 0, < 0 for the last class),
    ctc_merge_repeated (default true).
    """

    types = ("CTCGreedyDecoder",)
    bottoms = (1, 2)

    def parse(self, layer: LayerSource) -> CTCDecoderAttrs:
        p = layer.param.ctc_decoder_param
        return CTCDecoderAttrs(int(p.blank_index), bool(p.ctc_merge_repeated))

    def infer(
        self, attrs: CTCDecoderAttrs, in_shapes: Sequence[Shape], layer: LayerSource
    ) -> list[Shape]:
        shape = in_shapes[0]
        if len(shape) < 3 or math.prod(shape[3:]) != 1:
            raise fail(layer, f"expects (T, N, C) scores, got {shape}")
        return [(shape[1], shape[0], 1, 1)]

    def emit(self, attrs: CTCDecoderAttrs, ctx: EmitContext) -> Emission:
        classes = ctx.in_shapes[0][2]
        blank = attrs.blank_index if attrs.blank_index >= 0 else classes - 1
        forward = call("ctc_greedy_decode", ctx.x, blank=blank, merge_repeated=attrs.merge_repeated)
        return Emission(forward=forward, helpers=("ctc_greedy_decode",))

    def evaluates(self, layer: LayerSource) -> bool:
        return len(layer.bottoms) == 2
