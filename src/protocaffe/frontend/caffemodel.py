"""Reading and writing binary `.caffemodel` weight files.

`read_caffemodel` walks the protobuf wire format itself over a read-only `mmap` of the file and
only descends into the parts that hold weights: `NetParameter.layer` / `.layers` (V2, V1 and V0
layers), their `blobs` and each blob's shape and data. Everything else (layer parameters, diffs,
unknown fields) is skipped by wire type without being looked at. Packed float and double payloads
become `numpy.frombuffer` views of the mapping, so reading a multi-gigabyte model costs a walk over
a few thousand tags and no copy; no protobuf message is ever built, so there is no 2 GiB limit.
The arrays are read-only views that keep the mapping alive for as long as they do.

`read_caffemodel_protobuf` is the slow reference: `ParseFromString` on the whole file and numpy
conversion of the repeated fields. It gives the same layers, names, types and arrays (its
`LayerBlobs.offset` is always -1) and exists for tests and benchmarks.

The meaning of a blob follows Caffe (`Blob::FromProto` / `Blob::ShapeEquals`):

* shape: the legacy 4-D dims (num, channels, height, width) when any of them is present, kept
  4-D exactly as stored (a V1 bias is often (1, 1, 1, N)); otherwise `shape` (BlobShape) when
  present, even with no dims (a 0-d blob); otherwise 1-D (count,);
* values: `double_data` (float64) when it holds any value, otherwise `data` (float32);
  `diff` and `double_diff` are ignored;
* the number of values must equal the product of the shape.

Repeated fields may come in any order, split over several occurrences, packed or not; a repeated
message field (`shape`, a V0 `layer`) given twice is merged as protobuf does, and a scalar given
twice keeps its last value. A field this reader needs that has the wrong wire type is an error
(protobuf would silently treat it as unknown and drop it).
"""

from __future__ import annotations

import contextlib
import math
import mmap
import os
import stat
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, NoReturn

import numpy as np
import numpy.typing as npt

from protocaffe.errors import ProtocaffeError, SourceLoc

__all__ = [
    "V1_LAYER_TYPES",
    "CaffeModel",
    "FileRegion",
    "LayerBlobs",
    "file_region",
    "read_caffemodel",
    "read_caffemodel_protobuf",
    "write_caffemodel",
]

_F32: Final = np.dtype("<f4")
_F64: Final = np.dtype("<f8")
_MASK64: Final = (1 << 64) - 1
_MAX_FIELD: Final = (1 << 29) - 1
_MAX_GROUP_DEPTH: Final = 100
_PROTOBUF_LIMIT: Final = (1 << 31) - 1
_TEXT_HEAD: Final = 4096
# A length past the end of the file up to this is reported as truncation, not as corruption.
_PLAUSIBLE_LENGTH: Final = 1 << 40

# V1LayerParameter.LayerType: number -> (enum name, the V2 type string Caffe upgrades it to).
# From caffe.proto and UpgradeV1LayerType in caffe/src/caffe/util/upgrade_proto.cpp.
V1_LAYER_TYPES: Final[dict[int, tuple[str, str]]] = {
    0: ("NONE", ""),
    1: ("ACCURACY", "Accuracy"),
    2: ("BNLL", "BNLL"),
    3: ("CONCAT", "Concat"),
    4: ("CONVOLUTION", "Convolution"),
    5: ("DATA", "Data"),
    6: ("DROPOUT", "Dropout"),
    7: ("EUCLIDEAN_LOSS", "EuclideanLoss"),
    8: ("FLATTEN", "Flatten"),
    9: ("HDF5_DATA", "HDF5Data"),
    10: ("HDF5_OUTPUT", "HDF5Output"),
    11: ("IM2COL", "Im2col"),
    12: ("IMAGE_DATA", "ImageData"),
    13: ("INFOGAIN_LOSS", "InfogainLoss"),
    14: ("INNER_PRODUCT", "InnerProduct"),
    15: ("LRN", "LRN"),
    16: ("MULTINOMIAL_LOGISTIC_LOSS", "MultinomialLogisticLoss"),
    17: ("POOLING", "Pooling"),
    18: ("RELU", "ReLU"),
    19: ("SIGMOID", "Sigmoid"),
    20: ("SOFTMAX", "Softmax"),
    21: ("SOFTMAX_LOSS", "SoftmaxWithLoss"),
    22: ("SPLIT", "Split"),
    23: ("TANH", "TanH"),
    24: ("WINDOW_DATA", "WindowData"),
    25: ("ELTWISE", "Eltwise"),
    26: ("POWER", "Power"),
    27: ("SIGMOID_CROSS_ENTROPY_LOSS", "SigmoidCrossEntropyLoss"),
    28: ("HINGE_LOSS", "HingeLoss"),
    29: ("MEMORY_DATA", "MemoryData"),
    30: ("ARGMAX", "ArgMax"),
    31: ("THRESHOLD", "Threshold"),
    32: ("DUMMY_DATA", "DummyData"),
    33: ("SLICE", "Slice"),
    34: ("MVN", "MVN"),
    35: ("ABSVAL", "AbsVal"),
    36: ("SILENCE", "Silence"),
    37: ("CONTRASTIVE_LOSS", "ContrastiveLoss"),
    38: ("EXP", "Exp"),
    39: ("DECONVOLUTION", "Deconvolution"),
}


