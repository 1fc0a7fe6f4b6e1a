"""Writing a state_dict as a safetensors file, one tensor at a time, straight from where it lies.

The format (https://github.com/huggingface/safetensors, "Format"): an 8-byte little-endian
header length N, N bytes of JSON mapping each name to its dtype, shape and `data_offsets`
(start and end in the byte buffer that follows), padded with spaces so that the buffer starts
8-byte aligned, then the tensors' bytes, little-endian and C order, back to back.

The header needs every tensor's shape before any data is written, so the mapping is walked
twice: once for shapes, once for bytes. A lazy mapping (`backend.weights.StateArrays`) hands out
views of the caffemodel's memory map, which cost nothing to make twice; the few arrays that need
converting (double data, a transposed weight) are made, written and dropped one at a time.
An array whose bytes lie as they are in a file (`locate` says where: a caffemodel's float32
blob) is copied file to file by the kernel (`os.copy_file_range`, as `cp` does), so its pages
are never mapped into this process; other contiguous arrays are written from their own memory
with no copy; the rest are converted in chunks of at most `_CHUNK` bytes. Nothing here holds more
than one tensor: peak memory is one tensor, not one model.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from io import FileIO
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import numpy.typing as npt

__all__ = ["ProgressCallback", "safetensors_header", "write_safetensors"]

# (bytes written so far, total bytes of tensor data)
ProgressCallback = Callable[[int, int], None]


class Region(Protocol):
    """Where an array's bytes lie in a file (frontend.regions.FileRegion is one)."""

    @property
    def path(self) -> str: ...

    @property
    def offset(self) -> int: ...

    def same_file(self, info: os.stat_result) -> bool: ...


Locate = Callable[["npt.NDArray[Any]"], "Region | None"]

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
        header[key] = {
            "dtype": dtype,
            "shape": list(shape),
            "data_offsets": [offset, offset + nbytes],
        }
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
    locate: Locate | None = None,
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

    # Opened without O_TRUNC: on ext4, truncating a file (even an empty one, as the caller's
    # fresh temporary file is) makes close() start writing back all its pages (auto_da_alloc),
    # which costs more than writing them. A longer file is cut to size at the end instead.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | getattr(os, "O_BINARY", 0), 0o666)
    with open(fd, "wb", buffering=0) as out, _Sources() as sources:
        _write_all(out, header)
        advance(0)
        for entry, (key, array) in zip(entries, arrays.items(), strict=True):
            if _describe(key, array) != entry:
                raise RuntimeError(f"{key!r} changed between the two passes over the state")
            region = locate(array) if locate is not None and array.nbytes else None
            if region is None or not _copy_region(out, region, entry.nbytes, sources, advance):
                _write_array(out, array, advance)
        end = out.tell()
        if os.fstat(fd).st_size > end:
            os.ftruncate(fd, end)


class _Sources:
    """Files opened for kernel copies, one descriptor per path; None where that cannot work."""

    def __init__(self) -> None:
        self.fds: dict[str, int | None] = {}
        self.copy_works = hasattr(os, "copy_file_range")

    def __enter__(self) -> _Sources:
        return self

    def __exit__(self, *exc: object) -> None:
        for fd in self.fds.values():
            if fd is not None:
                os.close(fd)

    def open(self, region: Region) -> int | None:
        if region.path not in self.fds:
            try:
                fd = os.open(region.path, os.O_RDONLY)
            except OSError:
                self.fds[region.path] = None
            else:
                self.fds[region.path] = fd
                if not region.same_file(os.fstat(fd)):  # replaced since it was read
                    self.fds[region.path] = None
                    os.close(fd)
        return self.fds[region.path]


def _copy_region(
    out: FileIO, region: Region, nbytes: int, sources: _Sources, advance: Callable[[int], None]
) -> bool:
    """Copy `nbytes` from `region` to the end of `out` in the kernel; False if it cannot."""
    source = sources.open(region) if sources.copy_works else None
    if source is None:
        return False
    start = out.tell()
    done = 0
    try:
        while done < nbytes:
            step = min(nbytes - done, _CHUNK * 4)
            copied = os.copy_file_range(source, out.fileno(), step, region.offset + done)
            if copied == 0:  # the file got shorter: write from memory instead
                raise OSError("short copy")
            done += copied
            advance(copied)
    except OSError:  # e.g. no support across these file systems: write from memory instead
        sources.copy_works = False
        out.seek(start)
        os.ftruncate(out.fileno(), start)
        advance(-done)
        return False
    return True


def _write_all(out: FileIO, data: bytes | memoryview) -> None:
    view = memoryview(data).cast("B")
    while view:
        written = out.write(view)
        view = view[written or 0 :]


def _write_array(out: FileIO, array: npt.NDArray[Any], advance: Callable[[int], None]) -> None:
    """Write one array's bytes (little-endian, C order), never copying more than `_CHUNK`."""
    import numpy as np

    little = array.dtype.newbyteorder("<")
    if array.dtype == little and array.flags.c_contiguous:
        flat = array.reshape(-1).view(np.uint8)  # a view: C-contiguous arrays reshape freely
        for start in range(0, flat.size, _CHUNK):
            piece = flat[start : start + _CHUNK]
            _write_all(out, piece.data)
            advance(piece.size)
        return
    if array.ndim == 0:
        data = np.ascontiguousarray(array, dtype=little).tobytes()
        _write_all(out, data)
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
        _write_all(out, piece.data)
        advance(piece.nbytes)
