"""Pooling over many geometries against the numpy reference's port of Caffe's pooling_layer.cpp.

Caffe's output size (ceil, and the last-window clip only when pad > 0), its AVE divisor
(clipped at H + pad) and its windows that start past the input (pad 0, kernel < stride) are where
converters go wrong; protocaffe picks torch's pooling or its own helper per geometry, so both
paths are exercised here, at the declared size and at another input size.
"""

from __future__ import annotations

import math

import numpy as np
from caffe_check import assert_close, build, layer, net_text
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocaffe.verify.reference.ops.pooling import pool2d


@st.composite
def geometries(draw):
    kernel = draw(st.integers(1, 5))
    stride = draw(st.integers(1, 4))
    pad = draw(st.integers(0, kernel - 1))
    ceil = draw(st.booleans())
    sizes = []
    for _ in range(2):
        # Sizes for which Caffe keeps at least one window.
        low = max(1, kernel - 2 * pad)
        sizes.append(draw(st.integers(low, low + 9)))
    return kernel, stride, pad, ceil, draw(st.booleans()), tuple(sizes)


def caffe_rows(size: int, kernel: int, stride: int, pad: int, ceil: bool) -> int:
    span = size + 2 * pad - kernel
    out = (math.ceil(span / stride) if ceil else span // stride) + 1
    return out - 1 if pad and (out - 1) * stride >= size + pad else out


@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(geometry=geometries())
def test_pooling_matches_caffe_for_any_geometry(tmp_path_factory, geometry):
    kernel, stride, pad, ceil, average, (height, width) = geometry
    if min(caffe_rows(d, kernel, stride, pad, ceil) for d in (height, width)) <= 0:
        return
    method = "AVE" if average else "MAX"
    params = (
        f"pooling_param {{ pool: {method} kernel_size: {kernel} stride: {stride} pad: {pad} "
        f"round_mode: {'CEIL' if ceil else 'FLOOR'} }}"
    )
    text = net_text({"data": (1, 2, height, width)}, layer("out", "Pooling", "data", params=params))
    run = build(tmp_path_factory.mktemp("pool"), text)
    rng = np.random.default_rng(kernel * 100 + stride * 10 + pad)
    for shape in [(1, 2, height, width), (2, 2, height + 3, width + 1)]:
        x = rng.standard_normal(shape).astype(np.float32)
        expected, _ = pool2d(x, (kernel,) * 2, (stride,) * 2, (pad,) * 2, average, ceil)
        assert_close(run.ours({"data": x})["out"], expected, what=f"{params} on {shape}")


def test_the_pooling_helper_sizes_windows_by_the_layers_rule():
    """Caffe's output-size rule has two copies: `caffe_pool_size`, which shape inference uses,
    and the generated `caffe_pool` helper, which computes it at run time in torch. They must
    agree on every geometry (both axes, ceil and floor, any pad below the kernel; a pad on one
    axis drops a last window that starts in the padding on the other axis too)."""
    import torch

    from protocaffe.backend.helpers import helper_imports, helper_source
    from protocaffe.layers.pooling import caffe_pool_size

    namespace: dict[str, object] = {}
    source = "\n".join(helper_imports("caffe_pool")) + "\n\n" + helper_source("caffe_pool")
    exec(compile(source, "caffe_pool.py", "exec"), namespace)
    caffe_pool = namespace["caffe_pool"]
    checked = 0
    for size in range(1, 13):
        for kernel in range(1, 6):
            for stride in range(1, 5):
                for pad in range(kernel):
                    for ceil in (False, True):
                        expected = caffe_pool_size(size, kernel, stride, pad, ceil, pad > 0)
                        if expected <= 0:
                            continue
                        x = torch.zeros(1, 1, size, size + 2)
                        out = caffe_pool(
                            x, [kernel, 1], [stride, 2], [pad, 0], ceil, average=checked % 2 == 0
                        )
                        other = caffe_pool_size(size + 2, 1, 2, 0, ceil, pad > 0)
                        assert tuple(out.shape[2:]) == (expected, other), (
                            size,
                            kernel,
                            stride,
                            pad,
                            ceil,
                        )
                        out = caffe_pool(
                            x.transpose(2, 3), [1, kernel], [1, stride], [0, pad], ceil, False
                        )
                        assert tuple(out.shape[2:]) == (size + 2, expected)
                        checked += 1
    assert checked > 500
