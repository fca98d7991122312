"""``google.api.http`` path templates, request binding and rule checks, free of I/O.

A template such as ``/v1/{name=shelves/*}/books/{book_id}:publish`` compiles to a matcher
that returns the field paths it binds, decoded as http.proto says: a single-segment
variable fully, a multi-segment one except ``%2F``. ``bind_request`` fills a request
message from path variables, query parameters and a decoded body, converting each value to
its field's type (well-known types from their JSON string forms) or failing with a
one-line ``invalid_argument``. ``validate_rules`` checks every rule once, at start-up.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote, unquote

import cbor2
import msgpack  # type: ignore[import-untyped]  # msgpack ships no stubs
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from rpckit.encodings import Encoding, from_tree
from rpckit.errors import Code, RpcError
from rpckit.http.rest.framing import NotAcceptable
from rpckit.service import HttpRule, MethodKind, MethodSpec

__all__ = [
    "PathTemplate",
    "bind_request",
    "decode_body",
    "decode_response_body",
    "default_rule",
    "encode_request_body",
    "encode_response_body",
    "expand_path",
    "query_params",
    "response_item",
    "stream_item_type",
    "stream_response",
    "validate_rules",
]

M = TypeVar("M", bound=Message)

# --- path templates ----------------------------------------------------------------------

# Descriptors are typed Any where they come from messages: the upb and pure-Python
# descriptor classes are distinct types to mypy.
_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_FIELD_PATH = re.compile(rf"{_IDENT}(?:\.{_IDENT})*")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_SLASH = re.compile(r"%2[Ff]")
# RFC 3986 pchar without the unreserved set: what a literal may hold unencoded
_LITERAL_SAFE = "!$&'()*+,;=:@"
_ONE = "[^/]+"


def _normalize(raw_path: str) -> str:
    """Decode percent-escapes of unreserved characters, which mean the same either way."""
    if "%" not in raw_path:
        return raw_path  # the common case: nothing to decode

    def unescape(match: re.Match[str]) -> str:
        char = chr(int(match.group(1), 16))
        return char if char in _UNRESERVED else match.group(0)

    return _ESCAPE.sub(unescape, raw_path)


@dataclass(frozen=True)
class _Variable:
    field: str
    segments: tuple[str, ...]

    @property
    def multi(self) -> bool:
        """Whether this variable may span segments (so ``%2F`` stays encoded in it)."""
        return len(self.segments) > 1 or self.segments[0] == "**"


def _split(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside braces; ValueError on unbalanced or nested braces."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        if char == "{":
            depth += 1
            if depth > 1:
                raise ValueError("a variable cannot contain another variable")
        elif char == "}":
            depth -= 1
            if depth < 0:
                raise ValueError("unbalanced '}'")
        elif char == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if depth:
        raise ValueError("unclosed '{'")
    parts.append(text[start:])
    return parts


def _check_segment(segment: str) -> str:
    if not segment:
        raise ValueError("empty path segment")
    if segment not in ("*", "**") and re.search(r"[{}*?#]", segment):
        raise ValueError(f"invalid path segment {segment!r}")
    return segment


def _literal(segment: str) -> str:
    return re.escape(quote(_normalize(segment), safe=_LITERAL_SAFE + "%"))


def _segments_regex(segments: tuple[str, ...]) -> str:
    out = ""
    for i, segment in enumerate(segments):
        if segment == "**":
            out += f"{_ONE}(?:/{_ONE})*" if i == 0 else f"(?:/{_ONE})*"
        else:
            out += ("/" if i else "") + (_ONE if segment == "*" else _literal(segment))
    return out


@dataclass(frozen=True)
class PathTemplate:
    """A compiled ``google.api.http`` path template (see google/api/http.proto)."""

    template: str
    pattern: re.Pattern[str]
    fields: tuple[str, ...]
    multi: tuple[bool, ...] = ()
    #: What every matching path (without percent-escapes) starts with: a cheap first test.
    prefix: str = "/"

    @classmethod
    def compile(cls, template: str) -> PathTemplate:
        """Compile ``template``; ValueError (one line) if it is not a valid path template.

        ``*`` is one segment, ``**`` zero or more (last, before the verb only); a variable
        is ``{field.path}`` or ``{field.path=segments}``.
        """
        if not template.startswith("/"):
            raise ValueError(f"path template must start with '/': {template!r}")
        try:
            return cls._compile(template)
        except ValueError as exc:
            raise ValueError(f"invalid path template {template!r}: {exc}") from None

    @classmethod
    def _compile(cls, template: str) -> PathTemplate:
        if template == "/":
            return cls(template, re.compile(r"/\Z"), ())
        items: list[str | _Variable] = []
        *segments, last = _split(template[1:], "/")
        verb = ""
        last, *verbs = _split(last, ":")
        if verbs:
            verb = ":".join(verbs)
            if not verb or re.search(r"[{}*/]", verb):
                raise ValueError(f"invalid verb {verb!r}")
        for segment in [*segments, last]:
            if segment.startswith("{") and segment.endswith("}"):
                field, eq, inner = segment[1:-1].partition("=")
                if not _FIELD_PATH.fullmatch(field):
                    raise ValueError(f"invalid field path {field!r}")
                inner_segments = tuple(_check_segment(s) for s in (inner or "*").split("/"))
                if eq and not inner:
                    raise ValueError(f"empty template for variable {field!r}")
                items.append(_Variable(field, inner_segments))
            elif "{" in segment or "}" in segment:
                raise ValueError(f"a variable must be a whole segment: {segment!r}")
            else:
                items.append(_check_segment(segment))
        flat = [
            s for item in items for s in (item.segments if isinstance(item, _Variable) else [item])
        ]
        if "**" in flat[:-1]:
            raise ValueError("'**' must be the last segment")
        fields = tuple(item.field for item in items if isinstance(item, _Variable))
        if len(set(fields)) != len(fields):
            raise ValueError("a field is bound twice")
        pattern, index = "", 0
        for item in items:
            if isinstance(item, _Variable):
                group = f"(?P<v{index}>{_segments_regex(item.segments)})"
                index += 1
                pattern += f"(?:/{group})?" if item.segments[0] == "**" else f"/{group}"
            elif item == "**":
                pattern += f"(?:/{_ONE})*"
            else:
                pattern += "/" + _segments_regex((item,))
        if verb:
            pattern += re.escape(":" + _normalize(verb))
        variables = [item for item in items if isinstance(item, _Variable)]
        literals: list[str] = []
        for item in items:
            if isinstance(item, _Variable) or item in ("*", "**"):
                break
            literals.append(item)
        prefix = "/" + "/".join(literals)
        if len(literals) < len(items):
            prefix = prefix.rstrip("/") + "/"
        compiled = re.compile(pattern + r"\Z")
        assert compiled.groups == len(fields), "match() reads the variables as the groups"
        return cls(
            template,
            compiled,
            fields,
            tuple(variable.multi for variable in variables),
            prefix,
        )

    def match(self, raw_path: str) -> dict[str, str] | None:
        """The variables of a request path (raw, still percent-encoded), or None.

        Single-segment variables are fully percent-decoded; multi-segment ones are decoded
        except ``%2F``/``%2f``, which stay as sent (http.proto). Bytes that are not UTF-8
        decode to lone surrogates, which ``bind_request`` rejects for string fields.
        """
        match = self.pattern.match(_normalize(raw_path))
        if match is None:
            return None
        values = {}
        for i, raw in enumerate(match.groups()):  # the only groups are the variables, v0...
            if raw is None:  # an optional '**' that matched nothing
                continue
            values[self.fields[i]] = (
                raw if "%" not in raw else _decode(raw, self.multi[i] if self.multi else False)
            )
        return values


def _decode(raw: str, multi: bool) -> str:
    if not multi:
        return unquote(raw, errors="surrogateescape")
    pieces = _SLASH.split(raw)
    slashes = _SLASH.findall(raw)
    out = unquote(pieces[0], errors="surrogateescape")
    for slash, piece in zip(slashes, pieces[1:], strict=True):
        out += slash + unquote(piece, errors="surrogateescape")
    return out


# --- values ------------------------------------------------------------------------------


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
_INTEGER = re.compile(r"[+-]?[0-9]{1,30}")
_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]{1,4})?")
_SPECIAL_FLOATS = {"nan": math.nan, "infinity": math.inf, "-infinity": -math.inf,
                   "inf": math.inf, "-inf": -math.inf}  # fmt: skip
_FLOAT32_MAX = 3.4028234663852886e38
_WRAPPERS = frozenset(
    f"google.protobuf.{name}"
    for name in ("DoubleValue", "FloatValue", "Int64Value", "UInt64Value", "Int32Value",
                 "UInt32Value", "BoolValue", "StringValue", "BytesValue")
)  # fmt: skip
_TIMESTAMP, _DURATION = "google.protobuf.Timestamp", "google.protobuf.Duration"
_FIELD_MASK = "google.protobuf.FieldMask"
#: Well-known message types that have a string form in the JSON mapping, so a URL can set them.
STRING_FORM_TYPES = frozenset({_TIMESTAMP, _DURATION, _FIELD_MASK, *_WRAPPERS})


def _convert(field: Any, name: str, value: str) -> Any:
    """A scalar field's value from URL text."""
    kind = field.type
    if kind in _INT_RANGES:
        low, high, expected = _INT_RANGES[kind]
        if value.isascii() and value.isdigit() and len(value) <= 30:
            number = int(value)  # the common case, without the pattern
        elif _INTEGER.fullmatch(value.strip()):
            number = int(value)
        else:
            raise _invalid(name, expected, value)
        if not low <= number <= high:
            raise _invalid(name, expected, value)
        return number
    if kind in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
        text = value.strip()
        if _NUMBER.fullmatch(text):
            number_f = float(text)
        elif text.lower() in _SPECIAL_FLOATS:
            number_f = _SPECIAL_FLOATS[text.lower()]
        else:
            raise _invalid(name, "a number", value)
        if kind == FieldDescriptor.TYPE_FLOAT and math.isfinite(number_f):
            if abs(number_f) > _FLOAT32_MAX:
                raise _invalid(name, "a 32-bit float", value)
        elif math.isinf(number_f) and _NUMBER.fullmatch(text):
            raise _invalid(name, "a 64-bit float", value)
        return number_f
    if kind == FieldDescriptor.TYPE_BOOL:
        lowered = value.lower()
        if lowered in ("true", "1"):
            return True
        if lowered in ("false", "0"):
            return False
        raise _invalid(name, "true or false", value)
    if kind == FieldDescriptor.TYPE_STRING:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise _invalid(name, "UTF-8 text", value) from None
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
        if re.fullmatch(r"-?[0-9]{1,10}", value) and int(value) in enum.values_by_number:
            return int(value)
        raise _invalid(name, f"one of {', '.join(enum.values_by_name)}", value)
    raise RpcError(Code.INVALID_ARGUMENT, f"{name}: a message field cannot be set from a URL")


