"""Seeded random one-layer nets per Caffe layer type, with odd sizes and random parameters in
every spelling Caffe accepts (and some it refuses), for the reference's conformance tests.

`CASES[type](rng, i)` builds case i of a type; the same seed always builds the same net.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from oracle_runner import Case, layer, net_text

Rng = np.random.Generator


def _odd(rng: Rng, low: int = 3, high: int = 13) -> int:
    return int(rng.choice([v for v in range(low, high + 1) if v % 2 == 1]))


def _x(rng: Rng, shape: tuple[int, ...], scale: float = 1.0) -> np.ndarray:
    return (rng.normal(0, scale, shape)).astype(np.float32)


def _one(
    name: str,
    kind: str,
    params: str,
    shape: tuple[int, ...],
    rng: Rng,
    scale: float = 1.0,
    **extra: object,
) -> Case:
    text = net_text({"data": shape}, layer("out", kind, "data", params=params))
    case = Case(name, text, {"data": _x(rng, shape, scale)}, seed=int(rng.integers(1 << 30)))
    for key, value in extra.items():
        setattr(case, key, value)
    return case


def _pair(rng: Rng, name: str, lo: int, hi: int, spellings: bool = True) -> str:
    """kernel/stride/pad in one of Caffe's spellings."""
    h, w = (int(v) for v in rng.integers(lo, hi + 1, 2))
    field = "kernel_size" if name == "kernel" else name
    form = int(rng.integers(3)) if spellings else 0
    if form == 0 or h == w:
        return f"{field}: {h}"
    if form == 1:
        return f"{name}_h: {h} {name}_w: {w}"
    return f"{field}: {h} {field}: {w}"


def convolution(rng: Rng, i: int, kind: str = "Convolution") -> Case:
    n = int(rng.integers(1, 3))
    group = int(rng.choice([1, 1, 2, 3]))
    c = group * int(rng.integers(1, 3))
    out = group * int(rng.integers(1, 4))
    three_d = kind == "Convolution" and i % 7 == 6
    if three_d:
        shape: tuple[int, ...] = (n, c, _odd(rng, 3, 7), _odd(rng, 3, 7), _odd(rng, 3, 7))
        geo = f"kernel_size: {int(rng.integers(1, 4))} stride: {int(rng.integers(1, 3))} pad: 1"
    else:
        shape = (n, c, _odd(rng, 5, 13), _odd(rng, 5, 13))
        geo = " ".join(
            [
                _pair(rng, "kernel", 1, 4),
                _pair(rng, "stride", 1, 3),
                _pair(rng, "pad", 0, 2),
                f"dilation: {int(rng.integers(1, 3))}" if rng.random() < 0.4 else "",
            ]
        )
        if i % 7 == 5:  # issue 13: pad_h alone takes pad_w = 0; stride_h alone stride_w = 1
            geo = "kernel_size: 3 pad_h: 1 stride_h: 2"
    bias = "" if rng.random() < 0.7 else "bias_term: false"
    params = f"convolution_param {{ num_output: {out} group: {group} {geo} {bias} }}"
    return _one(f"{kind}-{i}", kind, params, shape, rng)


def deconvolution(rng: Rng, i: int) -> Case:
    return convolution(rng, i, "Deconvolution")


