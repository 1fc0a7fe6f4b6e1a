"""Resampling layers of the segmentation and detection forks: Interp and Upsample.

Sources:
- hszhao/PSPNet (the same code as DeepLab's deeplab-public-ver2), src/caffe/layers/
  interp_layer.cpp (LayerSetUp: pads <= 0; Reshape: the output size from shrink_factor,
  zoom_factor, height/width, in that order of precedence) and src/caffe/util/interp.cpp
  (caffe_cpu_interp2: bilinear with aligned corners, ratios in float, a plain copy when the
  sizes are equal).
- Upsample with two bottoms: alexgkendall/caffe-segnet (segnet-cleaned) and
  TimoSaemann/caffe-enet, upsample_layer.cpp (LayerSetUp: upsample_h/w, else scale or
  scale_h/w (default 2) with pad_out_h/w; Forward_cpu: top[mask[i]] = bottom[i] per channel).
- Upsample with one bottom: the YOLO forks (ChenYingpeng/caffe-yolov3,
  eric612/MobileNet-YOLO; brocolli-caffe, the oracle's build, has the same layer):
  upsample_layer.cpp Forward_cpu, nearest neighbour, `scale` with default 1 in their
  caffe.proto (protocaffe's schema carries SegNet's default of 2, so an unset scale is read
  as 1 here).
"""

from __future__ import annotations

import numpy as np

from protocaffe.verify.reference.params import as_f32, f32, legacy_shape
from protocaffe.verify.reference.registry import Array, RefLayer, register


def interp_output_size(
    height: int,
    width: int,
    *,
    zoom: int | None = None,
    shrink: int | None = None,
    out_height: int | None = None,
    out_width: int | None = None,
    pad_beg: int = 0,
    pad_end: int = 0,
) -> tuple[int, int, int, int]:
    """InterpLayer::Reshape: (effective input height, width, output height, width). None is a
    field the prototxt does not set; the first matching rule wins, as in the C++."""
    h_eff, w_eff = height + pad_beg + pad_end, width + pad_beg + pad_end
    if shrink is not None and zoom is None:
        _require(shrink >= 1, "Shrink factor must be positive")
        h_out, w_out = (h_eff - 1) // shrink + 1, (w_eff - 1) // shrink + 1
    elif zoom is not None and shrink is None:
        _require(zoom >= 1, "Zoom factor must be positive")
        h_out, w_out = h_eff + (h_eff - 1) * (zoom - 1), w_eff + (w_eff - 1) * (zoom - 1)
    elif out_height is not None and out_width is not None:
        h_out, w_out = out_height, out_width
    elif shrink is not None and zoom is not None:
        _require(shrink >= 1, "Shrink factor must be positive")
        _require(zoom >= 1, "Zoom factor must be positive")
        h_out, w_out = (h_eff - 1) // shrink + 1, (w_eff - 1) // shrink + 1
        h_out, w_out = h_out + (h_out - 1) * (zoom - 1), w_out + (w_out - 1) * (zoom - 1)
    else:
        raise ValueError("Interp needs shrink_factor, zoom_factor or height and width")
    _require(h_eff > 0 and w_eff > 0, "height/width should be positive")
    _require(h_out > 0 and w_out > 0, "height/width should be positive")
    return h_eff, w_eff, h_out, w_out


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def interp_values(
    x: Array,
    *,
    zoom: int | None = None,
    shrink: int | None = None,
    height: int | None = None,
    width: int | None = None,
    pad_beg: int = 0,
    pad_end: int = 0,
) -> Array:
    """The Interp layer's top for x (N, C, H, W) and the given fields."""
    h1, w1, h2, w2 = interp_output_size(
        x.shape[2],
        x.shape[3],
        zoom=zoom,
        shrink=shrink,
        out_height=height,
        out_width=width,
        pad_beg=pad_beg,
        pad_end=pad_end,
    )
    return interp2(x, pad_beg, h1, w1, h2, w2)