def _camel_to_snake(path: str) -> str:
    return re.sub(r"[A-Z]", lambda m: "_" + m.group(0).lower(), path)


def _set_well_known(target: Message, name: str, value: str) -> None:
    """Fill a Timestamp, Duration, FieldMask or wrapper from its JSON-mapping string form."""
    full_name = target.DESCRIPTOR.full_name
    if full_name == _TIMESTAMP:
        try:
            target.FromJsonString(value)  # type: ignore[attr-defined]
        except (ValueError, TypeError, OverflowError):
            raise _invalid(name, "an RFC 3339 timestamp like 2026-01-01T00:00:00Z", value) from None
    elif full_name == _DURATION:
        try:
            target.FromJsonString(value)  # type: ignore[attr-defined]
        except (ValueError, TypeError, OverflowError):
            raise _invalid(name, "a duration in seconds like 1.5s", value) from None
    elif full_name == _FIELD_MASK:
        paths = [] if value == "" else value.split(",")
        for path in paths:
            if not _FIELD_PATH.fullmatch(path):
                raise _invalid(name, "field paths like title,author.displayName", value)
        # lowerCamelCase (the JSON form) becomes snake_case; snake_case is kept as sent
        target.paths.extend(p if "_" in p else _camel_to_snake(p) for p in paths)  # type: ignore[attr-defined]
    else:  # a wrapper: the wrapped scalar's own rules
        field = target.DESCRIPTOR.fields_by_name["value"]
        setattr(target, "value", _convert(field, name, value))  # noqa: B010  # any wrapper


