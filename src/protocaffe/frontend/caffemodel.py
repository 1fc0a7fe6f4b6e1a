"""Reading binary `.caffemodel` weight files.

`read_caffemodel` walks the protobuf wire format itself over a read-only `mmap` of the file and
only descends into the parts that hold weights: `NetParameter.layer` / `.layers` (V2, V1 and V0
layers), their `blobs` and each blob's shape and data. Everything else (layer parameters, diffs,
unknown fields) is skipped by wire type without being looked at. Packed float and double payloads
become `numpy.frombuffer` views of the mapping, so reading a multi-gigabyte model costs a walk over
a few thousand tags and no copy; no protobuf message is ever built, so there is no 2 GiB limit.
The arrays are read-only views that keep the mapping alive for as long as they do.

The wire format is in wire.py, the file regions of mapped arrays in regions.py, the writer in
caffemodel_writer.py; tests/caffemodel_protobuf.py holds the slow reference reader (protobuf's
own parser) that the tests compare this one with.

The meaning of a blob follows Caffe (`Blob::FromProto` / `Blob::ShapeEquals`):

* shape: the legacy 4-D dims (num, channels, height, width) when any of them is present, kept
  4-D exactly as stored (a V1 bias is often (1, 1, 1, N)); otherwise `shape` (BlobShape), and
  a blob with neither is 0-D (Caffe's ToProto writes no `shape` for a 0-D blob, such as a
  Scale with num_axes 0 or a channel-shared PReLU weight, and FromProto reads it back so);
* values: `double_data` (float64) when it holds any value, otherwise `data` (float32);
  `diff` and `double_diff` are ignored;
* the number of values must equal the product of the shape.

Repeated fields may come in any order, split over several occurrences, packed or not; a repeated
message field (`shape`, a V0 `layer`) given twice is merged as protobuf does, and a scalar given
twice keeps its last value. A field this reader needs that has the wrong wire type is an error
(protobuf would silently treat it as unknown and drop it).
"""

from __future__ import annotations

import math
import mmap
import os
import stat
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from protocaffe.errors import ProtocaffeError, SourceLoc
from protocaffe.frontend.regions import FileMap, file_identity
from protocaffe.frontend.upgrade import V1_LAYER_TYPES
from protocaffe.frontend.wire import (
    BLOB,
    F32,
    F64,
    LAYER,
    LEN,
    NET,
    PACKED_WIDTH,
    SHAPE,
    V0,
    V1,
    VARINT,
    Buffer,
    Spec,
    Wire,
    WireError,
    field_label,
    int32,
    int64,
)

__all__ = ["CaffeModel", "LayerBlobs", "read_blobproto", "read_caffemodel"]

TEXT_HEAD: Final = 4096


def v1_type(number: int) -> str:
    """The V2 type string for a V1 enum value; a value this schema lacks keeps its number."""
    known = V1_LAYER_TYPES.get(number)
    return known[1] if known is not None else f"V1LayerType({number})"


@dataclass(frozen=True)
class LayerBlobs:
    """One layer of a caffemodel and its parameter blobs, in file order.

    `type` is the V2 type string; a V1 layer's enum is mapped to its V2 name (CONVOLUTION ->
    "Convolution"), a V0 layer keeps its own string ("conv"). `offset` is the byte offset of the
    layer's field (its tag) in the file, or -1 from the protobuf reader.
    """

    name: str
    type: str
    blobs: tuple[npt.NDArray[Any], ...]
    offset: int


@dataclass(frozen=True)
class CaffeModel:
    path: str
    net_name: str
    layers: tuple[LayerBlobs, ...]


# ---------------------------------------------------------------------------------------------
# Telling a caffemodel from other files.

_MAGIC: Final = (
    (b"\x89HDF\r\n\x1a\n", "an HDF5 file, e.g. a .caffemodel.h5 snapshot"),
    (b"\x1f\x8b", "a gzip file; decompress it first"),
    (b"PK\x03\x04", "a zip archive; extract it first"),
)


def magic_kind(head: bytes) -> str | None:
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    return None


def text_kind(head: bytes) -> str | None:
    """Says what text `head` looks like, or None when it is not text."""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 3 or exc.reason != "unexpected end of data":
            return None
        text = head[: exc.start].decode("utf-8")
    if not all(c.isprintable() or c in "\t\n\r\f\v" for c in text):
        return None
    if not text.strip():
        return "a blank text file"
    if any(marker in text for marker in ("{", ":", "#")):
        return "a text prototxt"
    return "a text file"


