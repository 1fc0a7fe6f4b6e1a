"""Generated modules are good PyTorch citizens: TorchScript, torch.export, torch.compile
(fullgraph), ONNX, any device and dtype, any batch size, and clean under black and ruff.

The fast profile checks a few nets that cover the emitters and helpers (pooling helper, Scale
with and without bias, Eltwise, Concat, Reshape/Flatten, folded layers, SSD's detections). The
corpus sweep is marked slow: PROTOCAFFE_SLOW=1 (what CI sets) runs a seeded sample of the corpus
(SWEEP_SAMPLE nets; PROTOCAFFE_SWEEP_SEED picks another sample), PROTOCAFFE_SLOW=2 every net
(`python tests/test_exportable.py [--optimize]` prints a table of every net instead).
"""

from __future__ import annotations

import copy
import importlib.util
import io
import os
import random
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
import torch.fx.experimental._config as fx_config
from review_support import FIXTURES, REPO
from shared_dir import CORPUS

from protocaffe.api import Conversion, convert
from protocaffe.errors import ProtocaffeError
from protocaffe.passes import DEFAULT_PIPELINE, OPTIMIZE_PIPELINE
from protocaffe.random_weights import random_weights

TINYNET = REPO / "examples" / "tinynet" / "deploy.prototxt"
FOLD = FIXTURES / "fold.prototxt"
BIN = Path(sys.executable).parent

# (label, prototxt, input shape overrides, optimize)
FAST_NETS: list[tuple[str, Path, dict[str, tuple[int, ...]], bool]] = [
    ("tinynet", TINYNET, {}, False),
    ("fold", FOLD, {}, False),
    ("fold-optimized", FOLD, {}, True),
    ("lenet-mnist", CORPUS / "lenet-mnist" / "deploy.prototxt", {}, False),
    ("squeezenet-v1.1", CORPUS / "squeezenet-v1.1" / "deploy.prototxt", {}, False),
    ("mobilenet-v2-optimized", CORPUS / "mobilenet-v2" / "deploy.prototxt", {}, True),
    # SSD's DetectionOutput: rows found (50, keep_top_k) and, with random weights, none at all.
    ("yufacedetectnet-v2", CORPUS / "yufacedetectnet-v2" / "deploy.prototxt", {}, False),
    ("mobilenet-ssd", CORPUS / "mobilenet-ssd" / "deploy.prototxt", {}, False),
    # --outputs: two blobs (one an in-place blob's last version), returned as a NamedTuple.
    ("tinynet-outputs", TINYNET, {}, False),
]
# The --outputs of the nets above that have them.
FAST_OUTPUTS: dict[str, list[str]] = {"tinynet-outputs": ["fc", "conv1"]}


def _generate(
    prototxt: Path,
    shapes: dict[str, tuple[int, ...]],
    optimize: bool,
    folder: Path,
    outputs: list[str] | None = None,
) -> Conversion:
    """The conversion, with fan-in scaled random weights so that values stay of order 1."""
    if not prototxt.is_file():
        pytest.skip(f"shared corpus not found ({prototxt})")
    weights = folder / "random.caffemodel"
    random_weights(prototxt, weights, seed=0, input_shapes=shapes)
    passes = OPTIMIZE_PIPELINE if optimize else DEFAULT_PIPELINE
    return convert(prototxt, weights, input_shapes=shapes, outputs=outputs, passes=passes)


def _import(conversion: Conversion, folder: Path) -> tuple[torch.nn.Module, Path]:
    """The module as a user gets it: model.py on disk, imported (TorchScript reads its source)."""
    path = folder / "model.py"
    path.write_text(conversion.source)
    name = f"generated_{abs(hash(str(path)))}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module: ModuleType = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    net: torch.nn.Module = getattr(module, conversion.class_name)()
    assert conversion.state_dict is not None
    net.load_state_dict(conversion.state_dict, strict=True)
    return net.eval(), path