def pooling(rng: Rng, i: int) -> Case:
    shape = (int(rng.integers(1, 3)), int(rng.integers(1, 4)), _odd(rng, 3, 13), _odd(rng, 3, 13))
    method = "AVE" if rng.random() < 0.5 else "MAX"
    tops: list[str] | None = None
    if i % 9 == 8:
        params = f"pooling_param {{ pool: {method} global_pooling: true }}"
    else:
        kh, kw = (int(v) for v in rng.integers(1, 5, 2))
        form = int(rng.integers(3))
        kernel = f"kernel_size: {kh}" if form == 0 else f"kernel_h: {kh} kernel_w: {kw}"
        if form == 0:
            kw = kh
        ph, pw = int(rng.integers(0, kh)), int(rng.integers(0, kw))
        pad = (
            ""
            if rng.random() < 0.4
            else (f"pad: {min(ph, pw)}" if form == 0 else f"pad_h: {ph} pad_w: {pw}")
        )
        sh, sw = (int(v) for v in rng.integers(1, 4, 2))
        stride = f"stride: {sh}" if rng.random() < 0.5 else f"stride_h: {sh} stride_w: {sw}"
        rounding = str(
            rng.choice(
                ["", "round_mode: FLOOR", "round_mode: CEIL", "ceil_mode: false", "ceil_mode: true"]
            )
        )
        params = f"pooling_param {{ pool: {method} {kernel} {pad} {stride} {rounding} }}"
        if i == 7:  # issue 13: the last-window rule looks at either pad
            params = (
                "pooling_param { pool: MAX kernel_h: 2 kernel_w: 1 stride_h: 1 stride_w: 3 "
                "pad_h: 1 pad_w: 0 }"
            )
            shape = (1, 1, 5, 5)
        if method == "MAX" and i % 3 == 1:
            tops = ["out", "mask"]
    text = net_text({"data": shape}, layer("out", "Pooling", "data", tops=tops, params=params))
    return Case(f"Pooling-{i}", text, {"data": _x(rng, shape)}, seed=i)


def inner_product(rng: Rng, i: int) -> Case:
    shape = (int(rng.integers(1, 4)), int(rng.integers(1, 5)), _odd(rng, 1, 5), _odd(rng, 1, 5))
    axis = int(rng.choice([1, 1, 2, -1]))
    extra = " ".join(
        s
        for s, p in (("transpose: true", 0.4), ("bias_term: false", 0.3), (f"axis: {axis}", 0.6))
        if rng.random() < p
    )
    params = f"inner_product_param {{ num_output: {int(rng.integers(1, 7))} {extra} }}"
    return _one(f"InnerProduct-{i}", "InnerProduct", params, shape, rng)


def _nd_shape(rng: Rng, low: int = 2, high: int = 4) -> tuple[int, ...]:
    ndim = int(rng.integers(low, high + 1))
    return tuple(int(rng.integers(1, 6)) for _ in range(ndim))


def neuron(
    kind: str, make_params: Callable[[Rng], str], scale: float = 2.0, positive: bool = False
):
    def make(rng: Rng, i: int) -> Case:
        shape = _nd_shape(rng, 1, 5)
        params = make_params(rng)
        case = _one(f"{kind}-{i}", kind, params, shape, rng, scale)
        if positive:
            case.inputs["data"] = np.abs(case.inputs["data"]) + np.float32(0.05)
        if i % 4 == 3 and kind not in ("AbsVal",):  # in place
            case.text = net_text({"data": shape}, layer("out", kind, "data", "data", params=params))
        return case

    return make


def _f(rng: Rng, lo: float, hi: float) -> float:
    return round(float(rng.uniform(lo, hi)), 3)


def batch_norm(rng: Rng, i: int) -> Case:
    shape = _nd_shape(rng, 2, 5)
    shape = (shape[0], max(shape[1], 2)) + shape[2:]
    parts = []
    if rng.random() < 0.5:
        parts.append(f"eps: {_f(rng, 1e-5, 0.1)}")
    if i % 4 == 3:
        parts.append("use_global_stats: false")
    elif i % 4 == 2:
        parts.append("use_global_stats: true")
    case = _one(
        f"BatchNorm-{i}", "BatchNorm", f"batch_norm_param {{ {' '.join(parts)} }}", shape, rng
    )
    case.bn_factor = float(rng.choice([1.0, 0.0, 2.5, 0.7]))
    return case


