"""The compiled schema (caffe.desc) must be what caffe.proto compiles to."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

PROTO = Path(__file__).resolve().parents[1] / "src" / "protocaffe" / "proto"


def test_caffe_desc_is_current(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools")
    out = tmp_path / "caffe.desc"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{PROTO}",
            f"--descriptor_set_out={out}",
            "caffe.proto",
        ],
        check=True,
        cwd=PROTO,
    )
    fresh = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    committed = descriptor_pb2.FileDescriptorSet.FromString((PROTO / "caffe.desc").read_bytes())
    assert fresh == committed, "caffe.desc is stale: regenerate it as caffe.proto's header says"


def test_fork_pooling_dialects_are_both_in_the_schema() -> None:
    from protocaffe.proto.schema import message_class

    fields = message_class("PoolingParameter").DESCRIPTOR.fields_by_name
    assert fields["round_mode"].number == 13
    assert fields["ceil_mode"].default_value is True


def test_caffe_types_are_current() -> None:
    """The typed Protocols (what mypy checks layer code against) describe caffe.desc's fields."""
    from generate_caffe_types import TARGET, render

    assert (
        TARGET.read_text(encoding="utf-8") == render()
    ), "caffe_types.py is stale: python tests/generate_caffe_types.py"
