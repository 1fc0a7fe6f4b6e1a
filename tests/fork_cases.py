"""Shared tools of the issue-15 fork tests: convert a small net with seeded random weights (in a
dialect, if asked), run the generated module and the numpy reference (protocaffe.verify
.reference, transcribed from each fork's C++) on the same inputs, and compare every blob."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from forks_support import load_module, relative_error, run_capturing

from protocaffe.api import Conversion, convert
from protocaffe.errors import Reporter
from protocaffe.frontend.caffemodel import read_caffemodel
from protocaffe.frontend.prototxt import read_prototxt
from protocaffe.random_weights import random_weights
from protocaffe.verify.reference import ReferenceNet


def net_text(inputs: Mapping[str, Sequence[int]], body: str) -> str:
    header = "".join(
        f'input: "{name}"\ninput_shape {{ {" ".join(f"dim: {d}" for d in shape)} }}\n'
        for name, shape in inputs.items()
    )
    return 'name: "case"\n' + header + body


def layer(name: str, kind: str, *bottoms: str, tops: Sequence[str] = (), params: str = "") -> str:
    lines = [f'layer {{ name: "{name}" type: "{kind}"']
    lines += [f'  bottom: "{b}"' for b in bottoms]
    lines += [f'  top: "{t}"' for t in (tops or [name])]
    if params:
        lines.append(f"  {params}")
    return "\n".join(lines) + "\n}\n"


def compare_with_reference(
    tmp: Path,
    text: str,
    inputs: Mapping[str, np.ndarray],
    dialects: Sequence[str] = (),
    tolerance: float = 2e-5,
    seed: int = 0,
) -> tuple[Conversion, dict[str, np.ndarray]]:
    """Convert `text` (seeded random weights), run it and the reference on `inputs`, and assert
    that every blob the module computes equals the reference's, within `tolerance` of the
    blob's largest magnitude. Returns the conversion and the reference's blobs."""
    prototxt = tmp / "net.prototxt"
    prototxt.write_text(text)
    weights = tmp / "net.caffemodel"
    random_weights(prototxt, weights, seed=seed, dialects=dialects)
    conversion = convert(prototxt, weights, dialects=dialects)
    module = load_module(conversion)
    ordered = [inputs[v.blob] for v in conversion.graph.inputs]
    ours = run_capturing(conversion, module, ordered)
    reference = ReferenceNet(
        read_prototxt(prototxt, Reporter()), read_caffemodel(weights), dialects
    ).forward(dict(inputs))
    last = {}
    for value in sorted(ours, key=lambda v: v.version):
        last[value.blob] = ours[value]
    compared = 0
    for blob, array in last.items():
        if blob in inputs:
            continue
        expected = reference[blob]
        assert array.shape == expected.shape, (blob, array.shape, expected.shape)
        error = relative_error(array.astype(np.float64), expected.astype(np.float64))
        assert error <= tolerance, f"{blob}: relative error {error:.3g}"
        compared += 1
    assert compared, "no blob was compared"
    return conversion, reference


def run_module(conversion: Conversion, *arrays: np.ndarray) -> list[np.ndarray]:
    module = load_module(conversion)
    with torch.no_grad():
        out = module(*[torch.from_numpy(a) for a in arrays])
    return [t.numpy() for t in (out if isinstance(out, tuple) else (out,))]