def _v1_type(number: int) -> str:
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
# The wire-format schema this reader needs: field number -> (name, allowed wire types).

_VARINT, _I64, _LEN, _SGROUP, _EGROUP, _I32 = 0, 1, 2, 3, 4, 5
_WIRE_NAMES: Final = {
    0: "varint",
    1: "fixed64",
    2: "length-delimited",
    3: "start-group",
    4: "end-group",
    5: "fixed32",
}

_Spec = dict[int, tuple[str, frozenset[int]]]


def _spec(**fields: tuple[int, tuple[int, ...]]) -> _Spec:
    return {num: (name, frozenset(wts)) for name, (num, wts) in fields.items()}


_NET: Final = _spec(name=(1, (_LEN,)), layers=(2, (_LEN,)), layer=(100, (_LEN,)))
_LAYER: Final = _spec(name=(1, (_LEN,)), type=(2, (_LEN,)), blobs=(7, (_LEN,)))
_V1: Final = _spec(layer=(1, (_LEN,)), name=(4, (_LEN,)), type=(5, (_VARINT,)), blobs=(6, (_LEN,)))
_V0: Final = _spec(name=(1, (_LEN,)), type=(2, (_LEN,)), blobs=(50, (_LEN,)))
_BLOB: Final = _spec(
    num=(1, (_VARINT,)),
    channels=(2, (_VARINT,)),
    height=(3, (_VARINT,)),
    width=(4, (_VARINT,)),
    data=(5, (_LEN, _I32)),
    diff=(6, (_LEN, _I32)),
    shape=(7, (_LEN,)),
    double_data=(8, (_LEN, _I64)),
    double_diff=(9, (_LEN, _I64)),
)
_SHAPE: Final = _spec(dim=(1, (_LEN, _VARINT)))
# Element width of the packed fixed-size fields of BlobProto.
_PACKED_WIDTH: Final = {5: 4, 6: 4, 8: 8, 9: 8}


def _label(spec: _Spec, field: int) -> str:
    known = spec.get(field)
    return f"field {field} ({known[0]})" if known else f"field {field}"


def _wire_type_message(spec: _Spec, field: int, wire: int) -> str:
    allowed = " or ".join(_WIRE_NAMES[w] for w in sorted(spec[field][1]))
    actual = _WIRE_NAMES.get(wire, "invalid")
    return f"{_label(spec, field)} has wire type {wire} ({actual}), expected {allowed}"


def _int32(value: int) -> int:
    """A varint read as protobuf int32/enum: the low 32 bits, signed."""
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def _int64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _decode(raw: bytes) -> str:
    """Caffe strings are bytes; invalid UTF-8 is kept losslessly as surrogate escapes."""
    return raw.decode("utf-8", "surrogateescape")


# ---------------------------------------------------------------------------------------------
# Telling a caffemodel from other files.

