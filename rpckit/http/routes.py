"""``google.api.http`` path templates and request binding, free of I/O.

A template such as ``/v1/{name=shelves/*}/books/{book_id}:publish`` compiles to a matcher
that returns the field paths it binds; ``bind_request`` then fills a request message from
path variables, query parameters and an optional decoded body, converting each value to
its field's type or failing with a one-line ``invalid_argument``.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import unquote

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from rpckit.errors import Code, RpcError

__all__ = ["PathTemplate", "bind_request"]

M = TypeVar("M", bound=Message)

_SEGMENT = "[^/]+"
_VARIABLE = re.compile(r"\{([A-Za-z_][\w.]*)(?:=([^}]*))?\}")


def _segments_regex(segments: str) -> str:
    parts = []
    for segment in segments.split("/"):
        if segment == "*":
            parts.append(_SEGMENT)
        elif segment == "**":
            parts.append(".+")
        else:
            parts.append(re.escape(segment))
    return "/".join(parts)


@dataclass(frozen=True)
class PathTemplate:
    """A compiled ``google.api.http`` path template."""

    template: str
    pattern: re.Pattern[str]
    fields: tuple[str, ...]

    @classmethod
    def compile(cls, template: str) -> PathTemplate:
        """Compile ``template``; ValueError if it is not a valid path template."""
        if not template.startswith("/"):
            raise ValueError(f"path template must start with '/': {template!r}")
        path, verb = template, ""
        last = template.rsplit("/", 1)[-1]
        if ":" in last and "}" not in last.split(":", 1)[1]:
            path, verb = template.rsplit(":", 1)
        regex, fields, pos = [], [], 0
        for i, match in enumerate(_VARIABLE.finditer(path)):
            regex.append(_segments_regex(path[pos : match.start()]))
            fields.append(match.group(1))
            inner = match.group(2)
            regex.append(f"(?P<v{i}>{_segments_regex(inner) if inner else _SEGMENT})")
            pos = match.end()
        regex.append(_segments_regex(path[pos:]))
        if verb:
            regex.append(re.escape(":" + verb))
        return cls(template, re.compile("".join(regex) + r"\Z"), tuple(fields))

    def match(self, raw_path: str) -> dict[str, str] | None:
        """The variables of a request path (raw, still percent-encoded), or None."""
        match = self.pattern.match(raw_path)
        if match is None:
            return None
        return {field: unquote(match.group(f"v{i}")) for i, field in enumerate(self.fields)}


def _invalid(name: str, expected: str, value: str) -> RpcError:
    shown = value if len(value) <= 40 else value[:37] + "..."
    return RpcError(Code.INVALID_ARGUMENT, f"{name}: expected {expected}, got {shown!r}")


_INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1, "a 32-bit integer"),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1, "a 32-bit integer"),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1, "a 32-bit integer"),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1, "a 64-bit integer"),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1, "a 64-bit integer"),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1, "a 64-bit integer"),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1, "an unsigned 32-bit integer"),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1, "an unsigned 32-bit integer"),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1, "an unsigned 64-bit integer"),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1, "an unsigned 64-bit integer"),
}


def _convert(field: FieldDescriptor, name: str, value: str) -> Any:
    kind = field.type
    if kind in _INT_RANGES:
        low, high, expected = _INT_RANGES[kind]
        if not re.fullmatch(r"[+-]?\d+", value.strip()):
            raise _invalid(name, expected, value)
        number = int(value)
        if not low <= number <= high:
            raise _invalid(name, expected, value)
        return number
    if kind in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
        try:
            return float(value)
        except ValueError:
            raise _invalid(name, "a number", value) from None
    if kind == FieldDescriptor.TYPE_BOOL:
        lowered = value.lower()
        if lowered in ("true", "1"):
            return True
        if lowered in ("false", "0"):
            return False
        raise _invalid(name, "true or false", value)
    if kind == FieldDescriptor.TYPE_STRING:
        return value
    if kind == FieldDescriptor.TYPE_BYTES:
        standard = value.replace("-", "+").replace("_", "/")  # URL-safe or standard alphabet
        try:
            return base64.b64decode(standard + "=" * (-len(standard) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise _invalid(name, "base64", value) from None
    if kind == FieldDescriptor.TYPE_ENUM and field.enum_type is not None:
        enum = field.enum_type
        by_name = enum.values_by_name.get(value)
        if by_name is not None:
            return by_name.number
        if re.fullmatch(r"-?\d+", value) and int(value) in enum.values_by_number:
            return int(value)
        raise _invalid(name, f"one of {', '.join(enum.values_by_name)}", value)
    raise RpcError(Code.INVALID_ARGUMENT, f"{name}: a message field cannot be set from a URL")


def _field(descriptor: Any, part: str) -> FieldDescriptor | None:
    """A field by its proto name or its JSON (lowerCamelCase) name."""
    field: FieldDescriptor | None = descriptor.fields_by_name.get(part)
    if field is None:
        field = next((f for f in descriptor.fields if f.json_name == part), None)
    return field


def _set(message: Message, path: str, value: str, *, source: str) -> None:
    parts = path.split(".")
    target = message
    for depth, part in enumerate(parts):
        field = _field(target.DESCRIPTOR, part)
        if field is None:
            raise RpcError(Code.INVALID_ARGUMENT, f"unknown {source} {path!r}")
        if depth < len(parts) - 1:
            if field.message_type is None or field.is_repeated:
                raise RpcError(Code.INVALID_ARGUMENT, f"{source} {path!r}: {part} is not a message")
            target = getattr(target, field.name)
            continue
        converted = _convert(field, f"{source} {path!r}", value)
        if field.is_repeated:
            getattr(target, field.name).append(converted)
        else:
            setattr(target, field.name, converted)


def bind_request(
    message_type: type[M],
    *,
    path_params: dict[str, str],
    query: Iterable[tuple[str, str]],
    body: Message | None = None,
    body_field: str = "",
) -> M:
    """Build the request: the decoded body (whole, or into ``body_field``), then query
    parameters, then path variables, each converted to its field's type."""
    message = message_type()
    if body is not None:
        target: Message = message if body_field in ("", "*") else getattr(message, body_field)
        target.MergeFrom(body)
    for key, value in query:
        _set(message, key, value, source="query parameter")
    for key, value in path_params.items():
        _set(message, key, value, source="path variable")
    return message


def body_type(message_type: type[Message], body_field: str) -> type[Message]:
    """The message type a request body decodes to for a rule's ``body`` setting."""
    if body_field in ("", "*"):
        return message_type
    field = message_type.DESCRIPTOR.fields_by_name.get(body_field)
    if field is None or field.message_type is None:
        raise ValueError(f"body field {body_field!r} is not a message field")
    concrete: type[Message] = getattr(message_type(), body_field).__class__
    return concrete
