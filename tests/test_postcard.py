"""rpckit.postcard: the spec's published examples byte for byte, round trips of every field
shape (hypothesis), agreement with an independent Postcard implementation (pohlednice) in
both directions, the refusals, and a decoder that only ever fails cleanly on random bytes."""

from __future__ import annotations

import math
import struct
from typing import Any

import pytest
from google.protobuf import (
    any_pb2,
    descriptor_pb2,
    descriptor_pool,
    message_factory,
    struct_pb2,
    timestamp_pb2,
    wrappers_pb2,
)
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from examples.streams.v1.streams_pb2 import Dog
from rpckit import postcard
from rpckit.encodings import encodings
from rpckit.errors import Code, RpcError
from rpckit.nesting import MAX_DEPTH

# --- a schema with every shape, built in a private pool (no protoc needed) -------------------

_F = descriptor_pb2.FieldDescriptorProto
_OPT, _REP, _REQ = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED, _F.LABEL_REQUIRED
PKG = "rpckit_tests.postcard"
SCALARS = [
    ("a", _F.TYPE_INT32), ("b", _F.TYPE_SINT32), ("c", _F.TYPE_SFIXED32),
    ("d", _F.TYPE_INT64), ("e", _F.TYPE_SINT64), ("f", _F.TYPE_SFIXED64),
    ("g", _F.TYPE_UINT32), ("h", _F.TYPE_FIXED32), ("i", _F.TYPE_UINT64),
    ("j", _F.TYPE_FIXED64), ("k", _F.TYPE_BOOL), ("l", _F.TYPE_FLOAT),
    ("m", _F.TYPE_DOUBLE), ("n", _F.TYPE_STRING), ("o", _F.TYPE_BYTES),
]  # fmt: skip


def _field(
    message: descriptor_pb2.DescriptorProto,
    name: str,
    number: int,
    kind: int,
    *,
    label: int = _OPT,
    type_name: str | None = None,
    oneof: int | None = None,
    proto3_optional: bool = False,
) -> None:
    field = message.field.add(name=name, number=number, type=kind, label=label)
    if type_name is not None:
        field.type_name = f".{PKG}.{type_name}"
    if oneof is not None:
        field.oneof_index = oneof
    if proto3_optional:
        field.proto3_optional = True


def _map(
    message: descriptor_pb2.DescriptorProto,
    name: str,
    number: int,
    key: int,
    value: int,
    value_type: str | None = None,
) -> None:
    entry_name = "".join(p.title() for p in name.split("_")) + "Entry"
    entry = message.nested_type.add(name=entry_name)
    entry.options.map_entry = True
    _field(entry, "key", 1, key)
    _field(entry, "value", 2, value, type_name=value_type)
    _field(
        message, name, number, _F.TYPE_MESSAGE, label=_REP, type_name=f"{message.name}.{entry_name}"
    )


