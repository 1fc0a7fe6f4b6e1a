"""Tests for the binary caffemodel reader and writer (protocaffe.frontend.caffemodel)."""

from __future__ import annotations

import itertools
import math
import mmap
import os
import struct
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from caffemodel_protobuf import read_caffemodel_protobuf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shared_dir import CORPUS, SHARED

from protocaffe.errors import ProtocaffeError
from protocaffe.frontend.caffemodel import CaffeModel, read_caffemodel
from protocaffe.frontend.caffemodel_writer import write_caffemodel
from protocaffe.frontend.upgrade import V1_FORK_TYPES, V1_LAYER_TYPES
from protocaffe.proto.schema import message_class

CORPUS_MODELS = sorted(CORPUS.glob("*/*.caffemodel"))

FAST = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

Expected = tuple[str, str, list[npt.NDArray[Any]]]


# -- a small protobuf wire encoder ------------------------------------------------------------


def varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def key(field: int, wire: int) -> bytes:
    return varint((field << 3) | wire)


def ld(field: int, payload: bytes) -> bytes:
    return key(field, 2) + varint(len(payload)) + payload


def vint(field: int, value: int) -> bytes:
    return key(field, 0) + varint(value)


def text(field: int, value: str) -> bytes:
    return ld(field, value.encode("utf-8", "surrogateescape"))


def write_bytes(directory: Path, data: bytes) -> Path:
    fd, name = tempfile.mkstemp(dir=directory, suffix=".caffemodel")
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    return Path(name)


# -- comparing results ------------------------------------------------------------------------


def bits(array: npt.NDArray[Any]) -> npt.NDArray[Any]:
    return array.view(np.uint32 if array.dtype.itemsize == 4 else np.uint64)


def assert_same_arrays(got: Sequence[npt.NDArray[Any]], want: Sequence[npt.NDArray[Any]]) -> None:
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        assert a.dtype == b.dtype
        assert a.shape == b.shape
        assert np.array_equal(bits(a), bits(b))


def assert_same_model(got: CaffeModel, want: CaffeModel) -> None:
    assert got.net_name == want.net_name
    assert [(x.name, x.type) for x in got.layers] == [(x.name, x.type) for x in want.layers]
    for x, y in zip(got.layers, want.layers, strict=True):
        assert_same_arrays(x.blobs, y.blobs)


def assert_matches(model: CaffeModel, net_name: str, expected: Sequence[Expected]) -> None:
    assert model.net_name == net_name
    assert [(x.name, x.type) for x in model.layers] == [(n, t) for n, t, _ in expected]
    for layer, (_, _, arrays) in zip(model.layers, expected, strict=True):
        assert_same_arrays(layer.blobs, arrays)


def read_both(path: Path) -> CaffeModel:
    fast = read_caffemodel(path)
    assert_same_model(fast, read_caffemodel_protobuf(path))
    return fast


# -- the real corpus --------------------------------------------------------------------------


@pytest.mark.skipif(not CORPUS_MODELS, reason="no ../shared/corpus caffemodels")
@pytest.mark.parametrize("path", CORPUS_MODELS, ids=lambda p: p.name)
def test_corpus_fast_matches_protobuf(path: Path) -> None:
    model = read_both(path)
    assert model.layers
    offsets = [layer.offset for layer in model.layers]
    assert offsets == sorted(offsets) and offsets[0] >= 0
    assert any(layer.blobs for layer in model.layers)


@pytest.mark.skipif(not CORPUS_MODELS, reason="no ../shared/corpus caffemodels")
def test_corpus_v1_cifar10_keeps_legacy_4d_shapes() -> None:
    path = SHARED / "corpus" / "cifar10-quick" / "cifar10_quick_iter_5000.caffemodel"
    if not path.exists():
        pytest.skip("cifar10_quick_iter_5000.caffemodel absent")
    model = read_caffemodel(path)
    layers = {layer.name: layer for layer in model.layers}
    assert model.net_name == "CIFAR10_quick"
    assert layers["conv1"].type == "Convolution"
    assert layers["ip1"].type == "InnerProduct"
    assert layers["loss"].type == "SoftmaxWithLoss"
    assert [b.shape for b in layers["conv1"].blobs] == [(32, 3, 5, 5), (1, 1, 1, 32)]
    assert [b.shape for b in layers["ip1"].blobs] == [(1, 1, 64, 1024), (1, 1, 1, 64)]
    assert all(b.dtype == np.float32 for b in layers["conv1"].blobs)


