"""Net states: which layers the include/exclude rules keep for a phase, a level and stages,
against real Caffe (`caffe.Net(file, phase, level=..., stages=...)`, tests/net_state_driver.py),
and `convert --level/--stage`."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
from pathlib import Path

import pytest

from protocaffe import cli
from protocaffe.api import convert
from protocaffe.errors import ProtocaffeError, Reporter
from protocaffe.frontend.prototxt import read_prototxt
from protocaffe.verify import Status, VerifyError, verify
from protocaffe.verify.pycaffe import available

ORACLE = Path(os.environ.get("PROTOCAFFE_CAFFE_ORACLE", "/opt/caffe-oracle"))
DRIVER = Path(__file__).with_name("net_state_driver.py")

# Each layer reads the input and writes a top of its own, so that any subset is a valid net.
RULES = {
    "plain": "",
    "inc_a": 'include { stage: "a" }',
    "inc_a_and_b": 'include { stage: "a" stage: "b" }',
    "inc_a_or_b": 'include { stage: "a" } include { stage: "b" }',
    "inc_not_a": 'include { not_stage: "a" }',
    "exc_b": 'exclude { stage: "b" }',
    "exc_not_b": 'exclude { not_stage: "b" }',
    "min_1": "include { min_level: 1 }",
    "max_minus_1": "include { max_level: -1 }",
    "level_1_to_2": "include { min_level: 1 max_level: 2 }",
    "train_a": 'include { phase: TRAIN stage: "a" }',
    "test_unless_a": 'exclude { phase: TEST not_stage: "a" }',
}
STATES = [
    ("TEST", 0, []),
    ("TEST", 0, ["a"]),
    ("TEST", 0, ["b"]),
    ("TEST", 0, ["a", "b"]),
    ("TEST", 1, ["a"]),
    ("TEST", 2, []),
    ("TEST", 3, ["b"]),
    ("TEST", -1, []),
    ("TRAIN", 0, ["a"]),
    ("TRAIN", 0, []),
]
# The file's own state: Caffe keeps its stages and replaces its phase and level.
FILE_STATES = {"no_state": "", "own_state": 'state { phase: TRAIN level: 7 stage: "b" }\n'}


def net_file(folder: Path, name: str, head: str, rules: dict[str, str]) -> Path:
    lines = [f'name: "{name}"', head + 'input: "data"', "input_shape { dim: 1 dim: 2 }"]
    for layer, rule in rules.items():
        lines.append(
            f'layer {{ name: "{layer}" type: "Power" bottom: "data" top: "{layer}" {rule} }}'
        )
    path = folder / f"{name}.prototxt"
    path.write_text("\n".join(lines) + "\n")
    return path


def ours(path: Path, phase: str, level: int, stages: list[str]) -> list[str] | None:
    try:
        net = read_prototxt(path, Reporter(), phase, level=level, stages=stages)
    except ProtocaffeError:
        return None
    return [layer.name for layer in net.layers]


@pytest.mark.skipif(
    not (ORACLE / "venv" / "bin" / "python").exists(), reason=f"no real-Caffe oracle at {ORACLE}"
)
def test_the_kept_layers_are_real_caffes(tmp_path: Path) -> None:
    files = [net_file(tmp_path, name, head, RULES) for name, head in FILE_STATES.items()]
    both = net_file(tmp_path, "both", "", {"both": 'include { stage: "a" } exclude { stage: "b" }'})
    cases = [[str(f), *state] for f, state in itertools.product(files, STATES)]
    cases.append([str(both), "TEST", 0, ["a"]])
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    subprocess.run(
        [str(ORACLE / "venv" / "bin" / "python"), str(DRIVER), "cases.json", "results.json"],
        cwd=tmp_path,
        env={
            "PATH": os.environ.get("PATH", ""),
            "PYTHONNOUSERSITE": "1",
            "PYTHONPATH": str(ORACLE / "install" / "python"),
            "LD_LIBRARY_PATH": str(ORACLE / "install" / "lib"),
        },
        check=True,
        timeout=600,
        capture_output=True,
    )
    results = json.loads((tmp_path / "results.json").read_text())
    kept_sets = set()
    for (path, phase, level, stages), caffe in zip(cases, results, strict=True):
        # Caffe adds its Input layer and the Split layers that share `data`.
        theirs = None if caffe is None else [n for n in caffe if n in RULES]
        assert ours(Path(path), phase, level, stages) == theirs, (Path(path).name, phase, level)
        kept_sets.add(tuple(theirs or ()))
    assert results[-1] is None  # Caffe aborts on include and exclude rules together
    assert len(kept_sets) >= 10  # the states tell the rules apart


def test_both_kinds_of_rule_are_one_located_error(tmp_path: Path) -> None:
    path = net_file(tmp_path, "both", "", {"both": 'include { stage: "a" } exclude { stage: "b" }'})
    with pytest.raises(ProtocaffeError) as caught:
        read_prototxt(path, Reporter())
    assert str(caught.value).startswith(f'{path}:4: layer "both" (Power): specify either include')


def test_convert_takes_the_state_and_records_it(tmp_path: Path) -> None:
    path = net_file(tmp_path, "staged", "", {"kept": 'include { stage: "deploy" min_level: 2 }'})
    out = tmp_path / "out"
    args = ["convert", str(path), "-o", str(out), "-q", "--level", "2", "--stage", "deploy"]
    assert cli.main(args) == 0
    source = (out / "model.py").read_text()
    assert "'kept' Power" in source
    assert "--level 2 --stage deploy" in " ".join(source.split())
    assert cli.main([*args[:-4], "--force"]) == 0  # without the state: no layer, only the input
    assert "'kept' Power" not in (out / "model.py").read_text()


# Two layers write `out`: Caffe keeps one or the other by the stage.
ALTERNATIVES = """name: "alternatives"
input: "data"
input_shape { dim: 2 dim: 3 }
layer { name: "with_x" type: "Power" bottom: "data" top: "out"
  include { stage: "x" } power_param { shift: 1 } }