def _field(descriptor: Any, part: str) -> FieldDescriptor | None:
    """A field by its proto name or its JSON (lowerCamelCase) name."""
    field: FieldDescriptor | None = descriptor.fields_by_name.get(part)
    if field is None:
        field = next((f for f in descriptor.fields if f.json_name == part), None)
    return field


def _is_map(field: FieldDescriptor) -> bool:
    message_type = field.message_type
    return message_type is not None and message_type.GetOptions().map_entry


Setter = Callable[[Message, str], None]


@functools.lru_cache(maxsize=4096)
def _setter(descriptor: Any, path: str, source: str) -> Setter:
    """How to set ``path`` (dotted, proto or JSON names) from URL text on messages of
    ``descriptor``: resolved once per (type, path), so a request only converts and assigns.
    An unknown or unsettable path raises here (errors are not cached)."""
    parts = path.split(".")
    name = f"{source} {path!r}"
    hops: list[str] = []  # attribute names down to the message holding the last field
    target = descriptor
    for part in parts[:-1]:
        field = _field(target, part)
        if field is None:
            raise RpcError(Code.INVALID_ARGUMENT, f"unknown {source} {path!r}")
        if field.message_type is None or field.is_repeated:
            raise RpcError(Code.INVALID_ARGUMENT, f"{name}: {part} is not a message")
        hops.append(field.name)
        target = field.message_type
    last = _field(target, parts[-1])
    if last is None:
        raise RpcError(Code.INVALID_ARGUMENT, f"unknown {source} {path!r}")
    attribute, repeated = last.name, last.is_repeated
    message_type = last.message_type
    if message_type is not None and message_type.full_name in STRING_FORM_TYPES:

        def set_well_known(message: Message, value: str) -> None:
            holder = _descend(message, hops)
            if repeated:
                _set_well_known(getattr(holder, attribute).add(), name, value)
            else:
                _set_well_known(getattr(holder, attribute), name, value)

        return set_well_known
    if _is_map(last):
        raise RpcError(Code.INVALID_ARGUMENT, f"{name}: a map field cannot be set from a URL")
    if message_type is not None:
        raise RpcError(Code.INVALID_ARGUMENT, f"{name}: a message field cannot be set from a URL")

    def set_scalar(message: Message, value: str) -> None:
        converted = _convert(last, name, value)
        holder = _descend(message, hops) if hops else message
        if repeated:
            getattr(holder, attribute).append(converted)
        else:
            setattr(holder, attribute, converted)

    return set_scalar


