"""The flat-message JSON fast path agrees with ``json_format`` on every input it accepts."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from google.protobuf.message import Message
from hypothesis import given, settings
from hypothesis import strategies as st

from examples.streams.v1.streams_pb2 import Dog, GetDogRequest, TextStreamRequest
from rpckit.jsonfast import from_flat_dict, to_flat_dict, to_flat_json


def _flat_type() -> type[Message]:
    """A message with every scalar kind the fast path takes, and two it must refuse."""
    file = descriptor_pb2.FileDescriptorProto(name="jsonfast_test.proto", package="jsonfast")
    file.syntax = "proto3"
    message = file.message_type.add(name="Flat")
    kinds = [
        ("text", descriptor_pb2.FieldDescriptorProto.TYPE_STRING),
        ("flag", descriptor_pb2.FieldDescriptorProto.TYPE_BOOL),
        ("small", descriptor_pb2.FieldDescriptorProto.TYPE_INT32),
        ("count", descriptor_pb2.FieldDescriptorProto.TYPE_UINT32),
        ("zig_zag", descriptor_pb2.FieldDescriptorProto.TYPE_SINT32),
        ("ratio", descriptor_pb2.FieldDescriptorProto.TYPE_DOUBLE),
    ]
    for number, (name, kind) in enumerate(kinds, start=1):
        message.field.add(
            name=name,
            number=number,
            type=kind,
            label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
        )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    found: type[Message] = message_factory.GetMessageClass(
        pool.FindMessageTypeByName("jsonfast.Flat")
    )
    return found


FLAT = _flat_type()
#: FLAT is built at run time: its fields are known to no stub, so it is constructed through
#: a callable taking any keywords (the type checker never guesses the constructor of Message).
new_flat: Callable[..., Message] = FLAT
TYPES = [FLAT, Dog, GetDogRequest, TextStreamRequest]
KEYS = ["text", "flag", "small", "count", "zigZag", "zig_zag", "ratio", "name", "age", "index",
        "start", "intervalMs", "other"]  # fmt: skip
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.lists(st.integers(), max_size=2),
)


def _slow(tree: Any, message_type: type[Message]) -> Message | None:
    message = message_type()
    try:
        json_format.ParseDict(tree, message, ignore_unknown_fields=True)
    except Exception:
        return None
    return message


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(TYPES), st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=5))
def test_decoding_agrees_or_falls_back(message_type: type[Message], tree: dict[str, Any]) -> None:
    fast = from_flat_dict(tree, message_type)
    if fast is not None:
        assert fast == _slow(tree, message_type)


@settings(max_examples=300, deadline=None)
@given(
    st.text(max_size=8),
    st.booleans(),
    st.integers(-(2**31), 2**31 - 1),
    st.integers(0, 2**32 - 1),
    st.floats(),
)
def test_encoding_agrees_or_falls_back(
    text: str, flag: bool, small: int, count: int, ratio: float
) -> None:
    try:
        message = new_flat(
            text=text, flag=flag, small=small, count=count, zig_zag=small, ratio=ratio
        )
    except ValueError:
        return  # a string protobuf refuses (lone surrogates)
    fast = to_flat_dict(message)
    if fast is not None:
        assert fast == json_format.MessageToDict(message)
    text_form = to_flat_json(message)
    assert (text_form is None) == (fast is None)
    if text_form is not None:  # byte for byte what the encoder would write from the dict
        assert text_form == json.dumps(fast, separators=(",", ":"), ensure_ascii=False)
        assert json.loads(text_form) == json_format.MessageToDict(message)


def test_flat_types_take_the_fast_path_and_others_do_not() -> None:
    assert to_flat_dict(Dog(name="Rex", age=3)) == {"name": "Rex", "age": 3}
    assert from_flat_dict({"name": "Rex", "age": 3}, Dog) == Dog(name="Rex", age=3)
    assert from_flat_dict({"name": "Rex", "age": "3"}, Dog) is None  # a string for a number
    assert from_flat_dict({"name": "Rex", "age": -1}, Dog) is None  # out of range for uint32
    assert from_flat_dict({"name": "Rex", "owner": "x"}, Dog) is None  # unknown: the slow path
    assert to_flat_dict(TextStreamRequest(start=1)) is None  # proto3 optional: a oneof
    assert to_flat_dict(new_flat(ratio=float("nan"))) is None
    assert to_flat_json(Dog(name='R"e\\x\n', age=3)) == '{"name":"R\\"e\\\\x\\n","age":3}'
    assert to_flat_json(TextStreamRequest(start=1)) is None
    assert to_flat_json(new_flat(ratio=float("inf"))) is None