_MAGIC: Final = (
    (b"\x89HDF\r\n\x1a\n", "an HDF5 file, e.g. a .caffemodel.h5 snapshot"),
    (b"\x1f\x8b", "a gzip file; decompress it first"),
    (b"PK\x03\x04", "a zip archive; extract it first"),
)


def _magic_kind(head: bytes) -> str | None:
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    return None


def _text_kind(head: bytes) -> str | None:
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


# ---------------------------------------------------------------------------------------------
# The fast reader.


class _WireError(Exception):
    """A problem at a byte offset; the caller adds the file and the layer."""

    def __init__(self, offset: int, message: str, payload: tuple[int, int] | None = None) -> None:
        super().__init__(message)
        self.offset = offset
        self.message = message
        self.payload = payload  # for a length that overruns: where the field's bytes begin/end


_Buf = mmap.mmap | bytes

_RECORD_DTYPES: Final = {
    4: np.dtype([("tag", "u1"), ("value", _F32)]),
    8: np.dtype([("tag", "u1"), ("value", _F64)]),
}


class _Wire:
    """Primitive reads over the mapped file. Positions are absolute byte offsets."""

    __slots__ = ("buf", "size")

    def __init__(self, buf: _Buf) -> None:
        self.buf = buf
        self.size = len(buf)

    def fail(self, offset: int, message: str, payload: tuple[int, int] | None = None) -> NoReturn:
        raise _WireError(offset, message, payload)

    def varint(self, pos: int, end: int) -> tuple[int, int]:
        buf = self.buf
        if pos < end:
            first = buf[pos]
            if first < 0x80:
                return first, pos + 1
        start = pos
        result = 0
        shift = 0
        while True:
            if pos >= end:
                where = "at end of file" if end >= self.size else "at end of its message"
                self.fail(start, f"truncated varint {where}")
            byte = buf[pos]
            pos += 1
            result |= (byte & 0x7F) << shift
            if byte < 0x80:
                return result & _MASK64, pos
            shift += 7
            if shift >= 70:
                self.fail(start, "malformed varint (longer than 10 bytes)")

    def overrun(self, tag_pos: int, label: str, need: int, start: int, end: int) -> NoReturn:
        """A length that runs past the end of the file or of its enclosing message."""
        left = end - start
        if end >= self.size and need <= _PLAUSIBLE_LENGTH:
            message = f"truncated: {label} needs {need} bytes, {left} left"
        elif need > self.size - start:
            message = f"{label}: length {need} past end of file"
        else:
            message = f"{label} needs {need} bytes, {left} left in its enclosing message"
        self.fail(tag_pos, message, (start, end))

    def field(self, pos: int, end: int, spec: _Spec) -> tuple[int, int, int, int, int]:
        """Reads the field at `pos`: (number, wire type, a, b, next position).

        a, b: the value of a varint and 0; the start and end of the bytes of any other field.
        A field in `spec` with a wire type it does not allow is an error.
        """
        tag, p = self.varint(pos, end)
        number = tag >> 3
        wire = tag & 7
        if number == 0 or number > _MAX_FIELD:
            self.fail(pos, f"invalid field number {number} (tag {tag})")
        if wire > _I32:
            self.fail(pos, f"invalid wire type {wire} for field {number}")
        known = spec.get(number)
        if known is not None and wire not in known[1]:
            self.fail(pos, _wire_type_message(spec, number, wire))
        if wire == _VARINT:
            value, q = self.varint(p, end)
            return number, wire, value, 0, q
        if wire == _LEN:
            length, q = self.varint(p, end)
            if length > end - q:
                self.overrun(pos, _label(spec, number), length, q, end)
            return number, wire, q, q + length, q + length
        if wire in (_I32, _I64):
            width = 4 if wire == _I32 else 8
            if width > end - p:
                self.overrun(pos, _label(spec, number), width, p, end)
            return number, wire, p, p + width, p + width
        if wire == _SGROUP:
            q = self.skip_group(number, p, end, pos)
            return number, wire, p, q, q
        self.fail(pos, f"unexpected end-group tag for field {number}")

    def skip_group(self, number: int, pos: int, end: int, tag_pos: int) -> int:
        """Skips a (deprecated) group up to its end tag; returns the position after it."""
        open_groups = [number]
        while True:
            if pos >= end:
                self.fail(tag_pos, f"group of field {number} has no end-group tag")
            inner_pos = pos
            tag, pos = self.varint(pos, end)
            inner, wire = tag >> 3, tag & 7
            if inner == 0 or inner > _MAX_FIELD:
                self.fail(inner_pos, f"invalid field number {inner} (tag {tag})")
            if wire == _EGROUP:
                if inner != open_groups[-1]:
                    self.fail(
                        inner_pos,
                        f"end-group tag for field {inner} inside group {open_groups[-1]}",
                    )
                open_groups.pop()
                if not open_groups:
                    return pos
            elif wire == _SGROUP:
                open_groups.append(inner)
                if len(open_groups) > _MAX_GROUP_DEPTH:
                    self.fail(inner_pos, "groups nested too deeply")
            elif wire == _VARINT:
                pos = self.varint(pos, end)[1]
            elif wire == _LEN:
                length, pos = self.varint(pos, end)
                if length > end - pos:
                    self.overrun(inner_pos, f"field {inner}", length, pos, end)
                pos += length
            elif wire in (_I32, _I64):
                width = 4 if wire == _I32 else 8
                if width > end - pos:
                    self.overrun(inner_pos, f"field {inner}", width, pos, end)
                pos += width
            else:
                self.fail(inner_pos, f"invalid wire type {wire} for field {inner}")

    def text(self, start: int, end: int) -> str:
        return _decode(bytes(self.buf[start:end]))

    def run_length(self, tag_pos: int, end: int, tag_byte: int, width: int) -> int:
        """How many consecutive unpacked (one-byte tag, fixed value) records start at `tag_pos`.

        Checked with numpy over a growing window, so a long run of non-packed floats costs no
        Python work per element.
        """
        record = _RECORD_DTYPES[width]
        limit = (end - tag_pos) // record.itemsize
        count = 0
        step = 64
        while count < limit:
            take = min(step, limit - count)
            tags = np.frombuffer(
                self.buf,
                dtype=record,
                count=take,
                offset=tag_pos + count * record.itemsize,
            )["tag"]
            bad = np.flatnonzero(tags != tag_byte)
            if bad.size:
                return count + int(bad[0])
            count += take
            step *= 2
        return count

    def records(self, tag_pos: int, count: int, width: int) -> npt.NDArray[Any]:
        record = _RECORD_DTYPES[width]
        values = np.frombuffer(self.buf, dtype=record, count=count, offset=tag_pos)["value"]
        return np.ascontiguousarray(values)