def _build_pool() -> descriptor_pool.DescriptorPool:
    pool = descriptor_pool.DescriptorPool()
    for module in (any_pb2, struct_pb2):
        dependency = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(dependency)
        pool.Add(dependency)
    file = descriptor_pb2.FileDescriptorProto(
        name="rpckit_tests/postcard.proto",
        package=PKG,
        syntax="proto3",
        dependency=["google/protobuf/any.proto", "google/protobuf/struct.proto"],
    )
    color = file.enum_type.add(name="Color")
    for name, number in (("COLOR_UNSPECIFIED", 0), ("RED", 1), ("MINUS_THREE", -3)):
        color.value.add(name=name, number=number)
    inner = file.message_type.add(name="Inner")
    _field(inner, "label", 1, _F.TYPE_STRING)
    _field(inner, "n", 2, _F.TYPE_SINT32)
    scalars = file.message_type.add(name="Scalars")
    for number, (name, kind) in enumerate(SCALARS, 1):
        _field(scalars, name, number, kind)
    _field(scalars, "p", 16, _F.TYPE_ENUM, type_name="Color")
    every = file.message_type.add(name="Everything")
    every.oneof_decl.add(name="choice")  # synthetic oneofs come after the real ones
    every.oneof_decl.add(name="_maybe")
    every.oneof_decl.add(name="_note")
    _field(every, "plain", 1, _F.TYPE_INT32)
    _field(every, "maybe", 2, _F.TYPE_UINT64, oneof=1, proto3_optional=True)
    _field(every, "many", 3, _F.TYPE_SINT64, label=_REP)
    _map(every, "counts", 4, _F.TYPE_STRING, _F.TYPE_INT32)
    _field(every, "inner", 5, _F.TYPE_MESSAGE, type_name="Inner")
    _field(every, "inners", 6, _F.TYPE_MESSAGE, label=_REP, type_name="Inner")
    _field(every, "text", 7, _F.TYPE_STRING, oneof=0)
    _field(every, "nested", 8, _F.TYPE_MESSAGE, type_name="Inner", oneof=0)
    _field(every, "hue", 9, _F.TYPE_ENUM, type_name="Color", oneof=0)
    _map(every, "by_id", 10, _F.TYPE_INT64, _F.TYPE_MESSAGE, "Inner")
    _field(every, "color", 11, _F.TYPE_ENUM, type_name="Color")
    _field(every, "colors", 12, _F.TYPE_ENUM, label=_REP, type_name="Color")
    _field(every, "note", 13, _F.TYPE_STRING, oneof=2, proto3_optional=True)
    _map(every, "flags", 15, _F.TYPE_BOOL, _F.TYPE_BYTES)
    tree = file.message_type.add(name="Tree")
    _field(tree, "name", 1, _F.TYPE_STRING)
    _field(tree, "kids", 2, _F.TYPE_MESSAGE, label=_REP, type_name="Tree")
    _field(tree, "next", 3, _F.TYPE_MESSAGE, type_name="Tree")
    file.message_type.add(name="Empty")
    empties = file.message_type.add(name="Empties")
    _field(empties, "items", 1, _F.TYPE_MESSAGE, label=_REP, type_name="Empty")
    holds_any = file.message_type.add(name="HoldsAny")
    _field(holds_any, "name", 1, _F.TYPE_STRING)
    holds_any.field.add(
        name="any", number=2, type=_F.TYPE_MESSAGE, label=_OPT, type_name=".google.protobuf.Any"
    )
    # reaches Struct only through a recursive type
    loop = file.message_type.add(name="Loop")
    _field(loop, "again", 1, _F.TYPE_MESSAGE, type_name="Loop")
    _field(loop, "via", 2, _F.TYPE_MESSAGE, type_name="Via")
    via = file.message_type.add(name="Via")
    _field(via, "back", 1, _F.TYPE_MESSAGE, type_name="Loop")
    via.field.add(
        name="data", number=2, type=_F.TYPE_MESSAGE, label=_OPT,
        type_name=".google.protobuf.Struct",
    )  # fmt: skip
    pool.Add(file)
    proto2 = descriptor_pb2.FileDescriptorProto(
        name="rpckit_tests/postcard2.proto", package=PKG, syntax="proto2"
    )
    closed = proto2.enum_type.add(name="Closed")
    closed.value.add(name="ONE", number=1)
    closed.value.add(name="TWO", number=2)
    legacy = proto2.message_type.add(name="Legacy")
    _field(legacy, "kind", 1, _F.TYPE_ENUM, type_name="Closed")
    _field(legacy, "id", 2, _F.TYPE_INT32, label=_REQ)
    _field(legacy, "count", 3, _F.TYPE_UINT32)
    pool.Add(proto2)
    return pool


POOL = _build_pool()


def _type(name: str) -> Any:  # dynamic classes: their fields are unknown to mypy
    return message_factory.GetMessageClass(POOL.FindMessageTypeByName(f"{PKG}.{name}"))


Inner, Scalars, Everything, Tree = (
    _type("Inner"),
    _type("Scalars"),
    _type("Everything"),
    _type("Tree"),
)
Empty, Empties, HoldsAny, Loop, Legacy = (
    _type("Empty"), _type("Empties"), _type("HoldsAny"), _type("Loop"), _type("Legacy")
)  # fmt: skip


