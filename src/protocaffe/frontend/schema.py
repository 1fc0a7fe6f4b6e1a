"""The compiled Caffe schema (`caffe.desc`) as protobuf message classes.

The classes live in a private descriptor pool, so loading them never clashes with another copy of
caffe.proto that the host program may have registered in the default pool.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message

_DESC = Path(__file__).with_name("caffe.desc")
PACKAGE = "protocaffe.caffe"


@cache
def _pool() -> descriptor_pool.DescriptorPool:
    files = descriptor_pb2.FileDescriptorSet.FromString(_DESC.read_bytes())
    pool = descriptor_pool.DescriptorPool()
    for file_proto in files.file:
        pool.Add(file_proto)
    return pool


@cache
def message_class(name: str) -> type[Message]:
    """The message class for `name`, e.g. "NetParameter" or "protocaffe.caffe.NetParameter"."""
    full = name if "." in name else f"{PACKAGE}.{name}"
    return message_factory.GetMessageClass(_pool().FindMessageTypeByName(full))
