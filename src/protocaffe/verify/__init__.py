"""`protocaffe verify`: prove a PyTorch module equals its Caffe original, blob by blob.

The references: real Caffe (pycaffe or the oracle wrapper), OpenCV 4.x dnn (the `verify`
extra) and the numpy reference interpreter (`protocaffe.verify.reference`), an independent
second implementation of Caffe. Import cost stays low: cv2 and torch are imported only when a
verification runs, and the names below are imported on first use, so that importing the numpy
reference (a subpackage) loads none of the converter.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from protocaffe.verify.compare import Status, Tolerance
    from protocaffe.verify.core import VerifyError, VerifyOptions, verify
    from protocaffe.verify.inputs import ImageSpec, InputError
    from protocaffe.verify.report import BlobRow, VerifyReport

_HOMES = {
    "BlobRow": "protocaffe.verify.report",
    "ImageSpec": "protocaffe.verify.inputs",
    "InputError": "protocaffe.verify.inputs",
    "Status": "protocaffe.verify.compare",
    "Tolerance": "protocaffe.verify.compare",
    "VerifyError": "protocaffe.verify.core",
    "VerifyOptions": "protocaffe.verify.core",
    "VerifyReport": "protocaffe.verify.report",
    "verify": "protocaffe.verify.core",
}

__all__ = [
    "BlobRow",
    "ImageSpec",
    "InputError",
    "Status",
    "Tolerance",
    "VerifyError",
    "VerifyOptions",
    "VerifyReport",
    "verify",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'protocaffe.verify' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