@dataclass
class _RawBlob:
    offset: int
    legacy: list[int]
    has_legacy: bool
    has_shape: bool
    dims: list[int]
    floats: list[npt.NDArray[Any]]
    doubles: list[npt.NDArray[Any]]


def _finish_blob(raw: _RawBlob) -> tuple[npt.NDArray[Any], str | None]:
    """Applies Caffe's shape rules; returns the array, or an empty one and an error message."""
    chunks, dtype = (raw.doubles, _F64) if any(c.size for c in raw.doubles) else (raw.floats, _F32)
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
        return values, None
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
    def __init__(self, path: str, buf: _Buf) -> None:
        self.path = path
        self.wire = _Wire(buf)

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
                number, _, a, b, pos = wire.field(pos, end, _NET)
            except _WireError as exc:
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

    def peek_name(self, exc: _WireError) -> str | None:
        """Best effort: the name of a layer whose length overran, from the bytes there are."""
        if exc.payload is None:
            return None
        try:
            number = self.wire.varint(exc.offset, exc.payload[0])[0] >> 3
        except _WireError:
            return None
        if number == 100:
            return self.scan_name(exc.payload[0], exc.payload[1], _LAYER, 1)
        if number == 2:
            return self.scan_name(exc.payload[0], exc.payload[1], _V1, 4)
        return None

    def scan_name(self, pos: int, end: int, spec: _Spec, name_field: int) -> str | None:
        name = None
        try:
            while pos < end:
                number, _, a, b, pos = self.wire.field(pos, end, spec)
                if number == name_field:
                    name = self.wire.text(a, b)
        except _WireError:
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
                number, _, a, b, pos = wire.field(pos, end, _LAYER)
                if number == 1:
                    name = wire.text(a, b)
                elif number == 2:
                    kind = wire.text(a, b)
                elif number == 7:
                    blob_spans.append((tag_pos, a, b))
        except _WireError as exc:
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
                number, _, a, b, pos = wire.field(pos, end, _V1)
                if number == 4:
                    name = wire.text(a, b)
                elif number == 5:
                    type_number = _int32(a)
                elif number == 6:
                    blob_spans.append((tag_pos, a, b))
                elif number == 1:
                    v0_spans.append((a, b))
        except _WireError as exc:
            raise self.error(exc.offset, exc.message, name) from None
        if v0_spans:
            return self.v0_layer(offset, v0_spans, name)
        name = name or ""
        kind = _v1_type(type_number)
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
                    number, _, a, b, pos = wire.field(pos, end, _V0)
                    if number == 1:
                        name = wire.text(a, b)
                    elif number == 2:
                        kind = wire.text(a, b)
                    elif number == 50:
                        blob_spans.append((tag_pos, a, b))
            except _WireError as exc:
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
            except _WireError as exc:
                raise self.error(exc.offset, f"blob {index}: {exc.message}", layer, kind) from None
            array, problem = _finish_blob(raw)
            if problem is not None:
                raise self.error(offset, f"blob {index}: {problem}", layer, kind)
            arrays.append(array)
        return tuple(arrays)

    def raw_blob(self, offset: int, start: int, end: int) -> _RawBlob:
        wire = self.wire
        raw = _RawBlob(offset, [0, 0, 0, 0], False, False, [], [], [])
        pos = start
        while pos < end:
            tag_pos = pos
            number, wt, a, b, pos = wire.field(pos, end, _BLOB)
            if number <= 4:
                raw.legacy[number - 1] = _int32(a)
                raw.has_legacy = True
            elif number == 7:
                raw.has_shape = True
                self.shape(a, b, raw.dims)
            elif number in _PACKED_WIDTH:
                width = _PACKED_WIDTH[number]
                dtype = _F32 if width == 4 else _F64
                if wt == _LEN:
                    if (b - a) % width:
                        wire.fail(
                            tag_pos,
                            f"packed {_label(_BLOB, number)} has {b - a} bytes, "
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
            number, wt, a, b, pos = wire.field(pos, end, _SHAPE)
            if number != 1:
                continue
            if wt == _VARINT:
                dims.append(_int64(a))
                continue
            p = a
            while p < b:
                value, p = wire.varint(p, b)
                dims.append(_int64(value))


class _FileMap(mmap.mmap):
    """A read-only mapping of a caffemodel that remembers which file it maps (see file_region)."""

    source: tuple[str, tuple[int, ...]] | None = None


def _identity(info: os.stat_result) -> tuple[int, ...]:
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)


