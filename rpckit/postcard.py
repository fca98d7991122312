"""Postcard (https://postcard.jamesmunns.com/wire-format) for protobuf messages. No I/O.

Postcard is serde's compact format: no field tags, no names, no lengths around structs;
both sides must share the schema. Here the schema is the message's protobuf descriptor, and
a message is written the way serde would write the Rust struct that mirrors the ``.proto``
file field for field (what a Dioxus Fullstack ``Streaming<T, PostcardEncoding>`` carries).

The mapping, exactly:

- A **message** is a Postcard ``struct``: its fields one after the other, **in declaration
  order** (the order of ``DESCRIPTOR.fields``, the order they appear in the ``.proto``), with
  nothing around them. Declaration order, not field-number order, because Postcard's struct
  is "fields in their order of definition": a Rust struct transcribed from the ``.proto``
  (by hand or by a generator such as prost) lists the fields as the file does, and field
  numbers mean nothing to Postcard. Like any Postcard schema, reordering, adding or removing
  fields is a breaking change (protobuf's own compatibility rules do not carry over).
- A **oneof** is one slot, where its block is declared (protoc keeps a oneof's members
  together), written as ``Option<enum>``: the byte ``0x00`` when no member is set; else
  ``0x01``, the member's index within the oneof (0-based, declaration order) as a
  ``varint(u32)`` discriminant, then the member's value as a plain value (a message member
  as its struct, without an Option). That is serde's encoding of prost's ``Option<Kind>``
  for ``enum Kind { A(i32), B(String), ... }``.
- **Presence**: fields with explicit presence (proto3 ``optional``, proto2 ``optional``,
  every singular message-typed field) are ``Option<T>``: ``0x00`` when unset, else ``0x01``
  then the value. proto3 implicit-presence scalars and proto2 ``required`` fields are plain
  values (an unset one is written as its default).
- **repeated** ``T`` is a ``seq``: ``varint(usize)`` count, then each element as a plain
  value (message elements as structs, never Options).
- **map<K, V>** is a ``map``: ``varint(usize)`` count, then (key, value) pairs; written in
  ascending key order, so the bytes are deterministic (Rust's ``BTreeMap`` order). A key
  that comes twice is refused on decode.
- Scalars: ``int32``/``sint32``/``sfixed32`` are ``i32`` (zigzag, then ``varint``, at most
  5 bytes); ``int64``/``sint64``/``sfixed64`` are ``i64`` (zigzag varint, at most 10 bytes);
  ``uint32``/``fixed32`` are ``u32`` (varint, at most 5 bytes); ``uint64``/``fixed64`` are
  ``u64`` (varint, at most 10 bytes); ``bool`` is one byte, 0 or 1; ``float``/``double`` are
  ``f32``/``f64``, 4 or 8 bytes little-endian; ``string`` is a ``varint(usize)`` byte length
  then UTF-8; ``bytes`` is a ``varint(usize)`` length then the bytes (the same bytes serde
  writes for ``Vec<u8>`` or ``serde_bytes``).
- An **enum** is its **number** as an ``i32`` (zigzag varint): protobuf enums are open and
  may be negative, and prost holds enum fields as ``i32`` (a ``#[repr(i32)]`` enum with
  ``serde_repr`` writes the same). A Rust enum with a plain ``#[derive(Serialize)]`` would
  write its variant index instead: mirror proto enums as ``i32``. An unknown number is kept
  for open enums and refused for closed (proto2) ones.
- Well-known types are plain messages (a ``Timestamp`` is ``{seconds: i64, nanos: i32}``).

Refused, because Postcard cannot say them: ``google.protobuf.Any`` (a type URL naming a
schema Postcard never sees), ``Struct``/``Value``/``ListValue`` (self-describing JSON
values), anywhere in a message's schema, even in an unset field; on encode, unknown fields
and set extensions (they would be silently lost); nesting deeper than
``rpckit.nesting.MAX_DEPTH`` (100) message levels. Encoding such a message raises
``RpcError(Code.INTERNAL)`` (the server cannot answer in Postcard; ``supports`` lets a
caller find out first).

Decoding is strict and never raises anything but ``RpcError(Code.INVALID_ARGUMENT,
"invalid postcard: ...")``: truncated input, a varint longer than its type's maximum (5
bytes for 32-bit, 10 for 64-bit types and lengths) or above its type's maximum value
(non-canonical padding within the maximum length is accepted, as the spec says), a bool
byte other than 0/1, an Option tag other than 0/1, a oneof index past its last member,
invalid UTF-8, a duplicate map key, an enum number a closed enum lacks, bytes after the
message. Work is bounded by the input: every count must fit in the bytes left, except for
elements that take no bytes at all (messages without fields), of which a sequence may hold
at most ``MAX_EMPTY_ITEMS``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from google.protobuf import descriptor_pb2, unknown_fields
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from rpckit.errors import Code, RpcError
from rpckit.nesting import MAX_DEPTH

__all__ = [
    "MAX_EMPTY_ITEMS",
    "PostcardEncoding",
    "UnsupportedSchema",
    "check_schema",
    "decode",
    "encode",
    "supports",
]

M = TypeVar("M", bound=Message)

#: The most zero-sized elements (messages without fields) one sequence may hold on decode.
MAX_EMPTY_ITEMS = 65536

#: Types Postcard cannot carry, with why.
_REFUSED = {
    "google.protobuf.Any": "its content's schema is named at run time by a type URL",
    "google.protobuf.Struct": "it is a self-describing JSON value",
    "google.protobuf.Value": "it is a self-describing JSON value",
    "google.protobuf.ListValue": "it is a self-describing JSON value",
}
_U32 = 0xFFFFFFFF
_U64 = 0xFFFFFFFFFFFFFFFF
_F32 = struct.Struct("<f")
_F64 = struct.Struct("<d")
_MAX_REASON = 200

_T = FieldDescriptor
_SIGNED32 = frozenset({_T.TYPE_INT32, _T.TYPE_SINT32, _T.TYPE_SFIXED32, _T.TYPE_ENUM})
_SIGNED64 = frozenset({_T.TYPE_INT64, _T.TYPE_SINT64, _T.TYPE_SFIXED64})
_UNSIGNED32 = frozenset({_T.TYPE_UINT32, _T.TYPE_FIXED32})
_UNSIGNED64 = frozenset({_T.TYPE_UINT64, _T.TYPE_FIXED64})
_MESSAGES = frozenset({_T.TYPE_MESSAGE, _T.TYPE_GROUP})


class UnsupportedSchema(ValueError):
    """A message type Postcard cannot express (``Any``, ``Struct``...)."""


class _Malformed(ValueError):
    """Malformed Postcard input (becomes INVALID_ARGUMENT at the boundary)."""


# --- the schema, compiled once per message type ---------------------------------------------


@dataclass(eq=False)
class _Field:
    """One field: how its values are written (``kind``: plain, option, seq or map)."""

    descriptor: Any
    name: str
    kind: str
    type: int
    plan: _Plan | None = None  # message-typed values
    key: _Field | None = None  # maps: the key and value fields of the entry
    value: _Field | None = None


@dataclass(eq=False)
class _Oneof:
    """A real oneof: ``Option<enum>`` over its members, in declaration order."""

    descriptor: Any
    name: str
    members: list[_Field]
    index: dict[str, int]


@dataclass(eq=False)
class _Plan:
    """A message type's slots in declaration order."""

    descriptor: Any
    slots: list[_Field | _Oneof] = field(default_factory=list)
    extendable: bool = False
    error: UnsupportedSchema | None = None
    min_size: int | None = None