def _invalid(data: bytes, message_type: type[Message]) -> str:
    with pytest.raises(RpcError) as caught:
        postcard.decode(data, message_type)
    assert caught.value.code is Code.INVALID_ARGUMENT
    assert caught.value.message.startswith("invalid postcard: ")
    assert "\n" not in caught.value.message
    return caught.value.message


# --- the spec's published examples -----------------------------------------------------------

# postcard wire format, "Unsigned Integer Encoding" (u16 table; the same varints for u32)
UNSIGNED = [
    (0, b"\x00"), (127, b"\x7f"), (128, b"\x80\x01"), (16383, b"\xff\x7f"),
    (16384, b"\x80\x80\x01"), (16385, b"\x81\x80\x01"), (65535, b"\xff\xff\x03"),
]  # fmt: skip
# "Signed Integer Encoding" (i16 table; zigzag then varint)
SIGNED = [
    (0, b"\x00"), (-1, b"\x01"), (1, b"\x02"), (63, b"\x7e"), (-64, b"\x7f"), (64, b"\x80\x01"),
    (-65, b"\x81\x01"), (32767, b"\xfe\xff\x03"), (-32768, b"\xff\xff\x03"),
]  # fmt: skip


@pytest.mark.parametrize(("value", "wire"), UNSIGNED)
def test_spec_unsigned_varints(value: int, wire: bytes) -> None:
    kind: Any
    for kind in (wrappers_pb2.UInt32Value, wrappers_pb2.UInt64Value):
        assert postcard.encode(kind(value=value)) == wire
        assert postcard.decode(wire, kind).value == value


@pytest.mark.parametrize(("value", "wire"), SIGNED)
def test_spec_signed_varints(value: int, wire: bytes) -> None:
    kind: Any
    for kind in (wrappers_pb2.Int32Value, wrappers_pb2.Int64Value):
        assert postcard.encode(kind(value=value)) == wire
        assert postcard.decode(wire, kind).value == value


def test_spec_floats() -> None:
    # "-32.005859375f32 ... encoded as [0x00, 0x06, 0x00, 0xc2]", and the f64 example
    assert postcard.encode(wrappers_pb2.FloatValue(value=-32.005859375)) == b"\x00\x06\x00\xc2"
    f64 = b"\x00\x00\x00\x00\xc0\x00\x40\xc0"
    assert postcard.encode(wrappers_pb2.DoubleValue(value=-32.005859375)) == f64
    assert postcard.decode(f64, wrappers_pb2.DoubleValue).value == -32.005859375


def test_spec_canonicalization_table() -> None:
    # u16 examples of the "Canonicalization" table, applied to u32's 5-byte maximum:
    # excess bytes within the maximum length are accepted, past it refused
    assert postcard.decode(b"\x80\x00", wrappers_pb2.UInt32Value).value == 0
    assert postcard.decode(b"\x80\x80\x80\x80\x00", wrappers_pb2.UInt32Value).value == 0
    assert "longer than the 5 bytes" in _invalid(
        b"\x80\x80\x80\x80\x80\x00", wrappers_pb2.UInt32Value
    )
    assert postcard.decode(b"\xff\xff\xff\xff\x0f", wrappers_pb2.UInt32Value).value == 0xFFFFFFFF
    assert "too large for u32" in _invalid(b"\xff\xff\xff\xff\x1f", wrappers_pb2.UInt32Value)
    assert "too large for i32" in _invalid(b"\xff\xff\xff\xff\x1f", wrappers_pb2.Int32Value)
    top = b"\xff" * 9 + b"\x01"
    assert postcard.decode(top, wrappers_pb2.UInt64Value).value == 2**64 - 1
    assert postcard.decode(top, wrappers_pb2.Int64Value).value == -(2**63)
    assert "too large for u64" in _invalid(b"\xff" * 9 + b"\x02", wrappers_pb2.UInt64Value)
    assert "longer than the 10 bytes" in _invalid(b"\x80" * 10 + b"\x00", wrappers_pb2.UInt64Value)