@pytest.mark.skipif(not CORPUS_MODELS, reason="no ../shared/corpus caffemodels")
def test_corpus_arrays_are_zero_copy_views_of_the_mapping() -> None:
    model = read_caffemodel(CORPUS_MODELS[0])
    array = next(b for layer in model.layers for b in layer.blobs)
    base: Any = array
    while isinstance(base, np.ndarray):
        base = base.base
    if isinstance(base, memoryview):
        base = base.obj
    assert isinstance(base, mmap.mmap)
    assert not array.flags.writeable


def test_v1_table_matches_the_schema() -> None:
    enum = message_class("V1LayerParameter").DESCRIPTOR.enum_types_by_name["LayerType"]
    # BVLC's values by number; the forks' (names only: their numbers collide) above 1000.
    assert {v.number: v.name for v in enum.values if v.number < 1000} == {
        n: name for n, (name, _) in V1_LAYER_TYPES.items()
    }
    assert {v.name for v in enum.values if v.number >= 1000} == set(V1_FORK_TYPES)


# -- the writer -------------------------------------------------------------------------------


def test_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    layers = [
        (
            "conv1",
            "Convolution",
            [rng.standard_normal((4, 3, 2, 2)), rng.standard_normal(4)],
        ),
        ("relu1", "ReLU", []),
        (
            "ip é",
            "InnerProduct",
            [np.arange(6, dtype=np.int64).reshape(2, 3), np.float32(2.5)],
        ),
        ("empty", "Scale", [np.zeros((0, 3), np.float32), np.zeros(0, np.float32)]),
        ("odd", "PReLU", [np.asfortranarray(rng.standard_normal((3, 5)))[:, ::2]]),
    ]
    path = tmp_path / "net.caffemodel"
    write_caffemodel(path, "Net ☃", iter(layers))
    expected = [(n, t, [np.asarray(b, dtype=np.float32) for b in bs]) for n, t, bs in layers]
    assert_matches(read_both(path), "Net ☃", expected)
    assert [p.name for p in tmp_path.iterdir()] == ["net.caffemodel"]  # no temp file left


def test_round_trip_overwrites_atomically_under_live_arrays(tmp_path: Path) -> None:
    path = tmp_path / "net.caffemodel"
    write_caffemodel(path, "a", [("l", "Bias", [np.arange(3, dtype=np.float32)])])
    old = read_caffemodel(path).layers[0].blobs[0]
    write_caffemodel(path, "", [("l", "Bias", [np.full(1000, 7.0)])])
    assert old.tolist() == [
        0.0,
        1.0,
        2.0,
    ]  # the old mapping is still valid after os.replace
    model = read_both(path)
    assert model.net_name == ""
    assert model.layers[0].blobs[0].tolist() == [7.0] * 1000


def test_writer_rejects_complex_and_leaves_no_file(tmp_path: Path) -> None:
    path = tmp_path / "net.caffemodel"
    with pytest.raises(TypeError):
        write_caffemodel(path, "n", [("l", "Bias", [np.ones(2, np.complex64)])])
    assert list(tmp_path.iterdir()) == []


