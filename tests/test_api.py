"""The Python API and convert's everyday options: real signatures, --class-name, the line
convert ends with, and modules from `load()` that pickle."""

from __future__ import annotations

import inspect
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import protocaffe
from protocaffe import api
from protocaffe.cli import EXIT_ERROR, EXIT_OK, main
from protocaffe.passes import OPTIMIZE_PIPELINE

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "examples" / "tinynet"
PROTOTXT, WEIGHTS = TINY / "deploy.prototxt", TINY / "tinynet.caffemodel"


def test_the_package_shows_real_signatures_and_docstrings() -> None:
    for name in ("convert", "load"):
        function = getattr(protocaffe, name)
        assert function is getattr(api, name)
        assert name in dir(protocaffe)
        parameters = inspect.signature(function).parameters
        assert list(parameters)[:2] == ["prototxt", "caffemodel"]
        assert parameters["input_shapes"].kind is inspect.Parameter.KEYWORD_ONLY
        assert parameters["optimize"].default is False
        assert parameters["class_name"].default is None
        assert "caffemodel" in (function.__doc__ or "")
    with pytest.raises(AttributeError):
        protocaffe.nothing  # noqa: B018


def test_importing_the_package_imports_nothing_else() -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import sys, protocaffe; print('protocaffe.api' in sys.modules)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == "False"


def test_optimize_is_the_optimize_pipeline() -> None:
    folded = protocaffe.convert(PROTOTXT, optimize=True).source
    assert folded == api.convert(PROTOTXT, passes=OPTIMIZE_PIPELINE).source
    assert folded != protocaffe.convert(PROTOTXT).source
    with pytest.raises(TypeError):
        protocaffe.convert(PROTOTXT, optimize=True, passes=OPTIMIZE_PIPELINE)


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    capsys.readouterr()
    status = main(list(args))
    return status, capsys.readouterr().err


def test_class_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    args = ["convert", str(PROTOTXT), "-o", "out", "--class-name", "OpenPose___BODY_25"]
    status, err = run(capsys, *args)
    assert status == EXIT_OK
    source = (tmp_path / "out" / "model.py").read_text()
    assert "\nclass OpenPose___BODY_25(nn.Module):\n" in source
    assert "-o . --class-name OpenPose___BODY_25'" in source
    assert err == "out: wrote model.py: class OpenPose___BODY_25, 2,251 parameters, no weights\n"
    assert protocaffe.convert(PROTOTXT, class_name="Tiny").class_name == "Tiny"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "Scale",  # the name of a helper class that tinynet's model.py defines
            "{prototxt}: class name 'Scale' is not an identifier or is a name model.py uses "
            "itself; choose another\n",
        ),
        (
            "torch",
            "{prototxt}: class name 'torch' is not an identifier or is a name model.py uses "
            "itself; choose another\n",
        ),
    ],
)
def test_a_class_name_model_py_uses_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, expected: str
) -> None:
    status, err = run(capsys, "convert", str(PROTOTXT), "-o", str(tmp_path), "--class-name", name)
    assert (status, err) == (EXIT_ERROR, expected.format(prototxt=PROTOTXT))
    assert not (tmp_path / "model.py").exists()


@pytest.mark.parametrize("name", ["OpenPose-BODY25", "class", "9net"])
def test_a_class_name_must_be_an_identifier(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["convert", str(PROTOTXT), "-o", str(tmp_path), "--class-name", name])
    assert exited.value.code == EXIT_ERROR
    assert f"argument --class-name: {name!r} is not a Python identifier" in capsys.readouterr().err


def test_convert_ends_with_what_it_wrote_unless_quiet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    status, err = run(capsys, "convert", str(PROTOTXT), str(WEIGHTS), "-o", "out")
    size = (tmp_path / "out" / "model.safetensors").stat().st_size
    assert (status, err) == (
        EXIT_OK,
        "out: wrote model.py, model.manifest.txt, model.safetensors: class TinyNet, 2,251 "
        f"parameters, {size:,} weight bytes\n",
    )
    assert run(capsys, "convert", str(PROTOTXT), str(WEIGHTS), "-o", "out", "-q") == (EXIT_OK, "")


def test_a_loaded_module_pickles_and_loads_in_a_fresh_process(tmp_path: Path) -> None:
    """torch.save(model) of a module from load(): its class (and the helper classes of its
    submodules) are found again in a process that never generated them."""
    torch = pytest.importorskip("torch")
    model = protocaffe.load(PROTOTXT, WEIGHTS)  # plain: nn.Module helpers (Scale) inside
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    torch.save({"model": model, "x": x, "y": model(x)}, tmp_path / "whole.pt")
    script = textwrap.dedent(f"""
        import sys, torch
        saved = torch.load({str(tmp_path / "whole.pt")!r}, weights_only=False)
        model = saved["model"]
        assert not model.training
        assert torch.equal(model(saved["x"]), saved["y"])
        print(type(model).__name__, type(model.conv1_scale).__name__)
    """)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["TinyNet", "Scale"]


def test_a_loaded_module_deep_copies() -> None:
    import copy

    torch = pytest.importorskip("torch")
    model = protocaffe.load(PROTOTXT, WEIGHTS, optimize=True)
    twin = copy.deepcopy(model)
    x = torch.rand(1, 3, 32, 32)
    assert type(twin) is type(model) and torch.equal(twin(x), model(x))
