"""Write src/protocaffe/proto/caffe_types.py: a typing.Protocol per message of caffe.proto.

Run after editing caffe.proto (and regenerating caffe.desc): `python tests/generate_caffe_types.py`.
tests/test_schema.py checks that the committed file is what this writes.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from google.protobuf.descriptor import FieldDescriptor

TARGET = Path(__file__).resolve().parents[1] / "src" / "protocaffe" / "proto" / "caffe_types.py"

HEADER = '''"""Typed views of caffe.proto's messages, so that mypy sees every read of a layer's
parameters (`LayerSource.param` is a `LayerParameter`).

Generated from caffe.desc by tests/generate_caffe_types.py: do not edit. After editing
caffe.proto, regenerate caffe.desc (see caffe.proto's header), then this file with
`python tests/generate_caffe_types.py`; tests/test_schema.py checks that both are current.

The messages are protobuf classes made at run time (`protocaffe.proto.schema.message_class`);
these Protocols only describe their fields. Enums are ints; repeated fields are sequences.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class Message(Protocol):
    """What every message offers besides its fields."""

    def HasField(self, field_name: str) -> bool: ...
'''

_SCALARS = {
    FieldDescriptor.TYPE_DOUBLE: "float",
    FieldDescriptor.TYPE_FLOAT: "float",
    FieldDescriptor.TYPE_BOOL: "bool",
    FieldDescriptor.TYPE_STRING: "str",
    FieldDescriptor.TYPE_BYTES: "bytes",
    FieldDescriptor.TYPE_ENUM: "int",
}


def _field_type(field: Any) -> str:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        kind = field.message_type.name
    else:
        kind = _SCALARS.get(field.type, "int")  # every integer type
    # `is_repeated` in protobuf 6+, `label` before it.
    repeated = getattr(field, "is_repeated", None)
    if repeated is None:
        repeated = field.label == FieldDescriptor.LABEL_REPEATED
    return f"Sequence[{kind}]" if repeated else kind


def render() -> str:
    """The module's text, from the compiled schema protocaffe loads."""
    from protocaffe.proto.schema import message_class

    caffe_file = message_class("NetParameter").DESCRIPTOR.file
    chunks = [HEADER]
    for message in caffe_file.message_types_by_name.values():
        lines = [f"class {message.name}(Message, Protocol):"]
        lines += [f"    {field.name}: {_field_type(field)}" for field in message.fields]
        if not message.fields:
            lines.append("    pass")
        chunks.append("\n\n" + "\n".join(lines) + "\n")
    return "".join(chunks)


def main() -> int:
    TARGET.write_text(render(), encoding="utf-8")
    print(f"wrote {TARGET}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