def test_a_blob_without_shape_is_0d(tmp_path: Path) -> None:
    """Blob::ToProto writes no shape for a 0-D blob (Scale with num_axes 0) and FromProto reads
    it back as 0-D; one holding several values is refused, as Caffe's count check refuses it."""
    path = tmp_path / "zero.caffemodel"
    path.write_bytes(ld(100, ld(1, b"s") + ld(2, b"Scale") + ld(7, ld(5, struct.pack("<f", 3)))))
    assert read_caffemodel(path).layers[0].blobs[0].shape == ()
    path.write_bytes(
        ld(100, ld(1, b"s") + ld(2, b"Scale") + ld(7, ld(5, struct.pack("<2f", 1, 2))))
    )
    with pytest.raises(ProtocaffeError, match="no shape, so Caffe reads it as a 0-D blob"):
        read_caffemodel(path)


def test_huge_sparse_file_past_2gib(tmp_path: Path) -> None:
    count = (1 << 29) + 3  # 2 GiB + 12 bytes of float32 zeros, never touched by the reader
    blob = ld(7, ld(1, varint(count))) + key(5, 2) + varint(count * 4)
    head = ld(1, b"big") + ld(2, b"InnerProduct") + key(7, 2) + varint(len(blob) + count * 4)
    prefix = key(100, 2) + varint(len(head) + len(blob) + count * 4) + head + blob
    two = ld(7, ld(1, varint(2))) + ld(5, struct.pack("<2f", 1, 2))
    tail = ld(100, ld(1, b"after") + ld(2, b"Bias") + ld(7, two))
    path = tmp_path / "big.caffemodel"
    with open(path, "wb") as out:
        out.write(prefix)
        out.seek(len(prefix) + count * 4)
        out.write(tail)
    if os.stat(path).st_blocks * 512 > 1 << 26:
        pytest.skip("this file system does not make sparse files")
    model = read_caffemodel(path)
    assert [layer.name for layer in model.layers] == ["big", "after"]
    assert model.layers[0].blobs[0].shape == (count,)
    assert model.layers[1].offset > 1 << 31
    assert model.layers[1].blobs[0].tolist() == [1.0, 2.0]


# -- synthetic files: the wire format in all its legal variety ---------------------------------

UNKNOWN_FIELDS = st.sampled_from([9001, 9002, 9007, 536870911])
FLOATS32 = st.floats(width=32, allow_nan=False)
FLOATS64 = st.floats(allow_nan=False)
NAMES = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12)


@st.composite
def unknown_field(draw: st.DrawFn) -> bytes:
    field = draw(UNKNOWN_FIELDS)
    wire = draw(st.sampled_from([0, 1, 2, 3, 5]))
    if wire == 0:
        return vint(field, draw(st.integers(0, (1 << 64) - 1)))
    if wire == 1:
        return key(field, 1) + draw(st.binary(min_size=8, max_size=8))
    if wire == 5:
        return key(field, 5) + draw(st.binary(min_size=4, max_size=4))
    if wire == 2:
        return ld(field, draw(st.binary(max_size=12)))
    inner = vint(field + 1 if field < 536870911 else 1, 7) + ld(5, b"xy")
    inner += key(2, 5) + b"abcd" + key(3, 1) + b"12345678"
    nested = key(3, 3) + vint(1, 1) + key(3, 4)  # a group inside the group
    return key(field, 3) + inner + nested + key(field, 4)


@st.composite
def interleave(draw: st.DrawFn, ordered: list[bytes], free: list[bytes]) -> bytes:
    """`ordered` keeps its order (repeated fields); `free` goes anywhere among it."""
    free = list(draw(st.permutations(free)))
    slots = sorted(
        draw(st.lists(st.integers(0, len(free)), min_size=len(ordered), max_size=len(ordered)))
    )
    out: list[bytes] = []
    taken = 0
    for item, slot in zip(ordered, slots, strict=True):
        out.extend(free[taken:slot])
        taken = slot
        out.append(item)
    out.extend(free[taken:])
    return b"".join(out)


@st.composite
def split(draw: st.DrawFn, values: Sequence[Any]) -> list[Sequence[Any]]:
    cuts = sorted(draw(st.lists(st.integers(0, len(values)), max_size=3)))
    bounds = [0, *cuts, len(values)]
    return [values[a:b] for a, b in itertools.pairwise(bounds) if b > a or not values]