layer { name: "without_x" type: "Power" bottom: "data" top: "out"
  include { not_stage: "x" } power_param { shift: -1 } }
layer { name: "final" type: "TanH" bottom: "out" top: "final" }
"""
FINAL = 'layer { name: "final" type: "TanH" bottom: "data" top: "final" }\n'


@pytest.mark.skipif(not available(), reason="no pycaffe and no Caffe oracle")
@pytest.mark.parametrize("stages", [(), ("x",)])
def test_verify_builds_caffes_net_of_the_stages(tmp_path: Path, stages: tuple[str, ...]) -> None:
    path = tmp_path / "net.prototxt"
    path.write_text(ALTERNATIVES)
    report = verify(path, reference="caffe", stages=stages)
    assert report.ok, report.table()
    assert report.provenance["net_state"] == {"phase": "TEST", "level": 0, "stages": list(stages)}
    kept = "with_x" if stages else "without_x"
    assert [row.layer for row in report.rows if row.status is Status.MATCH] == [kept, "final"]


@pytest.mark.skipif(not available(), reason="no pycaffe and no Caffe oracle")
def test_a_module_of_other_stages_fails_verify_against_caffe(tmp_path: Path) -> None:
    path = tmp_path / "net.prototxt"
    path.write_text(ALTERNATIVES)
    source = convert(path).source  # built without the stage: `out` is data - 1
    (tmp_path / "model.py").write_text(source.replace("'without_x'", "'with_x'"))
    report = verify(path, module=tmp_path / "model.py", reference="caffe", stages=("x",))
    assert not report.ok


@pytest.mark.parametrize("stages", [(), ("x",)])
def test_opencv_cannot_build_a_net_whose_state_leaves_layers_out(
    tmp_path: Path, stages: tuple[str, ...]
) -> None:
    """OpenCV imports every layer of the file, whatever its rules say."""
    pytest.importorskip("cv2")
    path = tmp_path / "net.prototxt"
    path.write_text(ALTERNATIVES)
    left_out = "with_x" if not stages else "without_x"
    with pytest.raises(VerifyError, match=f"would also build layer '{left_out}'"):
        verify(path, reference="opencv", stages=stages)
    # Without rules that leave a layer out, a stage changes nothing for OpenCV.
    path.write_text(ALTERNATIVES.split('layer { name: "with_x"')[0] + FINAL)
    assert verify(path, reference="opencv", stages=stages).ok


def test_verify_at_a_level(tmp_path: Path) -> None:
    """pycaffe takes the level; the oracle wrapper cannot (verify says so and, with `auto`,
    goes on to the next reference)."""
    path = tmp_path / "net.prototxt"
    levels = ALTERNATIVES.replace('include { stage: "x" }', "include { min_level: 1 }")
    path.write_text(levels.replace('include { not_stage: "x" }', "include { max_level: 0 }"))
    report = verify(path, reference="auto", level=1)
    assert report.ok, report.table()
    assert [row.layer for row in report.rows if row.status is Status.MATCH] == ["with_x", "final"]
    skipped = dict(report.choice.skipped) if report.choice is not None else {}
    if report.reference != "caffe" and "caffe" in skipped:
        assert "level 0" in skipped["caffe"]