def test_struct_option_seq_map_oneof_by_hand() -> None:
    """Every shape once, the expected bytes written out from the spec."""
    message = Everything(
        plain=-2, maybe=300, many=[1, -1], counts={"b": 2, "a": 1},
        inner=Inner(label="x", n=-1), inners=[Inner(), Inner(n=1)], nested=Inner(label="y"),
        by_id={-1: Inner(n=2)}, color=-3, colors=[1, 0], note="é", flags={True: b"\x00"},
    )  # fmt: skip
    expected = b"".join([
        b"\x03",  # plain: i32 -2 zigzag
        b"\x01\xac\x02",  # maybe: Some(u64 300)
        b"\x02\x02\x01",  # many: seq of 2, i64 1 and -1
        b"\x02\x01a\x02\x01b\x04",  # counts: map of 2 in key order, "a"->1, "b"->2
        b"\x01\x01x\x01",  # inner: Some(struct {label: "x", n: -1})
        b"\x02\x00\x00\x00\x02",  # inners: seq of 2 structs (no Option per element)
        b"\x01\x01\x01y\x00",  # choice: Some(variant 1 = nested, struct {label: "y", n: 0})
        b"\x01\x01\x00\x04",  # by_id: map of 1, i64 -1 -> struct {label: "", n: 2}
        b"\x05",  # color: i32 -3
        b"\x02\x02\x00",  # colors: seq of 2, i32 1 and 0
        b"\x01\x02\xc3\xa9",  # note: Some("é"), 2 UTF-8 bytes
        b"\x01\x01\x01\x00",  # flags: map of 1, true -> bytes [0x00]
    ])  # fmt: skip
    assert postcard.encode(message) == expected
    assert postcard.decode(expected, Everything) == message
    # no member of the oneof, optionals unset, empty collections
    assert postcard.encode(Everything()) == b"\x00" * 12


# --- round trips of every shape ----------------------------------------------------------------

I32 = st.integers(-(2**31), 2**31 - 1)
I64 = st.integers(-(2**63), 2**63 - 1)
U32 = st.integers(0, 2**32 - 1)
U64 = st.integers(0, 2**64 - 1)
F32 = st.floats(width=32, allow_nan=False)
F64 = st.floats(allow_nan=False)
TEXT = st.text(max_size=20)
BLOB = st.binary(max_size=20)
COLOR = st.sampled_from([0, 1, -3]) | I32  # open enum: unknown numbers too
_SCALAR_VALUES = {
    "a": I32, "b": I32, "c": I32, "d": I64, "e": I64, "f": I64, "g": U32, "h": U32, "i": U64,
    "j": U64, "k": st.booleans(), "l": F32, "m": F64, "n": TEXT, "o": BLOB, "p": COLOR,
}  # fmt: skip


@settings(max_examples=300)
@given(st.fixed_dictionaries(_SCALAR_VALUES))
def test_round_trip_every_scalar(values: dict[str, Any]) -> None:
    message = Scalars(**values)
    data = postcard.encode(message)
    assert postcard.decode(data, Scalars) == message


INNER = st.builds(lambda label, n: {"label": label, "n": n}, TEXT, I32)
CHOICE = st.one_of(
    st.none(),
    st.tuples(st.just("text"), TEXT),
    st.tuples(st.just("nested"), INNER),
    st.tuples(st.just("hue"), COLOR),
)
EVERYTHING = st.fixed_dictionaries(
    {
        "plain": I32,
        "maybe": st.none() | U64,
        "many": st.lists(I64, max_size=5),
        "counts": st.dictionaries(TEXT, I32, max_size=4),
        "inner": st.none() | INNER,
        "inners": st.lists(INNER, max_size=3),
        "choice": CHOICE,
        "by_id": st.dictionaries(I64, INNER, max_size=3),
        "color": COLOR,
        "colors": st.lists(COLOR, max_size=4),
        "note": st.none() | TEXT,
        "flags": st.dictionaries(st.booleans(), BLOB, max_size=2),
    }
)


