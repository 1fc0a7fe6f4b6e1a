"""What a reference layer function sees, and the registry that finds it by Caffe type.

A reference layer is a plain function `forward(layer, bottoms) -> tops` over float32 numpy
arrays, registered under one Caffe type name. `layer` (a `RefLayer`) carries the layer's name,
its `LayerParameter` message (read with Caffe's defaults by the function itself), its location
in the prototxt for errors, and its weights from the caffemodel, which the function asks for
with the shapes Caffe requires (`layer.weights(...)`), so a file whose blobs do not fit the
layer is one located error, as in Caffe's `Net::CopyTrainedLayersFrom`.

The registry is a dict from type name to `RefOp`. A plugin adds a type with `register`
(issue 12, item 4 will give plugins a `reference(attrs, inputs)` hook on top of it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from protocaffe.errors import ProtocaffeError, SourceLoc

Array = npt.NDArray[Any]
Shape = tuple[int, ...]
Forward = Callable[["RefLayer", list[Array]], list[Array]]


def shape_text(shape: Sequence[int]) -> str:
    """A shape as Caffe prints it (`2 3 4 5 (120)`) is hard to read; this is `(2, 3, 4, 5)`."""
    return "(" + ", ".join(str(int(d)) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def legacy_fits(stored: Shape, expected: Shape) -> bool:
    """`Blob::ShapeEquals`: a blob saved with the legacy num/channels/height/width fields is
    compared from the end of the shape (a V1 bias (1, 1, 1, N) fits a blob of shape (N,)).
    The reader keeps legacy dims 4-D as stored, so a 4-D stored shape is also tried that way."""
    if stored == expected:
        return True
    if expected == () and stored == (1,):
        # Caffe saves a 0-D blob with neither shape nor legacy dims, which read_caffemodel
        # reads as (count,) = (1,) (issue 13, cause 1); a (1,) blob is accepted for a 0-D one.
        return True
    return (
        len(stored) == 4 and len(expected) <= 4 and (1,) * (4 - len(expected)) + expected == stored
    )


@dataclass
class RefLayer:
    """One layer as a reference function sees it."""

    index: int  # position in NetDef.layers
    name: str
    type: str
    param: Any  # the LayerParameter message (protobuf defaults apply)
    loc: SourceLoc
    bottoms: tuple[str, ...]
    tops: tuple[str, ...]
    # The layer's blobs from the caffemodel (None: the file has no layer of this name); an
    # element is None where a shared parameter (`param { name }`) has no value anywhere.
    source: tuple[Array | None, ...] | None = None
    model_given: bool = True  # False: the net runs without any caffemodel
    weights_read: bool = False

    def fail(self, message: str) -> ProtocaffeError:
        return ProtocaffeError.at(self.loc, message, self.name, self.type)

    def check(self, condition: bool, message: str) -> None:
        """Caffe's CHECK: a failed one aborts real Caffe, so the reference refuses too."""
        if not condition:
            raise self.fail(f"Caffe aborts here: {message}")

    def weights(self, *shapes: Shape) -> list[Array]:
        """The layer's blobs, checked against the shapes Caffe creates for it (count first,
        then each shape with `Blob::ShapeEquals`), as float32 arrays of exactly those shapes."""
        self.weights_read = True
        if self.source is None:
            if not shapes:
                return []
            if not self.model_given:
                raise self.fail(f"the layer has {len(shapes)} blob(s) but no weights were given")
            raise self.fail(
                f"the caffemodel has no layer named {self.name!r}; Caffe would fill its "
                f"{len(shapes)} blob(s) from the prototxt's fillers, which a reference cannot "
                "reproduce"
            )
        if len(self.source) != len(shapes):
            raise self.fail(
                f"Caffe aborts here: incompatible number of blobs: the caffemodel has "
                f"{len(self.source)}, the layer has {len(shapes)} "
                f"({', '.join(shape_text(s) for s in shapes) or 'none'})"
            )
        arrays = []
        for j, (blob, expected) in enumerate(zip(self.source, shapes, strict=True)):
            if blob is None:
                raise self.fail(
                    f"blob {j} is a shared parameter that no layer of the caffemodel holds"
                )
            if not legacy_fits(tuple(int(d) for d in blob.shape), tuple(expected)):
                raise self.fail(
                    f"Caffe aborts here: cannot copy blob {j} from the caffemodel: its shape is "
                    f"{shape_text(blob.shape)}, the layer needs {shape_text(expected)}"
                )
            arrays.append(np.asarray(blob, dtype=np.float32).reshape(expected))
        return arrays

    @property
    def blob_count(self) -> int:
        """How many blobs the caffemodel holds for this layer (0 when it has none)."""
        return 0 if self.source is None else len(self.source)


@dataclass(frozen=True)
class RefOp:
    """A registered reference layer.

    `bottoms` and `tops` are Caffe's blob-count bounds (`ExactNumBottomBlobs`, ...; None: any).
    `shares_memory`: the layer may return a view of its bottom, as Caffe's `ShareData` makes
    the top and the bottom one array (see `SHARES_MEMORY`); any other layer's tops are copied
    if they would alias a bottom. `in_place`: Caffe accepts top == bottom for it.
    """

    forward: Forward
    bottoms: tuple[int, int | None] = (1, 1)
    tops: tuple[int, int | None] = (1, 1)
    shares_memory: bool = False
    in_place: bool = True


_REGISTRY: dict[str, RefOp] = {}


def register(
    type_name: str,
    *,
    bottoms: tuple[int, int | None] = (1, 1),
    tops: tuple[int, int | None] = (1, 1),
    shares_memory: bool = False,
    in_place: bool = True,
    replace: bool = False,
) -> Callable[[Forward], Forward]:
    """Register `forward` as the reference of Caffe layer type `type_name` (a decorator)."""

    def add(forward: Forward) -> Forward:
        if type_name in _REGISTRY and not replace:
            raise ValueError(f"layer type {type_name!r} already has a reference")
        _REGISTRY[type_name] = RefOp(forward, bottoms, tops, shares_memory, in_place)
        return forward

    return add


def lookup(type_name: str) -> RefOp | None:
    return _REGISTRY.get(type_name)


def layer_types() -> tuple[str, ...]:
    """Every Caffe layer type the reference can run, sorted."""
    return tuple(sorted(_REGISTRY))