@dataclass
class RawBlob:
    """A BlobProto's fields as read, before Caffe's shape rules are applied (`finish_blob`)."""

    offset: int
    legacy: list[int]
    has_legacy: bool
    has_shape: bool
    dims: list[int]
    floats: list[npt.NDArray[Any]]
    doubles: list[npt.NDArray[Any]]


def finish_blob(raw: RawBlob) -> tuple[npt.NDArray[Any], str | None]:
    """Applies Caffe's shape rules; returns the array, or an empty one and an error message."""
    chunks, dtype = (raw.doubles, F64) if any(c.size for c in raw.doubles) else (raw.floats, F32)
    chunks = [c for c in chunks if c.size]
    if not chunks:
        values: npt.NDArray[Any] = np.empty(0, dtype=dtype)
    elif len(chunks) == 1:
        values = chunks[0]
    else:
        values = np.concatenate(chunks)
    shape: tuple[int, ...]
    if raw.has_legacy:
        shape = tuple(raw.legacy)
        what = "legacy 4-D shape (num, channels, height, width)"
    elif raw.has_shape:
        shape = tuple(raw.dims)
        what = "shape"
    else:
        if values.size != 1:
            return values, (
                f"it has no shape, so Caffe reads it as a 0-D blob (Blob::FromProto), which "
                f"holds 1 value; it holds {values.size}"
            )
        return values.reshape(()), None
    if any(d < 0 for d in shape):
        return values, f"{what} {shape} has a negative dimension"
    need = math.prod(shape)
    if need != values.size:
        return (
            values,
            f"{what} {shape} needs {need} values but the blob has {values.size}",
        )
    return values.reshape(shape), None