def _inputs(conversion: Conversion, batch: int | None = None) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(1)
    shapes = [v.shape for v in conversion.graph.inputs]
    if batch is not None:
        shapes = [(batch, *s[1:]) for s in shapes]
    return tuple(torch.randn(*s, generator=gen) for s in shapes)


def _outputs(result: Any) -> list[torch.Tensor]:
    return list(result) if isinstance(result, (tuple, list)) else [result]


def _close(a: Any, b: Any, rtol: float = 1e-4) -> None:
    for x, y in zip(_outputs(a), _outputs(b), strict=True):
        scale = float(y.abs().max()) or 1.0
        torch.testing.assert_close(x.double(), y.double(), rtol=rtol, atol=rtol * scale)


def _agree(a: Any, b: Any, c: Conversion) -> None:
    """_close, but for nets where an argmax decides what flows on (max pooling with a mask top,
    ArgMax): there another arithmetic (float64, ONNX Runtime's kernels) picks another element
    when two are closer than float32 resolves, e.g. 0.37156683 and 0.371567 in SegNet's pool1,
    and routes that value elsewhere, which no tolerance absorbs. Such near-ties are rare: all
    but a few elements must still agree."""
    if not any(
        n.op == "ArgMax" or (n.op == "Pooling" and len(n.outputs) == 2) for n in c.graph.nodes
    ):
        _close(a, b)
        return
    for x, y in zip(_outputs(a), _outputs(b), strict=True):
        assert x.shape == y.shape
        scale = float(y.abs().max()) or 1.0
        far = ~torch.isclose(x.double(), y.double(), rtol=1e-4, atol=1e-4 * scale)
        assert far.double().mean() <= 1e-3, f"{int(far.sum())} of {far.numel()} differ"


def check_script(net: torch.nn.Module, c: Conversion, folder: Path) -> None:
    scripted = torch.jit.script(net)
    x = _inputs(c)
    with torch.no_grad():
        _close(scripted(*x), net(*x))
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer)


def check_export(net: torch.nn.Module, c: Conversion, folder: Path) -> None:
    # The batch axis is left free (Dim.AUTO): the program must then run at another batch size.
    # A sample batch of 1 would be specialised (torch.export's 0/1 rule), so trace with 2.
    x = _inputs(c, 2)
    dynamic = tuple({0: torch.export.Dim.AUTO} for _ in x)
    program = torch.export.export(net, x, dynamic_shapes=dynamic)
    other = _inputs(c, 3)
    with torch.no_grad():
        _close(program.module()(*x), net(*x))
        _close(program.module()(*other), net(*other))


def check_compile(net: torch.nn.Module, c: Conversion, folder: Path) -> None:
    # fullgraph=True fails on any graph break; the eager backend keeps the check fast (the
    # benchmark compiles with inductor).
    torch._dynamo.reset()
    compiled = torch.compile(net, fullgraph=True, backend="eager")
    x = _inputs(c)
    with torch.no_grad():
        _close(compiled(*x), net(*x))


def check_onnx(net: torch.nn.Module, c: Conversion, folder: Path) -> None:
    import onnx

    path = folder / "model.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(net, _inputs(c), dynamo=True, verbose=False)
    assert program is not None
    program.save(str(path))
    onnx.checker.check_model(str(path), full_check=True)
    graph = onnx.load(str(path)).graph
    assert len(graph.input) == len(c.graph.inputs)
    assert len(graph.output) == len(c.graph.outputs)
    # And it computes what the module does, where ONNX Runtime is installed (the test extra).
    try:
        import onnxruntime
    except ImportError:
        return
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = _inputs(c)
    feeds = {i.name: t.numpy() for i, t in zip(session.get_inputs(), x, strict=True)}
    with torch.no_grad():
        _agree([torch.from_numpy(a) for a in session.run(None, feeds)], net(*x), c)


def check_double(net: torch.nn.Module, c: Conversion, folder: Path) -> None:
    x = _inputs(c)
    with torch.no_grad():
        single = net(*x)
        net.double()
        double = net(*(t.double() for t in x))
        net.float()
    assert all(t.dtype == torch.float64 for t in _outputs(double))
    _agree(single, double, c)


