"""`protocaffe verify`: prove a PyTorch module equals its Caffe original, blob by blob.

The reference is OpenCV 4.x dnn (the `verify` extra) or real Caffe (pycaffe). Import cost stays
low: cv2 and torch are imported only when a verification runs.
"""

from __future__ import annotations

from protocaffe.verify.compare import Status, Tolerance
from protocaffe.verify.core import VerifyError, VerifyOptions, verify
from protocaffe.verify.inputs import ImageSpec, InputError
from protocaffe.verify.report import BlobRow, VerifyReport

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
