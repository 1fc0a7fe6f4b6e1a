"""The compiled Caffe schema (`caffe.desc`) as protobuf message classes.

The classes live in a private descriptor pool, so loading them never clashes with another copy of
caffe.proto that the host program may have registered in the default pool.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from google.protobuf import descriptor_pool, message_factory
from google.protobuf.message import Message

_DESC = Path(__file__).with_name("caffe.desc")
PACKAGE = "protocaffe.caffe"


@cache
def _pool() -> descriptor_pool.DescriptorPool:
    pool = descriptor_pool.DescriptorPool()
    for file_proto in _serialized_files(_DESC.read_bytes()):
        pool.AddSerializedFile(file_proto)
    return pool


def _serialized_files(descriptor_set: bytes) -> list[bytes]:
    """The FileDescriptorProtos of a FileDescriptorSet (`repeated file = 1`), still serialized.

    Splitting the set by hand spares importing descriptor_pb2, a sixth of protobuf's import
    time, on every run of the command line.
    """
    files = []
    pos = 0
    while pos < len(descriptor_set):
        if descriptor_set[pos] != 0x0A:  # field 1, length-delimited
            raise ValueError(f"{_DESC} is not a FileDescriptorSet (byte {pos})")
        pos += 1
        length = shift = 0
        while True:
            byte = descriptor_set[pos]
            pos += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        files.append(descriptor_set[pos : pos + length])
        pos += length
    return files


@cache
def message_class(name: str) -> type[Message]:
    """The message class for `name`, e.g. "NetParameter" or "protocaffe.caffe.NetParameter"."""
    full = name if "." in name else f"{PACKAGE}.{name}"
    return message_factory.GetMessageClass(_pool().FindMessageTypeByName(full))
