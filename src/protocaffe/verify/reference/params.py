"""Reading Caffe parameters the way Caffe reads them: axis indices, legacy 4-D accessors, and
the spellings of kernel/stride/pad that Caffe and its forks accept."""

from __future__ import annotations

from typing import Any

import numpy as np

from protocaffe.verify.reference.registry import Array, RefLayer, Shape

f32 = np.float32
FLT_MAX = float(np.finfo(np.float32).max)


def canonical_axis(layer: RefLayer, axis: int, shape: Shape) -> int:
    """`Blob::CanonicalAxisIndex`: a negative axis counts from the end; out of range aborts."""
    ndim = len(shape)
    layer.check(
        -ndim <= axis < ndim,
        f"axis {axis} out of range for a {ndim}-D blob of shape {shape}",
    )
    return axis + ndim if axis < 0 else axis


def legacy_shape(layer: RefLayer, shape: Shape) -> tuple[int, int, int, int]:
    """`Blob::num()/channels()/height()/width()`: the first four axes, 1 where the blob has
    fewer; Caffe aborts on a blob with more than four axes."""
    layer.check(
        len(shape) <= 4,
        f"cannot use legacy accessors (num, channels, height, width) on the "
        f"{len(shape)}-D blob {shape}",
    )
    padded = tuple(shape) + (1,) * (4 - len(shape))
    return padded[0], padded[1], padded[2], padded[3]


def count(shape: Shape, start: int = 0, end: int | None = None) -> int:
    """`Blob::count(start, end)`: the product of the dims in [start, end)."""
    return int(np.prod(shape[start:end], dtype=np.int64))


def trunc_div(a: int, b: int) -> int:
    """C++ integer division (truncates toward zero)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def spatial_params(
    layer: RefLayer,
    p: Any,
    name: str,
    default: int,
    spatial_axes: int,
) -> tuple[int, ...]:
    """Kernel, stride, pad or dilation of a Convolution (base_conv_layer.cpp, LayerSetUp):
    `NAME_h`/`NAME_w` (2-D only, not beside the repeated field; the other of the pair takes its
    default), else the repeated `NAME` given once or once per spatial axis, else the default.

    BVLC's caffe.proto gives `stride_h`/`stride_w` no default, so `stride_h` alone leaves a
    stride of 0 there and Caffe divides by zero; the SSD-based builds (the oracle's among them)
    default both to 1. The reference takes 1, the one value that computes anything."""
    repeated = list(getattr(p, "kernel_size" if name == "kernel" else name))
    has_h = name != "dilation" and p.HasField(f"{name}_h")
    has_w = name != "dilation" and p.HasField(f"{name}_w")
    field = "kernel_size" if name == "kernel" else name
    if has_h or has_w:
        layer.check(spatial_axes == 2, f"{name}_h & {name}_w can only be used for 2D convolution")
        layer.check(not repeated, f"either {field} or {name}_h/w should be specified; not both")
        h = int(getattr(p, f"{name}_h")) if has_h else default
        w = int(getattr(p, f"{name}_w")) if has_w else default
        return (h, w)
    if name == "kernel":
        layer.check(
            len(repeated) in (1, spatial_axes),
            f"kernel_size must be specified once, or once per spatial dimension (kernel_size "
            f"specified {len(repeated)} times; {spatial_axes} spatial dims)",
        )
    else:
        layer.check(
            len(repeated) in (0, 1, spatial_axes),
            f"{name} must be specified once, or once per spatial dimension ({name} specified "
            f"{len(repeated)} times; {spatial_axes} spatial dims)",
        )
    if not repeated:
        return (default,) * spatial_axes
    return tuple(int(repeated[0 if len(repeated) == 1 else i]) for i in range(spatial_axes))


def as_f32(array: Array) -> Array:
    """A C-contiguous float32 array (no copy when it already is one)."""
    return np.ascontiguousarray(array, dtype=np.float32)


def nd_shape_fields(
    layer: RefLayer, p: Any, spatial: int
) -> tuple[list[int], list[int], list[int]]:
    """kernel_shape, stride_shape, pad_shape (`{ dim: ... }` messages) as chuckcho/video-caffe's
    cudnn_ndconv_layer.cpp and cudnn_ndpooling_layer.cpp (LayerSetUp) read them: CHECK
    has_kernel_shape, kernel dims > 0; the others with as many dims when given, else 1 and 0;
    cuDNN's descriptors need one per spatial axis."""
    layer.check(p.HasField("kernel_shape"), "Kernel shape is required.")
    kernel = [int(d) for d in p.kernel_shape.dim]
    layer.check(all(k > 0 for k in kernel), "Filter dimensions cannot be zero.")
    found = []
    for name, default in (("stride_shape", 1), ("pad_shape", 0)):
        if p.HasField(name):
            given = [int(d) for d in getattr(p, name).dim]
            layer.check(len(given) == len(kernel), f"Kernel and {name} don't match !")
            found.append(given)
        else:
            found.append([default] * len(kernel))
    layer.check(len(kernel) == spatial, f"{len(kernel)} kernel dims for {spatial} spatial axes")
    layer.check(all(s > 0 for s in found[0]), "stride_shape dims must be positive")
    return kernel, found[0], found[1]