def scale(rng: Rng, i: int, kind: str = "Scale") -> Case:
    shape = _nd_shape(rng, 2, 4)
    axis = int(rng.integers(0, len(shape)))
    field = "scale_param" if kind == "Scale" else "bias_param"
    bias = "bias_term: true" if kind == "Scale" and rng.random() < 0.5 else ""
    if i % 3 == 2:  # the operand is a second bottom
        n_axes = int(rng.integers(1, len(shape) - axis + 1))  # an input cannot be 0-D
        other = shape[axis : axis + n_axes]
        text = net_text(
            {"data": shape, "operand": other},
            layer("out", kind, ["data", "operand"], params=f"{field} {{ axis: {axis} {bias} }}"),
        )
        return Case(
            f"{kind}-{i}", text, {"data": _x(rng, shape), "operand": _x(rng, other)}, seed=i
        )
    num_axes = int(rng.choice([-1, 0, 1, 1, 2]))
    if num_axes > len(shape) - axis:
        num_axes = 1 if axis < len(shape) else 0
    spelled_axis = axis - len(shape) if rng.random() < 0.3 else axis
    params = f"{field} {{ axis: {spelled_axis} num_axes: {num_axes} {bias} }}"
    return _one(f"{kind}-{i}", kind, params, shape, rng)


def bias(rng: Rng, i: int) -> Case:
    return scale(rng, i, "Bias")


def eltwise(rng: Rng, i: int) -> Case:
    shape = _nd_shape(rng, 2, 4)
    k = int(rng.integers(2, 5))
    names = [f"x{j}" for j in range(k)]
    op = str(rng.choice(["PROD", "SUM", "MAX"]))
    coeff = ""
    if op != "PROD" and rng.random() < 0.5:
        coeff = " ".join(f"coeff: {_f(rng, -2, 2)}" for _ in range(k))
    params = f"eltwise_param {{ operation: {op} {coeff} }}"
    text = net_text({n: shape for n in names}, layer("out", "Eltwise", names, params=params))
    inputs = {n: _x(rng, shape) for n in names}
    if op == "MAX" and i % 2:  # ties between bottoms
        inputs[names[1]] = inputs[names[0]].copy()
    return Case(f"Eltwise-{i}", text, inputs, seed=i)


def softmax(rng: Rng, i: int) -> Case:
    shape = _nd_shape(rng, 1, 4)
    axis = int(rng.integers(-len(shape), len(shape)))
    return _one(f"Softmax-{i}", "Softmax", f"softmax_param {{ axis: {axis} }}", shape, rng, 3.0)


def lrn(rng: Rng, i: int) -> Case:
    shape = (int(rng.integers(1, 3)), int(rng.integers(1, 9)), _odd(rng, 1, 9), _odd(rng, 1, 9))
    region = "WITHIN_CHANNEL" if i % 2 else "ACROSS_CHANNELS"
    params = (
        f"lrn_param {{ local_size: {_odd(rng, 1, 7)} alpha: {_f(rng, 0.0001, 2)} "
        f"beta: {_f(rng, 0.1, 1.5)} k: {_f(rng, 0.5, 3)} norm_region: {region} }}"
    )
    return _one(f"LRN-{i}", "LRN", params, shape, rng, 2.0, rtol=1e-4)


def mvn(rng: Rng, i: int) -> Case:
    shape = _nd_shape(rng, 2, 4)
    flags = " ".join(
        s
        for s, p in (("across_channels: true", 0.5), ("normalize_variance: false", 0.3))
        if rng.random() < p
    )
    eps = f"eps: {_f(rng, 0.001, 0.1)}" if rng.random() < 0.5 else ""
    return _one(
        f"MVN-{i}", "MVN", f"mvn_param {{ {flags} {eps} }}", shape, rng, rtol=1e-4, atol=1e-5
    )


def normalize(rng: Rng, i: int) -> Case:
    shape = (int(rng.integers(1, 3)), int(rng.integers(1, 6)), _odd(rng, 1, 7), _odd(rng, 1, 7))
    flags = " ".join(
        s
        for s, p in (("across_spatial: false", 0.5), ("channel_shared: false", 0.5))
        if rng.random() < p
    )
    eps = f"eps: {_f(rng, 0.001, 0.5)}" if rng.random() < 0.5 else ""
    return _one(f"Normalize-{i}", "Normalize", f"norm_param {{ {flags} {eps} }}", shape, rng)