@st.composite
def repeated_fixed(draw: st.DrawFn, field: int, values: Sequence[float], fmt: str) -> list[bytes]:
    """Encodes repeated float/double values split into packed and non-packed runs."""
    out = []
    for chunk in draw(split(values)):
        if draw(st.booleans()):
            out.append(ld(field, struct.pack(f"<{len(chunk)}{fmt}", *chunk)))
        else:
            wire = 5 if fmt == "f" else 1
            out.extend(key(field, wire) + struct.pack(f"<{fmt}", v) for v in chunk)
    return out


@st.composite
def dims_fields(draw: st.DrawFn, dims: Sequence[int]) -> list[bytes]:
    """BlobShape messages (possibly several, which protobuf merges) holding `dims`."""
    messages = []
    for chunk in draw(split(dims)):
        if draw(st.booleans()):
            body = [ld(1, b"".join(varint(d) for d in chunk))] if chunk else []
        else:
            body = [vint(1, d) for d in chunk]
        unknown = draw(st.lists(unknown_field(), max_size=1))
        messages.append(ld(7, draw(interleave(body, unknown))))
    return messages


@st.composite
def blob(draw: st.DrawFn) -> tuple[bytes, npt.NDArray[Any]]:
    mode = draw(st.sampled_from(["shape", "legacy", "both", "none"]))
    double = draw(st.booleans())
    free: list[bytes] = draw(st.lists(unknown_field(), max_size=2))
    shape_dims = draw(st.lists(st.integers(0, 3), max_size=3))
    legacy = draw(st.lists(st.integers(0, 3), min_size=4, max_size=4))
    present = draw(st.sets(st.integers(0, 3), min_size=1))
    shape: tuple[int, ...]
    if mode in ("legacy", "both"):
        shape = tuple(d if i in present else 0 for i, d in enumerate(legacy))
        free += [vint(i + 1, legacy[i]) for i in sorted(present)]
    if mode in ("shape", "both"):
        ordered = draw(dims_fields(shape_dims))
        if mode == "shape":
            shape = tuple(shape_dims)
    else:
        ordered = []
    if mode == "none":
        shape = ()  # Caffe's 0-D blob: ToProto writes no shape at all
    count = math.prod(shape)
    if double:
        values = draw(st.lists(FLOATS64, min_size=count, max_size=count))
        array = np.array(values, dtype="<f8" if count else "<f4").reshape(shape)
        data = draw(repeated_fixed(8, values, "d"))
        if count:  # float data is ignored when there is double data
            free += draw(repeated_fixed(5, draw(st.lists(FLOATS32, max_size=2)), "f"))
    else:
        values = draw(st.lists(FLOATS32, min_size=count, max_size=count))
        array = np.array(values, dtype="<f4").reshape(shape)
        data = draw(repeated_fixed(5, values, "f"))
    # diffs are skipped whatever they hold
    free += draw(repeated_fixed(6, draw(st.lists(FLOATS32, max_size=2)), "f"))
    free += draw(repeated_fixed(9, draw(st.lists(FLOATS64, max_size=2)), "d"))
    if mode in ("shape", "both"):
        # shapes and data each keep their own order; free fields go anywhere
        body = draw(interleave(ordered, free))
        body = draw(interleave(data, [body])) if draw(st.booleans()) else body + b"".join(data)
    else:
        body = draw(interleave(data, free))
    return body, array


