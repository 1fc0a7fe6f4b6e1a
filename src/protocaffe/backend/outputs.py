"""The weight manifest, and the diff that `convert --check` prints.

`convert` writes model.py, the weights (model.safetensors or model.pt) and, next to them, a
text manifest of the weights (model.manifest.txt) that makes weight changes visible in a
review. `convert --check` writes the same files into a temporary folder and diffs them
against the output folder.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from protocaffe.errors import ProtocaffeError, SourceLoc

if TYPE_CHECKING:  # numpy only when there are weights to list
    import numpy as np

    from protocaffe.frontend.caffemodel import CaffeModel

MODULE_NAME = "model.py"
MANIFEST_NAME = "model.manifest.txt"
WEIGHT_NAMES = {"safetensors": "model.safetensors", "pt": "model.pt"}
# Every file a conversion may write: what an earlier conversion left and this one does not
# write is removed (converting without weights, or with another --format or --no-manifest).
OUTPUT_NAMES = (MODULE_NAME, *WEIGHT_NAMES.values(), MANIFEST_NAME)
MANIFEST_HEADER = "# protocaffe weight manifest"


def weight_manifest(
    arrays: Mapping[str, np.ndarray], blobs: BlobDigests | None = None, workers: int = 2
) -> str:
    """One line per tensor, sorted by key: key, shape, dtype, sha256 of its little-endian bytes.

    A tensor that is a caffemodel blob as read (a float32 view of the file) takes its digest
    from `blobs`, which hashed it early; the others are hashed here, by `workers` threads at
    once (hashlib lets go of the GIL), largest first.
    """
    from concurrent.futures import ThreadPoolExecutor

    def digest(key: str) -> str:
        found = blobs.get(arrays[key]) if blobs is not None else None
        return found if found is not None else _digest(arrays[key])

    keys = sorted(arrays)
    sizes = {key: arrays[key].nbytes for key in keys}
    largest_first = sorted(keys, key=lambda key: -sizes[key])
    with ThreadPoolExecutor(max(1, workers)) as pool:
        digests = dict(zip(largest_first, pool.map(digest, largest_first), strict=True))
    lines = [f"{MANIFEST_HEADER}: key, shape, dtype, sha256 of the little-endian bytes"]
    for key in keys:
        array = arrays[key]
        shape = "x".join(str(d) for d in array.shape) or "scalar"
        lines.append(f"{key} {shape} {array.dtype.name} {digests[key]}")
    return "\n".join(lines) + "\n"


def _digest(array: np.ndarray) -> str:
    """sha256 of an array's little-endian bytes in memory, in one call (hashlib lets go of the
    GIL for all of it)."""
    import numpy as np

    # Through a memoryview: no copy when the array is already contiguous.
    data = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).reshape(-1).data
    return hashlib.sha256(data).hexdigest()


_READ_CHUNK = 1 << 20  # small enough to stay in the CPU cache while it is hashed


def _blob_digest(blob: np.ndarray, stop: threading.Event) -> str | None:
    """sha256 of a blob that lies as it is in the caffemodel file, read from the file in chunks:
    a chunk just read is hashed from the CPU cache, faster than pages faulted in from a memory
    map (and the mapping's pages stay out of this process's memory). None once `stop` is set."""
    from protocaffe.frontend.regions import file_region

    region = file_region(blob)
    if region is None:
        return _digest(blob)
    try:
        fd = os.open(region.path, os.O_RDONLY)
    except OSError:
        return _digest(blob)
    try:
        if not region.same_file(os.fstat(fd)):  # replaced since it was read
            return _digest(blob)
        digest = hashlib.sha256()
        view = memoryview(bytearray(min(_READ_CHUNK, blob.nbytes)))
        done = 0
        while done < blob.nbytes:
            if stop.is_set():
                return None
            step = min(len(view), blob.nbytes - done)
            count = os.preadv(fd, [view[:step]], region.offset + done)
            if count == 0:  # the file got shorter
                return _digest(blob)
            digest.update(view[:count])
            done += count
        return digest.hexdigest()
    finally:
        os.close(fd)


def _memory_key(array: np.ndarray) -> tuple[int, int, str] | None:
    """Where a contiguous array's bytes are: views of the same bytes share it."""
    if not array.flags.c_contiguous or not array.nbytes:
        return None
    return (int(array.__array_interface__["data"][0]), int(array.nbytes), array.dtype.str)