def _descend(message: Message, hops: list[str]) -> Message:
    for hop in hops:
        message = getattr(message, hop)
    return message


def bind_request(
    message_type: type[M],
    *,
    path_params: dict[str, str],
    query: Iterable[tuple[str, str]],
    body: Message | None = None,
    body_field: str = "",
) -> M:
    """Build the request: the decoded body (whole, or into ``body_field``), then query
    parameters, then path variables, each converted to its field's type. Path variables come
    last, so they win over the same fields in the body (``{book.name}`` with body ``book``).

    Well-known types take their JSON-mapping string forms: ``?since=2026-01-01T00:00:00Z``
    (Timestamp), ``?wait=1.5s`` (Duration), ``?updateMask=title,authorName`` (FieldMask),
    ``?limit=5`` (Int32Value and the other wrappers), repeated ones by repeating the key.
    """
    message = message_type()
    if body is not None:
        target: Message = message if body_field in ("", "*") else getattr(message, body_field)
        target.MergeFrom(body)
    for key, value in query:
        _setter(message.DESCRIPTOR, key, "query parameter")(message, value)
    for key, value in path_params.items():
        _setter(message.DESCRIPTOR, key, "path variable")(message, value)
    return message


def body_type(message_type: type[Message], body_field: str) -> type[Message]:
    """The message type a request body decodes to for a rule's ``body`` setting."""
    if body_field in ("", "*"):
        return message_type
    field = message_type.DESCRIPTOR.fields_by_name.get(body_field)
    if field is None or field.message_type is None or field.is_repeated:
        raise ValueError(f"body field {body_field!r} is not a message field")
    concrete: type[Message] = getattr(message_type(), body_field).__class__
    return concrete