# Descriptors are typed Any: the upb and pure-Python descriptor classes differ to mypy.
_PLANS: dict[Any, _Plan] = {}


def _plan(descriptor: Any) -> _Plan:
    """The compiled plan of a message type; UnsupportedSchema if Postcard cannot carry it."""
    plan = _PLANS.get(descriptor)
    if plan is None:
        building: dict[Any, _Plan] = {}
        plan = _build(descriptor, building)
        _propagate(building)
        _PLANS.update(building)
    if plan.error is not None:
        raise plan.error
    return plan


def _build(descriptor: Any, building: dict[Any, _Plan]) -> _Plan:
    """Compiles a message type and every type it reaches that is not compiled yet."""
    done = _PLANS.get(descriptor) or building.get(descriptor)
    if done is not None:
        return done  # compiled before, or being compiled (a recursive type)
    plan = _Plan(descriptor, extendable=bool(descriptor.is_extendable))
    building[descriptor] = plan
    why = _REFUSED.get(descriptor.full_name)
    if why is not None:
        plan.error = UnsupportedSchema(f"Postcard cannot carry {descriptor.full_name}: {why}")
        return plan
    synthetic = _synthetic_oneofs(descriptor)
    oneofs: dict[str, _Oneof] = {}
    for fd in descriptor.fields:
        oneof = fd.containing_oneof
        if oneof is not None and oneof.name not in synthetic:
            slot = oneofs.get(oneof.name)
            if slot is None:
                slot = oneofs[oneof.name] = _Oneof(oneof, oneof.name, [], {})
                plan.slots.append(slot)
            slot.index[fd.name] = len(slot.members)
            slot.members.append(_field(fd, "plain", building))
        elif fd.is_repeated:
            entry = fd.message_type
            if entry is not None and entry.GetOptions().map_entry:
                key = _field(entry.fields_by_name["key"], "plain", building)
                value = _field(entry.fields_by_name["value"], "plain", building)
                plan.slots.append(_Field(fd, fd.name, "map", fd.type, None, key, value))
            else:
                plan.slots.append(_field(fd, "seq", building))
        elif fd.has_presence and not fd.is_required:
            plan.slots.append(_field(fd, "option", building))
        else:
            plan.slots.append(_field(fd, "plain", building))
    return plan


