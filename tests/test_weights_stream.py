"""Streaming weights: the safetensors writer, the lazy state_dict, the progress bar, and what a
conversion imports. Expected values come from numpy on the blobs as written and from the
`safetensors` library's own reader."""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from safetensors import safe_open
from safetensors.numpy import load_file

import protocaffe
from protocaffe.backend import safetensors_writer
from protocaffe.backend.progress import ProgressBar
from protocaffe.backend.safetensors_writer import write_safetensors
from protocaffe.backend.weights import write_state
from protocaffe.cli import main
from protocaffe.frontend.caffemodel import read_caffemodel
from protocaffe.frontend.caffemodel_writer import write_caffemodel
from protocaffe.frontend.regions import file_region
from protocaffe.layers.base import f32
from protocaffe.proto.schema import message_class

ROOT = Path(__file__).resolve().parents[1]
TINYNET = ROOT / "examples" / "tinynet" / "deploy.prototxt"
TINYNET_WEIGHTS = ROOT / "examples" / "tinynet" / "tinynet.caffemodel"

FC_NET = """
name: "Fc"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "fc_t" type: "InnerProduct" bottom: "data" top: "fc_t"
        inner_product_param { num_output: 4 transpose: true } }
layer { name: "fc" type: "InnerProduct" bottom: "fc_t" top: "fc"
        inner_product_param { num_output: 5 } }
"""


def sample_arrays() -> dict[str, npt.NDArray[Any]]:
    rng = np.random.default_rng(7)
    base = rng.standard_normal((6, 5)).astype(np.float32)
    return {
        "conv.weight": rng.standard_normal((4, 3, 2, 2)).astype(np.float32),
        "fc.weight": base.T,  # not contiguous: written through a converted copy
        "double": rng.standard_normal(7),
        "big_endian": rng.standard_normal((3, 2)).astype(">f4"),
        "scalar": np.array(2.5, dtype=np.float32),
        "empty": np.zeros((0, 3), dtype=np.float32),
        "strided": base[::2, 1::2],
        "ints": np.arange(5, dtype=np.int64),
    }


def assert_loads_back(path: Path, arrays: dict[str, npt.NDArray[Any]]) -> None:
    loaded = load_file(str(path))
    assert set(loaded) == set(arrays)
    for key, want in arrays.items():
        got = loaded[key]
        assert got.shape == want.shape, key
        assert got.dtype == want.dtype.newbyteorder("="), key
        assert np.array_equal(got, want), key


def test_writer_output_loads_with_the_safetensors_library(tmp_path: Path) -> None:
    arrays = sample_arrays()
    path = tmp_path / "w.safetensors"
    write_safetensors(path, arrays, metadata={"format": "pt"})
    assert_loads_back(path, arrays)
    with safe_open(str(path), "np") as opened:
        assert opened.metadata() == {"format": "pt"}


def test_writer_layout_follows_the_spec(tmp_path: Path) -> None:
    arrays = sample_arrays()
    path = tmp_path / "w.safetensors"
    write_safetensors(path, arrays)
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    assert length % 8 == 0  # the byte buffer starts 8-byte aligned
    header = json.loads(data[8 : 8 + length])
    assert list(header) == list(arrays)  # the mapping's order, not hash order
    end = 0
    for key, array in arrays.items():
        start, stop = header[key]["data_offsets"]
        assert start == end and stop - start == array.nbytes
        end = stop
        little = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
        assert data[8 + length + start : 8 + length + stop] == little.tobytes()
    assert len(data) == 8 + length + end


def test_writer_is_byte_identical_and_chunking_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    arrays = sample_arrays()
    first, second, small = (tmp_path / n for n in ("a", "b", "c"))
    write_safetensors(first, arrays)
    write_safetensors(second, arrays)
    monkeypatch.setattr(safetensors_writer, "_CHUNK", 8)  # every path: rows, recursion, pieces
    calls: list[tuple[int, int]] = []
    write_safetensors(small, arrays, progress=lambda done, total: calls.append((done, total)))
    assert first.read_bytes() == second.read_bytes() == small.read_bytes()
    total = sum(a.nbytes for a in arrays.values())
    assert calls[0] == (0, total) and calls[-1] == (total, total)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_writer_refuses_what_safetensors_cannot_hold(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="complex"):
        write_safetensors(tmp_path / "x", {"z": np.zeros(2, dtype=np.complex64)})


