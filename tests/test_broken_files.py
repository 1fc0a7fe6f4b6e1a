"""Broken files: mutated prototxts and caffemodels must convert or fail with diagnostics.

Mutations (truncate, flip bytes, splice, duplicate a field or a line, claim a huge length) are
applied to the in-repo example and, when ../shared/corpus is there, to small corpus files. Most
mutants go through the in-process API, where anything but a ProtocaffeError is a bug; a sample
goes through the command line in a subprocess with a time limit and an address-space limit, which
must exit 0 (with both output files) or 2 (with diagnostic lines only, no traceback, no output).
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from shared_dir import SHARED

from protocaffe.api import Conversion, convert
from protocaffe.backend.weights import state_arrays
from protocaffe.errors import ProtocaffeError, Reporter
from protocaffe.frontend.caffemodel import read_caffemodel

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "tinynet"
PAIRS = [(EXAMPLE / "deploy.prototxt", EXAMPLE / "tinynet.caffemodel")]
# Small corpus nets with weights (the large ones would make each mutant slow).
PAIRS += [
    (model.parent / "deploy.prototxt", model)
    for model in sorted((SHARED / "corpus").glob("*/*.caffemodel"))
    if model.stat().st_size < 2_000_000 and (model.parent / "deploy.prototxt").is_file()
]
PROTOTXTS = [p for p, _ in PAIRS] + sorted(
    p for p in (SHARED / "corpus").glob("*/deploy.prototxt") if p.stat().st_size < 40_000
)[:12]

MEMORY_LIMIT = 2 << 30  # bytes of address space for the CLI (it needs about 100 MiB)
TIMEOUT = 60


def varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


@st.composite
def mutants(draw: st.DrawFn, data: bytes, binary: bool) -> bytes:
    """One to three mutations of `data`."""
    for _ in range(draw(st.integers(1, 3))):
        size = len(data)
        kind = draw(st.sampled_from(["truncate", "flip", "splice", "duplicate", "huge", "delete"]))
        at = draw(st.integers(0, max(0, size - 1)))
        if kind == "truncate":
            data = data[:at]
        elif kind == "flip":
            count = draw(st.integers(1, 8))
            out = bytearray(data)
            for _ in range(count):
                if out:
                    i = draw(st.integers(0, len(out) - 1))
                    out[i] ^= draw(st.integers(1, 255))
            data = bytes(out)
        elif kind == "splice":
            start = draw(st.integers(0, max(0, size - 1)))
            length = draw(st.integers(1, 64))
            data = data[:at] + data[start : start + length] + data[at:]
        elif kind == "duplicate":
            if binary:
                # A whole top-level field (a layer) repeated, or any span repeated.
                length = draw(st.integers(1, min(4096, max(1, size))))
            else:
                lines = data.split(b"\n")
                i = draw(st.integers(0, len(lines) - 1))
                n = draw(st.integers(1, 6))
                data = b"\n".join(lines[: i + n] + lines[i : i + n] + lines[i + n :])
                continue
            data = data[: at + length] + data[at : at + length] + data[at + length :]
        elif kind == "huge":
            if binary:
                # A length-delimited field 100 claiming 2^60 bytes (or any huge varint).
                claim = draw(st.sampled_from([1 << 60, (1 << 64) - 1, 1 << 31, 1 << 40]))
                data = data[:at] + b"\xa2\x06" + varint(claim) + data[at:]
            else:
                big = draw(st.sampled_from([b"99999999999", b"2147483647", b"-1", b"0", b"1e308"]))
                data = data[:at] + b" dim: " + big + b" " + data[at:]
        else:
            length = draw(st.integers(1, 64))
            data = data[:at] + data[at + length :]
    return data


def convert_in_process(prototxt: Path, caffemodel: Path | None) -> None:
    try:
        convert(prototxt, caffemodel)
    except ProtocaffeError as exc:
        text = str(exc)
        assert text and "Traceback" not in text
        for line in text.split("\n"):
            assert line.startswith((str(prototxt), str(caffemodel))), line


def run_cli(tmp: Path, prototxt: Path, caffemodel: Path | None) -> None:
    out = tmp / "out"
    args = [sys.executable, "-m", "protocaffe", "convert", str(prototxt)]
    args += [str(caffemodel)] if caffemodel else []

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))

    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run(
        [*args, "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        preexec_fn=limit,
        env=env,
    )
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode in (0, 2), (done.returncode, done.stderr)
    lines = done.stderr.splitlines()
    for line in lines:
        assert line.startswith((str(prototxt), str(caffemodel))), line
    if done.returncode == 2:
        assert lines, "exit 2 without a diagnostic"
        assert not out.exists() or not any(out.iterdir()), "partial output left behind"
    else:
        assert (out / "model.py").is_file()
        assert caffemodel is None or (out / "model.safetensors").is_file()
    leftovers = [p.name for p in out.iterdir() if p.name.startswith(".")] if out.exists() else []
    assert not leftovers, leftovers


SMALL = settings(max_examples=4 * settings.default.max_examples)


@SMALL
@given(data=st.data(), index=st.integers(0, len(PROTOTXTS) - 1))
def test_mutated_prototxt(tmp_path_factory: pytest.TempPathFactory, data, index: int) -> None:
    source = PROTOTXTS[index]
    mutant = data.draw(mutants(source.read_bytes(), binary=False))
    path = tmp_path_factory.mktemp("proto") / "deploy.prototxt"
    path.write_bytes(mutant)
    convert_in_process(path, None)


_CONVERTED: dict[Path, Conversion] = {}


def weights_only(prototxt: Path, caffemodel: Path) -> None:
    """The caffemodel half of `convert` (read it, map it to the state_dict), on a prototxt
    converted once: the same code path, without re-rendering model.py for every mutant."""
    if prototxt not in _CONVERTED:
        _CONVERTED[prototxt] = convert(prototxt)
    conversion = _CONVERTED[prototxt]
    try:
        model = read_caffemodel(caffemodel)
        state_arrays(conversion.graph, model, conversion.emitted.attrs, Reporter())
    except ProtocaffeError as exc:
        for line in str(exc).split("\n"):
            assert line.startswith(str(caffemodel)) or line.startswith(str(prototxt)), line


@SMALL
@given(data=st.data(), index=st.integers(0, len(PAIRS) - 1))
def test_mutated_caffemodel(tmp_path_factory: pytest.TempPathFactory, data, index: int) -> None:
    prototxt, model = PAIRS[index]
    original = model.read_bytes()
    mutant = data.draw(mutants(original, binary=True))
    path = tmp_path_factory.mktemp("model") / "weights.caffemodel"
    path.write_bytes(mutant)
    weights_only(prototxt, model)  # converts the prototxt outside the measurement
    tracemalloc.start()
    try:
        weights_only(prototxt, path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Memory in proportion to the files: the weights once or twice, plus bookkeeping.
    assert peak < 4 * len(original) + (16 << 20), f"peak {peak} bytes for {len(mutant)} bytes"


@settings(max_examples=max(3, settings.default.max_examples // 5))
@given(data=st.data(), index=st.integers(0, len(PAIRS) - 1), which=st.sampled_from(["p", "m"]))
def test_mutated_files_through_the_cli(
    tmp_path_factory: pytest.TempPathFactory, data, index: int, which: str
) -> None:
    prototxt, model = PAIRS[index]
    tmp = tmp_path_factory.mktemp("cli")
    if which == "p":
        mutant = data.draw(mutants(prototxt.read_bytes(), binary=False))
        prototxt = tmp / "deploy.prototxt"
        prototxt.write_bytes(mutant)
    else:
        mutant = data.draw(mutants(model.read_bytes(), binary=True))
        model = tmp / "weights.caffemodel"
        model.write_bytes(mutant)
    run_cli(tmp, prototxt, model)


@pytest.mark.parametrize("claim", [1 << 60, (1 << 64) - 1, 1 << 40])
def test_huge_length_prefix_is_cheap(tmp_path: Path, claim: int) -> None:
    """A layer claiming 2^60 bytes must not be allocated: the CLI under a 2 GiB address-space
    limit reports it."""
    original = PAIRS[0][1].read_bytes()
    path = tmp_path / "huge.caffemodel"
    path.write_bytes(b"\xa2\x06" + varint(claim) + original)
    run_cli(tmp_path, PAIRS[0][0], path)