def _field(fd: Any, kind: str, building: dict[Any, _Plan]) -> _Field:
    nested = _build(fd.message_type, building) if fd.type in _MESSAGES else None
    return _Field(fd, fd.name, kind, fd.type, nested)


def _nested(plan: _Plan) -> list[tuple[str, _Plan]]:
    """The message types a plan's fields hold directly, by field name."""
    found: list[tuple[str, _Plan]] = []
    for slot in plan.slots:
        specs = slot.members if isinstance(slot, _Oneof) else [slot, slot.value]
        found += [(spec.name, spec.plan) for spec in specs if spec and spec.plan is not None]
    return found


def _propagate(building: dict[Any, _Plan]) -> None:
    """A type that holds a type Postcard cannot carry cannot be carried either."""
    changed = True
    while changed:
        changed = False
        for plan in building.values():
            if plan.error is not None:
                continue
            for name, nested in _nested(plan):
                if nested.error is not None:
                    plan.error = UnsupportedSchema(
                        f"{plan.descriptor.full_name}.{name}: {nested.error}"
                    )
                    changed = True
                    break


def _synthetic_oneofs(descriptor: Any) -> frozenset[str]:
    """The names of the oneofs protoc made up for proto3 ``optional`` fields."""
    if not descriptor.oneofs:
        return frozenset()
    proto = descriptor_pb2.DescriptorProto()
    descriptor.CopyToProto(proto)
    return frozenset(
        proto.oneof_decl[f.oneof_index].name
        for f in proto.field
        if f.proto3_optional and f.HasField("oneof_index")
    )


def _min_size(plan: _Plan, visiting: frozenset[_Plan] = frozenset()) -> int:
    """The fewest bytes a value of this message type takes (0: a message without fields)."""
    if plan.min_size is not None:
        return plan.min_size
    if plan in visiting:
        return 1  # only reachable through required fields; a finite value cannot exist
    size = 0
    for slot in plan.slots:
        if isinstance(slot, _Field) and slot.kind == "plain" and slot.plan is not None:
            size += _min_size(slot.plan, visiting | {plan})
        else:
            size += 1
    plan.min_size = size
    return size


def check_schema(message_type: Any) -> None:
    """Raises UnsupportedSchema if Postcard cannot carry this message type."""
    descriptor = getattr(message_type, "DESCRIPTOR", message_type)
    _plan(descriptor)


def supports(message_type: Any) -> bool:
    """Whether Postcard can carry this message type (its whole schema)."""
    try:
        check_schema(message_type)
    except UnsupportedSchema:
        return False
    return True


# --- encoding -------------------------------------------------------------------------------


def _varint(out: bytearray, value: int) -> None:
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _scalar_writer(kind: int) -> Callable[[bytearray, Any], None]:
    if kind in _SIGNED32 or kind in _SIGNED64:
        return lambda out, v: _varint(out, (v << 1) ^ (v >> 63))
    if kind in _UNSIGNED32 or kind in _UNSIGNED64:
        return _varint
    if kind == _T.TYPE_BOOL:
        return lambda out, v: out.append(1 if v else 0)
    if kind == _T.TYPE_FLOAT:
        return lambda out, v: out.extend(_F32.pack(v))
    if kind == _T.TYPE_DOUBLE:
        return lambda out, v: out.extend(_F64.pack(v))
    if kind == _T.TYPE_STRING:
        return _write_bytes_of_str
    if kind == _T.TYPE_BYTES:
        return _write_bytes
    raise UnsupportedSchema(f"field type {kind} has no Postcard form")


def _write_bytes(out: bytearray, value: bytes) -> None:
    _varint(out, len(value))
    out += value


def _write_bytes_of_str(out: bytearray, value: str) -> None:
    _write_bytes(out, value.encode())


_WRITERS = {kind: _scalar_writer(kind) for kind in range(1, 19) if kind not in _MESSAGES}