# --- bodies ------------------------------------------------------------------------------

_TREE_CODECS = ("json", "cbor", "msgpack")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _tree(codec: str, data: bytes) -> Any:
    """One value of a JSON-mapping codec, as a Python tree."""
    try:
        if codec == "json":
            return json.loads(bytes(data).decode(), parse_constant=_reject_constant)
        if codec == "cbor":
            return cbor2.loads(data)
        return msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:
        reason = " ".join(str(exc).split())[:120] or type(exc).__name__
        raise RpcError(Code.INVALID_ARGUMENT, f"invalid {codec}: {reason}") from None


def _top_field(descriptor: Any, name: str) -> FieldDescriptor | None:
    return _field(descriptor, name) if "." not in name else None


def decode_body(data: bytes, encoding: Encoding, message_type: type[M], body_field: str) -> M:
    """A request holding only its HTTP body, for a rule's ``body`` (``*`` or a field name).

    A message field decodes in any encoding; a repeated, map or scalar field (a JSON array,
    object or value) in JSON, CBOR or MessagePack. Merge the result with ``bind_request(...,
    body=result, body_field="*")``. Bad bodies are ``invalid_argument``.
    """
    if body_field in ("", "*"):
        return encoding.decode(data, message_type)
    field = _top_field(message_type.DESCRIPTOR, body_field)
    if field is None:  # validate_rules refuses such rules at start-up
        raise RpcError(Code.INTERNAL, f"body field {body_field!r} does not exist")
    message = message_type()
    if field.message_type is not None and not field.is_repeated:
        part = getattr(message, field.name)
        part.CopyFrom(encoding.decode(data, type(part)))
        return message
    if encoding.name not in _TREE_CODECS:
        raise RpcError(
            Code.INVALID_ARGUMENT,
            f"body field {field.name!r} is not a message: send it as JSON, CBOR or MessagePack",
        )
    decoded: M = from_tree(
        encoding.name, {field.json_name: _tree(encoding.name, data)}, message_type
    )
    return decoded


def response_item(message: Message, response_body: str) -> Message:
    """What a stream sends for one response under ``response_body`` (a message field, as
    ``validate_rules`` ensures for streams): that field, or the whole message."""
    if not response_body:
        return message
    field = _top_field(message.DESCRIPTOR, response_body)
    if field is None:
        return message
    part: Message = getattr(message, field.name)
    return part


def encode_response_body(response: Message, response_body: str, encoding: Encoding) -> bytes:
    """The HTTP body of a unary response under a rule's ``response_body``.

    Empty: the whole message. A message field: that message, in ``encoding``. A repeated,
    map or scalar field: its JSON-mapping value (an array...) in JSON, CBOR or MessagePack;
    other encodings (protobuf) raise NotAcceptable naming those three.
    """
    if not response_body:
        return encoding.encode(response)
    field = _top_field(response.DESCRIPTOR, response_body)
    if field is None:
        return encoding.encode(response)
    if field.message_type is not None and not field.is_repeated:
        return encoding.encode(getattr(response, field.name))
    if encoding.name not in _TREE_CODECS:
        raise NotAcceptable(["application/json", "application/cbor", "application/msgpack"])
    only = type(response)()
    if field.is_repeated:
        getattr(only, field.name).MergeFrom(getattr(response, field.name))
    else:
        setattr(only, field.name, getattr(response, field.name))  # present, even if default
    tree = json_format.MessageToDict(only, always_print_fields_with_no_presence=True)
    value = tree.get(field.json_name)
    if encoding.name == "json":
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
    if encoding.name == "cbor":
        data: bytes = cbor2.dumps(value)
        return data
    packed: bytes = msgpack.packb(value)
    return packed