@st.composite
def layer(draw: st.DrawFn, version: int) -> tuple[bytes, Expected]:
    name = draw(NAMES)
    blobs = draw(st.lists(blob(), max_size=3))
    decoys: list[bytes] = draw(st.lists(unknown_field(), max_size=2))
    name_field = 4 if version == 1 else 1
    names = [text(name_field, name)]
    if draw(st.booleans()):  # a name given twice: the last one wins
        names.insert(0, text(name_field, draw(NAMES)))
    if version == 2:
        kind = draw(st.sampled_from(["Convolution", "ReLU", "Scale", ""]))
        decoys += [text(3, "bottom"), text(4, "top"), ld(106, vint(1, 8))]
        fields = draw(interleave([ld(7, b) for b, _ in blobs], decoys))
        body = draw(interleave(names, [fields, text(2, kind)]))
    elif version == 1:
        number = draw(st.sampled_from(sorted(V1_LAYER_TYPES)))
        kind = V1_LAYER_TYPES[number][1]
        decoys += [
            text(2, "bottom"),
            text(3, "top"),
            key(7, 5) + struct.pack("<f", 1.0),
        ]
        fields = draw(interleave([ld(6, b) for b, _ in blobs], decoys))
        body = draw(interleave(names, [fields, vint(5, number)]))
    else:
        kind = draw(st.sampled_from(["conv", "innerproduct", "relu"]))
        decoys += [vint(3, 10), ld(5, text(1, "gaussian"))]
        fields = draw(interleave([ld(50, b) for b, _ in blobs], decoys))
        inner = draw(interleave(names, [fields, text(2, kind)]))
        body = draw(interleave([ld(1, inner)], [text(2, "bottom"), text(4, "ignored V1 name")]))
    return body, (name, kind, [a for _, a in blobs])


@st.composite
def net(draw: st.DrawFn) -> tuple[bytes, str, list[Expected]]:
    version = draw(st.sampled_from([0, 1, 2]))
    layers = draw(st.lists(layer(version), max_size=4))
    name = draw(NAMES)
    field = 100 if version == 2 else 2
    free = [text(1, name), *draw(st.lists(unknown_field(), max_size=2)), vint(5, 1)]
    data = draw(interleave([ld(field, b) for b, _ in layers], free))
    return data, name, [e for _, e in layers]


@FAST
@given(case=net())
def test_synthetic_wire_variants(tmp_path: Path, case: tuple[bytes, str, list[Expected]]) -> None:
    data, name, expected = case
    path = write_bytes(tmp_path, data)
    model = read_caffemodel(path)
    assert_matches(model, name, expected)
    assert_matches(read_caffemodel_protobuf(path), name, expected)


@st.composite
def protobuf_net(draw: st.DrawFn) -> tuple[bytes, str, list[Expected]]:
    """A NetParameter built with the protobuf classes, plus unknown fields appended."""
    message: Any = message_class("NetParameter")()
    message.name = draw(NAMES)
    version = draw(st.sampled_from([0, 1, 2]))
    expected: list[Expected] = []
    for _ in range(draw(st.integers(0, 4))):
        name = draw(NAMES)
        if version == 2:
            entry = message.layer.add()
            entry.name = name
            entry.type = kind = draw(st.sampled_from(["Convolution", "BatchNorm", "PReLU"]))
            entry.bottom.append("data")
            entry.convolution_param.num_output = 3
            blobs = entry.blobs
        elif version == 1:
            entry = message.layers.add()
            entry.name = name
            entry.type = number = draw(st.sampled_from(sorted(V1_LAYER_TYPES)))
            kind = V1_LAYER_TYPES[number][1]
            entry.blobs_lr.append(1.0)
            blobs = entry.blobs
        else:
            outer = message.layers.add()
            outer.bottom.append("data")
            entry = outer.layer
            entry.name = name
            entry.type = kind = draw(st.sampled_from(["conv", "pool"]))
            entry.num_output = 4
            blobs = entry.blobs
        arrays = []
        for _ in range(draw(st.integers(0, 3))):
            proto = blobs.add()
            dims = draw(st.lists(st.integers(0, 3), max_size=4))
            mode = draw(st.sampled_from(["shape", "legacy", "none"]))
            if mode == "shape":
                proto.shape.SetInParent()
                proto.shape.dim.extend(dims)
                shape = tuple(dims)
            elif mode == "legacy":
                dims = [*dims, 1, 1, 1, 1][:4]
                proto.num, proto.channels, proto.height, proto.width = dims
                shape = tuple(dims)
            else:
                shape = ()  # no shape: a 0-D blob, one value
            count = math.prod(shape)
            if draw(st.booleans()):
                values = draw(st.lists(FLOATS64, min_size=count, max_size=count))
                proto.double_data.extend(values)  # no values: read as float32 data
                arrays.append(np.array(values, "<f8" if count else "<f4").reshape(shape))
            else:
                values = draw(st.lists(FLOATS32, min_size=count, max_size=count))
                proto.data.extend(values)
                arrays.append(np.array(values, "<f4").reshape(shape))
            proto.diff.extend(draw(st.lists(FLOATS32, max_size=2)))
        expected.append((name, kind, arrays))
    data = message.SerializeToString() + b"".join(draw(st.lists(unknown_field(), max_size=3)))
    return data, message.name, expected