def _write_value(out: bytearray, spec: _Field, value: Any, depth: int) -> None:
    if spec.plan is not None:
        _write_message(out, spec.plan, value, depth + 1)
    else:
        _WRITERS[spec.type](out, value)


def _write_message(out: bytearray, plan: _Plan, message: Message, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise UnsupportedSchema(f"the message nests deeper than {MAX_DEPTH} levels")
    if len(unknown_fields.UnknownFieldSet(message)):
        raise UnsupportedSchema(
            f"{plan.descriptor.full_name} holds unknown fields, which Postcard cannot carry"
        )
    if plan.extendable and any(fd.is_extension for fd, _ in message.ListFields()):
        raise UnsupportedSchema(
            f"{plan.descriptor.full_name} has extensions set, which Postcard cannot carry"
        )
    for slot in plan.slots:
        if isinstance(slot, _Oneof):
            which = message.WhichOneof(slot.name)
            if which is None:
                out.append(0)
                continue
            out.append(1)
            index = slot.index[which]
            _varint(out, index)
            _write_value(out, slot.members[index], getattr(message, which), depth)
            continue
        kind = slot.kind
        if kind == "plain":
            _write_value(out, slot, getattr(message, slot.name), depth)
        elif kind == "option":
            if message.HasField(slot.name):
                out.append(1)
                _write_value(out, slot, getattr(message, slot.name), depth)
            else:
                out.append(0)
        elif kind == "seq":
            items = getattr(message, slot.name)
            _varint(out, len(items))
            for item in items:
                _write_value(out, slot, item, depth)
        else:  # map
            entries = getattr(message, slot.name)
            assert slot.key is not None
            assert slot.value is not None
            _varint(out, len(entries))
            for key in sorted(entries):
                _write_value(out, slot.key, key, depth)
                _write_value(out, slot.value, entries[key], depth)


def encode(message: Message) -> bytes:
    """The Postcard bytes of a message; ``RpcError(INTERNAL)`` if Postcard cannot carry it."""
    out = bytearray()
    try:
        _write_message(out, _plan(message.DESCRIPTOR), message, 1)
    except UnsupportedSchema as exc:
        raise RpcError(Code.INTERNAL, _trim(f"cannot encode as postcard: {exc}")) from None
    return bytes(out)


# --- decoding -------------------------------------------------------------------------------


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def left(self) -> int:
        return len(self.data) - self.pos

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise _Malformed("the input ends early")
        value = self.data[self.pos]
        self.pos += 1
        return value

    def take(self, size: int) -> bytes:
        end = self.pos + size
        if end > len(self.data):
            raise _Malformed("the input ends early")
        value = self.data[self.pos : end]
        self.pos = end
        return value

    def varint(self, max_bytes: int, max_value: int, what: str) -> int:
        data, pos, size = self.data, self.pos, len(self.data)
        value = shift = 0
        for _ in range(max_bytes):
            if pos >= size:
                raise _Malformed("the input ends early")
            byte = data[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                if value > max_value:
                    raise _Malformed(f"a varint is too large for {what}")
                self.pos = pos
                return value
            shift += 7
        raise _Malformed(f"a varint is longer than the {max_bytes} bytes of {what}")

    def length(self) -> int:
        """A ``varint(usize)`` byte length, which must fit in the bytes left."""
        value = self.varint(10, _U64, "usize")
        if value > self.left():
            raise _Malformed("the input ends early")
        return value

    def flag(self, what: str) -> bool:
        value = self.byte()
        if value > 1:
            raise _Malformed(f"{what} byte is {value}, not 0 or 1")
        return value == 1


def _unzigzag(value: int) -> int:
    return (value >> 1) ^ -(value & 1)


def _scalar_reader(kind: int) -> Callable[[_Reader], Any]:
    if kind in _SIGNED32:
        return lambda r: _unzigzag(r.varint(5, _U32, "i32"))
    if kind in _SIGNED64:
        return lambda r: _unzigzag(r.varint(10, _U64, "i64"))
    if kind in _UNSIGNED32:
        return lambda r: r.varint(5, _U32, "u32")
    if kind in _UNSIGNED64:
        return lambda r: r.varint(10, _U64, "u64")
    if kind == _T.TYPE_BOOL:
        return lambda r: r.flag("a bool")
    if kind == _T.TYPE_FLOAT:
        return lambda r: _F32.unpack(r.take(4))[0]
    if kind == _T.TYPE_DOUBLE:
        return lambda r: _F64.unpack(r.take(8))[0]
    if kind == _T.TYPE_STRING:
        return _read_str
    if kind == _T.TYPE_BYTES:
        return lambda r: bytes(r.take(r.length()))
    raise UnsupportedSchema(f"field type {kind} has no Postcard form")


def _read_str(reader: _Reader) -> str:
    raw = reader.take(reader.length())
    try:
        return bytes(raw).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _Malformed(f"a string is not UTF-8 ({exc.reason} at byte {exc.start})") from None


_READERS = {kind: _scalar_reader(kind) for kind in range(1, 19) if kind not in _MESSAGES}


def _set(message: Message, name: str, value: Any) -> None:
    try:
        setattr(message, name, value)
    except (ValueError, TypeError) as exc:  # e.g. a number a closed enum does not have
        raise _Malformed(f"field {name}: {exc}") from None


def _read_field(reader: _Reader, message: Message, spec: _Field, depth: int) -> None:
    """Reads one plain value of ``spec`` into ``message``'s field."""
    if spec.plan is not None:
        sub = getattr(message, spec.name)
        sub.SetInParent()
        _read_message(reader, spec.plan, sub, depth + 1)
    else:
        _set(message, spec.name, _READERS[spec.type](reader))


def _count(reader: _Reader, item_size: int) -> int:
    count = reader.varint(10, _U64, "usize")
    if item_size == 0:
        if count > MAX_EMPTY_ITEMS:
            raise _Malformed(f"a sequence of {count} empty items (at most {MAX_EMPTY_ITEMS})")
    elif count > reader.left() // item_size:
        raise _Malformed("the input ends early")
    return count


def _read_message(reader: _Reader, plan: _Plan, message: Message, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise _Malformed(f"nested deeper than {MAX_DEPTH} levels")
    for slot in plan.slots:
        if isinstance(slot, _Oneof):
            if not reader.flag("a oneof's option"):
                continue
            index = reader.varint(5, _U32, "a oneof index")
            if index >= len(slot.members):
                raise _Malformed(
                    f"oneof {slot.name} has {len(slot.members)} members, not index {index}"
                )
            _read_field(reader, message, slot.members[index], depth)
            continue
        kind = slot.kind
        if kind == "plain":
            _read_field(reader, message, slot, depth)
        elif kind == "option":
            if reader.flag("an option"):
                _read_field(reader, message, slot, depth)
        elif kind == "seq":
            items = getattr(message, slot.name)
            if slot.plan is not None:
                for _ in range(_count(reader, _min_size(slot.plan))):
                    _read_message(reader, slot.plan, items.add(), depth + 1)
            else:
                read = _READERS[slot.type]
                values = [read(reader) for _ in range(_count(reader, 1))]
                try:
                    items.extend(values)
                except (ValueError, TypeError) as exc:
                    raise _Malformed(f"field {slot.name}: {exc}") from None
        else:  # map
            entries = getattr(message, slot.name)
            key_spec, value_spec = slot.key, slot.value
            assert key_spec is not None
            assert value_spec is not None
            read_key = _READERS[key_spec.type]
            for _ in range(_count(reader, 1)):
                key = read_key(reader)
                if key in entries:
                    raise _Malformed(f"map {slot.name} has the key {key!r} twice")
                if value_spec.plan is not None:
                    _read_message(reader, value_spec.plan, entries[key], depth + 1)
                else:
                    value = _READERS[value_spec.type](reader)
                    try:
                        entries[key] = value
                    except (ValueError, TypeError) as exc:
                        raise _Malformed(f"field {slot.name}: {exc}") from None


def decode(data: bytes, message_type: type[M]) -> M:
    """A message read from its Postcard bytes (all of them); RpcError(INVALID_ARGUMENT)."""
    message = message_type()
    try:
        plan = _plan(message_type.DESCRIPTOR)
        reader = _Reader(bytes(data))
        _read_message(reader, plan, message, 1)
        if reader.left():
            raise _Malformed(f"{reader.left()} bytes after the message")
    except (_Malformed, UnsupportedSchema) as exc:
        raise RpcError(Code.INVALID_ARGUMENT, _trim(f"invalid postcard: {exc}")) from None
    return message


def _trim(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 3] + "..."


class PostcardEncoding:
    """Postcard of the descriptor's struct, rpckit's ``postcard`` codec (see the module)."""

    name = "postcard"
    content_type = "application/postcard"
    stream_content_type = "application/stream+postcard"

    def encode(self, message: Message) -> bytes:
        """The message's Postcard bytes; RpcError(INTERNAL) if its schema has no Postcard form."""
        return encode(message)

    def decode(self, data: bytes, message_type: type[M]) -> M:
        """Reads exactly one message; malformed input is RpcError(INVALID_ARGUMENT)."""
        return decode(data, message_type)