def everything(values: dict[str, Any]) -> Any:
    """The Everything message of a generated value tree."""
    message = Everything(
        plain=values["plain"], many=values["many"], counts=values["counts"],
        inners=[Inner(**i) for i in values["inners"]], color=values["color"],
        colors=values["colors"], flags=values["flags"],
    )  # fmt: skip
    for key, inner in values["by_id"].items():
        message.by_id[key].CopyFrom(Inner(**inner))
    for name in ("maybe", "note"):
        if values[name] is not None:
            setattr(message, name, values[name])
    if values["inner"] is not None:
        message.inner.CopyFrom(Inner(**values["inner"]))
    if values["choice"] is not None:
        member, value = values["choice"]
        if member == "nested":
            message.nested.CopyFrom(Inner(**value))
        else:
            setattr(message, member, value)
    return message


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(EVERYTHING)
def test_round_trip_optional_repeated_map_enum_nested_oneof(values: dict[str, Any]) -> None:
    message = everything(values)
    data = postcard.encode(message)
    decoded = postcard.decode(data, Everything)
    assert decoded == message
    assert decoded.WhichOneof("choice") == message.WhichOneof("choice")
    assert decoded.HasField("maybe") == message.HasField("maybe")
    assert decoded.HasField("inner") == message.HasField("inner")
    assert postcard.encode(decoded) == data  # deterministic: maps in key order


def test_nan_and_signed_zero_keep_their_bits() -> None:
    for value in (math.nan, -0.0, math.inf, -math.inf):
        data = postcard.encode(wrappers_pb2.DoubleValue(value=value))
        assert data == struct.pack("<d", value)
        back = postcard.decode(data, wrappers_pb2.DoubleValue).value
        assert struct.pack("<d", back) == data


def test_field_declaration_order_not_number_order() -> None:
    pool = descriptor_pool.DescriptorPool()
    file = descriptor_pb2.FileDescriptorProto(name="order.proto", package="order", syntax="proto3")
    message = file.message_type.add(name="Swapped")
    message.field.add(name="second", number=2, type=_F.TYPE_UINT32, label=_OPT)
    message.field.add(name="first", number=1, type=_F.TYPE_UINT32, label=_OPT)
    pool.Add(file)
    swapped = message_factory.GetMessageClass(pool.FindMessageTypeByName("order.Swapped"))
    assert postcard.encode(swapped(first=1, second=2)) == b"\x02\x01"


def test_well_known_types_are_plain_structs() -> None:
    stamp = timestamp_pb2.Timestamp(seconds=-1, nanos=5)
    assert postcard.encode(stamp) == b"\x01\x0a"
    assert postcard.decode(b"\x01\x0a", timestamp_pb2.Timestamp) == stamp


def test_proto2_required_plain_optional_option_and_closed_enum() -> None:
    legacy = Legacy(id=-1)
    assert postcard.encode(legacy) == b"\x00\x01\x00"  # kind None, id -1, count None
    assert postcard.decode(b"\x01\x04\x01\x01\x05", Legacy) == Legacy(kind=2, id=-1, count=5)
    assert "kind" in _invalid(b"\x01\x06\x00\x00", Legacy)  # 3: not a Closed number
    open_enum = postcard.decode(b"\x00" * 8 + b"\x0d" + b"\x00" * 3, Everything)
    assert open_enum.color == -7  # open enums keep unknown numbers


def test_the_encoding_is_registered() -> None:
    encoding = encodings.get("postcard")
    assert encoding is not None
    assert (encoding.content_type, encoding.stream_content_type) == (
        "application/postcard",
        "application/stream+postcard",
    )
    assert encodings.by_content_type("application/postcard; x=1") is encoding
    dog = Dog(name="Rex", age=300)
    assert encoding.encode(dog) == b"\x03Rex\xac\x02"
    assert encoding.decode(b"\x03Rex\xac\x02", Dog) == dog