def double_caffemodel(path: Path, fc_t: npt.NDArray[Any], fc: list[npt.NDArray[Any]]) -> None:
    """A V2 caffemodel whose first layer's blobs are stored as double_data (with legacy dims)."""
    net: Any = message_class("NetParameter")()
    net.name = "Fc"
    layer = net.layer.add()
    layer.name, layer.type = "fc_t", "InnerProduct"
    weight = layer.blobs.add()
    weight.num, weight.channels, weight.height, weight.width = 1, 1, *fc_t.shape
    weight.double_data.extend(fc_t.reshape(-1).tolist())
    bias = layer.blobs.add()
    bias.shape.dim.append(4)
    bias.double_data.extend([0.5, -1.0, 2.0, 1e-300])  # the last one underflows in float32
    layer = net.layer.add()
    layer.name, layer.type = "fc", "InnerProduct"
    for array in fc:
        blob = layer.blobs.add()
        blob.shape.dim.extend(array.shape)
        blob.data.extend(array.reshape(-1).tolist())
    path.write_bytes(net.SerializeToString())


def test_double_data_and_transposed_weights_are_converted_on_access(tmp_path: Path) -> None:
    prototxt = tmp_path / "fc.prototxt"
    prototxt.write_text(FC_NET)
    rng = np.random.default_rng(3)
    fc_t = rng.standard_normal((3, 4))  # Caffe's (K, N) layout when transpose is true
    fc = [rng.standard_normal((5, 4)).astype(np.float32), np.arange(5, dtype=np.float32)]
    weights = tmp_path / "fc.caffemodel"
    double_caffemodel(weights, fc_t, fc)

    conversion = protocaffe.convert(prototxt, weights)
    arrays = conversion.arrays
    assert arrays is not None
    want = {
        "fc_t.weight": fc_t.astype(np.float32).T,
        "fc_t.bias": np.array([0.5, -1.0, 2.0, 0.0], dtype=np.float32),
        "fc.weight": fc[0],
        "fc.bias": fc[1],
    }
    assert list(arrays) == list(want)
    for key, array in want.items():
        assert arrays[key].dtype == np.float32
        assert np.array_equal(arrays[key], array), key
    # float32 weights are views of the file, not copies
    assert not arrays["fc.weight"].flags.owndata and not arrays["fc.weight"].flags.writeable

    out = tmp_path / "out"
    assert main(["convert", str(prototxt), str(weights), "-o", str(out), "-q"]) == 0
    assert_loads_back(out / "model.safetensors", want)
    assert sorted(p.name for p in out.iterdir()) == [
        "model.manifest.txt",
        "model.py",
        "model.safetensors",
    ]
    # The manifest hashes converted arrays from memory and float32 views from the caffemodel
    # file: both must give the sha256 of the bytes the safetensors file holds.
    listed = [line.split() for line in (out / "model.manifest.txt").read_text().splitlines()[1:]]
    assert [row[0] for row in listed] == sorted(want)
    for key, shape, dtype, digest in listed:
        array = want[key]
        assert (shape, dtype) == ("x".join(map(str, array.shape)), "float32")
        assert digest == hashlib.sha256(array.astype("<f4").tobytes()).hexdigest(), key


@pytest.mark.skipif(not TINYNET_WEIGHTS.exists(), reason="no bundled tinynet weights")
def test_cli_output_is_deterministic_and_matches_the_state_dict(tmp_path: Path) -> None:
    outputs = []
    for name in ("a", "b"):
        out = tmp_path / name
        assert main(["convert", str(TINYNET), str(TINYNET_WEIGHTS), "-o", str(out)]) == 0
        outputs.append((out / "model.safetensors").read_bytes())
    assert outputs[0] == outputs[1]
    conversion = protocaffe.convert(TINYNET, TINYNET_WEIGHTS)
    assert conversion.arrays is not None
    assert_loads_back(tmp_path / "a" / "model.safetensors", dict(conversion.arrays))


