"""`protocaffe generate`: one config for many nets, run in parallel, checked in one command,
with the same answer from any folder."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest
from shared_dir import CORPUS

from protocaffe import cli
from protocaffe.cli import EXIT_ERROR, EXIT_OK, main
from protocaffe.config import find_config, read_config

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "examples" / "tinynet"

# (corpus folder, weights file or None, extra options): small nets, six with their weights.
CORPUS_NETS = [
    ("lenet-mnist", "lenet_iter_10000.caffemodel", {}),
    ("cifar10-quick", "cifar10_quick_iter_5000.caffemodel", {"optimize": True}),
    ("mtcnn-pnet", "det1.caffemodel", {"input-shape": ["data=1,3,24,24"]}),
    ("mtcnn-rnet", "det2.caffemodel", {"no-manifest": True}),
    ("mtcnn-onet", "det3.caffemodel", {"format": "safetensors"}),
    ("yufacedetectnet-v2", "yufacedetectnet-open-v2.caffemodel", {}),
    ("squeezenet-v1.0", None, {}),
    ("squeezenet-v1.1", None, {"optimize": True, "class-name": "SqueezeNet11"}),
    ("mobilenet-v1", None, {"optimize": True}),
    ("shufflenet-v2-1x", None, {}),
    ("age-net", None, {"scale": 1.0, "mean": "104,117,123", "crop": True}),
]


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, str):
        return '"' + value + '"'
    return repr(value)


def net_table(options: dict[str, object]) -> str:
    lines = ["[[tool.protocaffe.nets]]"] + [f"{k} = {toml_value(v)}" for k, v in options.items()]
    return "\n".join(lines) + "\n"


def generate(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "protocaffe", "generate", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
    )


@pytest.fixture()
def corpus_project(tmp_path: Path) -> Path:
    """A project whose pyproject.toml lists the corpus nets, by paths relative to it."""
    if not CORPUS.is_dir():
        pytest.skip("the shared corpus (../shared/corpus) is not here")
    tables = []
    for name, weights, extra in CORPUS_NETS:
        folder = Path(os.path.relpath(CORPUS / name, tmp_path)).as_posix()
        options: dict[str, object] = {"prototxt": f"{folder}/deploy.prototxt"}
        if weights is not None:
            options["weights"] = f"{folder}/{weights}"
        options["out"] = f"models/{name}"
        tables.append(net_table({**options, **extra}))
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "my-nets"\n\n[tool.ruff]\nline-length = 100\n\n' + "\n".join(tables)
    )
    for deep in ("docs/deep/er", "models"):
        (tmp_path / deep).mkdir(parents=True, exist_ok=True)
    return tmp_path


def test_generate_converts_every_net_and_checks_them_from_any_folder(
    corpus_project: Path,
) -> None:
    done = generate(corpus_project)
    assert done.returncode == EXIT_OK, done.stderr
    lines = done.stderr.splitlines()
    written = [line for line in lines if ": wrote model.py" in line]
    # One summary line per net, in config order.
    assert [line.split(":")[0] for line in written] == [f"models/{n}" for n, _, _ in CORPUS_NETS]
    assert "class SqueezeNet11," in written[7]
    for name, weights, extra in CORPUS_NETS:
        found = sorted(p.name for p in (corpus_project / "models" / name).iterdir())
        expected = ["model.py"]
        if weights is not None:
            expected += ["model.safetensors"]
            expected += [] if extra.get("no-manifest") else ["model.manifest.txt"]
        assert found == sorted(expected), name
    assert (
        "def preprocess(image: numpy.ndarray)"
        in (corpus_project / "models" / "age-net" / "model.py").read_text()
    )

    fresh = generate(corpus_project, "--check")
    assert (fresh.returncode, fresh.stdout) == (EXIT_OK, "")
    summary = [line for line in fresh.stderr.splitlines() if ": note: " not in line]
    assert summary == [f"models/{n}: up to date" for n, _, _ in CORPUS_NETS]

    edited = corpus_project / "models" / "mobilenet-v1" / "model.py"
    edited.write_text(edited.read_text().replace("kernel_size=3", "kernel_size=5", 1))
    results = [
        generate(corpus_project / folder, "--check")
        for folder in (".", "docs/deep/er", "models/mobilenet-v1")
    ]
    first = results[0]
    assert first.returncode == 1
    assert first.stdout.count("\n--- ") + first.stdout.startswith("--- ") == 1
    assert first.stdout.startswith(
        "--- models/mobilenet-v1/model.py (on disk)\n+++ models/mobilenet-v1/model.py "
        "(generated)\n"
    )
    assert "models/mobilenet-v1: out of date" in first.stderr
    for other in results[1:]:
        assert (other.returncode, other.stdout, other.stderr) == (
            first.returncode,
            first.stdout,
            first.stderr,
        )


def test_config_paths_and_header_do_not_depend_on_the_working_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """generate writes what convert writes: a net can move from a hook to the config."""
    (tmp_path / "caffe").mkdir()
    for name in ("deploy.prototxt", "tinynet.caffemodel"):
        (tmp_path / "caffe" / name).write_bytes((TINY / name).read_bytes())
    (tmp_path / "protocaffe.toml").write_text(
        net_table(
            {
                "prototxt": "caffe/deploy.prototxt",
                "weights": "caffe/tinynet.caffemodel",
                "out": "models/tiny",
                "input-shape": ["data=1,3,64,64"],
            }
        )
    )
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    assert main(["generate", "-j", "1"]) == EXIT_OK
    header = (tmp_path / "models" / "tiny" / "model.py").read_text().split('"""')[1]
    assert (
        "'protocaffe convert ../../caffe/deploy.prototxt ../../caffe/tinynet.caffemodel -o . "
        "--input-shape data=1,3,64,64'" in header
    )
    monkeypatch.chdir(tmp_path)
    args = ["caffe/deploy.prototxt", "caffe/tinynet.caffemodel", "-o", "models/tiny"]
    assert main(["convert", *args, "--input-shape", "data=1,3,64,64", "--check"]) == EXIT_OK


