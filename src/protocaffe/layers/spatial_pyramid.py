"""Spatial pyramid pooling (SPP): Caffe's pooling at 1, 2, 4, ... bins per axis, each level
flattened and concatenated."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from protocaffe.ir.graph import Attrs, Shape
from protocaffe.layers.base import Emission, EmitContext, Layer, LayerSource, Role, call, fail
from protocaffe.layers.pooling import caffe_pool_size
from protocaffe.layers.registry import register

MAX, AVE, STOCHASTIC = 0, 1, 2


@dataclass(frozen=True)
class SPPAttrs(Attrs):
    pyramid_height: int
    average: bool


def spp_level(size: int, level: int) -> tuple[int, int]:
    """(kernel = stride, pad) of one axis at pyramid level `level` (2^level bins), as
    SPPLayer::GetPoolingParam chooses them."""
    bins = 2**level
    kernel = math.ceil(size / bins)
    return kernel, (kernel * bins - size + 1) // 2


@register
class SPP(Layer[SPPAttrs]):
    """Level l pools the input with kernel = stride = ceil(size / 2^l) and the pad that centres
    the windows, by Caffe's Pooling rules (ceil rounding); the levels, flattened from axis 1,
    are concatenated (level 0 first). A pyramid of height 1 is that one pooling, not flattened.
    The geometry follows the input size at run time, as Caffe's Reshape does.

    Source: BVLC/caffe, src/caffe/layers/spp_layer.cpp (GetPoolingParam, LayerSetUp)."""

    types = ("SPP",)
    role = Role.POOLING

    def parse(self, layer: LayerSource) -> SPPAttrs:
        p = layer.param.spp_param
        height = int(p.pyramid_height)
        if height <= 0:
            raise fail(
                layer, "Caffe aborts here: spp_param.pyramid_height must be at least 1 (got 0)"
            )
        if p.pool == STOCHASTIC:
            raise fail(layer, "STOCHASTIC pooling is not supported (it is random at TEST time)")
        return SPPAttrs(height, p.pool == AVE)

    def infer(self, attrs: SPPAttrs, in_shapes: Sequence[Shape], layer: LayerSource) -> list[Shape]:
        shape = in_shapes[0]
        if len(shape) != 4:
            raise fail(
                layer,
                f"Caffe aborts here: Input must have 4 axes, corresponding to (num, channels, "
                f"height, width), got {shape}",
            )
        n, c, h, w = shape
        total = 0
        for level in range(attrs.pyramid_height):
            geometry = [spp_level(size, level) for size in (h, w)]
            for size, (kernel, pad) in zip((h, w), geometry, strict=True):
                if pad >= kernel:
                    raise fail(
                        layer,
                        f"Caffe aborts here: at pyramid level {level} ({2**level} bins) an axis "
                        f"of {size} needs pad {pad} >= kernel {kernel} (the input is too small)",
                    )
            # The level's PoolingLayer drops a last window that starts in the padding when
            # either axis is padded (pooling_layer.cpp Reshape).
            clip = any(pad > 0 for _, pad in geometry)
            sizes = [
                caffe_pool_size(size, kernel, kernel, pad, True, clip)
                for size, (kernel, pad) in zip((h, w), geometry, strict=True)
            ]
            if attrs.pyramid_height == 1:
                return [(n, c, sizes[0], sizes[1])]
            total += c * sizes[0] * sizes[1]
        return [(n, total)]

    def emit(self, attrs: SPPAttrs, ctx: EmitContext) -> Emission:
        forward = call("caffe_spp", ctx.x, repr(attrs.pyramid_height), average=attrs.average)
        return Emission(forward=forward, helpers=("caffe_spp",))