# -- the progress bar --------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_progress_bar_stays_quiet_for_small_quick_work() -> None:
    stream, clock = io.StringIO(), Clock()
    bar = ProgressBar("writing", stream, clock=clock)
    for done in range(0, 1001, 100):
        clock.now += 0.01
        bar(done, 1000)
    bar.close()
    assert stream.getvalue() == ""


def test_progress_bar_shows_slow_work_after_the_delay() -> None:
    stream, clock = io.StringIO(), Clock()
    bar = ProgressBar("writing", stream, clock=clock)
    bar(0, 1000)
    assert stream.getvalue() == ""
    clock.now = 0.6
    bar(500, 1000)
    assert stream.getvalue().endswith("\rwriting [" + "#" * 15 + "." * 15 + "]  50%  0/0 MB")
    bar(1000, 1000)
    bar.close()
    assert stream.getvalue().endswith("100%  0/0 MB\n")


def test_progress_bar_shows_big_work_at_once() -> None:
    stream, clock = io.StringIO(), Clock()
    bar = ProgressBar("writing", stream, clock=clock)
    bar(0, 600_000_000)
    assert stream.getvalue() == "\rwriting [" + "." * 30 + "]   0%  0/600 MB"
    clock.now = 0.05
    bar(1_000_000, 600_000_000)  # within the redraw interval: not drawn again
    assert stream.getvalue().count("\r") == 1


# -- what a conversion imports -----------------------------------------------------------------


