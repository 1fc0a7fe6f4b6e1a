"""The preprocessing that travels with the model: model.py's module-level `preprocess(image)`.

It makes the net's first input blob from an image exactly as `cv2.dnn.blobFromImage(image,
scale, size, mean, swapRB, crop)` does (OpenCV 4.x), with torch and numpy only: the helper
`blob_from_image` (templates/helpers/blob_from_image.py) holds the code, `preprocess` its
arguments. They come from `convert`'s image options (`ImageOptions`) and from the
`transform_param` of the TEST-phase data layer that feeds the input (a train_val prototxt),
the options overriding the transform field by field:

- `scale` -> scale; `mean_value` (one value, or one per channel) -> mean;
- `mean_file` (a BlobProto, relative to the prototxt's folder) -> mean: its per-channel
  average, as Caffe's classify.py and OpenCV's samples use a mean file (Caffe's data layer
  subtracts it pixel by pixel from its crop: ImageNet's mean differs from its average by a few
  units at most);
- `crop_size` -> size crop_size x crop_size with crop: resize to cover it, keep the centre
  (Caffe's data layer crops, without resizing, images its database already holds at their
  training size);
- `force_gray` -> gray; `mirror` is for training only: preprocess() does not mirror.

`mean` is in the blob's channel order (after --swap-rb), as blobFromImage takes it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import cast

from google.protobuf.message import Message

from protocaffe.errors import ProtocaffeError, Reporter, SourceLoc
from protocaffe.frontend.prototxt import LayerDef, NetDef
from protocaffe.ir.graph import Graph
from protocaffe.layers.base import fmt_shape


@dataclass(frozen=True)
class ImageOptions:
    """convert's image options; None: not given (the transform_param's value, or the default)."""

    scale: float | None = None
    mean: tuple[float, ...] | None = None
    mean_file: str | os.PathLike[str] | None = None
    swap_rb: bool | None = None
    size: tuple[int, int] | None = None  # (width, height)
    crop: bool | None = None
    gray: bool | None = None


@dataclass(frozen=True)
class Preprocess:
    """What preprocess() does, resolved."""

    input: str  # the blob it makes
    shape: tuple[int, ...]  # that blob's shape
    size: tuple[int, int]  # (width, height)
    scale: float
    mean: tuple[float, ...]  # one per channel of the blob
    swap_rb: bool
    crop: bool
    gray: bool
    # Where it came from: the data layer (name, line) whose transform_param it follows, whether
    # convert's options changed it, the mean file whose average it subtracts (its file name).
    transform_layer: tuple[str, int] | None = None
    options: bool = False
    mean_file: str | None = None


def resolve_preprocess(
    net: NetDef, graph: Graph, given: ImageOptions | None, reporter: Reporter
) -> Preprocess | None:
    """preprocess() for `graph`'s first input, from the data layer's transform_param and the
    `given` options; None when there is neither."""
    given = given if given is not None else ImageOptions()
    data_layer = _data_layer(net, graph)
    if given == ImageOptions() and data_layer is not None and len(graph.inputs[0].shape) != 4:
        # A video data layer's transform_param (C3D's VideoData: a clip (N, C, L, H, W)) crops
        # and subtracts per frame; preprocess() makes one image, so the net converts without it.
        reporter.note(
            data_layer.loc,
            f"transform_param: the input is {fmt_shape(graph.inputs[0].shape)}, not an image "
            "(N, C, H, W): model.py gets no preprocess()",
            data_layer.name,
            data_layer.type,
        )
        return None
    mean_given = given.mean is not None or given.mean_file is not None
    transform = (
        _from_transform(net, data_layer, reporter, mean_given) if data_layer is not None else None
    )
    if transform is None and given == ImageOptions():
        return None
    merged = transform if transform is not None else ImageOptions()
    overrides = {k: v for k, v in vars(given).items() if v is not None}
    if given.mean is not None or given.mean_file is not None:  # one replaces the other
        overrides.setdefault("mean", None)
        overrides.setdefault("mean_file", None)
    merged = replace(merged, **overrides)
    spec = _resolved(graph, merged)
    layer = (data_layer.name, data_layer.loc.line) if transform and data_layer else None
    return replace(spec, transform_layer=layer, options=given != ImageOptions())


def _data_layer(net: NetDef, graph: Graph) -> LayerDef | None:
    """The TEST-phase data layer whose first top is the graph's first input, if it has a
    transform_param."""
    if not graph.inputs:
        return None
    first = graph.inputs[0].blob
    for layer in net.layers:
        if (
            layer.type.endswith("Data")
            and layer.tops[:1] == (first,)
            and layer.param.HasField("transform_param")
        ):
            return layer
    return None


def _from_transform(
    net: NetDef, layer: LayerDef, reporter: Reporter, mean_given: bool
) -> ImageOptions | None:
    """The data layer's transform_param as options; None when its mean_file is missing (and
    no mean replaces it): a preprocess() without the mean would be silently wrong, and the
    net itself converts without it."""
    transform = layer.param.transform_param
    loc = layer.locations.of_field(cast(Message, layer.param), "transform_param") or layer.loc

    def fail(message: str) -> ProtocaffeError:
        return ProtocaffeError.at(loc, f"transform_param: {message}", layer.name, layer.type)

    if transform.mirror:
        reporter.note(
            loc,
            "transform_param: mirror is for training only; preprocess() does not mirror",
            layer.name,
            layer.type,
        )
    if transform.mean_file and transform.mean_value:
        raise fail("mean_file and mean_value cannot both be given (Caffe refuses it too)")
    mean_file: str | None = None
    if transform.mean_file and not mean_given:
        # Caffe opens it relative to its working directory when training; here it is found
        # relative to the prototxt, never to the working directory.
        candidate = Path(net.path).parent / transform.mean_file
        if not candidate.is_file():
            reporter.warn(
                loc,
                f"transform_param: mean_file {transform.mean_file!r} not found next to the "
                f"prototxt ({candidate.as_posix()}): model.py gets no preprocess(); give the "
                "file with --mean-file to add it",
                layer.name,
                layer.type,
            )
            return None
        mean_file = str(candidate)
    crop = int(transform.crop_size)
    options = ImageOptions(
        scale=float(transform.scale) if transform.HasField("scale") else None,
        mean=tuple(float(v) for v in transform.mean_value) or None,
        mean_file=mean_file,
        size=(crop, crop) if crop else None,
        crop=True if crop else None,
        gray=True if transform.force_gray else None,
    )
    reporter.note(
        loc,
        "transform_param becomes model.py's preprocess() (" + _summary(options) + ")",
        layer.name,
        layer.type,
    )
    return options


def _summary(options: ImageOptions) -> str:
    parts = [
        f"{name} {value}"
        for name, value in vars(options).items()
        if value is not None and name != "mean_file"
    ]
    if options.mean_file is not None:
        parts.append(f"mean_file {Path(options.mean_file).name}")
    return ", ".join(parts) or "nothing to do"


def _resolved(graph: Graph, options: ImageOptions) -> Preprocess:
    value = graph.inputs[0]
    where = SourceLoc(graph.source)

    def fail(message: str) -> ProtocaffeError:
        return ProtocaffeError.at(where, f"preprocess() for input {value.blob!r}: {message}")

    if len(value.shape) != 4:
        raise fail(f"an image makes a 4-D blob (N, C, H, W); the input is {fmt_shape(value.shape)}")
    channels = value.shape[1]
    gray = bool(options.gray) or channels == 1
    if gray and channels != 1:
        raise fail(f"--gray makes one channel, the input has {channels}")
    if not gray and channels != 3:
        raise fail(f"an image makes 1 (--gray) or 3 channels, the input has {channels}")
    if gray and options.swap_rb:
        raise fail("--swap-rb has no meaning for a one-channel (--gray) blob")
    mean = (0.0,) * channels
    if options.mean_file is not None:
        mean = _file_mean(options.mean_file, channels)
    elif options.mean is not None:
        if len(options.mean) == 1:
            mean = options.mean * channels
        elif len(options.mean) == channels:
            mean = options.mean
        else:
            raise fail(f"{len(options.mean)} mean values for {channels} channels")
    size = options.size if options.size is not None else (value.shape[3], value.shape[2])
    return Preprocess(
        input=value.blob,
        shape=(1, channels, size[1], size[0]),
        size=size,
        scale=float(options.scale) if options.scale is not None else 1.0,
        mean=tuple(float(m) for m in mean),
        swap_rb=bool(options.swap_rb),
        crop=bool(options.crop),
        gray=gray,
        mean_file=Path(options.mean_file).name if options.mean_file is not None else None,
    )


def _file_mean(path: str | os.PathLike[str], channels: int) -> tuple[float, ...]:
    """The per-channel average of a mean.binaryproto ((1,) C x H x W)."""
    from protocaffe.frontend.caffemodel import read_blobproto

    blob = read_blobproto(path)
    shown = os.fspath(path)
    if blob.ndim < 3 or (blob.ndim == 4 and blob.shape[0] != 1) or blob.ndim > 4:
        raise ProtocaffeError.at(
            SourceLoc(shown),
            f"a mean file holds one C x H x W image; this blob is {fmt_shape(blob.shape)}",
        )
    if blob.shape[-3] != channels:
        raise ProtocaffeError.at(
            SourceLoc(shown),
            f"the mean has {blob.shape[-3]} channels, the net's input {channels}",
        )
    planes = blob.reshape(channels, -1).astype("float64")
    return tuple(float(v) for v in planes.mean(axis=1))
