"""`verify --reference caffe`: the same checks against real Caffe (skipped without it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from protocaffe.api import convert
from protocaffe.random_weights import random_weights
from protocaffe.verify import Status, verify
from protocaffe.verify.pycaffe import available

pytestmark = pytest.mark.skipif(not available(), reason="no pycaffe and no Caffe oracle")

NET = Path(__file__).parent / "fixtures" / "mutation_net.prototxt"


def test_the_generated_module_matches_caffe_on_every_top() -> None:
    report = verify(NET, reference="caffe", seed=2)
    assert report.ok, report.table()
    assert all(row.status is Status.MATCH for row in report.rows)


def test_an_edit_is_caught_against_caffe(tmp_path: Path) -> None:
    weights = tmp_path / "w.caffemodel"
    random_weights(NET, weights, seed=2)
    source = convert(NET, weights).source.replace("[left, right]", "[right, left]")
    (tmp_path / "model.py").write_text(source)
    report = verify(NET, weights, module=tmp_path / "model.py", reference="caffe")
    first = report.first_divergent
    assert first is not None and first.layer == "concat", report.table()
    assert first.diagnosis is not None and "concat or slice order" in first.diagnosis


def test_memory_and_dummy_data_inputs_are_fed_to_caffe(tmp_path: Path) -> None:
    """Caffe cannot forward MemoryData without a Reset and fills DummyData itself: verify gives
    it Input layers in their place, so a recurrent net fed that way (deepdetect's and LRCN's
    deploy files) is checked per blob against real Caffe."""
    net = tmp_path / "net.prototxt"
    net.write_text(
        'name: "t"\n'
        'layer { name: "mem" type: "MemoryData" top: "x" top: "label"\n'
        "  memory_data_param { batch_size: 5 channels: 3 height: 4 width: 2 } }\n"
        'layer { name: "cont" type: "DummyData" top: "cont"\n'
        "  dummy_data_param { shape { dim: 5 dim: 3 } data_filler { value: 1 } } }\n"
        'layer { name: "lstm" type: "LSTM" bottom: "x" bottom: "cont" top: "h"\n'
        "  recurrent_param { num_output: 6 } }\n"
    )
    report = verify(net, reference="caffe", seed=3)
    assert report.ok, report.table()
    assert [row.layer for row in report.rows if row.status is Status.MATCH] == ["lstm"]