@dataclass(frozen=True)
class FileRegion:
    """Where an array's bytes lie in a caffemodel file: `path` from `offset` on.

    `identity` (device, inode, size, mtime) lets a user check that the file at `path` is still
    the one that was mapped before reading it again.
    """

    path: str
    identity: tuple[int, ...]
    offset: int

    def same_file(self, info: os.stat_result) -> bool:
        return _identity(info) == self.identity


def file_region(array: npt.NDArray[Any]) -> FileRegion | None:
    """The file region that holds `array`'s bytes, when it is a C-contiguous view of a mapping
    made by `read_caffemodel`; else None. Lets a writer copy weights file to file in the kernel
    (os.copy_file_range) without touching them."""
    if not array.flags.c_contiguous:
        return None
    owner: object = array
    while isinstance(owner, np.ndarray):
        owner = owner.base
    if isinstance(owner, memoryview):
        owner = owner.obj
    if not isinstance(owner, _FileMap) or owner.source is None or owner.closed:
        return None
    start = np.frombuffer(owner, dtype=np.uint8, count=1).__array_interface__["data"][0]
    offset = array.__array_interface__["data"][0] - start
    if not 0 <= offset <= len(owner) - array.nbytes:
        return None
    return FileRegion(owner.source[0], owner.source[1], offset)


