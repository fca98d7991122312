"""A fast path for the protobuf JSON mapping of flat messages.

``json_format.MessageToDict``/``ParseDict`` walk every message in Python through several
layers; for the common small message (strings, bools, 32-bit integers and finite floats,
no nesting) that is most of a unary call's cost. A message type qualifies once, by its
descriptor; a value the fast path is not sure about (a 64-bit integer, a string for a
number, an enum, bytes, a float32, NaN, an unknown key, an out-of-range number) falls back to
``json_format``, so the results and errors are exactly the mapping's.
"""

from __future__ import annotations

import math
from json.encoder import encode_basestring  # C-accelerated when available
from typing import Any, TypeVar

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

__all__ = ["from_flat_dict", "to_flat_dict", "to_flat_json"]

M = TypeVar("M", bound=Message)

_INT32 = frozenset(
    {
        FieldDescriptor.TYPE_INT32,
        FieldDescriptor.TYPE_SINT32,
        FieldDescriptor.TYPE_SFIXED32,
        FieldDescriptor.TYPE_UINT32,
        FieldDescriptor.TYPE_FIXED32,
    }
)
_KINDS: dict[int, type] = {
    **dict.fromkeys(_INT32, int),
    # double only: float32 values are printed shortest-form and range-checked by json_format
    FieldDescriptor.TYPE_DOUBLE: float,
    FieldDescriptor.TYPE_STRING: str,
    FieldDescriptor.TYPE_BOOL: bool,
}


class _Plan:
    """How one flat message type maps to JSON: field name, JSON name and Python type."""

    __slots__ = ("by_json", "by_name", "keys")

    def __init__(self, descriptor: Any) -> None:
        self.by_name: dict[str, tuple[str, type]] = {}
        self.by_json: dict[str, tuple[str, type]] = {}
        #: Each field's ``"jsonName":`` as compact JSON writes it, and its Python type.
        self.keys: dict[str, tuple[str, type]] = {}
        for field in descriptor.fields:
            kind = _KINDS[field.type]
            self.by_name[field.name] = (field.json_name, kind)
            self.keys[field.name] = (encode_basestring(field.json_name) + ":", kind)
            self.by_json[field.json_name] = (field.name, kind)
            self.by_json[field.name] = (field.name, kind)


_PLANS: dict[Any, _Plan | None] = {}


def _plan(descriptor: Any) -> _Plan | None:
    try:
        return _PLANS[descriptor]
    except KeyError:
        pass
    flat = all(
        field.type in _KINDS and not _repeated(field) and field.containing_oneof is None
        for field in descriptor.fields
    ) and not descriptor.full_name.startswith("google.protobuf.")
    plan = _Plan(descriptor) if flat else None
    _PLANS[descriptor] = plan
    return plan


def _repeated(field: Any) -> bool:
    repeated = getattr(field, "is_repeated", None)  # protobuf 6; older releases have .label
    if repeated is None:
        repeated = field.label == FieldDescriptor.LABEL_REPEATED
    return bool(repeated)


def to_flat_dict(message: Message) -> dict[str, Any] | None:
    """The JSON-mapping dict of a flat message, or None to use ``json_format``."""
    plan = _plan(message.DESCRIPTOR)
    if plan is None:
        return None
    tree: dict[str, Any] = {}
    by_name = plan.by_name
    for field, value in message.ListFields():
        json_name, kind = by_name[field.name]
        if kind is float and not math.isfinite(value):
            return None  # "NaN", "Infinity": the mapping's strings
        tree[json_name] = value
    return tree


def to_flat_json(message: Message) -> str | None:
    """The compact JSON of a flat message, or None to use ``json_format``: the same text
    ``json.dumps(to_flat_dict(message), separators=(",", ":"), ensure_ascii=False)`` gives,
    written directly (no dict, no encoder object)."""
    plan = _plan(message.DESCRIPTOR)
    if plan is None:
        return None
    parts: list[str] = []
    keys = plan.keys
    for field, value in message.ListFields():
        key, kind = keys[field.name]
        if kind is str:
            parts.append(key + encode_basestring(value))
        elif kind is bool:
            parts.append(key + ("true" if value else "false"))
        elif kind is int:
            parts.append(key + int.__repr__(value))
        elif math.isfinite(value):
            parts.append(key + float.__repr__(value))
        else:
            return None  # "NaN", "Infinity": the mapping's strings
    return "{" + ",".join(parts) + "}"


def from_flat_dict(tree: Any, message_type: type[M]) -> M | None:
    """The message a JSON-mapping dict stands for when the type is flat and every value has
    exactly its field's JSON type; None to use ``json_format`` (which explains errors)."""
    if type(tree) is not dict:
        return None
    plan = _plan(message_type.DESCRIPTOR)
    if plan is None:
        return None
    by_json = plan.by_json
    values: dict[str, Any] = {}
    for key, value in tree.items():
        found = by_json.get(key)
        if found is None:
            return None  # unknown (ignored by the mapping) or a duplicate spelling: let it say
        name, kind = found
        if value is None:
            continue  # null means the default
        actual = type(value)
        if actual is not kind and not (kind is float and actual is int):
            return None
        if name in values:
            return None
        values[name] = value
    try:
        return message_type(**values)
    except (TypeError, ValueError):
        return None  # out of range and the like: json_format gives the proper error