# --- refusals ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message_type", "needle"),
    [
        (any_pb2.Any, "google.protobuf.Any"),
        (struct_pb2.Struct, "google.protobuf.Struct"),
        (struct_pb2.Value, "self-describing"),
        (struct_pb2.ListValue, "self-describing"),
    ],
)
def test_self_describing_types_are_refused(message_type: type[Message], needle: str) -> None:
    assert not postcard.supports(message_type)
    with pytest.raises(postcard.UnsupportedSchema, match=needle):
        postcard.check_schema(message_type)
    with pytest.raises(RpcError) as caught:
        postcard.encode(message_type())
    assert caught.value.code is Code.INTERNAL
    assert needle in caught.value.message
    assert needle in _invalid(b"", message_type)


def test_a_type_that_reaches_any_is_refused_even_when_unset() -> None:
    assert not postcard.supports(HoldsAny)
    with pytest.raises(RpcError, match=r"HoldsAny\.any: .*google\.protobuf\.Any"):
        postcard.encode(HoldsAny(name="x"))
    # through a cycle: Loop -> Via -> Struct, and Via -> Loop
    assert not postcard.supports(Loop)
    assert not postcard.supports(_type("Via"))
    assert "Struct" in _invalid(b"\x00\x00", Loop)
    assert postcard.supports(Tree)
    assert postcard.supports(Everything)


def test_unknown_fields_are_refused_on_encode() -> None:
    dog = Dog.FromString(Dog(name="Rex").SerializeToString() + b"\x18\x05")  # field 3, unknown
    with pytest.raises(RpcError, match="unknown fields") as caught:
        postcard.encode(dog)
    assert caught.value.code is Code.INTERNAL


def _chain(depth: int) -> Any:
    root = node = Tree(name="0")
    for level in range(1, depth):
        node = node.next
        node.name = str(level)
    return root


def test_depth_limit_both_ways() -> None:
    ok = _chain(MAX_DEPTH)
    assert postcard.decode(postcard.encode(ok), Tree) == ok
    with pytest.raises(RpcError, match="deeper than 100") as caught:
        postcard.encode(_chain(MAX_DEPTH + 1))
    assert caught.value.code is Code.INTERNAL
    deep = b"\x00\x00\x01" * (MAX_DEPTH + 5) + b"\x00\x00\x00"  # name "", no kids, Some(next)
    assert "deeper than 100" in _invalid(deep, Tree)
    assert "deeper than 100" in _invalid(b"\x00\x01" * 100_000, Tree)  # kids[0] each level


# --- malformed input: clean errors only ------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message_type", "needle"),
    [
        (b"", Dog, "ends early"),
        (b"\x05Rex", Dog, "ends early"),
        (b"\x03Rex", Dog, "ends early"),
        (b"\x03Rex\x80", Dog, "ends early"),
        (b"\x03Rex\x01\x00", Dog, "1 bytes after"),
        (b"\x02\xc3\x28\x00", Dog, "not UTF-8"),
        (b"\x02\xed\xa0\x00", Dog, "not UTF-8"),  # a UTF-16 surrogate
        (b"\x00\xff\xff\xff\xff\x10", Dog, "too large for u32"),
        (b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", Dog, "ends early"),  # a huge length
        (b"\x00" * 10 + b"\x02", Scalars, "bool byte is 2"),
        (b"\x00\x02" + b"\x00" * 10, Everything, "option byte is 2"),
        (b"\x00\x00\x00\x00\x00\x00\x01\x03", Everything, "3 members, not index 3"),
        (b"\x00\x00\x00\x02\x01a\x00\x01a\x02", Everything, "key 'a' twice"),
        (b"\x00\x00\xff\xff\xff\x0f", Everything, "ends early"),  # a seq count past the input
        (b"\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01", Empties, "longer than the 10"),
    ],
)
def test_malformed_input(data: bytes, message_type: type[Message], needle: str) -> None:
    assert needle in _invalid(data, message_type)