def config_error(tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]) -> str:
    (tmp_path / "protocaffe.toml").write_text(text)
    capsys.readouterr()
    assert main(["generate", "--config", "protocaffe.toml"]) == EXIT_ERROR
    captured = capsys.readouterr()
    assert captured.out == ""
    return captured.err


GOOD = 'prototxt = "deploy.prototxt"\nout = "models/a"\n'


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            f"[[tool.protocaffe.nets]]\n{GOOD}optimise = true\n",
            "protocaffe.toml:4: net 1: unknown option 'optimise' (did you mean 'optimize'?)\n",
        ),
        (
            f"[[tool.protocaffe.nets]]\n{GOOD}\n[[tool.protocaffe.nets]]\nprototxt = 'b'\n",
            "protocaffe.toml:5: net 2: 'out' is missing\n",
        ),
        (
            f"[[tool.protocaffe.nets]]\n{GOOD}optimize = 'yes'\n",
            "protocaffe.toml:4: net 1: 'optimize': expected true or false, got 'yes'\n",
        ),
        (
            f"[[tool.protocaffe.nets]]\n{GOOD}input-shape = ['data=1,0,3']\n",
            "protocaffe.toml:4: net 1: 'input-shape': expected NAME=D1,D2,... with positive "
            "dims, got 'data=1,0,3'\n",
        ),
        (
            f"[[tool.protocaffe.nets]]\n{GOOD}format = 'onnx'\n",
            "protocaffe.toml:4: net 1: 'format': invalid choice 'onnx' (choose from "
            "'safetensors', 'pt')\n",
        ),
        (
            f"[[tool.protocaffe.nets]]\n{GOOD}check = true\n",
            "protocaffe.toml:4: net 1: 'check' is for a whole run: give it to protocaffe "
            "generate\n",
        ),
        (
            f"[[tool.protocaffe.nets]]\n{GOOD}\n[[tool.protocaffe.nets]]\n{GOOD}",
            "protocaffe.toml:5: net 2: out 'models/a' is also net 1's output folder\n",
        ),
        (
            f"[[tool.protocaffe.nets]]\n{GOOD}out = 'twice'\n",
            "protocaffe.toml:4:14: invalid TOML: Cannot overwrite a value\n",
        ),
        (
            "[tool.protocaffe]\n",
            "protocaffe.toml: no [[tool.protocaffe.nets]] tables: list the "
            "nets to convert there\n",
        ),
    ],
    ids=[
        "misspelt",
        "missing-out",
        "flag-type",
        "bad-value",
        "bad-choice",
        "run-option",
        "same-output",
        "toml",
        "empty",
    ],
)
def test_config_errors_are_one_located_line(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    text: str,
    expected: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    assert config_error(tmp_path, text, capsys) == expected


def test_new_convert_options_work_in_the_config_and_the_header(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The config's keys and the header's command are read from convert's argparse
    definition: an option another branch adds (here a made-up `--tap`) needs no change to either."""
    original = cli._convert_parser

    def with_tap() -> argparse.ArgumentParser:
        parser = original()
        parser.add_argument("--tap", action="append", default=[], metavar="BLOB")
        return parser

    monkeypatch.setattr(cli, "_convert_parser", with_tap)
    (tmp_path / "protocaffe.toml").write_text(
        net_table({"prototxt": "a.prototxt", "out": "m", "tap": ["prob", "fc"]})
    )
    config = read_config(tmp_path / "protocaffe.toml", cli._convert_parser())
    assert config.nets[0].argv == (
        "a.prototxt",
        "--output",
        "m",
        "--tap",
        "prob",
        "--tap",
        "fc",
    )
    args = cli._convert_parser().parse_args(["a.prototxt", "-o", "m", "--tap", "prob"])
    assert cli.regenerate_command(args) == "protocaffe convert ../a.prototxt -o . --tap prob"


def test_outputs_and_phase_in_the_config_and_the_header(tmp_path: Path) -> None:
    """convert's --outputs (a list, written back as one NAME[,NAME...]) and --phase."""
    (tmp_path / "protocaffe.toml").write_text(
        net_table({"prototxt": "a.prototxt", "out": "m", "outputs": "fc,prob", "phase": "TRAIN"})
    )
    config = read_config(tmp_path / "protocaffe.toml", cli._convert_parser())
    args = cli._convert_parser().parse_args(list(config.nets[0].argv))
    assert (args.outputs, args.phase) == (["fc", "prob"], "TRAIN")
    assert cli.regenerate_command(args) == (
        "protocaffe convert ../a.prototxt -o . --outputs fc,prob --phase TRAIN"
    )


def test_the_config_is_found_in_a_parent_folder(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.protocaffe]\nnets = []\n")
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "pyproject.toml").write_text('[project]\nname = "no protocaffe here"\n')
    assert find_config(tmp_path / "a" / "b") == tmp_path / "pyproject.toml"
    (tmp_path / "a" / "protocaffe.toml").write_text("")
    assert find_config(tmp_path / "a" / "b") == tmp_path / "a" / "protocaffe.toml"


def test_no_config_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    if find_config(tmp_path) is not None:
        pytest.skip("a parent folder of the temporary folder has a protocaffe config")
    assert main(["generate"]) == EXIT_ERROR
    assert capsys.readouterr().err == (
        f"{tmp_path.as_posix()}: no protocaffe.toml, or pyproject.toml with [tool.protocaffe], "
        "here or in a parent folder; give one with --config\n"
    )


def test_a_failing_net_fails_the_run_and_the_others_are_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "good.prototxt").write_bytes((TINY / "deploy.prototxt").read_bytes())
    (tmp_path / "bad.prototxt").write_text('layer { name: "x" type: "Nope" }\n')
    (tmp_path / "protocaffe.toml").write_text(
        net_table({"prototxt": "bad.prototxt", "out": "bad"})
        + net_table({"prototxt": "good.prototxt", "out": "good"})
    )
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert main(["generate"]) == EXIT_ERROR
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("bad.prototxt:1: layer \"x\" (Nope): unknown layer type 'Nope'")
    assert err[1] == "good: wrote model.py: class TinyNet, 2,251 parameters, no weights"
    assert (tmp_path / "good" / "model.py").is_file()
    assert not (tmp_path / "bad").exists()
