"""`convert --check`, the weight manifest, the regenerate line in the header, pre-commit hooks."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from review_support import FIXTURES, REPO

from protocaffe.cli import EXIT_ERROR, EXIT_MISMATCH, EXIT_OK, main
from protocaffe.random_weights import random_weights

FOLD = FIXTURES / "fold.prototxt"


@pytest.fixture()
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project folder with a prototxt and weights, as the working directory."""
    (tmp_path / "caffe").mkdir()
    prototxt = tmp_path / "caffe" / "deploy.prototxt"
    prototxt.write_text(FOLD.read_text())
    random_weights(prototxt, tmp_path / "caffe" / "net.caffemodel", seed=1)
    monkeypatch.chdir(tmp_path)
    return tmp_path


ARGS = ["convert", "caffe/deploy.prototxt", "caffe/net.caffemodel", "-o", "models/net", "-q"]


def test_check_passes_on_fresh_output_and_writes_nothing(project: Path) -> None:
    assert main(ARGS) == EXIT_OK
    before = {p: p.stat().st_mtime_ns for p in (project / "models" / "net").iterdir()}
    assert main([*ARGS, "--check"]) == EXIT_OK
    after = {p: p.stat().st_mtime_ns for p in (project / "models" / "net").iterdir()}
    assert before == after
    assert sorted(p.name for p in before) == [
        "model.manifest.txt",
        "model.py",
        "model.safetensors",
    ]


def test_check_on_missing_output_fails_and_creates_nothing(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*ARGS, "--check"]) == EXIT_MISMATCH
    assert not (project / "models").exists()
    assert "+++ models/net/model.py (generated)" in capsys.readouterr().out