# --- start-up checks ---------------------------------------------------------------------


def _type_name(field: FieldDescriptor) -> str:
    if _is_map(field):
        return "a map"
    if field.is_repeated:
        return "repeated"
    if field.message_type is not None:
        return f"a message ({field.message_type.full_name})"
    return "a scalar"


def _check_path_field(descriptor: Any, path: str) -> str | None:
    """Why a path variable cannot bind ``path``, or None when it can."""
    parts = path.split(".")
    for depth, part in enumerate(parts):
        field = _field(descriptor, part)
        if field is None:
            return f"{descriptor.full_name} has no field {part!r}"
        if depth < len(parts) - 1:
            if field.message_type is None or field.is_repeated:
                return f"{part} is {_type_name(field)}, not a message"
            descriptor = field.message_type
            continue
        if field.is_repeated:
            return f"{part} is {_type_name(field)} field; path variables bind single values"
        message_type = field.message_type
        if message_type is not None and message_type.full_name not in STRING_FORM_TYPES:
            return (
                f"{part} is {_type_name(field)}; path variables bind scalars and "
                "Timestamp, Duration, FieldMask or wrapper types"
            )
    return None


def _check_rule(method: MethodSpec[Any, Any], rule: HttpRule, template: PathTemplate) -> None:
    where = f"{method.service}.{method.name} ({rule.method} {rule.path})"
    request = method.input.DESCRIPTOR
    for path in template.fields:
        problem = _check_path_field(request, path)
        if problem is not None:
            raise ValueError(f"{where}: path variable {{{path}}}: {problem}")
    body = rule.body
    if body and rule.method.upper() in ("GET", "HEAD"):
        raise ValueError(f"{where}: a {rule.method.upper()} route cannot have a body")
    if body and body != "*":
        field = _top_field(request, body)
        if field is None:
            raise ValueError(f"{where}: body {body!r}: {request.full_name} has no such field")
        # A path variable inside the body field (AIP-134's {book.name} with body "book") is
        # fine: the path wins, as http.proto and grpc-gateway have it. The body field itself
        # bound by the path would come from two places.
        if any(path in (field.name, field.json_name) for path in template.fields):
            raise ValueError(f"{where}: body {body!r} is also bound by the path")
    if rule.response_body:
        output = method.output.DESCRIPTOR
        field = _top_field(output, rule.response_body)
        if field is None:
            raise ValueError(
                f"{where}: response_body {rule.response_body!r}: "
                f"{output.full_name} has no such field"
            )
        streams = method.kind in (MethodKind.SERVER_STREAM, MethodKind.BIDI_STREAM)
        if streams and (field.message_type is None or field.is_repeated):
            raise ValueError(
                f"{where}: response_body {rule.response_body!r} is {_type_name(field)}; "
                "a stream's response_body must be a message field"
            )


def validate_rules(methods: Iterable[MethodSpec[Any, Any]]) -> None:
    """Check every ``google.api.http`` rule of ``methods`` (all services together) once.

    ValueError with one line naming the method and rule when a template is invalid, a path
    variable names a missing, repeated or message field, ``body`` or ``response_body``
    names a missing field or one the path binds whole, a GET has a body, or two rules (in
    any services) declare the same verb and template, naming both methods. A path variable
    inside the body field (``{book.name}`` with body ``book``) is accepted: the path wins.
    """
    seen: dict[tuple[str, str], str] = {}
    for method in methods:
        for rule in method.http:
            name = f"{method.service}.{method.name}"
            try:
                template = PathTemplate.compile(rule.path)
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from None
            _check_rule(method, rule, template)
            verb = rule.method.upper()
            key = (verb, template.pattern.pattern)
            other = seen.get(key)
            if other is not None:
                raise ValueError(f"route {verb} {rule.path} is declared by both {other} and {name}")
            seen[key] = name