@FAST
@given(case=protobuf_net())
def test_protobuf_built_nets(tmp_path: Path, case: tuple[bytes, str, list[Expected]]) -> None:
    data, name, expected = case
    path = write_bytes(tmp_path, data)
    assert_matches(read_caffemodel(path), name, expected)
    assert_matches(read_caffemodel_protobuf(path), name, expected)


def test_special_floats_are_bit_exact(tmp_path: Path) -> None:
    values = np.array([np.nan, -0.0, np.inf, -np.inf, 1e-45, 3.4e38], np.float32)
    values = np.concatenate([values, np.frombuffer(b"\x01\x00\x80\x7f", np.float32)])  # sNaN
    packed = ld(5, values.tobytes())
    unpacked = b"".join(key(5, 5) + v.tobytes() for v in values)
    shape = ld(7, ld(1, varint(values.size)))
    for data in (packed, unpacked):
        path = write_bytes(tmp_path, ld(100, text(1, "x") + ld(7, shape + data)))
        (array,) = read_caffemodel(path).layers[0].blobs
        assert array.tobytes() == values.tobytes()


def test_long_unpacked_run_and_overlong_tag(tmp_path: Path) -> None:
    values = np.arange(5000, dtype=np.float32)
    unpacked = b"".join(key(5, 5) + v.tobytes() for v in values[:4000])
    overlong = b"\xad\x00" + values[4000].tobytes()  # field 5, fixed32, in a two-byte tag
    rest = b"".join(key(5, 5) + v.tobytes() for v in values[4001:])
    blob = ld(7, ld(1, varint(5000))) + unpacked + overlong + rest
    path = write_bytes(tmp_path, ld(100, text(1, "x") + ld(7, blob)))
    model = read_both(path)
    assert np.array_equal(model.layers[0].blobs[0], values)


def test_unknown_v1_enum_keeps_its_number(tmp_path: Path) -> None:
    path = write_bytes(tmp_path, ld(2, text(4, "fork") + vint(5, 77)))
    assert read_both(path).layers[0].type == "V1LayerType(77)"


def test_invalid_utf8_name_is_kept_with_surrogate_escapes(tmp_path: Path) -> None:
    path = write_bytes(tmp_path, ld(1, b"n\xff") + ld(100, ld(1, b"\xfe")))
    model = read_both(path)
    assert model.net_name == "n\udcff"
    assert model.layers[0].name == "\udcfe"


def test_name_only_net_has_no_layers(tmp_path: Path) -> None:
    path = write_bytes(tmp_path, text(1, "a name longer than thirty-two chars, all printable"))
    model = read_both(path)
    assert model.layers == () and model.net_name.startswith("a name")


# -- bad input --------------------------------------------------------------------------------


def raises(path: Path, *fragments: str) -> ProtocaffeError:
    errors = []
    for reader in (read_caffemodel, read_caffemodel_protobuf):
        with pytest.raises(ProtocaffeError) as info:
            reader(path)
        errors.append(info.value)
    message = str(errors[0])
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    return errors[0]