def test_check_prints_a_unified_diff_of_the_edit(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(ARGS) == EXIT_OK
    model = project / "models" / "net" / "model.py"
    model.write_text(
        model.read_text().replace("kernel_size=3, stride=2", "kernel_size=5, stride=2")
    )
    capsys.readouterr()
    assert main([*ARGS, "--check"]) == EXIT_MISMATCH
    out = capsys.readouterr().out
    assert out.startswith(
        "--- models/net/model.py (on disk)\n+++ models/net/model.py (generated)\n"
    )
    assert "\n-        self.conv_c = nn.Conv2d(8, 6, kernel_size=5, stride=2, groups=2)\n" in out
    assert "\n+        self.conv_c = nn.Conv2d(8, 6, kernel_size=3, stride=2, groups=2)\n" in out


def test_check_sees_changed_weights_in_binary_and_manifest(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(ARGS) == EXIT_OK
    random_weights(project / "caffe" / "deploy.prototxt", project / "caffe" / "net.caffemodel", 2)
    capsys.readouterr()
    assert main([*ARGS, "--check"]) == EXIT_MISMATCH
    out = capsys.readouterr().out
    assert "Binary files models/net/model.safetensors (on disk)" in out
    assert "--- models/net/model.manifest.txt (on disk)" in out
    assert "\n-conv_a.weight 4x3x3x3 float32 " in out


def test_check_with_bad_input_is_an_error_not_a_mismatch(project: Path) -> None:
    (project / "caffe" / "deploy.prototxt").write_text("layer { name: 'x' type: 'Nope' }\n")
    assert main([*ARGS, "--check"]) == EXIT_ERROR


def test_manifest_lists_every_tensor_with_an_independent_checksum(project: Path) -> None:
    from safetensors.torch import load_file

    assert main(ARGS) == EXIT_OK
    folder = project / "models" / "net"
    state = load_file(str(folder / "model.safetensors"))
    lines = (folder / "model.manifest.txt").read_text().splitlines()
    assert lines[0].startswith("#")
    rows = [line.split(" ") for line in lines[1:]]
    assert [r[0] for r in rows] == sorted(state)
    for key, shape, dtype, digest in rows:
        array = state[key].numpy()
        assert shape == "x".join(map(str, array.shape))
        assert dtype == "float32"
        assert digest == hashlib.sha256(array.astype("<f4").tobytes()).hexdigest()


def test_header_says_how_to_regenerate_with_paths_relative_to_the_output(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The header's command runs in the output folder, its paths relative to it: the header,
    and so --check, are the same whatever folder convert runs in and however paths are given."""
    folder = project / "models" / "net"
    options = ["--optimize", "--input-shape", "data=1,3,12,12", "-q"]
    absolute = [
        "convert",
        str(project / "caffe" / "deploy.prototxt"),
        str(project / "caffe" / "net.caffemodel"),
        "-o",
        str(folder),
        *options,
    ]
    assert main(absolute) == EXIT_OK
    header = (folder / "model.py").read_text().split('"""')[1]
    expected = (
        "protocaffe convert ../../caffe/deploy.prototxt ../../caffe/net.caffemodel -o ."
        " --input-shape data=1,3,12,12 --optimize"
    )
    assert f"Regenerate in this file's folder with:\n'{expected}'\n" in header
    assert "from '../../caffe/deploy.prototxt'." in " ".join(header.split())
    assert str(project) not in header
    written = (folder / "model.py").read_bytes()
    # The same command from the root, with relative paths: the same bytes, and --check agrees.
    assert main([*ARGS, *options]) == EXIT_OK
    assert (folder / "model.py").read_bytes() == written
    # The command it names, run where it says, reproduces the same files; so does --check
    # from any other folder.
    monkeypatch.chdir(folder)
    assert main([*expected.split()[1:], "--check"]) == EXIT_OK
    monkeypatch.chdir(project / "caffe")
    relative = ["deploy.prototxt", "net.caffemodel", "-o", "../models/net"]
    assert main(["convert", *relative, *options, "--check"]) == EXIT_OK


def test_written_weights_load_into_the_written_module(project: Path) -> None:
    import importlib.util

    from safetensors.torch import load_file

    assert main([*ARGS, "--optimize"]) == EXIT_OK
    folder = project / "models" / "net"
    spec = importlib.util.spec_from_file_location("net_model", folder / "model.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    net = module.FoldCases().eval()
    net.load_state_dict(load_file(str(folder / "model.safetensors")), strict=True)
    out = net(torch.zeros(2, 3, 12, 12))
    np.testing.assert_allclose(out.sum(dim=1).detach().numpy(), 1.0, rtol=1e-6)


def test_pt_format_loads_with_weights_only_and_matches_safetensors(project: Path) -> None:
    from safetensors.torch import load_file

    assert main(ARGS) == EXIT_OK
    folder = project / "models" / "net"
    st = load_file(str(folder / "model.safetensors"))
    assert main([*ARGS, "--format", "pt"]) == EXIT_OK
    pt = torch.load(folder / "model.pt", weights_only=True)  # no pickle of arbitrary objects
    assert sorted(pt) == sorted(st)
    for key, tensor in st.items():
        assert torch.equal(pt[key], tensor), key


def test_pt_format_is_byte_stable(project: Path) -> None:
    assert main([*ARGS, "--format", "pt"]) == EXIT_OK
    assert main([*ARGS, "--format", "pt", "--check"]) == EXIT_OK


def test_pre_commit_hooks_run_the_check() -> None:
    # A small reader for this flat list of hooks (PyYAML is not a dependency).
    hooks: list[dict[str, str]] = []
    for line in (REPO / ".pre-commit-hooks.yaml").read_text().splitlines():
        if line.startswith("- "):
            hooks.append({})
            line = "  " + line[2:]
        if line.startswith("  ") and ":" in line:
            key, _, value = line.strip().partition(":")
            hooks[-1][key] = value.strip()
    by_id = {hook["id"]: hook for hook in hooks}
    assert by_id["protocaffe-check"]["entry"] == "protocaffe convert --check"
    assert by_id["protocaffe-convert"]["entry"].startswith("protocaffe convert")
    assert by_id["protocaffe-generate-check"]["entry"] == "protocaffe generate --check"
    assert by_id["protocaffe-generate"]["entry"].startswith("protocaffe generate")
    for hook in hooks:
        assert hook["language"] == "python" and hook["pass_filenames"] == "false"


def test_no_manifest_skips_it_and_removes_a_stale_one(project: Path) -> None:
    out = project / "models" / "net"
    assert main(ARGS) == EXIT_OK
    assert (out / "model.manifest.txt").is_file()
    assert main([*ARGS, "--no-manifest"]) == EXIT_OK
    assert sorted(p.name for p in out.iterdir()) == ["model.py", "model.safetensors"]
    assert "--no-manifest" in (out / "model.py").read_text()  # the header's regenerate command
    assert main([*ARGS, "--no-manifest", "--check"]) == EXIT_OK