def _open_error(path: str, exc: OSError) -> ProtocaffeError:
    reason = exc.strerror or str(exc)
    return ProtocaffeError.at(SourceLoc(path), f"cannot read caffemodel: {reason}")


def _not_caffemodel(path: str, kind: str) -> ProtocaffeError:
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
            buf: _Buf = b""
            if stat.S_ISREG(info.st_mode) and info.st_size:
                try:
                    buf = _FileMap(file.fileno(), 0, access=mmap.ACCESS_READ)
                    buf.source = (name, _identity(info))
                except (OSError, ValueError):  # a file system without mmap: read it
                    buf = file.read()
            elif not stat.S_ISREG(info.st_mode):  # a pipe or a device: read it
                buf = file.read()
    except OSError as exc:
        raise _open_error(name, exc) from None
    if not buf:
        raise ProtocaffeError.at(SourceLoc(name, offset=0), "empty file")
    head = bytes(buf[:_TEXT_HEAD])
    magic = _magic_kind(head)
    if magic is not None:
        raise _not_caffemodel(name, magic)
    try:
        model = _FastReader(name, buf).read()
    except ProtocaffeError:
        text = _text_kind(head)
        if text is not None:
            raise _not_caffemodel(name, text) from None
        raise
    if not model.layers and head[0] != 0x0A:  # not a net name: maybe text that parsed
        text = _text_kind(head)
        if text is not None:
            raise _not_caffemodel(name, text)
    return model


# ---------------------------------------------------------------------------------------------
# The reference reader: protobuf's own parser.


def _check_unknown(message: Any, spec: _Spec, path: str, layer: str | None = None) -> None:
    """Fields of `spec` that protobuf put aside as unknown had the wrong wire type."""
    from google.protobuf.unknown_fields import UnknownFieldSet

    unknowns = UnknownFieldSet(message)
    for index in range(len(unknowns)):
        unknown = unknowns[index]
        number, wire = unknown.field_number, unknown.wire_type
        if number in spec and not (spec is _V1 and number == 5 and wire == _VARINT):
            raise ProtocaffeError.at(SourceLoc(path), _wire_type_message(spec, number, wire), layer)


def _unknown_v1_type(message: Any) -> int | None:
    from google.protobuf.unknown_fields import UnknownFieldSet

    found = None
    unknowns = UnknownFieldSet(message)
    for index in range(len(unknowns)):
        unknown = unknowns[index]
        if unknown.field_number == 5 and unknown.wire_type == _VARINT:
            found = _int32(int(unknown.data))
    return found


def _text_field(message: Any, name: str) -> str:
    value = getattr(message, name)
    return _decode(value) if isinstance(value, bytes) else str(value)


def _reference_blobs(blobs: Any, path: str, layer: str, kind: str) -> tuple[npt.NDArray[Any], ...]:
    arrays = []
    for index, blob in enumerate(blobs):
        _check_unknown(blob, _BLOB, path, layer)
        _check_unknown(blob.shape, _SHAPE, path, layer)
        raw = _RawBlob(
            -1,
            [int(blob.num), int(blob.channels), int(blob.height), int(blob.width)],
            any(blob.HasField(f) for f in ("num", "channels", "height", "width")),
            blob.HasField("shape"),
            [int(d) for d in blob.shape.dim],
            [np.array(blob.data, dtype=_F32)],
            [np.array(blob.double_data, dtype=_F64)],
        )
        array, problem = _finish_blob(raw)
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
        raise _open_error(name, exc) from None
    if not data:
        raise ProtocaffeError.at(SourceLoc(name, offset=0), "empty file")
    if len(data) > _PROTOBUF_LIMIT:
        raise ProtocaffeError.at(SourceLoc(name), "file too large for the protobuf reader (2 GiB)")
    head = data[:_TEXT_HEAD]
    magic = _magic_kind(head)
    if magic is not None:
        raise _not_caffemodel(name, magic)
    net: Any = message_class("NetParameter")()
    try:
        net.ParseFromString(data)
    except DecodeError as exc:
        text = _text_kind(head)
        if text is not None:
            raise _not_caffemodel(name, text) from None
        raise ProtocaffeError.at(SourceLoc(name), f"malformed caffemodel: {exc}") from None
    if not net.layer and not net.layers and head[0] != 0x0A:
        text = _text_kind(head)
        if text is not None:
            raise _not_caffemodel(name, text)
    _check_unknown(net, _NET, name)
    if net.layer and net.layers:
        raise ProtocaffeError.at(
            SourceLoc(name),
            "the net has both V2 'layer' (field 100) and V1 'layers' (field 2) entries; "
            "Caffe refuses to load such a file",
        )
    layers: list[LayerBlobs] = []
    for layer in net.layer:
        layer_name = _text_field(layer, "name")
        _check_unknown(layer, _LAYER, name, layer_name)
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
        _check_unknown(layer, _V1, name, layer_name)
        if layer.HasField("layer"):
            v0 = layer.layer
            layer_name = _text_field(v0, "name")
            _check_unknown(v0, _V0, name, layer_name)
            kind = _text_field(v0, "type")
            blobs = v0.blobs
        else:
            unknown = _unknown_v1_type(layer)
            kind = _v1_type(int(layer.type) if unknown is None else unknown)
            blobs = layer.blobs
        layers.append(
            LayerBlobs(layer_name, kind, _reference_blobs(blobs, name, layer_name, kind), -1)
        )
    return CaffeModel(name, _text_field(net, "name"), tuple(layers))