# --- the reverse direction: a request message to a path, a query and a body (clients) ----
#
# What a client does with a rule, the inverse of ``bind_request``: every value is written in
# the form ``_convert`` and ``_set_well_known`` read back (well-known types in their JSON
# string forms), so a request sent this way binds to the message it came from.


def default_rule(method: MethodSpec[Any, Any]) -> HttpRule:
    """The rule a client uses for ``method``: its first ``google.api.http`` binding, or
    ``POST /<package>.<Service>/<Method>`` with body ``*`` when it declares none."""
    if method.http:
        return method.http[0]
    return HttpRule("POST", method.path, body="*")


def _scalar_text(field: Any, value: Any) -> str:
    """A scalar field's value as URL text, as ``_convert`` reads it."""
    kind = field.type
    if kind == FieldDescriptor.TYPE_BOOL:
        return "true" if value else "false"
    if kind in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return repr(float(value))
    if kind == FieldDescriptor.TYPE_BYTES:
        return base64.urlsafe_b64encode(value).decode().rstrip("=")
    if kind == FieldDescriptor.TYPE_ENUM and field.enum_type is not None:
        known = field.enum_type.values_by_number.get(value)
        return known.name if known is not None else str(value)
    return str(value)


def _well_known_text(message: Message) -> str:
    """A Timestamp, Duration, FieldMask or wrapper in its JSON-mapping string form."""
    full_name = message.DESCRIPTOR.full_name
    if full_name in (_TIMESTAMP, _DURATION):
        text: str = message.ToJsonString()  # type: ignore[attr-defined]
        return text
    if full_name == _FIELD_MASK:
        return ",".join(message.paths)  # type: ignore[attr-defined]
    field = message.DESCRIPTOR.fields_by_name["value"]
    return _scalar_text(field, getattr(message, "value"))  # noqa: B009  # any wrapper


def _field_text(holder: Message, field: Any) -> str:
    value = getattr(holder, field.name)
    if field.message_type is not None:
        return _well_known_text(value)
    return _scalar_text(field, value)


def _template_items(template: str) -> list[tuple[str, str] | str]:
    """The segments of a path template: literal text, or (field path, its own segments)."""
    items: list[tuple[str, str] | str] = []
    *segments, last = _split(template[1:], "/") if template != "/" else ["", ""]
    last, *verbs = _split(last, ":")
    for segment in [*segments, last]:
        if segment.startswith("{") and segment.endswith("}"):
            name, _, inner = segment[1:-1].partition("=")
            items.append((name, inner or "*"))
        else:
            items.append(segment)
    if verbs:
        items.append(":" + ":".join(verbs))
    return items


def _lookup(message: Message, path: str) -> tuple[Message, Any]:
    """The message holding the (dotted, proto or JSON names) field ``path``, and the field."""
    holder = message
    parts = path.split(".")
    for part in parts[:-1]:
        field = _field(holder.DESCRIPTOR, part)
        if field is None:
            raise RpcError(Code.INVALID_ARGUMENT, f"path variable {path!r}: no field {part!r}")
        holder = getattr(holder, field.name)
    field = _field(holder.DESCRIPTOR, parts[-1])
    if field is None:
        raise RpcError(Code.INVALID_ARGUMENT, f"path variable {path!r}: no such field")
    return holder, field


def expand_path(template: str, request: Message) -> tuple[str, frozenset[str]]:
    """The request path ``template`` gives for ``request``, and the field paths it binds.

    A single-segment variable is fully percent-encoded (``/`` too); a multi-segment one
    keeps its slashes. The result must match the template again (``{name=shelves/*}``
    needs a name like ``shelves/s1``): a value that does not fit is ``invalid_argument``.
    """
    path = ""
    bound: set[str] = set()
    for item in _template_items(template):
        if isinstance(item, str):
            if item.startswith(":"):
                path += quote(item, safe=_LITERAL_SAFE)
            else:
                path += "/" + quote(item, safe=_LITERAL_SAFE + "*")
            continue
        name, segments = item
        holder, field = _lookup(request, name)
        value = _field_text(holder, field)
        multi = "/" in segments or segments == "**"
        path += "/" + quote(value, safe="/" + _LITERAL_SAFE if multi else _LITERAL_SAFE)
        bound.add(name)
    compiled = PathTemplate.compile(template)
    if compiled.match(path) is None:
        fields = ", ".join(f"{name}={_field_text(*_lookup(request, name))!r}" for name in bound)
        raise RpcError(
            Code.INVALID_ARGUMENT, f"{fields} does not fit the route template {template}"
        )
    return path or "/", frozenset(bound)