def test_convert_without_weights_imports_neither_torch_nor_numpy(tmp_path: Path) -> None:
    """model.py alone needs neither: `import torch` costs seconds, numpy a tenth of one."""
    code = (
        "import sys\n"
        "from protocaffe.cli import main\n"
        f"status = main(['convert', {str(TINYNET)!r}, '-o', {str(tmp_path)!r}])\n"
        "print(status, 'torch' in sys.modules, 'numpy' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == ["0", "False", "False"], result.stderr
    assert (tmp_path / "model.py").exists()


def test_writer_replaces_a_longer_file_exactly(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    path.write_bytes(b"x" * 100_000)
    arrays = {"a": np.arange(3, dtype=np.float32)}
    write_safetensors(path, arrays)
    assert_loads_back(path, arrays)
    write_safetensors(tmp_path / "fresh", arrays)
    assert path.read_bytes() == (tmp_path / "fresh").read_bytes()


@pytest.mark.skipif(not TINYNET_WEIGHTS.exists(), reason="no bundled tinynet weights")
def test_kernel_copy_and_memory_writes_give_the_same_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conversion = protocaffe.convert(TINYNET, TINYNET_WEIGHTS)
    assert conversion.arrays is not None
    regions = [file_region(a) for a in conversion.arrays.values()]
    assert sum(r is not None for r in regions) >= 10  # float32 blobs are located in the file
    data = TINYNET_WEIGHTS.read_bytes()
    for array, region in zip(conversion.arrays.values(), regions, strict=True):
        if region is not None:
            assert data[region.offset : region.offset + array.nbytes] == array.tobytes()
    copied, written = tmp_path / "copied", tmp_path / "written"
    write_state(copied, conversion.arrays, "safetensors")
    monkeypatch.delattr(os, "copy_file_range", raising=False)
    write_state(written, conversion.arrays, "safetensors")
    assert copied.read_bytes() == written.read_bytes()
    assert_loads_back(copied, dict(conversion.arrays))


def test_a_replaced_source_file_is_not_copied_from(tmp_path: Path) -> None:
    source = tmp_path / "m.caffemodel"
    write_caffemodel(source, "n", [("a", "Convolution", [np.arange(4, dtype=np.float32)])])
    array = read_caffemodel(source).layers[0].blobs[0]
    write_caffemodel(source, "n", [("a", "Convolution", [np.full(4, 9, dtype=np.float32)])])
    out = tmp_path / "w.safetensors"
    write_safetensors(out, {"a": array}, locate=file_region)
    assert_loads_back(out, {"a": np.arange(4, dtype=np.float32)})


def numpy_f32(value: float) -> float:
    """What f32 computed with numpy before it stopped importing it."""
    with np.errstate(over="ignore"):
        text = repr(np.float32(value))
    return float(text.removeprefix("np.float32(").removesuffix(")"))


def test_f32_without_numpy_prints_what_numpy_prints() -> None:
    rng = np.random.default_rng(5)
    singles = rng.integers(0, 2**32, 4000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    values = [float(v) for v in singles if np.isfinite(v)]
    powers = [np.float32(2.0**e) for e in range(-149, 128)]
    values += [float(p) for p in powers]  # lopsided rounding intervals
    values += [float(np.nextafter(p, np.float32(0))) for p in powers]
    values += [0.001, 1e-5, 0.1, 1 / 3, -0.0, 3.4028235e38, 3.4028236e38, 1e39, -1e39, 1e-46]
    for value in values:
        assert repr(f32(value)) == repr(numpy_f32(value)), value


@pytest.mark.skipif(not TINYNET_WEIGHTS.exists(), reason="no bundled tinynet weights")
def test_a_failure_while_rendering_leaves_no_weights_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from protocaffe import api

    def broken(parts: object) -> str:
        raise RuntimeError("black failed")

    monkeypatch.setattr(api, "render_module", broken)
    with pytest.raises(RuntimeError, match="black failed"):
        api.write_conversion(TINYNET, TINYNET_WEIGHTS, tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []  # not even a temporary file


def test_a_bad_caffemodel_writes_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.caffemodel"
    bad.write_bytes(b"\x0a\x05ab")  # a net name that runs past the end of the file
    out = tmp_path / "out"
    assert main(["convert", str(TINYNET), str(bad), "-o", str(out), "-q"]) == 2
    assert not out.exists() or list(out.iterdir()) == []


def test_outputs_get_the_mode_of_a_new_file(tmp_path: Path) -> None:
    mask = os.umask(0o027)
    try:
        out = tmp_path / "out"
        assert main(["convert", str(TINYNET), "-o", str(out), "-q"]) == 0
    finally:
        os.umask(mask)
    assert (out / "model.py").stat().st_mode & 0o777 == 0o640


@pytest.mark.skipif(not hasattr(os, "copy_file_range"), reason="no copy_file_range here")
def test_a_kernel_copy_failing_midway_falls_back_to_writing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "m.caffemodel"
    big = np.arange(100_000, dtype=np.float32)
    write_caffemodel(source, "n", [("a", "Convolution", [big, np.ones(3, dtype=np.float32)])])
    blobs = read_caffemodel(source).layers[0].blobs
    arrays = {"a.weight": blobs[0], "a.bias": blobs[1]}
    real = os.copy_file_range
    calls = []

    def flaky(src: int, dst: int, count: int, offset_src: int | None = None) -> int:
        calls.append(count)
        if len(calls) > 1:  # as across file systems that do not support it
            raise OSError(18, "Invalid cross-device link")
        return real(src, dst, min(count, 1000), offset_src)

    monkeypatch.setattr(os, "copy_file_range", flaky)
    out = tmp_path / "w.safetensors"
    write_safetensors(out, arrays, locate=file_region)
    assert len(calls) == 2
    assert_loads_back(out, {k: np.array(v) for k, v in arrays.items()})


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.skipif(not TINYNET_WEIGHTS.exists(), reason="no bundled tinynet weights")
@pytest.mark.parametrize("quiet", [False, True])
def test_cli_draws_the_bar_on_a_terminal_unless_quiet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, quiet: bool
) -> None:
    from protocaffe.backend import progress

    class Eager(ProgressBar):  # as if the weights were big: draw from the first byte
        def __init__(self, label: str, stream: Any) -> None:
            super().__init__(label, stream, min_bytes=0)

    monkeypatch.setattr(progress, "ProgressBar", Eager)
    terminal = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    args = ["convert", str(TINYNET), str(TINYNET_WEIGHTS), "-o", str(tmp_path)]
    assert main([*args, "-q"] if quiet else args) == 0
    drawn = terminal.getvalue()
    if quiet:
        assert drawn == ""
    else:
        # The bar, finished on its own line, then the line that says what convert wrote.
        bar, written = drawn.removesuffix("\n").rsplit("\n", 1)
        assert bar.startswith("\rwriting model.safetensors [") and bar.endswith(" 100%  0/0 MB")
        assert written.startswith(f"{tmp_path.as_posix()}: wrote model.py, ")