# ---------------------------------------------------------------------------------------------
# The writer.


def _varint_bytes(value: int) -> bytes:
    value &= _MASK64
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _key(number: int, wire: int) -> bytes:
    return _varint_bytes((number << 3) | wire)


def _len_field(number: int, payload: bytes) -> bytes:
    return _key(number, _LEN) + _varint_bytes(len(payload)) + payload


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


_Chunk = bytes | npt.NDArray[Any]


def _blob_chunks(array: npt.ArrayLike) -> list[_Chunk]:
    source = np.asarray(array)
    if source.dtype.kind not in "biuf":
        raise TypeError(f"a caffemodel blob must be real numbers, not {source.dtype}")
    values = np.ascontiguousarray(source, dtype=_F32).reshape(-1)
    dims = b"".join(_varint_bytes(d) for d in source.shape)
    shape = _len_field(1, dims) if dims else b""
    head = _len_field(7, shape)
    if values.nbytes:
        head += _key(5, _LEN) + _varint_bytes(values.nbytes)
    body_len = len(head) + values.nbytes
    chunks: list[_Chunk] = [_key(7, _LEN) + _varint_bytes(body_len) + head]
    if values.nbytes:
        chunks.append(values)
    return chunks


def _chunk_len(chunk: _Chunk) -> int:
    return len(chunk) if isinstance(chunk, bytes) else int(chunk.nbytes)


def write_caffemodel(
    path: str | os.PathLike[str],
    net_name: str,
    layers: Iterable[tuple[str, str, Sequence[npt.ArrayLike]]],
) -> None:
    """Writes a V2 caffemodel: each layer's name, type and blobs (float32, packed, BlobShape).

    Layers are encoded one at a time straight into a temporary file next to `path`, which then
    replaces `path` atomically.
    """
    target = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(target))
    fd, temp = tempfile.mkstemp(
        dir=directory, prefix=f".{os.path.basename(target)}.", suffix=".tmp"
    )
    try:
        with os.fdopen(fd, "wb") as out:
            if net_name:
                out.write(_len_field(1, _encode(net_name)))
            for layer_name, kind, blobs in layers:
                head = _len_field(1, _encode(layer_name)) + _len_field(2, _encode(kind))
                chunks: list[_Chunk] = [head]
                for blob in blobs:
                    chunks.extend(_blob_chunks(blob))
                size = sum(_chunk_len(c) for c in chunks)
                out.write(_key(100, _LEN) + _varint_bytes(size))
                for chunk in chunks:
                    out.write(chunk if isinstance(chunk, bytes) else chunk.data)
            out.flush()
            os.fsync(out.fileno())
        try:
            mode = os.stat(target).st_mode & 0o777
        except OSError:
            mode = 0o644
        os.chmod(temp, mode)
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
