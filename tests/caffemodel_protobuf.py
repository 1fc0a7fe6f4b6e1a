"""The slow reference caffemodel reader: protobuf's ParseFromString, then numpy.

It gives the same layers, names, types and arrays as `frontend.caffemodel.read_caffemodel` (its
`LayerBlobs.offset` is always -1), through protobuf's own parser: the tests compare the fast
reader with it, and benchmarks/bench_convert.py measures it. Files < 2 GiB only.
"""

from __future__ import annotations

import os
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from protocaffe.errors import ProtocaffeError, SourceLoc
from protocaffe.frontend.caffemodel import (
    TEXT_HEAD,
    CaffeModel,
    LayerBlobs,
    RawBlob,
    finish_blob,
    magic_kind,
    not_caffemodel,
    open_error,
    text_kind,
    v1_type,
)
from protocaffe.frontend.wire import (
    BLOB,
    F32,
    F64,
    LAYER,
    NET,
    SHAPE,
    V0,
    V1,
    VARINT,
    Spec,
    decode_text,
    int32,
    wire_type_message,
)

PROTOBUF_LIMIT: Final = (1 << 31) - 1


def _check_unknown(message: Any, spec: Spec, path: str, layer: str | None = None) -> None:
    """Fields of `spec` that protobuf put aside as unknown had the wrong wire type."""
    from google.protobuf.unknown_fields import UnknownFieldSet

    unknowns = UnknownFieldSet(message)
    for index in range(len(unknowns)):
        unknown = unknowns[index]
        number, wire = unknown.field_number, unknown.wire_type
        if number in spec and not (spec is V1 and number == 5 and wire == VARINT):
            raise ProtocaffeError.at(SourceLoc(path), wire_type_message(spec, number, wire), layer)


def _unknown_v1_type(message: Any) -> int | None:
    from google.protobuf.unknown_fields import UnknownFieldSet

    found = None
    unknowns = UnknownFieldSet(message)
    for index in range(len(unknowns)):
        unknown = unknowns[index]
        if unknown.field_number == 5 and unknown.wire_type == VARINT:
            found = int32(int(unknown.data))
    return found


def _text_field(message: Any, name: str) -> str:
    value = getattr(message, name)
    return decode_text(value) if isinstance(value, bytes) else str(value)


def _reference_blobs(blobs: Any, path: str, layer: str, kind: str) -> tuple[npt.NDArray[Any], ...]:
    arrays = []
    for index, blob in enumerate(blobs):
        _check_unknown(blob, BLOB, path, layer)
        _check_unknown(blob.shape, SHAPE, path, layer)
        raw = RawBlob(
            -1,
            [int(blob.num), int(blob.channels), int(blob.height), int(blob.width)],
            any(blob.HasField(f) for f in ("num", "channels", "height", "width")),
            blob.HasField("shape"),
            [int(d) for d in blob.shape.dim],
            [np.array(blob.data, dtype=F32)],
            [np.array(blob.double_data, dtype=F64)],
        )
        array, problem = finish_blob(raw)
        if problem is not None:
            raise ProtocaffeError.at(SourceLoc(path), f"blob {index}: {problem}", layer, kind)
        arrays.append(array)
    return tuple(arrays)


def read_caffemodel_protobuf(path: str | os.PathLike[str]) -> CaffeModel:
    """The slow reference reader: protobuf's ParseFromString, then numpy. Files < 2 GiB only."""
    from google.protobuf.message import DecodeError

    from protocaffe.proto.schema import message_class

    name = os.fspath(path)
    try:
        with open(name, "rb") as file:
            data = file.read()
    except OSError as exc:
        raise open_error(name, exc) from None
    if not data:
        raise ProtocaffeError.at(SourceLoc(name, offset=0), "empty file")
    if len(data) > PROTOBUF_LIMIT:
        raise ProtocaffeError.at(SourceLoc(name), "file too large for the protobuf reader (2 GiB)")
    head = data[:TEXT_HEAD]
    magic = magic_kind(head)
    if magic is not None:
        raise not_caffemodel(name, magic)
    net: Any = message_class("NetParameter")()
    try:
        net.ParseFromString(data)
    except DecodeError as exc:
        text = text_kind(head)
        if text is not None:
            raise not_caffemodel(name, text) from None
        raise ProtocaffeError.at(SourceLoc(name), f"malformed caffemodel: {exc}") from None
    if not net.layer and not net.layers and head[0] != 0x0A:
        text = text_kind(head)
        if text is not None:
            raise not_caffemodel(name, text)
    _check_unknown(net, NET, name)
    if net.layer and net.layers:
        raise ProtocaffeError.at(
            SourceLoc(name),
            "the net has both V2 'layer' (field 100) and V1 'layers' (field 2) entries; "
            "Caffe refuses to load such a file",
        )
    layers: list[LayerBlobs] = []
    for layer in net.layer:
        layer_name = _text_field(layer, "name")
        _check_unknown(layer, LAYER, name, layer_name)
        kind = _text_field(layer, "type")
        layers.append(
            LayerBlobs(
                layer_name,
                kind,
                _reference_blobs(layer.blobs, name, layer_name, kind),
                -1,
            )
        )
    for layer in net.layers:
        layer_name = _text_field(layer, "name")
        _check_unknown(layer, V1, name, layer_name)
        if layer.HasField("layer"):
            v0 = layer.layer
            layer_name = _text_field(v0, "name")
            _check_unknown(v0, V0, name, layer_name)
            kind = _text_field(v0, "type")
            blobs = v0.blobs
        else:
            unknown = _unknown_v1_type(layer)
            kind = v1_type(int(layer.type) if unknown is None else unknown)
            blobs = layer.blobs
        layers.append(
            LayerBlobs(layer_name, kind, _reference_blobs(blobs, name, layer_name, kind), -1)
        )
    return CaffeModel(name, _text_field(net, "name"), tuple(layers))
