"""The weight manifest, and the diff that `convert --check` prints.

`convert` writes model.py, the weights (model.safetensors or model.pt) and, next to them, a
text manifest of the weights (model.manifest.txt) that makes weight changes visible in a
review. `convert --check` writes the same files into a temporary folder and diffs them
against the output folder.
"""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy only when there are weights to list
    import numpy as np

MANIFEST_NAME = "model.manifest.txt"


def weight_manifest(arrays: Mapping[str, np.ndarray]) -> str:
    """One line per tensor, sorted by key: key, shape, dtype, sha256 of its little-endian bytes."""
    import numpy as np

    lines = [
        "# protocaffe weight manifest: key, shape, dtype, sha256 of the little-endian bytes",
    ]
    for key in sorted(arrays):
        array = np.asarray(arrays[key])
        # Hashed through a memoryview: no copy when the array is already contiguous (the
        # caffemodel's mapped float32 weights usually are).
        data = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).reshape(-1).data
        shape = "x".join(str(d) for d in array.shape) or "scalar"
        lines.append(f"{key} {shape} {array.dtype.name} {hashlib.sha256(data).hexdigest()}")
    return "\n".join(lines) + "\n"


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
