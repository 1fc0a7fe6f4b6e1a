"""The input blobs a verification runs on: seeded random, loaded from .npy, or from an image.

`--image` follows `cv2.dnn.blobFromImage(image, scalefactor, size, mean, swapRB, crop)`:
resize (or, with crop, resize keeping the aspect ratio and centre-crop) to `size` (W x H), subtract
`mean` (in the image's channel order after the optional R/B swap), multiply by `scalefactor`, and
lay out NCHW float32.
"""

from __future__ import annotations

import ast
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from protocaffe.ir.graph import Shape


class InputError(Exception):
    """An input that cannot be used: one line saying why."""


@dataclass(frozen=True)
class ImageSpec:
    path: str
    scale: float = 1.0
    size: tuple[int, int] | None = None  # (width, height); None: the net's declared size
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    swap_rb: bool = False
    crop: bool = False

    @property
    def plain(self) -> bool:
        """No blobFromImage option given: a module's own preprocess() prepares the image."""
        options = (self.scale, self.size, tuple(self.mean), self.swap_rb, self.crop)
        return options == (1.0, None, (0.0, 0.0, 0.0), False, False)


def random_input(shape: Shape, seed: int) -> np.ndarray:
    """Uniform in [-1, 1), like OpenCV's and Caffe's layer test blobs."""
    rng = np.random.default_rng(seed)
    return rng.uniform(-1.0, 1.0, shape).astype(np.float32)


def load_npy(path: str | os.PathLike[str]) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read as a .npy array ({exc})") from exc
    if not isinstance(array, np.ndarray) or not np.issubdtype(array.dtype, np.number):
        raise InputError(f"{path}: not a numeric array")
    return np.ascontiguousarray(array, dtype=np.float32)


def image_blob(spec: ImageSpec, declared: Shape) -> np.ndarray:
    """The blob `cv2.dnn.blobFromImage` makes from the image, sized as declared unless given."""
    from protocaffe.verify.opencv import require_cv2

    cv2 = require_cv2()
    image = read_image(spec.path)
    if spec.size is not None:
        size = spec.size
    elif len(declared) == 4:
        size = (declared[3], declared[2])
    else:
        raise InputError(f"{spec.path}: give --size, the input is not 4-D {declared}")
    mean = tuple(spec.mean) + (0.0,) * (4 - len(spec.mean))
    blob = cv2.dnn.blobFromImage(
        image, spec.scale, size, mean[:4], swapRB=spec.swap_rb, crop=spec.crop
    )
    return np.ascontiguousarray(blob, dtype=np.float32)


def read_image(path: str) -> np.ndarray:
    """A BGR uint8 H x W x 3 image, as cv2.imread reads it."""
    from protocaffe.verify.opencv import require_cv2

    cv2 = require_cv2()
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise InputError(f"{path}: cannot read the image ({exc.strerror})") from exc
    # imdecode, unlike imread, reports a bad file by returning None without logging.
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise InputError(f"{path}: cannot read the image")
    return np.asarray(image)


def module_preprocess(path: str | os.PathLike[str]) -> Callable[[np.ndarray], Any] | None:
    """The module-level `preprocess(image)` of a model.py, if it has one (see `protocaffe
    convert --scale ...`); None without (or when the file does not parse: loading the module
    reports that)."""
    try:
        source = Path(path).read_text(encoding="utf-8")
        tree = ast.parse(source)
    except (OSError, SyntaxError, ValueError):
        return None
    if not any(isinstance(n, ast.FunctionDef) and n.name == "preprocess" for n in tree.body):
        return None
    namespace: dict[str, Any] = {"__name__": "protocaffe_verify_preprocess"}
    exec(compile(tree, str(path), "exec"), namespace)
    function: Callable[[np.ndarray], Any] = namespace["preprocess"]
    return function


def check_inputs(
    given: Mapping[str, np.ndarray], declared: Mapping[str, Shape]
) -> dict[str, np.ndarray]:
    """Every given input must name a net input; shapes must have the declared rank and channels."""
    for name, array in given.items():
        if name not in declared:
            known = ", ".join(repr(n) for n in declared)
            raise InputError(f"input {name!r} matches no net input (the net's inputs: {known})")
        shape = declared[name]
        if len(array.shape) != len(shape) or (len(shape) >= 2 and array.shape[1] != shape[1]):
            raise InputError(
                f"input {name!r} has shape {tuple(array.shape)}, the net declares {tuple(shape)}"
            )
    return dict(given)


def input_shape_overrides(given: Mapping[str, np.ndarray]) -> dict[str, Sequence[int]]:
    """Given inputs reshape the net, as Caffe's `Reshape` does at run time."""
    return {name: tuple(int(d) for d in a.shape) for name, a in given.items()}
