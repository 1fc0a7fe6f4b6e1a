"""The protobuf wire format, as the caffemodel reader and writer need it.

Field specs of the messages the reader walks (field number -> name, allowed wire types), the
primitive reads over a mapped file (`Wire`, positions are absolute byte offsets) and the
encoders the writer uses. https://protobuf.dev/programming-guides/encoding/ describes the format.
"""

from __future__ import annotations

import mmap
from typing import Any, Final, NoReturn

import numpy as np
import numpy.typing as npt

F32: Final = np.dtype("<f4")
F64: Final = np.dtype("<f8")
MASK64: Final = (1 << 64) - 1
_MAX_FIELD: Final = (1 << 29) - 1
_MAX_GROUP_DEPTH: Final = 100
# A length past the end of the file up to this is reported as truncation, not as corruption.
_PLAUSIBLE_LENGTH: Final = 1 << 40

# The wire-format schema the reader needs: field number -> (name, allowed wire types).

VARINT, I64, LEN, SGROUP, EGROUP, I32 = 0, 1, 2, 3, 4, 5
WIRE_NAMES: Final = {
    0: "varint",
    1: "fixed64",
    2: "length-delimited",
    3: "start-group",
    4: "end-group",
    5: "fixed32",
}

Spec = dict[int, tuple[str, frozenset[int]]]


def make_spec(**fields: tuple[int, tuple[int, ...]]) -> Spec:
    return {num: (name, frozenset(wts)) for name, (num, wts) in fields.items()}


NET: Final = make_spec(name=(1, (LEN,)), layers=(2, (LEN,)), layer=(100, (LEN,)))
LAYER: Final = make_spec(name=(1, (LEN,)), type=(2, (LEN,)), blobs=(7, (LEN,)))
V1: Final = make_spec(layer=(1, (LEN,)), name=(4, (LEN,)), type=(5, (VARINT,)), blobs=(6, (LEN,)))
V0: Final = make_spec(name=(1, (LEN,)), type=(2, (LEN,)), blobs=(50, (LEN,)))
BLOB: Final = make_spec(
    num=(1, (VARINT,)),
    channels=(2, (VARINT,)),
    height=(3, (VARINT,)),
    width=(4, (VARINT,)),
    data=(5, (LEN, I32)),
    diff=(6, (LEN, I32)),
    shape=(7, (LEN,)),
    double_data=(8, (LEN, I64)),
    double_diff=(9, (LEN, I64)),
)
SHAPE: Final = make_spec(dim=(1, (LEN, VARINT)))
# Element width of the packed fixed-size fields of BlobProto.
PACKED_WIDTH: Final = {5: 4, 6: 4, 8: 8, 9: 8}


def field_label(spec: Spec, field: int) -> str:
    known = spec.get(field)
    return f"field {field} ({known[0]})" if known else f"field {field}"


def wire_type_message(spec: Spec, field: int, wire: int) -> str:
    allowed = " or ".join(WIRE_NAMES[w] for w in sorted(spec[field][1]))
    actual = WIRE_NAMES.get(wire, "invalid")
    return f"{field_label(spec, field)} has wire type {wire} ({actual}), expected {allowed}"


def int32(value: int) -> int:
    """A varint read as protobuf int32/enum: the low 32 bits, signed."""
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def int64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def decode_text(raw: bytes) -> str:
    """Caffe strings are bytes; invalid UTF-8 is kept losslessly as surrogate escapes."""
    return raw.decode("utf-8", "surrogateescape")


class WireError(Exception):
    """A problem at a byte offset; the caller adds the file and the layer."""

    def __init__(self, offset: int, message: str, payload: tuple[int, int] | None = None) -> None:
        super().__init__(message)
        self.offset = offset
        self.message = message
        self.payload = payload  # for a length that overruns: where the field's bytes begin/end


Buffer = mmap.mmap | bytes

_RECORD_DTYPES: Final = {
    4: np.dtype([("tag", "u1"), ("value", F32)]),
    8: np.dtype([("tag", "u1"), ("value", F64)]),
}


class Wire:
    """Primitive reads over the mapped file. Positions are absolute byte offsets."""

    __slots__ = ("buf", "size")

    def __init__(self, buf: Buffer) -> None:
        self.buf = buf
        self.size = len(buf)

    def fail(self, offset: int, message: str, payload: tuple[int, int] | None = None) -> NoReturn:
        raise WireError(offset, message, payload)

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
                return result & MASK64, pos
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

    def field(self, pos: int, end: int, spec: Spec) -> tuple[int, int, int, int, int]:
        """Reads the field at `pos`: (number, wire type, a, b, next position).

        a, b: the value of a varint and 0; the start and end of the bytes of any other field.
        A field in `spec` with a wire type it does not allow is an error.
        """
        tag, p = self.varint(pos, end)
        number = tag >> 3
        wire = tag & 7
        if number == 0 or number > _MAX_FIELD:
            self.fail(pos, f"invalid field number {number} (tag {tag})")
        if wire > I32:
            self.fail(pos, f"invalid wire type {wire} for field {number}")
        known = spec.get(number)
        if known is not None and wire not in known[1]:
            self.fail(pos, wire_type_message(spec, number, wire))
        if wire == VARINT:
            value, q = self.varint(p, end)
            return number, wire, value, 0, q
        if wire == LEN:
            length, q = self.varint(p, end)
            if length > end - q:
                self.overrun(pos, field_label(spec, number), length, q, end)
            return number, wire, q, q + length, q + length
        if wire in (I32, I64):
            width = 4 if wire == I32 else 8
            if width > end - p:
                self.overrun(pos, field_label(spec, number), width, p, end)
            return number, wire, p, p + width, p + width
        if wire == SGROUP:
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
            if wire == EGROUP:
                if inner != open_groups[-1]:
                    self.fail(
                        inner_pos,
                        f"end-group tag for field {inner} inside group {open_groups[-1]}",
                    )
                open_groups.pop()
                if not open_groups:
                    return pos
            elif wire == SGROUP:
                open_groups.append(inner)
                if len(open_groups) > _MAX_GROUP_DEPTH:
                    self.fail(inner_pos, "groups nested too deeply")
            elif wire == VARINT:
                pos = self.varint(pos, end)[1]
            elif wire == LEN:
                length, pos = self.varint(pos, end)
                if length > end - pos:
                    self.overrun(inner_pos, f"field {inner}", length, pos, end)
                pos += length
            elif wire in (I32, I64):
                width = 4 if wire == I32 else 8
                if width > end - pos:
                    self.overrun(inner_pos, f"field {inner}", width, pos, end)
                pos += width
            else:
                self.fail(inner_pos, f"invalid wire type {wire} for field {inner}")

    def text(self, start: int, end: int) -> str:
        return decode_text(bytes(self.buf[start:end]))

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


# Encoding, for the writer.


def varint_bytes(value: int) -> bytes:
    value &= MASK64
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def field_key(number: int, wire: int) -> bytes:
    return varint_bytes((number << 3) | wire)


def len_field(number: int, payload: bytes) -> bytes:
    return field_key(number, LEN) + varint_bytes(len(payload)) + payload


def encode_text(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")