def small_model() -> tuple[bytes, list[int]]:
    """A small V2 model and the offsets where its top-level fields end."""
    weights = ld(7, ld(1, b"\x02\x03")) + ld(5, np.arange(6, dtype=np.float32).tobytes())
    bias = ld(7, ld(1, b"\x02")) + ld(5, np.ones(2, np.float32).tobytes())
    legacy = vint(1, 1) + vint(2, 1) + vint(3, 1) + vint(4, 2) + ld(8, np.ones(2).tobytes())
    pieces = [
        text(1, "tiny"),
        ld(
            100,
            text(1, "conv1") + text(2, "Convolution") + ld(7, weights) + ld(7, bias),
        ),
        ld(100, text(1, "relu1") + text(2, "ReLU")),
        key(9001, 3) + vint(1, 5) + key(2, 5) + b"abcd" + key(3, 1) + b"12345678" + key(9001, 4),
        ld(100, text(1, "ip") + text(2, "InnerProduct") + ld(7, legacy)),
    ]
    ends = [int(n) for n in np.cumsum([len(p) for p in pieces])]
    return b"".join(pieces), ends


def test_small_model_reads(tmp_path: Path) -> None:
    data, ends = small_model()
    model = read_both(write_bytes(tmp_path, data))
    assert model.net_name == "tiny"
    assert [b.shape for b in model.layers[0].blobs] == [(2, 3), (2,)]
    assert model.layers[1].blobs == ()
    assert [layer.offset for layer in model.layers] == ends[:1] + ends[1:2] + ends[3:4]
    (legacy,) = model.layers[2].blobs
    assert legacy.shape == (1, 1, 1, 2) and legacy.dtype == np.float64


def test_every_truncation_is_a_protocaffe_error(tmp_path: Path) -> None:
    data, ends = small_model()
    for size in range(1, len(data)):
        path = write_bytes(tmp_path, data[:size])
        if size in ends:
            read_both(path)
        else:
            raises(path)
        path.unlink()


def test_truncated_message_names_the_layer(tmp_path: Path) -> None:
    data, ends = small_model()
    path = write_bytes(tmp_path, data[: ends[0] + 40])
    error = raises(path, "truncated: field 100 (layer) needs")
    assert 'layer "conv1"' in str(error)
    assert f"byte {ends[0]}" in str(error)


def test_length_of_two_to_the_sixty(tmp_path: Path) -> None:
    path = write_bytes(tmp_path, key(100, 2) + varint(1 << 60) + text(1, "x"))
    raises(path)
    with pytest.raises(ProtocaffeError, match="length 1152921504606846976 past end of file"):
        read_caffemodel(path)
    inner = text(1, "deep") + key(7, 2) + varint(1 << 60) + b"\x00" * 8
    path = write_bytes(tmp_path, ld(100, inner))
    with pytest.raises(ProtocaffeError) as info:
        read_caffemodel(path)
    error = info.value
    assert "length 1152921504606846976 past end of file" in str(error)
    assert 'layer "deep"' in str(error)


def test_wrong_wire_type_for_blobs(tmp_path: Path) -> None:
    path = write_bytes(tmp_path, ld(100, text(1, "conv") + vint(7, 3)))
    raises(path, "field 7 (blobs) has wire type 0 (varint)", 'layer "conv"')
    path = write_bytes(tmp_path, ld(2, text(4, "conv") + ld(5, b"x")))
    raises(path, "field 5 (type) has wire type 2")
    path = write_bytes(tmp_path, ld(100, text(1, "c") + ld(7, key(5, 1) + b"\x00" * 8)))
    raises(path, "field 5 (data) has wire type 1 (fixed64)")


def test_text_prototxt_is_not_a_caffemodel(tmp_path: Path) -> None:
    prototxt = b'name: "LeNet"\nlayer {\n  name: "data"\n  type: "Input"\n}\n'
    raises(
        write_bytes(tmp_path, prototxt),
        "not a binary caffemodel (looks like a text prototxt)",
    )
    raises(
        write_bytes(tmp_path, b'input: "data"\ninput_dim: 1\n'),
        "looks like a text prototxt",
    )
    deploy = SHARED / "corpus" / "lenet-mnist" / "deploy.prototxt"
    if deploy.exists():
        raises(deploy, "not a binary caffemodel (looks like a text prototxt)")