def _detection_outputs(c: Conversion) -> set[int]:
    """The positions of the outputs that are SSD detections: (1, 1, rows, 7), one row
    [image, label, score, box] per detection, rows known only at run time."""
    producers = {v: n.op for n in c.graph.nodes for v in n.outputs}
    return {i for i, v in enumerate(c.graph.outputs) if producers.get(v) == "DetectionOutput"}


def check_device(net: torch.nn.Module, c: Conversion, folder: Path) -> None:
    # The meta device has no data: any tensor the module makes without following its input's
    # device (or keeps outside its buffers) fails here as it would on a GPU. A data-dependent
    # row count (detections) cannot be known there: meta's nonzero() then counts every element
    # as selected, and those outputs' row axis is left free.
    meta = copy.deepcopy(net).to("meta")
    with torch.no_grad(), fx_config.patch(meta_nonzero_assume_all_nonzero=True):
        out = meta(*(t.to("meta") for t in _inputs(c)))
    assert all(t.device.type == "meta" for t in _outputs(out))
    free = _detection_outputs(c)
    expected = [v.shape for v in c.graph.outputs]
    shapes = [tuple(t.shape) for t in _outputs(out)]
    for i in free:
        shapes[i] = shapes[i][:2] + expected[i][2:3] + shapes[i][3:]
    assert shapes == expected


def _batched_detections(singles: list[torch.Tensor]) -> torch.Tensor:
    """What a batch's detections must be, from each image's own: its rows in image order,
    numbered by image; with none in any image, Caffe's one row [image, -1, ...] per image."""
    rows = [one[0, 0][one[0, 0, :, 1] != -1] for one in singles]
    found = [torch.cat([torch.full_like(r[:, :1], i), r[:, 1:]], 1) for i, r in enumerate(rows)]
    joined = torch.cat(found)
    if joined.shape[0] == 0:
        joined = torch.full((len(singles), 7), -1.0, dtype=singles[0].dtype)
        joined[:, 0] = torch.arange(len(singles))
    return joined[None, None]


def check_batch(net: torch.nn.Module, c: Conversion, folder: Path) -> None:
    declared = c.graph.inputs[0].shape[0]
    batch = declared + 2
    x = _inputs(c, batch)
    detections = _detection_outputs(c)
    with torch.no_grad():
        whole = _outputs(net(*x))
        # Detections need every image's own (the batch is in their rows); others two.
        images = range(batch) if detections else (0, batch - 1)
        singles = {i: _outputs(net(*(t[i : i + 1] for t in x))) for i in images}
    for k, w in enumerate(whole):
        if k in detections:
            _close(w, _batched_detections([singles[i][k] for i in images]))
            continue
        if w.shape[0] != batch:
            # Not per image: SSD's priors (1, 2, N) depend on the sizes only.
            for i in images:
                _close(w, singles[i][k])
            continue
        for i in images:
            _close(w[i : i + 1], singles[i][k])


def check_style(net: torch.nn.Module, c: Conversion, folder: Path) -> None:
    path = folder / "model.py"
    for command in (
        [str(BIN / "black"), "--check", "--quiet", str(path)],
        [str(BIN / "ruff"), "check", "--isolated", "--quiet", str(path)],
    ):
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stdout + done.stderr


CHECKS: dict[str, Callable[[torch.nn.Module, Conversion, Path], None]] = {
    "script": check_script,
    "export": check_export,
    "compile": check_compile,
    "onnx": check_onnx,
    "double": check_double,
    "device": check_device,
    "batch": check_batch,
    "style": check_style,
}


_GENERATED: dict[str, tuple[torch.nn.Module, Conversion, Path]] = {}


