"""Writing a V2 `.caffemodel`: each layer's name, type and blobs (float32, packed, BlobShape).

Layers are encoded one at a time straight into the output, which `protocaffe.atomic` publishes
only once it is complete.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from protocaffe.atomic import atomic_write
from protocaffe.frontend.wire import F32, LEN, encode_text, field_key, len_field, varint_bytes

_Chunk = bytes | npt.NDArray[Any]


def _blob_chunks(array: npt.ArrayLike) -> list[_Chunk]:
    source = np.asarray(array)
    if source.dtype.kind not in "biuf":
        raise TypeError(f"a caffemodel blob must be real numbers, not {source.dtype}")
    values = np.ascontiguousarray(source, dtype=F32).reshape(-1)
    dims = b"".join(varint_bytes(d) for d in source.shape)
    shape = len_field(1, dims) if dims else b""
    head = len_field(7, shape)
    if values.nbytes:
        head += field_key(5, LEN) + varint_bytes(values.nbytes)
    body_len = len(head) + values.nbytes
    chunks: list[_Chunk] = [field_key(7, LEN) + varint_bytes(body_len) + head]
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

    Layers are encoded one at a time straight into the new file, which replaces `path`
    atomically once it is complete and on disk.
    """
    with atomic_write(Path(path)) as tmp, open(tmp, "wb") as out:
        # The name even when empty: a net without a name or weights is then not an empty
        # file, which readers (protocaffe's among them) take for a truncated download.
        out.write(len_field(1, encode_text(net_name)))
        for layer_name, kind, blobs in layers:
            head = len_field(1, encode_text(layer_name)) + len_field(2, encode_text(kind))
            chunks: list[_Chunk] = [head]
            for blob in blobs:
                chunks.extend(_blob_chunks(blob))
            size = sum(_chunk_len(c) for c in chunks)
            out.write(field_key(100, LEN) + varint_bytes(size))
            for chunk in chunks:
                out.write(chunk if isinstance(chunk, bytes) else chunk.data)
        out.flush()
        os.fsync(out.fileno())
