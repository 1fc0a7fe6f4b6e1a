"""Run small nets in real Caffe (the shared oracle) and in the numpy reference, and compare
every blob. Used by the reference's conformance tests (test_reference_*.py).

Real Caffe runs all cases of a module in one process (tests/oracle_forward_driver.py, under the
oracle's own Python), a forked child per case, writing the random weights it used as a
caffemodel that the reference then reads.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from protocaffe.errors import ProtocaffeError, Reporter
from protocaffe.frontend.caffemodel import read_caffemodel
from protocaffe.frontend.caffemodel_writer import write_caffemodel
from protocaffe.frontend.prototxt import read_prototxt_text
from protocaffe.verify.reference import ReferenceNet

ORACLE = Path(os.environ.get("PROTOCAFFE_CAFFE_ORACLE", "/opt/caffe-oracle"))
DRIVER = Path(__file__).with_name("oracle_forward_driver.py")


def oracle_available() -> bool:
    return (ORACLE / "venv" / "bin" / "python").exists()


def net_text(inputs: Mapping[str, tuple[int, ...]], layers: str, name: str = "t") -> str:
    head = [f'name: "{name}"']
    for blob, shape in inputs.items():
        dims = " ".join(f"dim: {d}" for d in shape)
        head.append(f'input: "{blob}"\ninput_shape {{ {dims} }}')
    return "\n".join(head) + "\n" + layers


def layer(
    name: str,
    kind: str,
    bottoms: str | Iterable[str] = (),
    tops: str | Iterable[str] | None = None,
    params: str = "",
) -> str:
    bottoms = [bottoms] if isinstance(bottoms, str) else list(bottoms)
    tops = [name] if tops is None else [tops] if isinstance(tops, str) else list(tops)
    lines = [f'layer {{ name: "{name}" type: "{kind}"']
    lines += [f'  bottom: "{b}"' for b in bottoms]
    lines += [f'  top: "{t}"' for t in tops]
    if params:
        lines.append(f"  {params}")
    return "\n".join(lines) + "\n}\n"


@dataclass
class Case:
    """One net: its text, its inputs, and how closely the reference must agree with Caffe
    (|ours - caffe| <= atol * max(1, max|caffe|) + rtol * |caffe|; exact for data movement)."""

    name: str
    text: str
    inputs: dict[str, np.ndarray]
    seed: int = 0
    bn_factor: float = 1.0
    rtol: float = 2e-5
    atol: float = 2e-6
    exact: bool = False
    # Weights to give both sides (layer name -> blobs), instead of random ones drawn by Caffe.
    blobs: dict[str, list[np.ndarray]] | None = None


class LazyBlobs(Mapping[str, np.ndarray]):
    """The blobs Caffe wrote, each read (memory-mapped) when asked for."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder
        names = json.loads((folder / "blobs.json").read_text())
        self._index = {name: i for i, name in enumerate(names)}

    def __getitem__(self, name: str) -> np.ndarray:
        return np.load(self._folder / "blobs" / f"{self._index[name]}.npy", mmap_mode="r")

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)


@dataclass
class CaffeResult:
    folder: Path
    blobs: Mapping[str, np.ndarray] | None
    error: str | None


