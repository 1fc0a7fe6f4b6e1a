"""Writing a state_dict as a safetensors file, one tensor at a time, straight from where it lies.

The format (https://github.com/huggingface/safetensors, "Format"): an 8-byte little-endian
header length N, N bytes of JSON mapping each name to its dtype, shape and `data_offsets`
(start and end in the byte buffer that follows), padded with spaces so that the buffer starts
8-byte aligned, then the tensors' bytes, little-endian and C order, back to back.

The header needs every tensor's shape before any data is written, so the mapping is walked
twice: once for shapes, once for bytes. A lazy mapping (`backend.weights.StateArrays`) hands out
views of the caffemodel's memory map, which cost nothing to make twice; the few arrays that need
converting (double data, a transposed weight) are made, written and dropped one at a time.
Contiguous arrays are written from their own memory with no copy; others are converted in
chunks of at most `_CHUNK` bytes. Nothing here holds more than one tensor: peak memory is one
tensor, not one model.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = ["ProgressCallback", "safetensors_header", "write_safetensors"]

# (bytes written so far, total bytes of tensor data)
ProgressCallback = Callable[[int, int], None]

# numpy dtype kind + item size -> the safetensors dtype name.
_DTYPES: dict[str, str] = {
    "f2": "F16",
    "f4": "F32",
    "f8": "F64",
    "i1": "I8",
    "i2": "I16",
    "i4": "I32",
    "i8": "I64",
    "u1": "U8",
    "u2": "U16",
    "u4": "U32",
    "u8": "U64",
    "b1": "BOOL",
}
_CHUNK = 1 << 24  # bytes per write (and per progress step) when an array must be converted


@dataclass(frozen=True)
class _Entry:
    key: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int


def _describe(key: str, array: npt.NDArray[Any]) -> _Entry:
    code = f"{array.dtype.kind}{array.dtype.itemsize}"
    if code not in _DTYPES:
        raise TypeError(f"cannot store {key!r} of dtype {array.dtype} in safetensors")
    return _Entry(key, _DTYPES[code], tuple(int(d) for d in array.shape), int(array.nbytes))


def safetensors_header(
    entries: list[tuple[str, str, tuple[int, ...], int]], metadata: Mapping[str, str] | None
) -> bytes:
    """The length prefix and JSON header for (name, dtype, shape, nbytes) entries, in order."""
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    offset = 0
    for key, dtype, shape, nbytes in entries:
        header[key] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text


def write_safetensors(
    path: Path,
    arrays: Mapping[str, npt.NDArray[Any]],
    *,
    metadata: Mapping[str, str] | None = None,
    progress: ProgressCallback | None = None,
) -> None:
    """Write `arrays` to `path` in the mapping's order. Same arrays, same bytes."""
    entries = [_describe(key, array) for key, array in arrays.items()]
    total = sum(e.nbytes for e in entries)
    header = safetensors_header([(e.key, e.dtype, e.shape, e.nbytes) for e in entries], metadata)
    done = 0

    def advance(count: int) -> None:
        nonlocal done
        done += count
        if progress is not None:
            progress(done, total)

    with open(path, "wb") as out:
        out.write(header)
        advance(0)
        for entry, (key, array) in zip(entries, arrays.items(), strict=True):
            if _describe(key, array) != entry:
                raise RuntimeError(f"{key!r} changed between the two passes over the state")
            _write_array(out, array, advance)


def _write_array(out: BinaryIO, array: npt.NDArray[Any], advance: Callable[[int], None]) -> None:
    """Write one array's bytes (little-endian, C order), never copying more than `_CHUNK`."""
    import numpy as np

    little = array.dtype.newbyteorder("<")
    if array.dtype == little and array.flags.c_contiguous:
        flat = array.reshape(-1).view(np.uint8)  # a view: C-contiguous arrays reshape freely
        for start in range(0, flat.size, _CHUNK):
            piece = flat[start : start + _CHUNK]
            out.write(piece.data)
            advance(piece.size)
        return
    if array.ndim == 0:
        data = np.ascontiguousarray(array, dtype=little).tobytes()
        out.write(data)
        advance(len(data))
        return
    row_bytes = array.nbytes // array.shape[0] if array.shape[0] else 0
    if row_bytes > _CHUNK:
        for row in array:  # each row is itself too big to copy at once: recurse into it
            _write_array(out, row, advance)
        return
    rows = max(1, _CHUNK // max(row_bytes, 1))
    for start in range(0, array.shape[0], rows):
        piece = np.ascontiguousarray(array[start : start + rows], dtype=little)
        out.write(piece.data)
        advance(piece.nbytes)
