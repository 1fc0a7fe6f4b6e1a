"""Bad input through the command line: one line per diagnostic, exit status 2, no traceback,
and nothing left in the output folder.

The expected stderr is written out in full (checked by hand against the input files): these are
the messages users see, and a change to one should be a visible, reviewed diff.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from protocaffe.random_weights import random_weights as write_random_weights

SRC = Path(__file__).resolve().parents[1] / "src"

HEAD = 'name: "x"\ninput: "data"\ninput_shape { dim: 1 dim: 3 dim: 8 dim: 8 }\n'
CONV_FC = HEAD + (
    'layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"\n'
    "  convolution_param { num_output: 4 kernel_size: 3 } }\n"
    'layer { name: "fc" type: "InnerProduct" bottom: "conv" top: "fc"\n'
    "  inner_product_param { num_output: 2 } }\n"
)

# file[:line[:col] or : byte N]: [severity: ][layer "name" (Type): ]message
DIAGNOSTIC = re.compile(
    r"^[^:\s]+(?::\d+(?::\d+)?|: byte \d+)?: (?:(?:warning|note): )?"
    r'(?:layer "[^"]*"(?: \([^)]*\))?: )?\S.*$'
)


def cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    paths = [str(SRC), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths))
    return subprocess.run(
        [sys.executable, "-m", "protocaffe", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def write(folder: Path, name: str, text: str) -> str:
    (folder / name).write_text(text)
    return name


def random_weights(folder: Path, prototxt: str, output: str) -> str:
    """Weights for the setup, written in-process (the CLI's own runs are what is tested)."""
    write_random_weights(folder / prototxt, folder / output, seed=0)
    return output


def assert_fails(folder: Path, expected_stderr: str, *args: str) -> None:
    """`protocaffe *args` exits with 2, prints exactly `expected_stderr` (one diagnostic per
    line) and leaves nothing in the output folder `out`."""
    result = cli(folder, *args)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr == expected_stderr, result.stderr
    for line in result.stderr.splitlines():
        assert DIAGNOSTIC.match(line), line
    assert result.returncode == 2
    assert result.stdout == ""
    out = folder / "out"
    assert not out.exists() or not any(out.iterdir()), sorted(p.name for p in out.iterdir())


def test_syntax_error_unclosed_brace(tmp_path):
    write(
        tmp_path,
        "net.prototxt",
        HEAD
        + 'layer {\n  name: "conv" type: "Convolution" bottom: "data" top: "conv"\n'
        + "  convolution_param { num_output: 4 kernel_size: 3 }\n",
    )
    assert_fails(
        tmp_path,
        "net.prototxt:7:1: syntax error: '{' at 4:7 is never closed\n",
        "convert",
        "net.prototxt",
        "-o",
        "out",
    )


def test_syntax_error_bad_character_and_bad_value(tmp_path):
    write(
        tmp_path,
        "a.prototxt",
        HEAD + 'layer { name: "r" type: "ReLU" bottom: "data" top: "r" } @\n',
    )
    assert_fails(
        tmp_path,
        "a.prototxt:4:58: syntax error: unexpected character '@'\n",
        "convert",
        "a.prototxt",
        "-o",
        "out",
    )
    write(
        tmp_path,
        "b.prototxt",
        HEAD + 'layer { name: "c" type: "Convolution" convolution_param { num_output: four } }\n',
    )
    assert_fails(
        tmp_path,
        "b.prototxt:4:71: field 'num_output' expects an integer, got 'four'\n",
        "convert",
        "b.prototxt",
        "-o",
        "out",
    )


def test_unknown_layer_types_are_all_listed(tmp_path):
    write(
        tmp_path,
        "net.prototxt",
        HEAD
        + 'layer { name: "a" type: "Frobnicate" bottom: "data" top: "a" }\n'
        + 'layer { name: "b" type: "ReLU" bottom: "a" top: "b" }\n'
        + 'layer { name: "c" type: "DenseCRF" bottom: "b" top: "c" }\n'
        + 'layer { name: "d" type: "Python" bottom: "c" top: "d" }\n',
    )
    readme = "see 'Custom layers' in the protocaffe README to add it"
    assert_fails(
        tmp_path,
        f"net.prototxt:4: layer \"a\" (Frobnicate): unknown layer type 'Frobnicate'; {readme}\n"
        f"net.prototxt:6: layer \"c\" (DenseCRF): unknown layer type 'DenseCRF'; {readme}\n"
        f"net.prototxt:7: layer \"d\" (Python): unknown layer type 'Python' (Python layers run "
        f"arbitrary code); {readme}\n",
        "convert",
        "net.prototxt",
        "-o",
        "out",
    )


def test_missing_bottom(tmp_path):
    write(
        tmp_path,
        "net.prototxt",
        HEAD + 'layer { name: "relu" type: "ReLU" bottom: "dta" top: "r" }\n',
    )
    assert_fails(
        tmp_path,
        "net.prototxt:4: layer \"relu\" (ReLU): bottom 'dta' is not produced by any layer or "
        "input before it (did you mean 'data'?)\n",
        "convert",
        "net.prototxt",
        "-o",
        "out",
    )


def test_top_produced_twice(tmp_path):
    write(
        tmp_path,
        "net.prototxt",
        HEAD
        + 'layer { name: "a" type: "ReLU" bottom: "data" top: "out" }\n'
        + 'layer { name: "b" type: "TanH" bottom: "data" top: "out" }\n',
    )
    assert_fails(
        tmp_path,
        'net.prototxt:5: layer "b" (TanH): top \'out\' is already produced by layer "a" at '
        "net.prototxt:4; only an in-place layer (top == bottom) may write a blob again\n",
        "convert",
        "net.prototxt",
        "-o",
        "out",
    )


def test_cycle(tmp_path):
    write(
        tmp_path,
        "net.prototxt",
        HEAD
        + 'layer { name: "a" type: "Eltwise" bottom: "data" bottom: "b" top: "a" }\n'
        + 'layer { name: "b" type: "ReLU" bottom: "a" top: "b" }\n',
    )
    assert_fails(
        tmp_path,
        "net.prototxt:4: layer \"a\" (Eltwise): bottom 'b' is only produced later, by layer "
        '"b" at net.prototxt:5; layers must come in dataflow order, and a cycle cannot run\n',
        "convert",
        "net.prototxt",
        "-o",
        "out",
    )


def test_truncated_caffemodel(tmp_path):
    write(tmp_path, "net.prototxt", CONV_FC)
    random_weights(tmp_path, "net.prototxt", "full.caffemodel")
    data = (tmp_path / "full.caffemodel").read_bytes()
    (tmp_path / "cut.caffemodel").write_bytes(data[:300])
    # The file: field 1 (net name "x", 3 bytes), then layer "conv" from byte 3, whose
    # length-delimited payload (4*3*3*3 + 4 floats and the names) does not fit in 300 bytes.
    assert_fails(
        tmp_path,
        'cut.caffemodel: byte 3: layer "conv": truncated: field 100 (layer) needs 490 bytes, '
        "293 left\n",
        "convert",
        "net.prototxt",
        "cut.caffemodel",
        "-o",
        "out",
    )


def test_prototxt_given_as_caffemodel(tmp_path):
    write(tmp_path, "net.prototxt", CONV_FC)
    assert_fails(
        tmp_path,
        "net.prototxt: byte 0: not a binary caffemodel (looks like a text prototxt)\n",
        "convert",
        "net.prototxt",
        "net.prototxt",
        "-o",
        "out",
    )


def test_prototxt_errors_come_before_caffemodel_errors(tmp_path):
    """The caffemodel is read (and hashed) in another thread while the prototxt compiles; a bad
    prototxt is still what is reported, and the hashing stops without output."""
    write(tmp_path, "net.prototxt", CONV_FC)
    random_weights(tmp_path, "net.prototxt", "full.caffemodel")
    write(tmp_path, "bad.prototxt", CONV_FC.replace('bottom: "conv"', 'bottom: "nope"'))
    data = (tmp_path / "full.caffemodel").read_bytes()
    (tmp_path / "cut.caffemodel").write_bytes(data[:300])
    missing = (
        "bad.prototxt:6: layer \"fc\" (InnerProduct): bottom 'nope' is not produced by any layer "
        "or input before it\n"
    )
    for weights in ("full.caffemodel", "cut.caffemodel"):
        assert_fails(tmp_path, missing, "convert", "bad.prototxt", weights, "-o", "out")


def test_missing_caffemodel(tmp_path):
    write(tmp_path, "net.prototxt", CONV_FC)
    assert_fails(
        tmp_path,
        "nope.caffemodel: cannot read caffemodel: No such file or directory\n",
        "convert",
        "net.prototxt",
        "nope.caffemodel",
        "-o",
        "out",
    )


def test_blob_shape_mismatch_names_layer_and_both_shapes(tmp_path):
    write(tmp_path, "net.prototxt", CONV_FC)
    random_weights(tmp_path, "net.prototxt", "w.caffemodel")
    write(tmp_path, "wider.prototxt", CONV_FC.replace("num_output: 4", "num_output: 5"))
    assert_fails(
        tmp_path,
        'wider.prototxt:4: layer "conv" (Convolution): blob 0 has shape (4, 3, 3, 3) in '
        "w.caffemodel, but this layer needs (5, 3, 3, 3)\n",
        "convert",
        "wider.prototxt",
        "w.caffemodel",
        "-o",
        "out",
    )


def test_blob_count_mismatch(tmp_path):
    write(tmp_path, "net.prototxt", CONV_FC)
    random_weights(tmp_path, "net.prototxt", "w.caffemodel")
    no_bias = CONV_FC.replace("kernel_size: 3 }", "kernel_size: 3 bias_term: false }")
    write(tmp_path, "nobias.prototxt", no_bias)
    assert_fails(
        tmp_path,
        'nobias.prototxt:4: layer "conv" (Convolution): w.caffemodel has 2 blobs for this '
        "layer, but it needs 1: (4, 3, 3, 3)\n",
        "convert",
        "nobias.prototxt",
        "w.caffemodel",
        "-o",
        "out",
    )


def test_error_leaves_no_file_in_an_existing_output_folder(tmp_path):
    write(tmp_path, "net.prototxt", CONV_FC)
    random_weights(tmp_path, "net.prototxt", "w.caffemodel")
    write(tmp_path, "wider.prototxt", CONV_FC.replace("num_output: 4", "num_output: 5"))
    (tmp_path / "out").mkdir()
    result = cli(tmp_path, "convert", "wider.prototxt", "w.caffemodel", "-o", "out")
    assert result.returncode == 2
    assert list((tmp_path / "out").iterdir()) == []


TRAIN_VAL = """name: "x"
layer { name: "mnist" type: "Data" top: "data" top: "label" include { phase: TRAIN }
  data_param { source: "train_lmdb" batch_size: 64 } }
layer { name: "mnist_test" type: "Data" top: "data" top: "label" include { phase: TEST }
  data_param { source: "test_lmdb" batch_size: 100 } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
  inner_product_param { num_output: 10 } }
layer { name: "accuracy" type: "Accuracy" bottom: "ip" bottom: "label" top: "accuracy"
  include { phase: TEST } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""


def test_training_layers_need_an_input_shape(tmp_path):
    write(tmp_path, "train_val.prototxt", TRAIN_VAL)
    assert_fails(
        tmp_path,
        'train_val.prototxt:2: note: layer "mnist" (Data): not in the TEST phase; left out\n'
        'train_val.prototxt:4: note: layer "mnist_test" (Data): left out: a data layer; its tops '
        "that layers read are inputs of the module\n"
        "train_val.prototxt:6: layer \"ip\" (InnerProduct): bottom 'data' comes from "
        'training-only layer "mnist_test" (Data) at train_val.prototxt:4; give its shape with '
        "--input-shape data=N,C,H,W to make it an input\n",
        "convert",
        "train_val.prototxt",
        "-o",
        "out",
    )


def test_training_layers_are_dropped_with_a_note(tmp_path):
    write(tmp_path, "train_val.prototxt", TRAIN_VAL)
    result = cli(
        tmp_path, "convert", "train_val.prototxt", "-o", "out", "--input-shape", "data=1,1,28,28"
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == (
        'train_val.prototxt:2: note: layer "mnist" (Data): not in the TEST phase; left out\n'
        'train_val.prototxt:4: note: layer "mnist_test" (Data): left out: a data layer; its tops '
        "that layers read are inputs of the module\n"
        'train_val.prototxt:8: note: layer "accuracy" (Accuracy): left out: a metric, not part '
        "of the model\n"
        'train_val.prototxt:10: note: layer "loss" (SoftmaxWithLoss): left out: a loss; the blobs '
        "it reads are outputs of the module (--outputs chooses them): compute the loss on them in "
        "the training loop\n"
        "out: wrote model.py: class X, 7,850 parameters, no weights\n"
    )
    source = (tmp_path / "out" / "model.py").read_text()
    assert "def forward(self, data: torch.Tensor) -> torch.Tensor:" in source
    assert "return ip" in source
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["model.py"]


def test_output_that_depends_on_a_loss_is_rejected(tmp_path):
    write(
        tmp_path,
        "net.prototxt",
        HEAD
        + 'layer { name: "loss" type: "EuclideanLoss" bottom: "data" bottom: "data" top: "loss" }\n'
        + 'layer { name: "after" type: "ReLU" bottom: "loss" top: "after" }\n',
    )
    assert_fails(
        tmp_path,
        'net.prototxt:4: note: layer "loss" (EuclideanLoss): left out: a loss; the blobs it reads '
        "are outputs of the module (--outputs chooses them): compute the loss on them in the "
        "training loop\n"
        "net.prototxt:5: layer \"after\" (ReLU): bottom 'loss' is the output of training-only "
        'layer "loss" (EuclideanLoss) at net.prototxt:4, which a deploy net leaves out; remove '
        "the layers that use it\n",
        "convert",
        "net.prototxt",
        "-o",
        "out",
    )


def test_unknown_fields_warn_and_convert(tmp_path):
    write(
        tmp_path,
        "net.prototxt",
        HEAD
        + 'layer { name: "relu" type: "ReLU" bottom: "data" top: "relu"\n'
        + "  relu_param { negative_slope: 0.1 frobnicate: 3 }\n"
        + "  fancy_thing { a: 1 b { c: 2 } } }\n",
    )
    result = cli(tmp_path, "convert", "net.prototxt", "-o", "out")
    assert result.returncode == 0, result.stderr
    assert result.stderr == (
        "net.prototxt:5:36: warning: unknown field 'frobnicate' in ReLUParameter; ignored\n"
        "net.prototxt:6:3: warning: unknown field 'fancy_thing' in LayerParameter; ignored\n"
        "out: wrote model.py: class X, 0 parameters, no weights\n"
    )
    assert "F.leaky_relu(data, 0.1)" in (tmp_path / "out" / "model.py").read_text()


def test_weights_of_layers_not_in_the_prototxt_are_ignored_with_a_note(tmp_path):
    write(tmp_path, "net.prototxt", CONV_FC)
    random_weights(tmp_path, "net.prototxt", "w.caffemodel")
    write(tmp_path, "conv_only.prototxt", CONV_FC.split('layer { name: "fc"')[0])
    result = cli(tmp_path, "convert", "conv_only.prototxt", "w.caffemodel", "-o", "out")
    assert result.returncode == 0, result.stderr
    assert result.stderr == (
        'w.caffemodel: byte 497: note: layer "fc" (InnerProduct): has weights but no layer of '
        "that name in the prototxt needs them; ignored\n"
        "out: wrote model.py, model.manifest.txt, model.safetensors: class X, 112 parameters, "
        "624 weight bytes\n"
    )
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "model.manifest.txt",
        "model.py",
        "model.safetensors",
    ]


def test_random_weights_errors_leave_no_file(tmp_path):
    write(
        tmp_path,
        "net.prototxt",
        HEAD + 'layer { name: "a" type: "Nope" bottom: "data" top: "a" }\n',
    )
    result = cli(tmp_path, "random-weights", "net.prototxt", "-o", "out/w.caffemodel")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize(
    ("layer_text", "message"),
    [
        (
            'layer { name: "c" type: "Convolution" bottom: "data" top: "c"'
            " convolution_param { num_output: 0 kernel_size: 1 } }",
            "Caffe aborts here: convolution_param.num_output must be positive",
        ),
        (
            'layer { name: "c" type: "Pooling" bottom: "data" top: "c"'
            " pooling_param { kernel_size: 20 } }",
            "kernel (20, 20) is larger than the padded input 8x8",
        ),
        (
            'layer { name: "c" type: "Concat" bottom: "data" bottom: "data" top: "c"'
            " concat_param { axis: 4 } }",
            "axis 4 is out of range for a 4-D input",
        ),
    ],
    ids=["empty_output", "kernel_too_large", "axis_out_of_range"],
)
def test_layer_parameter_errors(tmp_path, layer_text, message):
    write(tmp_path, "net.prototxt", HEAD + layer_text + "\n")
    kind = re.search(r'type: "(\w+)"', layer_text)
    assert kind is not None
    assert_fails(
        tmp_path,
        f'net.prototxt:4: layer "c" ({kind.group(1)}): {message}\n',
        "convert",
        "net.prototxt",
        "-o",
        "out",
    )


def test_output_path_that_cannot_be_written(tmp_path):
    write(tmp_path, "net.prototxt", CONV_FC)
    (tmp_path / "taken").write_text("a file, not a folder")
    result = cli(tmp_path, "convert", "net.prototxt", "-o", "taken")
    assert result.returncode == 2
    assert result.stderr == "taken: cannot write: File exists\n"
    assert (tmp_path / "taken").read_text() == "a file, not a folder"


def test_weighted_layers_with_one_name_are_refused_unless_all_their_blobs_are_shared(tmp_path):
    # Caffe copies a caffemodel layer's blobs into the first layer of that name only, so a
    # second one with weights of its own would keep its filler values.
    twice = (
        'layer { name: "c" type: "Convolution" bottom: "data" top: "a"\n'
        "  convolution_param { num_output: 3 kernel_size: 1 } }\n"
        'layer { name: "c" type: "Convolution" bottom: "a" top: "b"\n'
        "  convolution_param { num_output: 3 kernel_size: 1 } }\n"
    )
    write(tmp_path, "net.prototxt", HEAD + twice)
    assert_fails(
        tmp_path,
        'net.prototxt:6: layer "c" (Convolution): layer "c" at net.prototxt:4:1 has the same name;'
        " layers with weights need unique names (the caffemodel matches weights by name)\n",
        "convert",
        "net.prototxt",
        "-o",
        "out",
    )
    # With every blob tied by `param { name }` the later layer shares the first one's memory.
    shared = twice.replace(
        "  convolution_param", '  param { name: "w" } param { name: "b" } convolution_param'
    )
    write(tmp_path, "shared.prototxt", HEAD + shared)
    result = cli(tmp_path, "convert", "shared.prototxt", "-o", "out")
    assert result.returncode == 0, result.stderr
    assert "self.c_2.weight = self.c.weight" in (tmp_path / "out" / "model.py").read_text()


def test_batchnorm_statistics_may_be_named_but_not_tied(tmp_path):
    # SRM's saliency net names every BatchNorm statistic once (param { name lr_mult: 0 }):
    # nothing is tied, so it converts. A second holder of the name would tie buffers.
    def bn(name: str, bottom: str) -> str:
        specs = "".join(f'param {{ name: "s{i}" lr_mult: 0 }} ' for i in range(3))
        return (
            f'layer {{ name: "{name}" type: "BatchNorm" bottom: "{bottom}" top: "{name}"\n'
            f"  {specs}}}\n"
        )

    write(tmp_path, "once.prototxt", HEAD + bn("a", "data"))
    result = cli(tmp_path, "convert", "once.prototxt", "-o", "converted")
    assert result.returncode == 0, result.stderr
    write(tmp_path, "twice.prototxt", HEAD + bn("a", "data") + bn("b", "a"))
    assert_fails(
        tmp_path,
        "twice.prototxt:6: layer \"b\" (BatchNorm): param 's0' ties blob 0 to an earlier "
        "layer's, and one of them is a blob the module keeps as a buffer; protocaffe ties "
        "learnable parameters only\n",
        "convert",
        "twice.prototxt",
        "-o",
        "out",
    )