class _FastReader:
    def __init__(self, path: str, buf: Buffer) -> None:
        self.path = path
        self.wire = Wire(buf)

    def error(
        self,
        offset: int | None,
        message: str,
        layer: str | None = None,
        kind: str | None = None,
    ) -> ProtocaffeError:
        return ProtocaffeError.at(SourceLoc(self.path, offset=offset), message, layer, kind)

    # -- the net ------------------------------------------------------------------------------

    def read(self) -> CaffeModel:
        wire = self.wire
        end = wire.size
        net_name = ""
        v2: list[tuple[int, int, int]] = []
        v1: list[tuple[int, int, int]] = []
        pos = 0
        while pos < end:
            tag_pos = pos
            try:
                number, _, a, b, pos = wire.field(pos, end, NET)
            except WireError as exc:
                name = self.peek_name(exc)
                raise self.error(exc.offset, exc.message, name) from None
            if number == 1:
                net_name = wire.text(a, b)
            elif number == 100:
                v2.append((tag_pos, a, b))
            elif number == 2:
                v1.append((tag_pos, a, b))
        if v2 and v1:
            raise self.error(
                min(v1[0][0], v2[0][0]),
                "the net has both V2 'layer' (field 100) and V1 'layers' (field 2) entries; "
                "Caffe refuses to load such a file",
            )
        layers = [self.v2_layer(*span) for span in v2] + [self.v1_layer(*span) for span in v1]
        return CaffeModel(self.path, net_name, tuple(layers))

    def peek_name(self, exc: WireError) -> str | None:
        """Best effort: the name of a layer whose length overran, from the bytes there are."""
        if exc.payload is None:
            return None
        try:
            number = self.wire.varint(exc.offset, exc.payload[0])[0] >> 3
        except WireError:
            return None
        if number == 100:
            return self.scan_name(exc.payload[0], exc.payload[1], LAYER, 1)
        if number == 2:
            return self.scan_name(exc.payload[0], exc.payload[1], V1, 4)
        return None

    def scan_name(self, pos: int, end: int, spec: Spec, name_field: int) -> str | None:
        name = None
        try:
            while pos < end:
                number, _, a, b, pos = self.wire.field(pos, end, spec)
                if number == name_field:
                    name = self.wire.text(a, b)
        except WireError:
            pass
        return name

    # -- layers -------------------------------------------------------------------------------

    def v2_layer(self, offset: int, start: int, end: int) -> LayerBlobs:
        wire = self.wire
        name: str | None = None
        kind = ""
        blob_spans: list[tuple[int, int, int]] = []
        pos = start
        try:
            while pos < end:
                tag_pos = pos
                number, _, a, b, pos = wire.field(pos, end, LAYER)
                if number == 1:
                    name = wire.text(a, b)
                elif number == 2:
                    kind = wire.text(a, b)
                elif number == 7:
                    blob_spans.append((tag_pos, a, b))
        except WireError as exc:
            raise self.error(exc.offset, exc.message, name, kind or None) from None
        name = name or ""
        return LayerBlobs(name, kind, self.blobs(blob_spans, name, kind), offset)

    def v1_layer(self, offset: int, start: int, end: int) -> LayerBlobs:
        wire = self.wire
        name: str | None = None
        type_number = 0
        blob_spans: list[tuple[int, int, int]] = []
        v0_spans: list[tuple[int, int]] = []
        pos = start
        try:
            while pos < end:
                tag_pos = pos
                number, _, a, b, pos = wire.field(pos, end, V1)
                if number == 4:
                    name = wire.text(a, b)
                elif number == 5:
                    type_number = int32(a)
                elif number == 6:
                    blob_spans.append((tag_pos, a, b))
                elif number == 1:
                    v0_spans.append((a, b))
        except WireError as exc:
            raise self.error(exc.offset, exc.message, name) from None
        if v0_spans:
            return self.v0_layer(offset, v0_spans, name)
        name = name or ""
        kind = v1_type(type_number)
        return LayerBlobs(name, kind, self.blobs(blob_spans, name, kind), offset)

    def v0_layer(
        self, offset: int, spans: list[tuple[int, int]], outer_name: str | None
    ) -> LayerBlobs:
        """A V0 layer: `layers { layer { name type blobs } bottom top }`; the V0 part wins."""
        wire = self.wire
        name: str | None = None
        kind = ""
        blob_spans: list[tuple[int, int, int]] = []
        for start, end in spans:  # a message field given twice is merged
            pos = start
            try:
                while pos < end:
                    tag_pos = pos
                    number, _, a, b, pos = wire.field(pos, end, V0)
                    if number == 1:
                        name = wire.text(a, b)
                    elif number == 2:
                        kind = wire.text(a, b)
                    elif number == 50:
                        blob_spans.append((tag_pos, a, b))
            except WireError as exc:
                raise self.error(
                    exc.offset, exc.message, name or outer_name, kind or None
                ) from None
        name = name or ""
        return LayerBlobs(name, kind, self.blobs(blob_spans, name, kind), offset)

    # -- blobs --------------------------------------------------------------------------------

    def blobs(
        self, spans: list[tuple[int, int, int]], layer: str, kind: str
    ) -> tuple[npt.NDArray[Any], ...]:
        arrays = []
        for index, (offset, start, end) in enumerate(spans):
            try:
                raw = self.raw_blob(offset, start, end)
            except WireError as exc:
                raise self.error(exc.offset, f"blob {index}: {exc.message}", layer, kind) from None
            array, problem = finish_blob(raw)
            if problem is not None:
                raise self.error(offset, f"blob {index}: {problem}", layer, kind)
            arrays.append(array)
        return tuple(arrays)

    def raw_blob(self, offset: int, start: int, end: int) -> RawBlob:
        wire = self.wire
        raw = RawBlob(offset, [0, 0, 0, 0], False, False, [], [], [])
        pos = start
        while pos < end:
            tag_pos = pos
            number, wt, a, b, pos = wire.field(pos, end, BLOB)
            if number <= 4:
                raw.legacy[number - 1] = int32(a)
                raw.has_legacy = True
            elif number == 7:
                raw.has_shape = True
                self.shape(a, b, raw.dims)
            elif number in PACKED_WIDTH:
                width = PACKED_WIDTH[number]
                dtype = F32 if width == 4 else F64
                if wt == LEN:
                    if (b - a) % width:
                        wire.fail(
                            tag_pos,
                            f"packed {field_label(BLOB, number)} has {b - a} bytes, "
                            f"not a multiple of {width}",
                        )
                    if b == a:
                        continue
                    values = np.frombuffer(wire.buf, dtype=dtype, count=(b - a) // width, offset=a)
                elif wire.buf[tag_pos] == (number << 3) | wt:
                    # Not packed: one tag per value. Take the whole run of them at once.
                    count = wire.run_length(tag_pos, end, (number << 3) | wt, width)
                    pos = tag_pos + count * (1 + width)
                    if number not in (5, 8):
                        continue
                    values = wire.records(tag_pos, count, width)
                else:  # not packed, with an over-long tag: legal, rare, one value at a time
                    values = np.frombuffer(wire.buf, dtype=dtype, count=1, offset=a)
                if number == 5:
                    raw.floats.append(values)
                elif number == 8:
                    raw.doubles.append(values)
        return raw

    def shape(self, start: int, end: int, dims: list[int]) -> None:
        wire = self.wire
        pos = start
        while pos < end:
            number, wt, a, b, pos = wire.field(pos, end, SHAPE)
            if number != 1:
                continue
            if wt == VARINT:
                dims.append(int64(a))
                continue
            p = a
            while p < b:
                value, p = wire.varint(p, b)
                dims.append(int64(value))


def open_error(path: str, exc: OSError) -> ProtocaffeError:
    reason = exc.strerror or str(exc)
    return ProtocaffeError.at(SourceLoc(path), f"cannot read caffemodel: {reason}")


def not_caffemodel(path: str, kind: str) -> ProtocaffeError:
    return ProtocaffeError.at(
        SourceLoc(path, offset=0), f"not a binary caffemodel (looks like {kind})"
    )


def read_caffemodel(path: str | os.PathLike[str]) -> CaffeModel:
    """Reads a binary caffemodel's layers and weights; raises ProtocaffeError on bad input.

    The arrays are read-only and, when stored packed (as Caffe writes them), views of a
    read-only memory map of the file: copy them before changing them.
    """
    name = os.fspath(path)
    try:
        with open(name, "rb") as file:
            info = os.fstat(file.fileno())
            buf: Buffer = b""
            if stat.S_ISREG(info.st_mode) and info.st_size:
                try:
                    buf = FileMap(file.fileno(), 0, access=mmap.ACCESS_READ)
                    buf.source = (name, file_identity(info))
                except (OSError, ValueError):  # a file system without mmap: read it
                    buf = file.read()
            elif not stat.S_ISREG(info.st_mode):  # a pipe or a device: read it
                buf = file.read()
    except OSError as exc:
        raise open_error(name, exc) from None
    if not buf:
        raise ProtocaffeError.at(SourceLoc(name, offset=0), "empty file")
    head = bytes(buf[:TEXT_HEAD])
    magic = magic_kind(head)
    if magic is not None:
        raise not_caffemodel(name, magic)
    try:
        model = _FastReader(name, buf).read()
    except ProtocaffeError:
        text = text_kind(head)
        if text is not None:
            raise not_caffemodel(name, text) from None
        raise
    if not model.layers and head[0] != 0x0A:  # not a net name: maybe text that parsed
        text = text_kind(head)
        if text is not None:
            raise not_caffemodel(name, text)
    return model


def read_blobproto(path: str | os.PathLike[str]) -> npt.NDArray[Any]:
    """Reads a binary BlobProto file (a `mean.binaryproto`) with Caffe's shape rules; raises
    ProtocaffeError on bad input. The array is a copy, float32 or float64 as stored."""
    name = os.fspath(path)
    try:
        with open(name, "rb") as file:
            data = file.read()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ProtocaffeError.at(SourceLoc(name), f"cannot read the blob: {reason}") from None
    if not data:
        raise ProtocaffeError.at(SourceLoc(name, offset=0), "empty file")
    magic = magic_kind(data[:TEXT_HEAD])
    text = text_kind(data[:TEXT_HEAD])
    if magic is not None or text is not None:
        kind = magic or text
        raise ProtocaffeError.at(
            SourceLoc(name, offset=0), f"not a binary BlobProto (looks like {kind})"
        )
    reader = _FastReader(name, data)
    try:
        raw = reader.raw_blob(0, 0, len(data))
    except WireError as exc:
        raise reader.error(exc.offset, exc.message) from None
    array, problem = finish_blob(raw)
    if problem is not None:
        raise ProtocaffeError.at(SourceLoc(name, offset=0), problem)
    return np.array(array)