def concat(rng: Rng, i: int) -> Case:
    base = list(_nd_shape(rng, 1, 4))
    axis = int(rng.integers(0, len(base)))
    k = int(rng.integers(1, 4))
    shapes = []
    for _ in range(k):
        s = list(base)
        s[axis] = int(rng.integers(1, 5))
        shapes.append(tuple(s))
    names = [f"x{j}" for j in range(k)]
    spelled = f"axis: {axis - len(base)}" if rng.random() < 0.3 else f"axis: {axis}"
    if rng.random() < 0.3:
        spelled = f"concat_dim: {axis}"
    text = net_text(
        dict(zip(names, shapes, strict=True)),
        layer("out", "Concat", names, params=f"concat_param {{ {spelled} }}"),
    )
    return Case(
        f"Concat-{i}", text, {n: _x(rng, s) for n, s in zip(names, shapes, strict=True)}, exact=True
    )


def slice_(rng: Rng, i: int) -> Case:
    shape = list(_nd_shape(rng, 1, 4))
    axis = int(rng.integers(0, len(shape)))
    k = int(rng.integers(1, 4))
    shape[axis] = max(shape[axis], k) + int(rng.integers(0, 3))
    tops = [f"y{j}" for j in range(k)]
    points = ""
    if k > 1 and rng.random() < 0.6:
        cuts = sorted(rng.choice(np.arange(1, shape[axis]), k - 1, replace=False).tolist())
        points = " ".join(f"slice_point: {c}" for c in cuts)
    else:
        shape[axis] = k * max(1, shape[axis] // k)
    spelled = f"axis: {axis}" if rng.random() < 0.7 else f"slice_dim: {axis}"
    text = net_text(
        {"data": tuple(shape)},
        layer("out", "Slice", "data", tops, params=f"slice_param {{ {spelled} {points} }}"),
    )
    return Case(f"Slice-{i}", text, {"data": _x(rng, tuple(shape))}, exact=True)


def split(rng: Rng, i: int) -> Case:
    shape = _nd_shape(rng, 1, 4)
    tops = [f"y{j}" for j in range(int(rng.integers(1, 4)))]
    text = net_text({"data": shape}, layer("out", "Split", "data", tops))
    return Case(f"Split-{i}", text, {"data": _x(rng, shape)}, exact=True)


def silence(rng: Rng, i: int) -> Case:
    shape = _nd_shape(rng, 1, 4)
    text = net_text(
        {"data": shape}, layer("relu", "ReLU", "data") + layer("s", "Silence", ["relu"], [])
    )
    return Case(f"Silence-{i}", text, {"data": _x(rng, shape)}, exact=True)


def flatten(rng: Rng, i: int) -> Case:
    shape = _nd_shape(rng, 1, 5)
    axis = int(rng.integers(-len(shape), len(shape)))
    a = axis % len(shape)
    end = int(rng.integers(a, len(shape))) - (len(shape) if rng.random() < 0.5 else 0)
    return _one(
        f"Flatten-{i}",
        "Flatten",
        f"flatten_param {{ axis: {axis} end_axis: {end} }}",
        shape,
        rng,
        exact=True,
    )


def reshape(rng: Rng, i: int) -> Case:
    shape = _nd_shape(rng, 1, 4)
    start = int(rng.integers(0, len(shape) + 1))
    num_axes = int(rng.integers(-1, len(shape) - start + 1))
    end = len(shape) if num_axes == -1 else start + num_axes
    replaced = int(np.prod(shape[start:end], dtype=np.int64))
    dims = []
    if replaced > 1 and rng.random() < 0.5:
        first = int(rng.choice([d for d in range(1, replaced + 1) if replaced % d == 0]))
        dims = [first, -1]
    elif end > start and rng.random() < 0.5:
        dims = [0] + ([-1] if end - start > 1 else [])
    else:
        dims = [replaced] if replaced else []
        if rng.random() < 0.3:
            dims.append(1)
    axis_spelled = start if rng.random() < 0.5 else start - len(shape) - 1
    shape_text = " ".join(f"dim: {d}" for d in dims)
    params = (
        f"reshape_param {{ shape {{ {shape_text} }} axis: {axis_spelled} num_axes: {num_axes} }}"
    )
    return _one(f"Reshape-{i}", "Reshape", params, shape, rng, exact=True)


def crop(rng: Rng, i: int) -> Case:
    ndim = int(rng.integers(2, 5))
    big = tuple(int(rng.integers(2, 8)) for _ in range(ndim))
    axis = int(rng.integers(0, ndim))
    small = tuple(big[d] if d < axis else int(rng.integers(1, big[d] + 1)) for d in range(ndim))
    slack = [big[d] - small[d] for d in range(axis, ndim)]
    if rng.random() < 0.5:
        offsets = f"offset: {min(slack)}" if slack else ""
    else:
        offsets = " ".join(f"offset: {int(rng.integers(0, s + 1))}" for s in slack)
    text = net_text(
        {"data": big, "ref": small},
        layer("out", "Crop", ["data", "ref"], params=f"crop_param {{ axis: {axis} {offsets} }}"),
    )
    return Case(f"Crop-{i}", text, {"data": _x(rng, big), "ref": _x(rng, small)}, exact=True)


def tile(rng: Rng, i: int) -> Case:
    shape = _nd_shape(rng, 1, 4)
    axis = int(rng.integers(-len(shape), len(shape)))
    params = f"tile_param {{ axis: {axis} tiles: {int(rng.integers(1, 4))} }}"
    return _one(f"Tile-{i}", "Tile", params, shape, rng, exact=True)


def permute(rng: Rng, i: int) -> Case:
    shape = _nd_shape(rng, 2, 4)
    order = rng.permutation(len(shape)).tolist()
    given = order[: int(rng.integers(0, len(shape) + 1))]
    params = "permute_param { " + " ".join(f"order: {o}" for o in given) + " }"
    return _one(f"Permute-{i}", "Permute", params, shape, rng, exact=True)


def argmax(rng: Rng, i: int) -> Case:
    shape = _nd_shape(rng, 2, 4)
    parts = []
    axis = None
    if rng.random() < 0.6:
        axis = int(rng.integers(-len(shape), len(shape)))
        parts.append(f"axis: {axis}")
        limit = shape[axis]
    else:
        limit = int(np.prod(shape[1:]))
    parts.append(f"top_k: {int(rng.integers(1, limit + 1))}")
    if rng.random() < 0.5:
        parts.append("out_max_val: true")
    case = _one(
        f"ArgMax-{i}", "ArgMax", f"argmax_param {{ {' '.join(parts)} }}", shape, rng, exact=True
    )
    if i % 2:  # ties: small integers
        case.inputs["data"] = np.round(case.inputs["data"]).astype(np.float32)
    return case


def reduction(rng: Rng, i: int) -> Case:
    shape = _nd_shape(rng, 1, 4)
    op = str(rng.choice(["SUM", "ASUM", "SUMSQ", "MEAN"]))
    axis = int(rng.integers(-len(shape), len(shape)))
    params = f"reduction_param {{ operation: {op} axis: {axis} coeff: {_f(rng, -2, 2)} }}"
    return _one(f"Reduction-{i}", "Reduction", params, shape, rng, rtol=1e-5, atol=1e-6)


def upsample_nearest(rng: Rng, i: int) -> Case:
    shape = (int(rng.integers(1, 3)), int(rng.integers(1, 4)), _odd(rng, 1, 7), _odd(rng, 1, 7))
    params = "" if i % 4 == 0 else f"upsample_param {{ scale: {int(rng.integers(1, 4))} }}"
    return _one(f"Upsample-{i}", "Upsample", params, shape, rng, exact=True)


def prior_box(rng: Rng, i: int) -> Case:
    fh, fw = _odd(rng, 1, 7), _odd(rng, 1, 7)
    img = (int(rng.integers(fh * 4, fh * 40)), int(rng.integers(fw * 4, fw * 40)))
    mins = sorted(_f(rng, 4, 60) for _ in range(int(rng.integers(1, 3))))
    parts = [f"min_size: {m}" for m in mins]
    if rng.random() < 0.6:
        parts += [f"max_size: {m + _f(rng, 1, 40)}" for m in mins]
    parts += [
        f"aspect_ratio: {r}" for r in rng.choice([2.0, 3.0, 0.5, 1.0, 2.0], int(rng.integers(0, 3)))
    ]
    if rng.random() < 0.4:
        parts.append("flip: false")
    # Always spelled out: the oracle's caffe.proto keeps SSD's first default (clip true), the
    # ssd branch's caffe.proto changed it to false (weiliu89/caffe c35c2dbc), as protocaffe's.
    parts.append(f"clip: {str(rng.random() < 0.4).lower()}")
    variance = rng.choice(
        ["", "variance: 0.2", "variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2"]
    )
    parts.append(str(variance))
    if rng.random() < 0.3:
        parts.append(f"step: {_f(rng, 4, 40)}")
    elif rng.random() < 0.2:
        parts.append(f"step_h: {_f(rng, 4, 40)} step_w: {_f(rng, 4, 40)}")
    if rng.random() < 0.2:
        parts.append(f"img_size: {img[0]}")
    if rng.random() < 0.3:
        parts.append(f"offset: {_f(rng, 0, 1)}")
    text = net_text(
        {"feat": (1, 2, fh, fw), "data": (1, 3, *img)},
        layer(
            "out", "PriorBox", ["feat", "data"], params=f"prior_box_param {{ {' '.join(parts)} }}"
        ),
    )
    return Case(
        f"PriorBox-{i}",
        text,
        {"feat": _x(rng, (1, 2, fh, fw)), "data": _x(rng, (1, 3, *img))},
        rtol=1e-6,
        atol=1e-7,
    )


def detection_output(rng: Rng, i: int) -> Case:
    n = int(rng.integers(1, 3))
    fh, fw = int(rng.integers(1, 5)), int(rng.integers(1, 5))
    classes = int(rng.integers(2, 5))
    share = rng.random() < 0.7
    ratios = int(rng.integers(0, 2))
    priors_per = 1 + 2 * ratios
    num_priors = fh * fw * priors_per
    loc_classes = 1 if share else classes
    code = str(rng.choice(["CENTER_SIZE", "CORNER", "CORNER_SIZE"]))
    pb = (
        "prior_box_param { min_size: 12 clip: false "
        + ("aspect_ratio: 2 " if ratios else "")
        + "variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2 }"
    )
    nms = (
        f"nms_param {{ nms_threshold: {_f(rng, 0.2, 0.8)} "
        + (f"top_k: {int(rng.integers(1, 20))} " if rng.random() < 0.5 else "")
        + (f"eta: {_f(rng, 0.5, 1)} " if rng.random() < 0.3 else "")
        + "}"
    )
    extra = []
    if rng.random() < 0.7:
        extra.append(f"confidence_threshold: {_f(rng, 0.0, 0.5)}")
    if rng.random() < 0.5:
        extra.append(f"keep_top_k: {int(rng.integers(1, 30))}")
    if rng.random() < 0.2:
        extra.append("variance_encoded_in_target: true")
    bg = int(rng.integers(-1, classes))
    params = (
        f"detection_output_param {{ num_classes: {classes} share_location: {str(share).lower()} "
        f"background_label_id: {bg} {nms} code_type: {code} {' '.join(extra)} }}"
    )
    text = net_text(
        {
            "feat": (1, 2, fh, fw),
            "data": (1, 3, fh * 16, fw * 16),
            "loc": (n, num_priors * loc_classes * 4),
            "conf": (n, num_priors * classes),
        },
        layer("prior", "PriorBox", ["feat", "data"], params=pb)
        + layer("out", "DetectionOutput", ["loc", "conf", "prior"], params=params),
    )
    conf = rng.uniform(0, 1, (n, num_priors * classes)).astype(np.float32)
    if i % 3 == 2:  # ties in the scores
        conf = np.round(conf * 4) / 4
    inputs = {
        "feat": _x(rng, (1, 2, fh, fw)),
        "data": _x(rng, (1, 3, fh * 16, fw * 16)),
        "loc": _x(rng, (n, num_priors * loc_classes * 4), 0.5),
        "conf": conf.astype(np.float32),
    }
    return Case(f"DetectionOutput-{i}", text, inputs, rtol=1e-5, atol=1e-6)


def _params(kind: str, field: str, parts: Callable[[Rng], str]) -> Callable[[Rng], str]:
    return lambda rng: f"{field} {{ {parts(rng)} }}"


def _maybe(rng: Rng, text: str, p: float = 0.5) -> str:
    return text if rng.random() < p else ""


CASES: dict[str, Callable[[Rng, int], Case]] = {
    "Convolution": convolution,
    "Deconvolution": deconvolution,
    "Pooling": pooling,
    "InnerProduct": inner_product,
    "ReLU": neuron("ReLU", lambda r: _maybe(r, f"relu_param {{ negative_slope: {_f(r, -1, 1)} }}")),
    "ReLU6": neuron(
        "ReLU6",
        lambda r: f"relu6_param {{ {_maybe(r, f'negative_slope: {_f(r, 0, 1)}')} "
        f"{_maybe(r, f'threshold: {_f(r, 0.5, 6)}')} }}",
        scale=4.0,
    ),
    "Sigmoid": neuron("Sigmoid", lambda r: "", scale=4.0),
    "TanH": neuron("TanH", lambda r: "", scale=3.0),
    "AbsVal": neuron("AbsVal", lambda r: ""),
    "BNLL": neuron("BNLL", lambda r: "", scale=4.0),
    "ELU": neuron("ELU", lambda r: _maybe(r, f"elu_param {{ alpha: {_f(r, 0.1, 2)} }}")),
    "Power": neuron(
        "Power",
        lambda r: f"power_param {{ power: {r.choice([1, 2, 3, 0.5, -1, 0, 1.7])} "
        f"scale: {r.choice([1, 0, 0.5, -2])} shift: {r.choice([0, 1, -0.5, 2])} }}",
        positive=True,
    ),
    "Exp": neuron(
        "Exp",
        lambda r: f"exp_param {{ base: {r.choice([-1, 2, 0.5, 10])} scale: {_f(r, -1, 1)} "
        f"shift: {r.choice([0, 0.5, -1])} }}",
    ),
    "Log": neuron(
        "Log",
        lambda r: f"log_param {{ base: {r.choice([-1, 2, 10])} scale: {r.choice([1, 0.5, 3])} "
        f"shift: {r.choice([0, 0.1, 1])} }}",
        positive=True,
    ),
    "Threshold": neuron(
        "Threshold", lambda r: _maybe(r, f"threshold_param {{ threshold: {_f(r, -1, 1)} }}")
    ),
    "PReLU": neuron("PReLU", lambda r: _maybe(r, "prelu_param { channel_shared: true }", 0.4)),
    "Dropout": neuron("Dropout", lambda r: f"dropout_param {{ dropout_ratio: {_f(r, 0.1, 0.9)} }}"),
    "BatchNorm": batch_norm,
    "Scale": scale,
    "Bias": bias,
    "Eltwise": eltwise,
    "Softmax": softmax,
    "LRN": lrn,
    "MVN": mvn,
    "Normalize": normalize,
    "Concat": concat,
    "Slice": slice_,
    "Split": split,
    "Silence": silence,
    "Flatten": flatten,
    "Reshape": reshape,
    "Crop": crop,
    "Tile": tile,
    "Permute": permute,
    "ArgMax": argmax,
    "Reduction": reduction,
    "Upsample": upsample_nearest,
    "PriorBox": prior_box,
    "DetectionOutput": detection_output,
}


def generate(types: list[str], per_type: int, seed: int = 0) -> list[Case]:
    cases = []
    for kind in types:
        for i in range(per_type):
            rng = np.random.default_rng([seed, sum(map(ord, kind)), i])
            cases.append(CASES[kind](rng, i))
    return cases
