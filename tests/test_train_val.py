"""train_val prototxts and the training-side details of a conversion that need no reference:
which data-layer tops become inputs and with which shapes, the notes for what is left out, the
phases, legacy multipliers, and the generated lines for lr_mult 0 and parameter groups.

(What the module computes in training is compared with real Caffe in test_training_caffe.py,
test_solver_caffe.py and test_finetune_caffe.py.)
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from protocaffe.api import convert, module_from_source
from protocaffe.errors import ProtocaffeError, Reporter
from protocaffe.passes import OPTIMIZE_PIPELINE

FIXTURES = Path(__file__).with_name("fixtures") / "training"
LENET = FIXTURES / "lenet_train_test.prototxt"
RESNET = FIXTURES / "resnet_block_train_val.prototxt"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "net.prototxt"
    path.write_text(text)
    return path


def notes(reporter: Reporter) -> list[str]:
    return [str(d) for d in reporter.diagnostics]


def test_lenet_train_test_converts_with_a_note_per_left_out_layer() -> None:
    reporter = Reporter()
    conversion = convert(
        LENET, input_shapes={"data": (16, 1, 28, 28)}, outputs=["ip2"], reporter=reporter
    )
    assert [v.blob for v in conversion.graph.inputs] == ["data"]  # the label is read by no one
    assert [n.name for n in conversion.graph.nodes] == [
        "conv1",
        "pool1",
        "conv2",
        "pool2",
        "ip1",
        "relu1",
        "ip2",
    ]
    lines = notes(reporter)
    where = f"{LENET}"
    assert lines == [
        f'{where}:5: note: layer "mnist" (Data): not in the TEST phase; left out',
        f'{where}:14: note: layer "mnist" (Data): left out: a data layer; its tops that layers '
        "read are inputs of the module",
        f'{where}:99: note: layer "accuracy" (Accuracy): left out: a metric, not part of the model',
        f'{where}:107: note: layer "loss" (SoftmaxWithLoss): left out: a loss; the blobs it reads '
        "are outputs of the module (--outputs chooses them): compute the loss on them in the "
        "training loop",
        # The TEST data layer's transform_param (scale: 0.00390625, line 20) as preprocess().
        f'{where}:20: note: layer "mnist" (Data): transform_param becomes model.py\'s '
        "preprocess() (scale 0.00390625)",
    ]


def test_a_data_layer_without_shape_fields_needs_an_input_shape() -> None:
    with pytest.raises(ProtocaffeError, match="give its shape with --input-shape data=N,C,H,W"):
        convert(LENET)


def test_the_loss_inputs_become_the_outputs() -> None:
    """Without --outputs, what the loss read has no reader left: Caffe's rule makes it an
    output (the label, an input, is not one)."""
    conversion = convert(RESNET)
    assert [v.blob for v in conversion.graph.outputs] == ["fc"]
    assert [(v.blob, v.shape) for v in conversion.graph.inputs] == [("data", (8, 3, 12, 12))]


def test_memory_data_and_dummy_data_give_their_shapes(tmp_path: Path) -> None:
    net = write(
        tmp_path,
        'layer { name: "d" type: "DummyData" top: "a" top: "b"\n'
        "  dummy_data_param { shape { dim: 2 dim: 3 } shape { dim: 2 dim: 5 } } }\n"
        'layer { name: "m" type: "MemoryData" top: "img" top: "label"\n'
        "  memory_data_param { batch_size: 2 channels: 1 height: 4 width: 6 } }\n"
        'layer { name: "legacy" type: "DummyData" top: "c"\n'
        "  dummy_data_param { num: 2 channels: 7 height: 1 width: 1 } }\n"
        'layer { name: "cat" type: "Concat" bottom: "a" bottom: "b" top: "ab" }\n'
        'layer { name: "f" type: "Flatten" bottom: "img" top: "flat" }\n'
        'layer { name: "g" type: "Flatten" bottom: "c" top: "cc" }\n'
        'layer { name: "all" type: "Concat" bottom: "ab" bottom: "flat" bottom: "cc"\n'
        '  top: "out" }\n',
    )
    conversion = convert(net)
    shapes = {v.blob: v.shape for v in conversion.graph.inputs}
    assert shapes == {"a": (2, 3), "b": (2, 5), "img": (2, 1, 4, 6), "c": (2, 7, 1, 1)}
    # An --input-shape still overrides the layer's own, and keeps a top nobody reads.
    overridden = convert(net, input_shapes={"img": (2, 2, 2, 6), "label": (2,)})
    shapes = {v.blob: v.shape for v in overridden.graph.inputs}
    assert shapes["img"] == (2, 2, 2, 6) and shapes["label"] == (2,)


def test_dummy_data_refuses_what_caffe_refuses(tmp_path: Path) -> None:
    net = write(
        tmp_path,
        'layer { name: "d" type: "DummyData" top: "a" top: "b" top: "c"\n'
        "  dummy_data_param { shape { dim: 1 } shape { dim: 2 } } }\n"
        'layer { name: "r" type: "ReLU" bottom: "a" top: "r" }\n',
    )
    with pytest.raises(ProtocaffeError, match=r"Caffe aborts here: Must specify 'shape' once"):
        convert(net)


TWO_PHASES = """name: "phases"
input: "data"
input_shape { dim: 1 dim: 4 }
layer { name: "train_only" type: "ReLU" bottom: "data" top: "x" include { phase: TRAIN } }
layer { name: "test_only" type: "TanH" bottom: "data" top: "x" include { phase: TEST } }
layer { name: "scale" type: "Power" bottom: "x" top: "y" power_param { scale: 2 } }
"""


def test_phases_select_the_layers(tmp_path: Path) -> None:
    net = write(tmp_path, TWO_PHASES)
    test = convert(net)
    train = convert(net, phase="TRAIN")
    assert [n.name for n in test.graph.nodes] == ["test_only", "scale"]
    assert [n.name for n in train.graph.nodes] == ["train_only", "scale"]
    assert any("not in the TRAIN phase; left out" in d.message for d in train.diagnostics)


def test_phase_goes_into_the_regenerate_command(tmp_path: Path) -> None:
    from protocaffe.cli import main

    net = write(tmp_path, TWO_PHASES)
    assert main(["convert", str(net), "-o", str(tmp_path / "out"), "--phase", "TRAIN", "-q"]) == 0
    assert "--phase TRAIN'" in (tmp_path / "out" / "model.py").read_text()


LEGACY = """name: "legacy"
input: "data"
input_dim: 1
input_dim: 2
input_dim: 5
input_dim: 5
layers { name: "conv" type: CONVOLUTION bottom: "data" top: "conv"
  blobs_lr: 1 blobs_lr: 2 weight_decay: 1 weight_decay: 0
  convolution_param { num_output: 3 kernel_size: 3 } }