class BlobDigests:
    """sha256 of a caffemodel's float32 blobs, hashed by background threads.

    sha256 runs at 1.1-1.9 GB/s a core, so for a big model hashing, not copying, is what a
    conversion's time is made of. `start` is called as soon as the caffemodel is read, while
    the prototxt is still being compiled, so that the manifest finds its digests (nearly) done.
    The model's blobs must stay alive (they are views of its memory map) until the manifest is
    made: digests are found by where the bytes are. Use as a context manager: leaving it on an
    exception stops the hashing at its next chunk.
    """

    def __init__(self, workers: int = 2) -> None:
        from concurrent.futures import Future, ThreadPoolExecutor

        self._pool = ThreadPoolExecutor(workers)
        self._jobs: dict[tuple[int, int, str], Future[str | None]] = {}
        self._stop = threading.Event()

    def __enter__(self) -> BlobDigests:
        return self

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> None:
        if kind is not None:
            self._stop.set()
        self._pool.shutdown(wait=True, cancel_futures=kind is not None)

    def start(self, model: CaffeModel) -> None:
        """Queue every float32 blob, largest first (double data becomes other bytes)."""
        blobs = [blob for layer in model.layers for blob in layer.blobs if blob.dtype == "<f4"]
        for blob in sorted(blobs, key=lambda blob: -blob.nbytes):
            key = _memory_key(blob)
            if key is not None and key not in self._jobs:
                self._jobs[key] = self._pool.submit(_blob_digest, blob, self._stop)

    def get(self, array: np.ndarray) -> str | None:
        key = _memory_key(array)
        job = self._jobs.get(key) if key is not None else None
        return job.result() if job is not None else None


def written_by_protocaffe(path: Path) -> bool:
    """Whether the file at `path` is one protocaffe wrote: a model.py whose docstring starts
    with "'NAME', generated by protocaffe VERSION from ...", or a manifest whose first line is
    MANIFEST_HEADER's. Only the start of the file is read."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(4096).decode("utf-8", errors="replace")
    except OSError:
        return False
    if path.name == MANIFEST_NAME:
        return head.startswith(MANIFEST_HEADER)
    if not head.startswith('"""'):
        return False
    first_paragraph = head[3:].split("\n\n", 1)[0]
    return ", generated by protocaffe " in " ".join(first_paragraph.split())


def check_replaceable(folder: Path) -> None:
    """Refuse to replace a model.py in `folder` that protocaffe did not write."""
    module = folder / MODULE_NAME
    if os.path.lexists(module) and not written_by_protocaffe(module):
        raise ProtocaffeError.at(
            SourceLoc(module.as_posix()),
            "protocaffe did not write this file (its docstring does not say 'generated by "
            "protocaffe'); not replacing it: give --force to replace it",
        )


def earlier_outputs(folder: Path, writing: Iterable[str]) -> list[Path]:
    """The files of an earlier conversion in `folder` that a conversion writing `writing` (file
    names) does not write. A folder holds an earlier conversion when its model.py or its
    manifest is protocaffe's; other folders' files are never touched."""
    if not any(written_by_protocaffe(folder / name) for name in (MODULE_NAME, MANIFEST_NAME)):
        return []
    kept = set(writing)
    return [folder / n for n in OUTPUT_NAMES if n not in kept and (folder / n).is_file()]


def diff_files(folder: Path, files: Mapping[str, bytes]) -> str:
    """A unified diff from the files on disk to the files a conversion would write; empty when
    they match. Binary files that differ get one line, as in `diff`."""
    chunks: list[str] = []
    for name, content in files.items():
        path = folder / name
        on_disk = path.read_bytes() if path.is_file() else None
        if on_disk == content:
            continue
        shown = path.as_posix()
        if name.endswith((".py", ".txt")):
            before = on_disk.decode("utf-8", errors="replace") if on_disk is not None else ""
            diff = difflib.unified_diff(
                before.splitlines(keepends=True),
                content.decode("utf-8").splitlines(keepends=True),
                fromfile=f"{shown} (on disk)" if on_disk is not None else "/dev/null",
                tofile=f"{shown} (generated)",
            )
            chunks.append("".join(line if line.endswith("\n") else line + "\n" for line in diff))
        elif on_disk is None:
            chunks.append(f"Only in generated output: {shown}\n")
        else:
            chunks.append(f"Binary files {shown} (on disk) and {shown} (generated) differ\n")
    return "".join(chunks)