def _fast_net(
    label: str, factory: pytest.TempPathFactory
) -> tuple[torch.nn.Module, Conversion, Path]:
    """Each fast net is converted and imported once for all its checks."""
    if label not in _GENERATED:
        _, prototxt, shapes, optimize = next(n for n in FAST_NETS if n[0] == label)
        folder = factory.mktemp(label)
        conversion = _generate(prototxt, shapes, optimize, folder, FAST_OUTPUTS.get(label))
        net, _ = _import(conversion, folder)
        _GENERATED[label] = (net, conversion, folder)
    return _GENERATED[label]


@pytest.mark.parametrize("check", list(CHECKS))
@pytest.mark.parametrize("label", [n[0] for n in FAST_NETS])
def test_exportable(check: str, label: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    net, conversion, folder = _fast_net(label, tmp_path_factory)
    CHECKS[check](net, conversion, folder)


# Corpus nets that need more than their prototxt to convert: DeepLab's data comes from a
# training-only ImageSegData layer (any size works; small keeps the sweep quick).
SWEEP_SHAPES: dict[str, dict[str, tuple[int, ...]]] = {
    "deeplab-v2-vgg16-aspp": {"data": (1, 3, 97, 81)},
}


# Every other corpus net must convert: a failure here is a regression, not a skip.
SWEEP_SKIP = {
    "faster-rcnn-vgg16-voc": "its Python proposal layer comes from a plugin (examples/plugins), "
    "whose code, not protocaffe's, decides whether it exports",
}


def _corpus_nets() -> list[Path]:
    return sorted(CORPUS.glob("*/deploy.prototxt")) if CORPUS.is_dir() else []


# The whole sweep takes ~25 minutes on 2 cores, more than CI's budget allows beside everything
# else; a seeded sample keeps CI under it and still reaches every net over different seeds.
SWEEP_SAMPLE = 4


def _sweep_nets() -> list[Path]:
    nets = _corpus_nets()
    if os.environ.get("PROTOCAFFE_SLOW", "") not in ("", "0", "1"):
        return nets
    seed = int(os.environ.get("PROTOCAFFE_SWEEP_SEED", "0"))
    return sorted(random.Random(seed).sample(nets, min(SWEEP_SAMPLE, len(nets))))


@pytest.mark.slow
@pytest.mark.skipif(
    not os.environ.get("PROTOCAFFE_SLOW"),
    reason="corpus sweep: set PROTOCAFFE_SLOW=1 (a sample) or 2 (every net)",
)
@pytest.mark.parametrize("prototxt", _sweep_nets(), ids=lambda p: p.parent.name)
@pytest.mark.parametrize("optimize", [False, True], ids=["plain", "optimized"])
def test_every_corpus_net_is_exportable(prototxt: Path, optimize: bool, tmp_path: Path) -> None:
    if prototxt.parent.name in SWEEP_SKIP:
        pytest.skip(SWEEP_SKIP[prototxt.parent.name])
    conversion = _generate(prototxt, SWEEP_SHAPES.get(prototxt.parent.name, {}), optimize, tmp_path)
    net, _ = _import(conversion, tmp_path)
    for name, check in CHECKS.items():
        try:
            check(net, conversion, tmp_path)
        except Exception as exc:  # name the failing check
            raise AssertionError(f"{name}: {exc}") from exc


def main() -> int:
    """Print one row per corpus net: which checks pass (a script view of the slow test)."""
    import tempfile

    failures = 0
    for prototxt in _corpus_nets():
        results = []
        with tempfile.TemporaryDirectory() as folder:
            try:
                shapes = SWEEP_SHAPES.get(prototxt.parent.name, {})
                conversion = _generate(prototxt, shapes, "--optimize" in sys.argv, Path(folder))
            except ProtocaffeError:
                print(f"{prototxt.parent.name:32} does not convert")
                continue
            net, _ = _import(conversion, Path(folder))
            for name, check in CHECKS.items():
                try:
                    check(net, conversion, Path(folder))
                    results.append(name)
                except Exception as exc:
                    failures += 1
                    results.append(f"{name}:FAIL({str(exc).splitlines()[0][:80]})")
        print(f"{prototxt.parent.name:32} {' '.join(results)}", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