layers { name: "frozen" type: INNER_PRODUCT bottom: "conv" top: "ip"
  blobs_lr: 0 blobs_lr: 0 inner_product_param { num_output: 2 } }
"""


def test_v1_blobs_lr_and_weight_decay_are_param_specs(tmp_path: Path) -> None:
    """UpgradeV1LayerParameter: blobs_lr and weight_decay become lr_mult and decay_mult."""
    conversion = convert(write(tmp_path, LEGACY))
    model = module_from_source(conversion.source, conversion.class_name)
    groups = [(g["lr_mult"], g["decay_mult"], len(g["params"])) for g in model.caffe_param_groups()]
    assert groups == [(1.0, 1.0, 1), (2.0, 0.0, 1)]
    assert "self.frozen.requires_grad_(False)  # lr_mult 0" in conversion.source
    assert not any(p.requires_grad for p in model.frozen.parameters())


def test_lr_mult_zero_on_some_blobs_only(tmp_path: Path) -> None:
    text = LEGACY.replace("blobs_lr: 0 blobs_lr: 0", "blobs_lr: 1 blobs_lr: 0")
    conversion = convert(write(tmp_path, text))
    assert "self.frozen.bias.requires_grad_(False)  # lr_mult 0" in conversion.source
    model = module_from_source(conversion.source, conversion.class_name)
    assert model.frozen.weight.requires_grad and not model.frozen.bias.requires_grad


def test_batchnorm_statistics_never_train(tmp_path: Path) -> None:
    """BVLC refuses lr_mult on BatchNorm's statistics; older Caffe decayed them. The module
    keeps them as buffers and says so when a spec asks otherwise."""
    net = write(
        tmp_path,
        'input: "data"\ninput_shape { dim: 2 dim: 3 dim: 4 dim: 4 }\n'
        'layer { name: "bn" type: "BatchNorm" bottom: "data" top: "bn" param { lr_mult: 1 } }\n',
    )
    conversion = convert(net)
    model = module_from_source(conversion.source, conversion.class_name)
    assert list(model.parameters()) == [] and model.caffe_param_groups() == []
    assert sorted(dict(model.named_buffers())) == ["bn.factor", "bn.running_mean", "bn.running_var"]
    assert any("blob 0 is not trained here" in d.message for d in conversion.diagnostics)


def test_a_statistic_cannot_be_shared(tmp_path: Path) -> None:
    net = write(
        tmp_path,
        'input: "data"\ninput_shape { dim: 2 dim: 3 dim: 4 dim: 4 }\n'
        'layer { name: "bn" type: "BatchNorm" bottom: "data" top: "bn" param { name: "m" } }\n'
        'layer { name: "bn2" type: "BatchNorm" bottom: "bn" top: "bn2" param { name: "m" } }\n',
    )
    with pytest.raises(ProtocaffeError, match="protocaffe ties learnable parameters only"):
        convert(net)


def test_permissive_sharing_of_another_shape_is_refused(tmp_path: Path) -> None:
    """Caffe's PERMISSIVE mode compares counts only: (3, 6) and (2, 9) may share there; one
    parameter has one shape, so protocaffe refuses it in one located line."""
    net = write(
        tmp_path,
        'input: "data"\ninput_shape { dim: 1 dim: 6 }\n'
        'layer { name: "a" type: "InnerProduct" bottom: "data" top: "a" param { name: "w" }\n'
        "  inner_product_param { num_output: 3 bias_term: false } }\n"
        'layer { name: "cat" type: "Concat" bottom: "a" bottom: "a" bottom: "a" top: "cat" }\n'
        'layer { name: "b" type: "InnerProduct" bottom: "cat" top: "b"\n'
        '  param { name: "w" share_mode: PERMISSIVE }\n'
        "  inner_product_param { num_output: 2 bias_term: false } }\n",
    )
    with pytest.raises(ProtocaffeError, match="protocaffe ties parameters of one shape only"):
        convert(net)
    # STRICT (the default): Caffe's own shape check.
    net.write_text(net.read_text().replace(" share_mode: PERMISSIVE", ""))
    with pytest.raises(ProtocaffeError, match="Caffe aborts here: Cannot share param 'w'"):
        convert(net)


def test_dropout_is_a_module_and_optimize_drops_it(tmp_path: Path) -> None:
    net = write(
        tmp_path,
        'input: "data"\ninput_shape { dim: 4 dim: 100 }\n'
        'layer { name: "drop" type: "Dropout" bottom: "data" top: "data"\n'
        "  dropout_param { dropout_ratio: 0.25 } }\n"
        'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"\n'
        "  inner_product_param { num_output: 3 } }\n",
    )
    conversion = convert(net)
    assert "self.drop = nn.Dropout(p=0.25)" in conversion.source
    assert "drop = self.drop(data)  # 'drop' Dropout" in conversion.source
    model = module_from_source(conversion.source, conversion.class_name)
    x = torch.ones(4, 100)
    torch.testing.assert_close(model.drop.eval()(x), x)
    kept = model.drop.train()(x)
    assert torch.all((kept == 0) | torch.isclose(kept, torch.tensor(1 / 0.75)))
    assert "Dropout" not in convert(net, passes=OPTIMIZE_PIPELINE).source


def test_optimize_groups_follow_the_absorbing_layer(tmp_path: Path) -> None:
    """--optimize folds BatchNorm + Scale into the convolution: its parameters keep the
    convolution's multipliers (the folded bias, new, Caffe's default 1)."""
    conversion = convert(RESNET, passes=OPTIMIZE_PIPELINE)
    model = module_from_source(conversion.source, conversion.class_name)
    groups = model.caffe_param_groups()
    params = [p for g in groups for p in g["params"]]
    assert len(params) == len({id(p) for p in params}) == len(list(model.parameters()))