def test_zero_sized_items_are_bounded() -> None:
    many = postcard.decode(b"\x80\x80\x04", Empties)  # 65536 empty messages, 3 bytes
    assert len(many.items) == postcard.MAX_EMPTY_ITEMS
    assert "empty items" in _invalid(b"\x81\x80\x04", Empties)
    assert "empty items" in _invalid(b"\xff" * 9 + b"\x01", Empties)


def _outcome(data: bytes, message_type: Any) -> Any:
    """The decoded message, or the RpcError decoding raised (anything else propagates)."""
    try:
        return postcard.decode(data, message_type)
    except RpcError as error:
        return error


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=64), st.sampled_from([Dog, Scalars, Everything, Tree, Empties, Legacy]))
def test_random_bytes_fail_cleanly(data: bytes, message_type: type[Message]) -> None:
    message = _outcome(data, message_type)
    if isinstance(message, RpcError):
        assert message.code is Code.INVALID_ARGUMENT
        assert message.message.startswith("invalid postcard: ")
    else:  # what decodes re-encodes to bytes that decode to the same message
        assert postcard.decode(postcard.encode(message), message_type) == message


@settings(max_examples=300, deadline=None)
@given(EVERYTHING, st.data())
def test_damaged_encodings_fail_cleanly(values: dict[str, Any], data: st.DataObject) -> None:
    wire = bytearray(postcard.encode(everything(values)))
    cut = data.draw(st.integers(0, len(wire) - 1))
    truncated = _outcome(bytes(wire[:cut]), Everything)  # every proper prefix is truncated
    assert isinstance(truncated, RpcError)
    assert truncated.code is Code.INVALID_ARGUMENT
    wire[cut] ^= data.draw(st.integers(1, 255))
    damaged = _outcome(bytes(wire), Everything)
    assert not isinstance(damaged, RpcError) or damaged.code is Code.INVALID_ARGUMENT


# --- against an independent implementation: pohlednice ---------------------------------------
#
# pohlednice (PyPI, MIT) writes and reads Postcard from Python type declarations. Its schema
# for the messages above is declared here by hand, the way a Rust author would transcribe
# them; bytes are compared both ways. Its float readers consume the whole rest of the input,
# so floats are only written with it (and read back with it only as the last field), and its
# i8 is not two's complement (protobuf has no i8). It declares Python >= 3.12 but runs on
# 3.11; where it is not installed these tests are skipped.

pc: Any = pytest.importorskip("pohlednice")


def _pc_struct(name: str, fields: dict[str, Any]) -> Any:
    return type(name, (pc.Struct,), {"__annotations__": fields})


PC_INNER = _pc_struct("Inner", {"label": pc.String, "n": pc.I32})
PC_SCALARS = _pc_struct(
    "Scalars",
    {
        "a": pc.I32, "b": pc.I32, "c": pc.I32, "d": pc.I64, "e": pc.I64, "f": pc.I64,
        "g": pc.U32, "h": pc.U32, "i": pc.U64, "j": pc.U64, "k": pc.Bool, "l": pc.F32,
        "m": pc.F64, "n": pc.String, "o": pc.ByteArray, "p": pc.I32,
    },
)  # fmt: skip
PC_CHOICE = type("Choice", (pc.Enum,), {"__annotations__": {
    "text": pc.String, "nested": PC_INNER, "hue": pc.I32,
}})  # fmt: skip
PC_EVERYTHING = _pc_struct(
    "Everything",
    {
        "plain": pc.I32, "maybe": pc.Option[pc.U64], "many": pc.List[pc.I64],
        "counts": pc.Dict[pc.String, pc.I32], "inner": pc.Option[PC_INNER],
        "inners": pc.List[PC_INNER], "choice": pc.Option[PC_CHOICE],
        "by_id": pc.Dict[pc.I64, PC_INNER], "color": pc.I32, "colors": pc.List[pc.I32],
        "note": pc.Option[pc.String], "flags": pc.Dict[pc.Bool, pc.ByteArray],
    },
)  # fmt: skip


def _pc_inner(values: dict[str, Any]) -> Any:
    return PC_INNER(values["label"], values["n"])