def test_reads_from_a_pipe(tmp_path: Path) -> None:
    data, _ = small_model()
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)

    def feed() -> None:
        with open(fifo, "wb") as out:
            out.write(data)

    writer = threading.Thread(target=feed)
    writer.start()
    model = read_caffemodel(fifo)
    writer.join()
    assert [layer.name for layer in model.layers] == ["conv1", "relu1", "ip"]


def test_other_formats(tmp_path: Path) -> None:
    raises(
        write_bytes(tmp_path, b"\x89HDF\r\n\x1a\n" + b"\x00" * 64),
        "looks like an HDF5 file",
    )
    raises(write_bytes(tmp_path, b"\x1f\x8b\x08\x00" + b"\x00" * 16), "gzip")


def test_empty_and_missing_files(tmp_path: Path) -> None:
    raises(write_bytes(tmp_path, b""), "empty file")
    raises(tmp_path / "absent.caffemodel", "cannot read caffemodel")
    raises(tmp_path, "cannot read caffemodel")


def test_count_must_match_shape(tmp_path: Path) -> None:
    blob = ld(7, ld(1, b"\x02\x03")) + ld(5, np.ones(5, np.float32).tobytes())
    raises(
        write_bytes(tmp_path, ld(100, text(1, "conv") + ld(7, blob))),
        "needs 6 values but the blob has 5",
        'layer "conv"',
    )
    blob = key(1, 0) + varint(-1) + ld(5, b"")
    raises(
        write_bytes(tmp_path, ld(100, text(1, "neg") + ld(7, blob))),
        "negative dimension",
    )
    blob = ld(7, ld(1, varint(1 << 40) * 3))  # a shape claiming 2^120 values: no allocation
    raises(
        write_bytes(tmp_path, ld(100, text(1, "big") + ld(7, blob))),
        "but the blob has 0",
    )


def test_structural_errors(tmp_path: Path) -> None:
    bad_packed = ld(100, text(1, "p") + ld(7, ld(5, b"abc")))
    raises(write_bytes(tmp_path, bad_packed), "not a multiple of 4")
    both = ld(100, text(1, "a")) + ld(2, text(4, "b"))
    raises(write_bytes(tmp_path, both), "both V2 'layer'")
    long_varint = b"\x08" + b"\xff" * 11
    raises(write_bytes(tmp_path, ld(100, text(1, "v") + ld(7, long_varint))))
    nested = b"".join(key(9001, 3) for _ in range(500)) + b"".join(key(9001, 4) for _ in range(500))
    with pytest.raises(ProtocaffeError, match="nested too deeply"):
        read_caffemodel(write_bytes(tmp_path, ld(1, b"n") + nested))
    raises(write_bytes(tmp_path, ld(1, b"n") + key(9001, 4)))
    raises(write_bytes(tmp_path, ld(1, b"n") + b"\x07"))  # wire type 7


@FAST
@given(
    edits=st.lists(
        st.tuples(
            st.sampled_from(["flip", "insert", "delete"]),
            st.integers(0),
            st.integers(0, 255),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_mutated_files_raise_only_protocaffe_errors(
    tmp_path: Path, edits: list[tuple[str, int, int]]
) -> None:
    data, _ = small_model()
    buffer = bytearray(data)
    for op, where, byte in edits:
        where %= len(buffer) + 1
        if op == "insert":
            buffer[where:where] = bytes([byte])
        elif where < len(buffer):
            if op == "flip":
                buffer[where] ^= byte or 1
            else:
                del buffer[where]
    path = write_bytes(tmp_path, bytes(buffer))
    for reader in (read_caffemodel, read_caffemodel_protobuf):
        try:
            reader(path)
        except ProtocaffeError as error:
            assert "\n" not in str(error)
