"""Where an array's bytes lie in a caffemodel file, so that a writer can copy them file to file.

`read_caffemodel` maps the file with a `FileMap`, which remembers which file it maps; an array
that is a view of that mapping has a `file_region`.
"""

from __future__ import annotations

import mmap
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt


class FileMap(mmap.mmap):
    """A read-only mapping of a caffemodel that remembers which file it maps (see file_region)."""

    source: tuple[str, tuple[int, ...]] | None = None


def file_identity(info: os.stat_result) -> tuple[int, ...]:
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
        return file_identity(info) == self.identity


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
    if not isinstance(owner, FileMap) or owner.source is None or owner.closed:
        return None
    start = np.frombuffer(owner, dtype=np.uint8, count=1).__array_interface__["data"][0]
    offset = array.__array_interface__["data"][0] - start
    if not 0 <= offset <= len(owner) - array.nbytes:
        return None
    return FileRegion(owner.source[0], owner.source[1], offset)