def _pc_everything(values: dict[str, Any]) -> Any:
    """The pohlednice value of a generated tree (maps in key order, as rpckit writes them)."""
    choice = None
    if values["choice"] is not None:
        member, value = values["choice"]
        choice = getattr(PC_CHOICE, member)(_pc_inner(value) if member == "nested" else value)
    return PC_EVERYTHING(
        values["plain"], values["maybe"], values["many"], dict(sorted(values["counts"].items())),
        None if values["inner"] is None else _pc_inner(values["inner"]),
        [_pc_inner(i) for i in values["inners"]], choice,
        {k: _pc_inner(v) for k, v in sorted(values["by_id"].items())}, values["color"],
        values["colors"], values["note"], dict(sorted(values["flags"].items())),
    )  # fmt: skip


def _from_pc_inner(inner: Any) -> dict[str, Any]:
    return {"label": inner.label, "n": inner.n}


def _from_pc_everything(value: Any) -> dict[str, Any]:
    """A pohlednice-decoded Everything as the generated tree's shape."""
    choice = None
    if value.choice is not None:
        member = next(
            k for k in ("text", "nested", "hue") if isinstance(value.choice, getattr(PC_CHOICE, k))
        )
        inner = value.choice.value
        choice = (member, _from_pc_inner(inner) if member == "nested" else inner)
    return {
        "plain": value.plain, "maybe": value.maybe, "many": value.many,
        "counts": value.counts,
        "inner": None if value.inner is None else _from_pc_inner(value.inner),
        "inners": [_from_pc_inner(i) for i in value.inners], "choice": choice,
        "by_id": {k: _from_pc_inner(v) for k, v in value.by_id.items()}, "color": value.color,
        "colors": value.colors, "note": value.note,
        "flags": {k: bytes(v) for k, v in value.flags.items()},
    }  # fmt: skip


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(EVERYTHING)
def test_everything_matches_pohlednice_both_ways(values: dict[str, Any]) -> None:
    theirs = bytes(PC_EVERYTHING.to_bytes(_pc_everything(values)))
    ours = postcard.encode(everything(values))
    assert ours == theirs
    assert postcard.decode(theirs, Everything) == everything(values)
    assert _from_pc_everything(PC_EVERYTHING.from_bytes(iter(ours))) == values


@settings(max_examples=300)
@given(st.fixed_dictionaries(_SCALAR_VALUES))
def test_scalars_match_pohlednice(values: dict[str, Any]) -> None:
    message = Scalars(**values)
    theirs = bytes(
        PC_SCALARS.to_bytes(PC_SCALARS(*(message_value(message, k) for k in _SCALAR_VALUES)))
    )
    assert postcard.encode(message) == theirs
    assert postcard.decode(theirs, Scalars) == message


def message_value(message: Any, name: str) -> Any:
    """A field's value as rpckit holds it (floats already rounded to 32 bits)."""
    return getattr(message, name)


@given(F32)
def test_f32_read_by_pohlednice(value: float) -> None:
    message = wrappers_pb2.FloatValue(value=value)
    assert pc.F32.from_bytes(iter(postcard.encode(message))) == message.value


@given(F64)
def test_f64_read_by_pohlednice(value: float) -> None:
    assert pc.F64.from_bytes(iter(postcard.encode(wrappers_pb2.DoubleValue(value=value)))) == value


@given(st.sampled_from([pc.U32, pc.U64, pc.I32, pc.I64]), st.data())
def test_integers_match_pohlednice(kind: Any, data: st.DataObject) -> None:
    wrapper, values = {
        pc.U32: (wrappers_pb2.UInt32Value, U32), pc.U64: (wrappers_pb2.UInt64Value, U64),
        pc.I32: (wrappers_pb2.Int32Value, I32), pc.I64: (wrappers_pb2.Int64Value, I64),
    }[kind]  # fmt: skip
    value = data.draw(values)
    wire = postcard.encode(wrapper(value=value))
    assert wire == bytes(kind.to_bytes(value))
    assert kind.from_bytes(iter(wire)) == value