def interp2(x: Array, pad_beg: int, h1: int, w1: int, h2: int, w2: int) -> Array:
    """caffe_cpu_interp2 (not packed) of the region of x starting at (-pad_beg, -pad_beg) of
    size h1 x w1 into h2 x w2, with float32 weights as in the C++ (Dtype lambdas).

    Each output is h0 * (w0 * p00 + w1 * p01) + h1 * (w0 * p10 + w1 * p11): the two inner
    sums are the same numbers for every output row that reads those input rows, so they are
    computed once per input row (a separable pass with identical float steps), a block of
    channels at a time to bound the memory."""
    x = as_f32(x)
    y0 = x0 = -pad_beg
    if (h1, w1) == (h2, w2):
        return np.ascontiguousarray(x[:, :, y0 : y0 + h1, x0 : x0 + w1])
    rh = f32(h1 - 1) / f32(h2 - 1) if h2 > 1 else f32(0)
    rw = f32(w1 - 1) / f32(w2 - 1) if w2 > 1 else f32(0)
    hr = rh * np.arange(h2, dtype=np.float32)
    wr = rw * np.arange(w2, dtype=np.float32)
    hi, wi = hr.astype(np.int64), wr.astype(np.int64)
    hp = (hi < h1 - 1).astype(np.int64)
    wp = (wi < w1 - 1).astype(np.int64)
    l1h = (hr - hi.astype(np.float32)).reshape(1, 1, -1, 1)
    l1w = (wr - wi.astype(np.float32)).reshape(1, 1, 1, -1)
    l0h, l0w = f32(1) - l1h, f32(1) - l1w
    rows0, rows1 = y0 + hi, y0 + hi + hp
    cols0, cols1 = x0 + wi, x0 + wi + wp
    n, c = x.shape[:2]
    out = np.empty((n, c, h2, w2), np.float32)
    block = max(1, (1 << 22) // max(1, h2 * w2))  # channels per step (about 16 MB of output)
    for start in range(0, c, block):
        part = x[:, start : start + block, y0 : y0 + h1]
        across = l0w * part[:, :, :, cols0] + l1w * part[:, :, :, cols1]  # every input row
        top = l0h * across[:, :, rows0 - y0]
        top += l1h * across[:, :, rows1 - y0]
        out[:, start : start + block] = top
    return out


@register("Interp")
def interp(layer: RefLayer, bottoms: list[Array]) -> list[Array]:
    p = layer.param.interp_param
    layer.check(p.pad_beg <= 0, "Only supports non-pos padding (cropping) for now")
    layer.check(p.pad_end <= 0, "Only supports non-pos padding (cropping) for now")
    x = bottoms[0]
    n, c, h, w = legacy_shape(layer, x.shape)

    def field(name: str) -> int | None:
        return int(getattr(p, name)) if p.HasField(name) else None

    try:
        top = interp_values(
            x.reshape(n, c, h, w),
            zoom=field("zoom_factor"),
            shrink=field("shrink_factor"),
            height=field("height"),
            width=field("width"),
            pad_beg=int(p.pad_beg),
            pad_end=int(p.pad_end),
        )
    except ValueError as exc:
        raise layer.fail(f"Caffe aborts here: {exc}") from None
    return [top]


def unpool(x: Array, mask: Array, out_h: int, out_w: int) -> Array:
    """SegNet's Upsample: top[mask[i]] = bottom[i] per channel, zeros elsewhere; a later value
    at the same index overwrites an earlier one, as the C++ loop does."""
    n, c = x.shape[:2]
    out = np.zeros((n * c, out_h * out_w), np.float32)
    index = mask.reshape(n * c, -1).astype(np.int64)
    values = as_f32(x).reshape(n * c, -1)
    if index.size and index.min() < 0:
        raise ValueError("the mask holds -1: a pooling window saw no input")
    if index.size and (index.max() >= out_h * out_w):
        raise ValueError(
            f"upsample top index {int(index.max())} out of range - check scale settings match "
            "input pooling layer's downsample setup"
        )
    rows = np.broadcast_to(np.arange(n * c)[:, None], index.shape)
    # numpy assigns repeated indices in order, so the last write wins as in the C++ loop.
    out[rows.reshape(-1), index.reshape(-1)] = values.reshape(-1)
    return out.reshape(n, c, out_h, out_w)


@register("Upsample", bottoms=(1, 2))
def upsample(layer: RefLayer, bottoms: list[Array]) -> list[Array]:
    p = layer.param.upsample_param
    x = bottoms[0]
    if len(bottoms) == 1:  # the YOLO forks' nearest-neighbour Upsample
        layer.check(x.ndim == 4, f"expects a 4-D input, got {x.shape}")
        # The YOLO forks' default is 1; SegNet's caffe.proto says 2 (--dialect segnet-upsample).
        default = 2 if "segnet-upsample" in layer.dialects else 1
        scale = int(p.scale) if p.HasField("scale") else default
        layer.check(scale >= 1, "scale must be positive")
        return [np.ascontiguousarray(np.repeat(np.repeat(as_f32(x), scale, axis=2), scale, axis=3))]
    mask = bottoms[1]
    has = p.HasField
    layer.check(
        (has("upsample_h") and has("upsample_w"))
        or (not has("scale") and has("scale_h") and has("scale_w"))
        or (not has("scale_h") and not has("scale_w")),
        "upsample_h & upsample_w are required, else (DEPRECATED) scale OR scale_h & scale_w "
        "are required.",
    )
    layer.check(x.ndim == 4 and mask.ndim == 4, "Input and mask must have 4 axes")
    layer.check(
        x.shape == mask.shape, f"the mask {mask.shape} must have the input's shape {x.shape}"
    )
    if has("upsample_h") and has("upsample_w"):
        out_h, out_w = int(p.upsample_h), int(p.upsample_w)
        layer.check(out_h > 1 and out_w > 1, "upsample_h and upsample_w must be > 1")
    else:
        if not has("scale_h"):
            scale_h = scale_w = int(p.scale)
            layer.check(scale_h > 1, "scale must be > 1")
        else:
            scale_h, scale_w = int(p.scale_h), int(p.scale_w)
            layer.check(scale_h > 1 and scale_w > 1, "scale_h and scale_w must be > 1")
        pad_h, pad_w = bool(p.pad_out_h), bool(p.pad_out_w)
        layer.check(
            not pad_h or scale_h == 2, "Output height padding compensation requires scale_h == 2"
        )
        layer.check(
            not pad_w or scale_w == 2, "Output width padding compensation requires scale_w == 2"
        )
        out_h = x.shape[2] * scale_h - int(pad_h)
        out_w = x.shape[3] * scale_w - int(pad_w)
    try:
        return [unpool(x, mask, out_h, out_w)]
    except ValueError as exc:
        raise layer.fail(f"Caffe aborts here: {exc}") from None


@register("Unpooling", bottoms=(2, 2))
def unpooling(layer: RefLayer, bottoms: list[Array]) -> list[Array]:
    """DeconvNet's Unpooling, MAX with a mask (HyeonwooNoh/caffe, unpooling_layer.cpp:
    LayerSetUp reads kernel, stride, pad (must be 0) and unpool_size or unpool_h/unpool_w;
    Reshape: otherwise max((H - 1) * stride + kernel - 2 pad, H * stride - pad + 1) per axis;
    Forward_cpu MAX: zeros, then top[mask[i]] = bottom[i] per channel plane)."""
    p = layer.param.unpooling_param
    layer.check(int(p.unpool) == 0, "only MAX unpooling has a reference here")
    x, mask = bottoms
    layer.check(x.shape == mask.shape, f"the mask {mask.shape} must have the input's shape")
    kernel_h = int(p.kernel_size) if p.HasField("kernel_size") else int(p.kernel_h)
    kernel_w = int(p.kernel_size) if p.HasField("kernel_size") else int(p.kernel_w)
    stride_h = int(p.stride_h) if p.HasField("stride_h") else int(p.stride)
    stride_w = int(p.stride_w) if p.HasField("stride_h") else int(p.stride)
    pad_h = int(p.pad_h) if p.HasField("pad_h") else int(p.pad)
    pad_w = int(p.pad_w) if p.HasField("pad_h") else int(p.pad)
    layer.check(pad_h == 0 and pad_w == 0, "currently, only zero padding is allowed.")
    if p.HasField("unpool_size"):
        out_h = out_w = int(p.unpool_size)
    elif p.HasField("unpool_h") and p.HasField("unpool_w"):
        out_h, out_w = int(p.unpool_h), int(p.unpool_w)
    else:
        height, width = x.shape[2], x.shape[3]
        out_h = max((height - 1) * stride_h + kernel_h - 2 * pad_h, height * stride_h - pad_h + 1)
        out_w = max((width - 1) * stride_w + kernel_w - 2 * pad_w, width * stride_w - pad_w + 1)
    try:
        return [unpool(x, mask, out_h, out_w)]
    except ValueError as exc:
        raise layer.fail(f"Caffe aborts here: {exc}") from None


# The oracle build's resampling layers: brocolli-caffe 9.0.2, src/caffe/layers/resize_layer.cpp
# (LayerSetUp, Reshape: height/width, or int(scale * size) in float with is_pyramid_test) with
# src/caffe/util/util_img.cpp (ResizeBlob_cpu, BiLinearResizeMat_cpu),
# bilinear_interpolate_layer.cpp (LayerSetUp: dst_h/dst_w or int(size * scale_factor);
# Forward_cpu) and maxunpool_layer.cpp (LayerSetUp, Reshape, Forward_cpu).


def _scaled(scale: float, size: int) -> int:
    """int(scale * size), the float product Caffe truncates."""
    return int(np.float32(np.float32(scale) * np.float32(size)))


def _resize_plane_taps(size_in: int, size_out: int) -> tuple[Array, Array, Array]:
    """BiLinearResizeMat_cpu's source row per output row and its two weights, in float."""
    scale = np.float32(size_in) / np.float32(size_out)
    position = np.arange(size_out, dtype=np.float32) * scale
    first = np.floor(position).astype(np.int64)
    fraction = (position - first.astype(np.float32)).astype(np.float32)
    return first, np.abs(np.float32(1.0) - fraction), np.abs(fraction)


@register("Resize")
def resize(layer: RefLayer, bottoms: list[Array]) -> list[Array]:
    p = layer.param.resize_param
    x = as_f32(bottoms[0])
    n, c, height, width = legacy_shape(layer, x.shape)
    if p.is_pyramid_test:
        layer.check(p.HasField("out_height_scale"), "output height scale is required ")
        layer.check(p.HasField("out_width_scale"), "output width scale is required ")
        out_h, out_w = _scaled(p.out_height_scale, height), _scaled(p.out_width_scale, width)
    else:
        layer.check(p.HasField("height"), "output height is required ")
        layer.check(p.HasField("width"), "output width is required ")
        out_h, out_w = int(p.height), int(p.width)
    planes = x.reshape(n * c, height, width)
    rows, w_h0, w_h1 = _resize_plane_taps(height, out_h)
    cols, w_w0, w_w1 = _resize_plane_taps(width, out_w)
    right = cols + 1 < width
    below = rows + 1 < height
    clip_r, clip_c = np.minimum(rows + 1, height - 1), np.minimum(cols + 1, width - 1)
    value = (w_h0[:, None] * w_w0[None, :]) * planes[:, rows][:, :, cols]
    value = value + np.where(
        right[None, :], (w_h0[:, None] * w_w1[None, :]) * planes[:, rows][:, :, clip_c], 0
    )
    value = value + np.where(
        below[:, None], (w_h1[:, None] * w_w0[None, :]) * planes[:, clip_r][:, :, cols], 0
    )
    # The corner counts only where both neighbours did (`flag > 1`).
    both = below[:, None] & right[None, :]
    value = value + np.where(
        both, (w_h1[:, None] * w_w1[None, :]) * planes[:, clip_r][:, :, clip_c], 0
    )
    return [value.astype(np.float32).reshape(n, c, out_h, out_w)]


@register("BilinearInterpolate")
def bilinear_interpolate(layer: RefLayer, bottoms: list[Array]) -> list[Array]:
    p = layer.param.bilinear_interpolate_param
    x = as_f32(bottoms[0])
    n, c, src_h, src_w = legacy_shape(layer, x.shape)
    has_size = p.HasField("dst_h") or p.HasField("dst_w")
    if has_size == p.HasField("scale_factor"):
        raise layer.fail(
            "dst_h/dst_w and scale_factor both or neither: Caffe leaves the size unset"
        )
    if has_size:
        dst_h = int(p.dst_h) if p.HasField("dst_h") else src_h
        dst_w = int(p.dst_w) if p.HasField("dst_w") else src_w
    else:
        dst_h, dst_w = _scaled(p.scale_factor, src_h), _scaled(p.scale_factor, src_w)
    align = bool(p.align_corners)
    if align and 1 in (dst_h, dst_w):
        raise layer.fail("an output size of 1 with align_corners: Caffe computes 0 / 0 (NaN)")

    def source(size: int, dst: int) -> tuple[Array, Array, Array]:
        index = np.arange(dst, dtype=np.float32)
        if align:
            pos = (np.float32(size - 1) / np.float32(dst - 1)) * index
        else:  # float(src) / dst, times (i + 0.5) and minus 0.5 in double
            ratio = np.float64(np.float32(size) / np.float32(dst))
            pos = (ratio * (index.astype(np.float64) + 0.5) - 0.5).astype(np.float32)
        pos = np.where(pos > size - 1, np.float32(size - 1), pos)
        pos = np.where(pos < 0, np.float32(0), pos).astype(np.float32)
        low = np.clip(np.floor(pos), 0, None)
        low = np.minimum(low, size - 2).astype(np.int64)
        return pos, low, low + 1

    h, h0, h1 = source(src_h, dst_h)
    w, w0, w1 = source(src_w, dst_w)
    planes = x.reshape(n * c, src_h, src_w)

    def at(rows: Array, cols: Array) -> Array:
        # A 1-row (1-column) input reads row -1 with weight 0 (before the blob in C++).
        return planes[:, np.clip(rows, 0, src_h - 1)][:, :, np.clip(cols, 0, src_w - 1)]

    wa = (w1.astype(np.float32) - w)[None, :]
    wb = (w - w0.astype(np.float32))[None, :]
    r0 = wa * at(h0, w0) + wb * at(h0, w1)
    r1 = wa * at(h1, w0) + wb * at(h1, w1)
    top = (h1.astype(np.float32) - h)[:, None] * r0 + (h - h0.astype(np.float32))[:, None] * r1
    return [top.astype(np.float32).reshape(n, c, dst_h, dst_w)]


@register("MaxUnPool", bottoms=(2, 2))
def max_unpool(layer: RefLayer, bottoms: list[Array]) -> list[Array]:
    p = layer.param.max_unpool_param
    layer.check(p.HasField("dst_h") and p.HasField("dst_w"), "dst_h and dst_w are required.")
    x, mask = bottoms
    layer.check(
        x.ndim == 4, "Input must have 4 axes, corresponding to (num, channels, height, width)"
    )
    layer.check(mask.size == x.size, f"the mask {mask.shape} must have the input's size {x.shape}")
    try:
        return [unpool(x, mask.reshape(x.shape), int(p.dst_h), int(p.dst_w))]
    except ValueError as exc:
        raise layer.fail(f"Caffe aborts here: {exc}") from None