def _present(message: Message, field: Any) -> bool:
    if field.is_repeated:
        return len(getattr(message, field.name)) > 0
    if field.has_presence:
        return message.HasField(field.name)
    return bool(getattr(message, field.name))


def _query_pairs(message: Message, prefix: str, skip: frozenset[str]) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    fields: list[Any] = list(message.DESCRIPTOR.fields)
    for field in fields:
        key = prefix + field.json_name
        if prefix + field.name in skip or key in skip or not _present(message, field):
            continue
        if _is_map(field):
            raise RpcError(Code.INVALID_ARGUMENT, f"{key}: a map field cannot be sent in a URL")
        value = getattr(message, field.name)
        message_type = field.message_type
        if message_type is not None and message_type.full_name not in STRING_FORM_TYPES:
            if field.is_repeated:
                raise RpcError(
                    Code.INVALID_ARGUMENT, f"{key}: repeated messages cannot be sent in a URL"
                )
            pairs += _query_pairs(value, key + ".", skip)
        elif field.is_repeated:
            for item in value:
                text = _well_known_text(item) if message_type else _scalar_text(field, item)
                pairs.append((key, text))
        else:
            pairs.append((key, _field_text(message, field)))
    return pairs


def query_params(request: Message, rule: HttpRule, bound: frozenset[str]) -> list[tuple[str, str]]:
    """The query parameters of ``request`` under ``rule``: every set field neither the path
    (``bound``) nor the body carries, repeated fields as repeated keys, nested messages as
    dotted names, well-known types in their string forms. A map field, or a repeated
    message, cannot be written in a URL: ``invalid_argument``."""
    if rule.body == "*":
        return []
    skip = set(bound)
    if rule.body:
        field = _top_field(request.DESCRIPTOR, rule.body)
        if field is not None:
            skip |= {field.name, field.json_name}
    return _query_pairs(request, "", frozenset(skip))


def encode_request_body(request: Message, rule: HttpRule, encoding: Encoding) -> bytes | None:
    """The HTTP body of ``request`` under ``rule`` (None when the rule has no body): the
    whole message for ``*``, else the named field, as ``encode_response_body`` writes one."""
    if not rule.body:
        return None
    return encode_response_body(request, "" if rule.body == "*" else rule.body, encoding)


def decode_response_body(
    data: bytes, encoding: Encoding, message_type: type[M], response_body: str
) -> M:
    """A unary answer's message from its body under ``response_body`` (the inverse of
    ``encode_response_body``); a malformed body is the server's fault (``internal``)."""
    try:
        return decode_body(data, encoding, message_type, response_body or "*")
    except RpcError as error:
        raise RpcError(Code.INTERNAL, f"malformed response: {error.message}") from None


def stream_item_type(message_type: type[Message], response_body: str) -> type[Message]:
    """What one record of a stream decodes to under ``response_body``: the named message
    field's type, or the whole response."""
    if not response_body:
        return message_type
    field = _top_field(message_type.DESCRIPTOR, response_body)
    if field is None or field.message_type is None or field.is_repeated:
        return message_type
    concrete: type[Message] = getattr(message_type(), field.name).__class__
    return concrete


def stream_response(message_type: type[M], response_body: str, item: Message) -> M:
    """The response one stream record stands for (the inverse of ``response_item``)."""
    if isinstance(item, message_type):
        return item
    response = message_type()
    field = _top_field(response.DESCRIPTOR, response_body)
    assert field is not None
    getattr(response, field.name).CopyFrom(item)
    return response