def run_in_caffe(
    root: Path, cases: Iterable[Case], weights: Mapping[str, Path] | None = None
) -> dict[str, CaffeResult]:
    """Write each case under root and run them all in one oracle process (with the given
    caffemodel per case name, else with random weights that Caffe draws and saves)."""
    folders = {}
    for case in cases:
        folder = root / case.name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "net.prototxt").write_text(case.text)
        np.savez(folder / "inputs.npz", **case.inputs)
        spec: dict[str, object] = {"seed": case.seed, "bn_factor": case.bn_factor}
        if weights and case.name in weights:
            spec["weights"] = str(weights[case.name])
        elif case.blobs is not None:
            model = folder / "net.caffemodel"
            write_caffemodel(model, "t", [(n, "", b) for n, b in case.blobs.items()])
            spec["weights"] = str(model)
        (folder / "case.json").write_text(json.dumps(spec))
        folders[case.name] = folder
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONNOUSERSITE": "1",
        "PYTHONPATH": str(ORACLE / "install" / "python"),
        "LD_LIBRARY_PATH": str(ORACLE / "install" / "lib"),
        "GLOG_minloglevel": "2",
        "OPENBLAS_NUM_THREADS": "1",
    }
    driver = subprocess.run(
        [str(ORACLE / "venv" / "bin" / "python"), str(DRIVER), *map(str, folders.values())],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    (root / "driver.log").write_text(driver.stdout + driver.stderr)
    results = {}
    for name, folder in folders.items():
        if (folder / "error.txt").exists():
            results[name] = CaffeResult(folder, None, (folder / "error.txt").read_text())
        elif (folder / "blobs.json").exists():
            results[name] = CaffeResult(folder, LazyBlobs(folder), None)
        else:
            results[name] = CaffeResult(
                folder, None, f"the driver did not run it:\n{driver.stderr[-2000:]}"
            )
    return results


def reference_blobs(case: Case, folder: Path, model: Path | None = None) -> dict[str, np.ndarray]:
    """The reference's blobs for a case, with the weights Caffe saved (or `model`)."""
    net = read_prototxt_text(case.text, str(folder / "net.prototxt"), Reporter())
    model = model if model is not None else folder / "net.caffemodel"
    weights = read_caffemodel(model) if model.exists() else None
    return ReferenceNet(net, weights).forward(case.inputs)


def largest_error(ours: np.ndarray, theirs: np.ndarray) -> float:
    """The largest |ours - theirs| over the positions where both are finite (NaN and inf
    positions must match exactly; the caller checks that)."""
    finite = np.isfinite(theirs) & np.isfinite(ours)
    if not finite.any():
        return 0.0
    return float(np.max(np.abs(ours[finite].astype(np.float64) - theirs[finite])))


def assert_blobs_match(
    case: Case, ours: Mapping[str, np.ndarray], theirs: Mapping[str, np.ndarray]
) -> float:
    """Every blob of the prototxt agrees; returns the largest error relative to the blob's scale."""
    worst = 0.0
    missing = [n for n in ours if n not in theirs]
    assert not missing, f"blobs the reference has and Caffe has not: {missing}"
    for name, mine in ours.items():
        caffe = theirs[name]
        assert mine.shape == caffe.shape, f"{name}: shape {mine.shape}, Caffe {caffe.shape}"
        same_nan = np.array_equal(np.isnan(mine), np.isnan(caffe))
        assert same_nan, f"{name}: NaN at different places"
        inf_mine, inf_caffe = np.isinf(mine), np.isinf(caffe)
        assert np.array_equal(inf_mine, inf_caffe) and np.array_equal(
            mine[inf_mine], caffe[inf_caffe]
        ), f"{name}: infinities differ"
        if case.exact:
            np.testing.assert_array_equal(mine, caffe, err_msg=name)
            continue
        finite = np.isfinite(caffe)
        scale = max(1.0, float(np.max(np.abs(caffe[finite]), initial=0.0)))
        with np.errstate(invalid="ignore"):  # inf - inf where both are inf (checked above)
            diff = np.abs(mine.astype(np.float64) - caffe)
        bound = case.atol * scale + case.rtol * np.abs(caffe.astype(np.float64))
        bad = finite & (diff > bound)
        first = int(np.argmax(bad))
        assert not bad.any(), (
            f"{name}: {int(bad.sum())} of {mine.size} values differ; largest error "
            f"{float(diff[finite].max()):.3g} (scale {scale:.3g}); first at "
            f"{np.unravel_index(first, mine.shape)}: ours {mine.reshape(-1)[first]!r}, "
            f"Caffe {caffe.reshape(-1)[first]!r}"
        )
        worst = max(worst, largest_error(mine, caffe) / scale)
    return worst


def check_case(case: Case, result: CaffeResult) -> float:
    """The reference agrees with Caffe on the case: every blob matches, or both refuse it."""
    if result.error is not None:
        try:
            reference_blobs(case, result.folder)
        except ProtocaffeError as exc:
            assert "Caffe aborts" in str(exc) or "unknown" in str(exc).lower(), str(exc)
            return 0.0
        raise AssertionError(f"Caffe refuses the net ({result.error}), the reference runs it")
    assert result.blobs is not None
    ours = reference_blobs(case, result.folder)
    return assert_blobs_match(case, ours, result.blobs)
