"""The numpy reference interpreter itself: what it may import, its errors, its registry, the
streamed forward that frees blobs, and Caffe's blob rules (in place, shared memory, weights by
layer name, shared parameters). Expected values here are derived by hand from Caffe's rules;
test_reference_oracle.py checks the same behaviours against real Caffe."""

from __future__ import annotations

import gc
import subprocess
import sys
import weakref
from pathlib import Path

import numpy as np
import pytest

from protocaffe.errors import ProtocaffeError, Reporter
from protocaffe.frontend.caffemodel import read_caffemodel
from protocaffe.frontend.caffemodel_writer import write_caffemodel
from protocaffe.frontend.prototxt import read_prototxt_text
from protocaffe.verify import reference
from protocaffe.verify.reference import ReferenceNet, register, run_all

# What the reference's files may import is a house rule: tests/test_architecture.py checks it
# (numpy, the standard library, protocaffe's errors, the schema and the frontend readers).
# Here: importing it at run time loads none of the converter.


def test_importing_the_reference_loads_no_converter() -> None:
    code = (
        "import sys, protocaffe.verify.reference as r; r.layer_types(); "
        "bad = [m for m in sys.modules if m == 'torch' or m.startswith(('protocaffe.layers', "
        "'protocaffe.passes', 'protocaffe.backend', 'protocaffe.api', 'protocaffe.ir', "
        "'protocaffe.frontend.lower', 'protocaffe.views'))]; print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_every_converted_layer_type_has_a_reference() -> None:
    from protocaffe.layers import registered_types

    # Input and the data layers that declare shapes (DummyData, MemoryData) become inputs: the
    # reference takes their tops as given, as it does for every data layer. SharedMemory is
    # protocaffe's own node (a blob re-bound to memory another blob wrote): verify takes its
    # reference from the written blob's (verify/core.py).
    declared = {"Input", "SharedMemory"} | reference.DATA_LAYERS
    missing = set(registered_types()) - set(reference.layer_types()) - declared
    assert not missing


def _net(text: str, path: str = "net.prototxt"):
    return read_prototxt_text(text, path, Reporter())


HEAD = 'name: "t"\ninput: "data"\ninput_shape { dim: 2 dim: 3 dim: 4 dim: 5 }\n'
X = np.random.default_rng(0).normal(size=(2, 3, 4, 5)).astype(np.float32)


def test_unknown_types_are_one_located_error_each() -> None:
    text = HEAD + (
        'layer { name: "a" type: "MyClip" bottom: "data" top: "a" }\n'
        'layer { name: "b" type: "ReLU" bottom: "a" top: "b" }\n'
        'layer { name: "c" type: "MyGelu" bottom: "b" top: "c" }\n'
    )
    with pytest.raises(ProtocaffeError) as caught:
        ReferenceNet(_net(text))
    lines = [str(d) for d in caught.value.diagnostics]
    assert len(lines) == 2
    assert lines[0].startswith('net.prototxt:4: layer "a" (MyClip): ')
    assert "has no implementation of layer type 'MyClip'" in lines[0]
    assert lines[1].startswith('net.prototxt:6: layer "c" (MyGelu): ')


def test_a_registered_function_runs_a_new_type() -> None:
    @register("TestClip01")
    def clip(layer, bottoms):
        return [np.clip(bottoms[0], -0.5, 0.5)]

    try:
        text = HEAD + 'layer { name: "c" type: "TestClip01" bottom: "data" top: "c" }\n'
        blobs = run_all(_net(text), None, {"data": X})
        np.testing.assert_array_equal(blobs["c"], np.clip(X, -0.5, 0.5))
        with pytest.raises(ValueError, match="already has a reference"):
            register("TestClip01")(clip)
    finally:
        reference.registry._REGISTRY.pop("TestClip01")


def _model(tmp_path: Path, layers) -> Path:
    path = tmp_path / "w.caffemodel"
    write_caffemodel(path, "t", layers)
    return path


CONV = (
    'layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" '
    "convolution_param { num_output: 2 kernel_size: 3 } }\n"
)


def test_weight_shapes_are_checked_as_caffe_checks_them(tmp_path: Path) -> None:
    good = [np.ones((2, 3, 3, 3), np.float32), np.zeros(2, np.float32)]
    wrong = [np.ones((2, 3, 5, 5), np.float32), np.zeros(2, np.float32)]
    net = _net(HEAD + CONV)
    run_all(net, read_caffemodel(_model(tmp_path, [("conv", "Convolution", good)])), {"data": X})
    with pytest.raises(ProtocaffeError) as caught:
        run_all(
            net, read_caffemodel(_model(tmp_path, [("conv", "Convolution", wrong)])), {"data": X}
        )
    assert str(caught.value) == (
        'net.prototxt:4: layer "conv" (Convolution): Caffe aborts here: cannot copy blob 0 from '
        "the caffemodel: its shape is (2, 3, 5, 5), the layer needs (2, 3, 3, 3)"
    )
    with pytest.raises(ProtocaffeError, match="incompatible number of blobs"):
        run_all(net, {"conv": good[:1]}, {"data": X})
    with pytest.raises(ProtocaffeError, match="has no layer named 'conv'"):
        run_all(net, {}, {"data": X})
    # A V1 file's legacy 4-D bias (1, 1, 1, N) fits a blob of shape (N,), as Blob::ShapeEquals.
    run_all(net, {"conv": [good[0], np.zeros((1, 1, 1, 2), np.float32)]}, {"data": X})


def test_a_weightless_layer_with_blobs_in_the_file_is_refused() -> None:
    net = _net(HEAD + 'layer { name: "r" type: "ReLU" bottom: "data" top: "r" }\n')
    with pytest.raises(ProtocaffeError, match="incompatible number of blobs"):
        run_all(net, {"r": [np.ones(3, np.float32)]}, {"data": X})


def test_weights_go_to_the_first_layer_of_a_name() -> None:
    """CopyTrainedLayersFrom looks layers up by name from the start: with two layers named
    "conv", the caffemodel's "conv" fills the first; the second has none."""
    second = CONV.replace('bottom: "data" top: "conv"', 'bottom: "conv" top: "conv2"')
    text = HEAD + CONV + second.replace("kernel_size: 3", "kernel_size: 1")
    w = {"conv": [np.ones((2, 3, 3, 3), np.float32), np.zeros(2, np.float32)]}
    with pytest.raises(ProtocaffeError) as caught:
        run_all(_net(text), w, {"data": X})
    assert "net.prototxt:5:" in str(caught.value) and "has no layer named 'conv'" in str(
        caught.value
    )


def test_shared_parameters_hold_the_value_copied_last() -> None:
    """Two InnerProducts sharing `param { name: "w" }`: Caffe makes them one blob, so the value
    the caffemodel copies last (file order) is what both use."""
    ip = (
        'layer {{ name: "{n}" type: "InnerProduct" bottom: "{b}" top: "{n}" param {{ name: "w" }} '
        "inner_product_param {{ num_output: 60 bias_term: false }} }}\n"
    )
    text = HEAD + ip.format(n="ip1", b="data") + ip.format(n="ip2", b="data")
    w1, w2 = np.full((60, 60), 0.5, np.float32), np.full((60, 60), 2.0, np.float32)
    blobs = run_all(_net(text), {"ip1": [w1], "ip2": [w2]}, {"data": X})
    expected = X.reshape(2, 60) @ w2.T
    np.testing.assert_allclose(blobs["ip1"], expected, rtol=1e-6)
    np.testing.assert_allclose(blobs["ip2"], expected, rtol=1e-6)
    # Only one of the sharers in the file: the other uses its value too.
    blobs = run_all(_net(text), {"ip2": [w1]}, {"data": X})
    np.testing.assert_allclose(blobs["ip1"], X.reshape(2, 60) @ w1.T, rtol=1e-6)


def test_in_place_on_a_shared_top_changes_the_bottom() -> None:
    """Issue 13, cause 5: Reshape shares data with its bottom, so ReLU in place on the top
    rectifies `data` too and TanH reads the rectified values. Dropout copies."""
    text = HEAD + (
        'layer { name: "r" type: "Reshape" bottom: "data" top: "flat" '
        "reshape_param { shape { dim: 0 dim: -1 } } }\n"
        'layer { name: "relu" type: "ReLU" bottom: "flat" top: "flat" }\n'
        'layer { name: "t" type: "TanH" bottom: "data" top: "t" }\n'
    )
    blobs = run_all(_net(text), None, {"data": X})
    np.testing.assert_allclose(blobs["t"], np.tanh(np.maximum(X, 0)), rtol=1e-6)
    np.testing.assert_array_equal(blobs["data"], np.maximum(X, 0))
    copied = run_all(_net(text.replace('type: "Reshape"', 'type: "Dropout"')), None, {"data": X})
    np.testing.assert_allclose(copied["t"], np.tanh(X), rtol=1e-6)
    assert reference.SHARES_MEMORY.keys() == {
        "Split",
        "Reshape",
        "Flatten",
        "Concat",
        "Slice",
        "Permute",
    }


def test_the_callers_input_is_not_changed() -> None:
    x = X.copy()
    text = HEAD + 'layer { name: "relu" type: "ReLU" bottom: "data" top: "data" }\n'
    blobs = run_all(_net(text), None, {"data": x})
    np.testing.assert_array_equal(x, X)
    np.testing.assert_array_equal(blobs["data"], np.maximum(X, 0))


def test_nets_caffe_refuses_are_refused_where_the_layer_is() -> None:
    reread = HEAD + (
        'layer { name: "t" type: "TanH" bottom: "data" top: "t" }\n'
        'layer { name: "r" type: "ReLU" bottom: "data" top: "data" }\n'
    )
    with pytest.raises(ProtocaffeError) as caught:
        ReferenceNet(_net(reread))
    assert str(caught.value).startswith('net.prototxt:5: layer "r" (ReLU): Caffe aborts here: ')
    assert "produced by multiple sources" in str(caught.value)
    with pytest.raises(ProtocaffeError, match="unknown bottom blob 'nope'"):
        ReferenceNet(_net(HEAD + 'layer { name: "t" type: "TanH" bottom: "nope" top: "t" }\n'))
    with pytest.raises(ProtocaffeError, match="AbsVal Layer does not allow in-place"):
        ReferenceNet(_net(HEAD + 'layer { name: "a" type: "AbsVal" bottom: "data" top: "data" }\n'))
    with pytest.raises(ProtocaffeError, match="takes 2 to any bottom"):
        ReferenceNet(_net(HEAD + 'layer { name: "e" type: "Eltwise" bottom: "data" top: "e" }\n'))


def test_data_layers_feed_inputs_and_losses_do_not_run() -> None:
    text = (
        'name: "t"\n'
        'layer { name: "d" type: "ImageSegData" top: "data" top: "label" }\n'
        'layer { name: "relu" type: "ReLU" bottom: "data" top: "r" }\n'
        'layer { name: "s" type: "Silence" bottom: "label" }\n'
        'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "r" bottom: "label" top: "loss" }\n'
    )
    net = ReferenceNet(_net(text))
    assert net.inputs == () and net.optional_inputs == ("data", "label")
    assert net.skipped == (0, 3)
    steps = list(net.run({"data": X}))
    assert [s.name for s in steps] == ["relu"]  # Silence of an absent blob is left out
    with pytest.raises(ProtocaffeError, match="reads blob 'data', which a data layer produces"):
        list(net.run({"label": X}))


def test_a_missing_input_is_a_located_error() -> None:
    with pytest.raises(ProtocaffeError) as caught:
        list(ReferenceNet(_net(HEAD + CONV)).run({}))
    assert str(caught.value) == "net.prototxt:2:1: the reference needs a value for input 'data'"


def test_run_streams_and_frees_what_no_later_layer_reads() -> None:
    text = HEAD + (
        'layer { name: "a" type: "TanH" bottom: "data" top: "a" }\n'
        'layer { name: "b" type: "ReLU" bottom: "a" top: "b" }\n'
        'layer { name: "c" type: "Sigmoid" bottom: "b" top: "c" }\n'
    )
    net = ReferenceNet(_net(text))
    assert net.outputs == ("c",)
    run = net.run({"data": X})
    first = next(run)
    assert first.layer_index == 0 and first.name == "a" and set(first.tops) == {"a"}
    alive = weakref.ref(first.tops["a"])
    del first
    second = next(run)
    gc.collect()
    assert alive() is None, "'a' is read by nobody after layer b: it must be dropped"
    assert set(second.tops) == {"b"}
    (third,) = list(run)
    np.testing.assert_allclose(
        third.tops["c"], 1 / (1 + np.exp(-np.maximum(np.tanh(X), 0))), rtol=1e-6
    )


def test_load_reads_files(tmp_path: Path) -> None:
    prototxt = tmp_path / "net.prototxt"
    prototxt.write_text(HEAD + CONV)
    weights = [np.ones((2, 3, 3, 3), np.float32), np.arange(2, dtype=np.float32)]
    model = _model(tmp_path, [("conv", "Convolution", weights)])
    blobs = ReferenceNet.load(prototxt, model).forward({"data": X})
    windows = np.lib.stride_tricks.sliding_window_view(X, (3, 3), axis=(2, 3)).sum(axis=(1, 4, 5))
    expected = windows[:, None] + np.arange(2, dtype=np.float32)[None, :, None, None]
    np.testing.assert_allclose(blobs["conv"], expected, rtol=1e-5)
