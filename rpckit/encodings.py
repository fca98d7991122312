"""Message encodings: how one protobuf message becomes bytes on the HTTP bridge and in clients.

An encoding has a Connect codec ``name``, the ``content_type`` of one message and the
``stream_content_type`` of a plain-HTTP sequence of messages (the framing itself belongs
to the bridge). Five are registered by default:

- ``proto``: the protobuf binary format.
- ``json``: the protobuf JSON mapping (lowerCamelCase names out, both spellings in), compact
  UTF-8. Unknown fields are ignored on decode, because Connect clients built from a newer
  schema may send fields this server does not know yet.
- ``cbor`` and ``msgpack``: the very same value tree as JSON (``MessageToDict`` output, so
  64-bit integers are strings, bytes are base64 strings and enums are names), written with
  cbor2 or msgpack; decoding loads it and hands it to ``ParseDict``. Only JSON's types are
  accepted in the tree: a native byte string, tag or extension type is rejected rather than
  guessed at.
- ``postcard``: Postcard, the descriptor's fields as a serde struct (``rpckit.postcard``), what
  Dioxus Fullstack's ``PostcardEncoding`` carries; its stream is ``application/stream+postcard``.

Decoding never raises anything but ``RpcError(Code.INVALID_ARGUMENT, "<one line>")``, and
nothing nested deeper than ``rpckit.nesting.MAX_DEPTH`` (100) levels is decoded, by rpckit's
own check on every codec (protobuf's binary parser has the same limit built in).
"""

from __future__ import annotations

import io
import json
from typing import Any, Protocol, TypeVar

import cbor2
import msgpack  # type: ignore[import-untyped]  # msgpack ships no stubs
from google.protobuf import json_format
from google.protobuf.message import Message

from rpckit.errors import Code, RpcError
from rpckit.jsonfast import from_flat_dict, to_flat_dict, to_flat_json
from rpckit.nesting import MAX_DEPTH, CborScan, check_json_depth, too_deep
from rpckit.postcard import PostcardEncoding

__all__ = [
    "CborEncoding",
    "Encoding",
    "EncodingRegistry",
    "JsonEncoding",
    "MsgPackEncoding",
    "ProtoEncoding",
    "connect_codec",
    "encodings",
    "from_tree",
    "get",
    "media_type",
    "register",
]

M = TypeVar("M", bound=Message)

_MAX_REASON = 200
# Well-known types whose JSON form is not an object (a string, number, array...).
_NON_OBJECT_JSON = frozenset(
    "google.protobuf." + name
    for name in (
        "Duration",
        "Timestamp",
        "FieldMask",
        "Value",
        "ListValue",
        "NullValue",
        "DoubleValue",
        "FloatValue",
        "Int64Value",
        "UInt64Value",
        "Int32Value",
        "UInt32Value",
        "BoolValue",
        "StringValue",
        "BytesValue",
    )
)


class Encoding(Protocol):
    """How messages are written as bytes, for one message and for a plain-HTTP sequence."""

    name: str
    content_type: str
    stream_content_type: str

    def encode(self, message: Message) -> bytes:
        """The bytes of one message."""
        ...

    def decode(self, data: bytes, message_type: type[M]) -> M:
        """One message of ``message_type`` read from ``data``; RpcError if malformed."""
        ...


def _invalid(kind: str, error: BaseException | str) -> RpcError:
    """An INVALID_ARGUMENT error with a one-line, trimmed reason for malformed input."""
    reason = " ".join(str(error).split()) or type(error).__name__
    text = f"invalid {kind}: {reason}"
    if len(text) > _MAX_REASON:
        text = text[: _MAX_REASON - 3] + "..."
    return RpcError(Code.INVALID_ARGUMENT, text)


class ProtoEncoding:
    """The protobuf binary format, Connect's ``proto`` codec."""

    name = "proto"
    content_type = "application/proto"
    stream_content_type = "application/x-protobuf-delimited"

    def encode(self, message: Message) -> bytes:
        """The message's wire bytes."""
        return message.SerializeToString()

    def decode(self, data: bytes, message_type: type[M]) -> M:
        """Parses wire bytes; malformed bytes or invalid UTF-8 strings are INVALID_ARGUMENT."""
        message = message_type()
        try:
            message.ParseFromString(data)
        except Exception as exc:
            raise _invalid("proto", exc) from None
        return message


def _reject_constant(name: str) -> Any:
    """Refuses the ``NaN``/``Infinity`` literals Python's json module would otherwise accept."""
    raise ValueError(f"{name} is not valid JSON")


# Prebuilt once: json.dumps/json.loads with non-default options build a new coder per call.
_JSON_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
_JSON_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def to_tree(message: Message) -> Any:
    """The message as the protobuf JSON mapping's value tree (usually a dict)."""
    flat = to_flat_dict(message)
    return flat if flat is not None else json_format.MessageToDict(message)


def from_tree(kind: str, tree: Any, message_type: type[M]) -> M:
    """A message parsed from a JSON-mapping value tree; unknown fields are ignored.

    Trees from CBOR and MsgPack are checked first: JSON types only, ``MAX_DEPTH`` at most."""
    if kind != "json":
        try:
            _check_json_tree(tree)
        except RecursionError:
            raise too_deep(kind) from None
        except ValueError as exc:
            raise _invalid(kind, exc) from None
    if not isinstance(tree, dict) and message_type.DESCRIPTOR.full_name not in _NON_OBJECT_JSON:
        raise _invalid(kind, f"expected an object, got {_json_type(tree)}")
    fast = from_flat_dict(tree, message_type)
    if fast is not None:
        return fast
    message = message_type()
    try:
        json_format.ParseDict(tree, message, ignore_unknown_fields=True)
    except Exception as exc:
        raise _invalid(kind, exc) from None
    return message


def _json_type(value: object) -> str:
    """The JSON name of a decoded value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return type(value).__name__


class JsonEncoding:
    """The protobuf JSON mapping as compact UTF-8, Connect's ``json`` codec."""

    name = "json"
    content_type = "application/json"
    stream_content_type = "application/x-ndjson"

    def encode(self, message: Message) -> bytes:
        """Compact JSON with lowerCamelCase field names, UTF-8 encoded."""
        text = to_flat_json(message)
        if text is None:
            text = _JSON_ENCODER.encode(json_format.MessageToDict(message))
        return text.encode()

    def decode(self, data: bytes, message_type: type[M]) -> M:
        """Parses UTF-8 JSON accepting both field spellings and ignoring unknown fields."""
        check_json_depth(data)
        try:
            tree = _JSON_DECODER.decode(bytes(data).decode())
        except Exception as exc:
            raise _invalid("json", exc) from None
        return from_tree("json", tree, message_type)


def _check_json_tree(value: Any, depth: int = 0) -> None:
    """Raises ValueError unless ``value`` holds only JSON types (no bytes, tags, sets...)."""
    if depth >= MAX_DEPTH:
        raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
    kind = type(value)
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str:
                raise ValueError(f"map key of type {type(key).__name__}, expected a string")
            _check_json_tree(item, depth + 1)
    elif kind is list:
        for item in value:
            _check_json_tree(item, depth + 1)
    elif kind not in (str, int, float, bool, type(None)):
        raise ValueError(f"value of type {kind.__name__} has no JSON mapping")


class CborEncoding:
    """CBOR of the protobuf JSON mapping's value tree, rpckit's ``cbor`` codec."""

    name = "cbor"
    content_type = "application/cbor"
    stream_content_type = "application/cbor-seq"

    def encode(self, message: Message) -> bytes:
        """CBOR of the same tree JSON would write."""
        return cbor2.dumps(to_tree(message))

    def decode(self, data: bytes, message_type: type[M]) -> M:
        """Parses one CBOR item (no trailing bytes) holding a JSON-mapping tree."""
        end = CborScan().item_end(data)  # structure and depth, before cbor2 recurses
        if end is None:
            raise _invalid("cbor", "the item is truncated")
        if end != len(data):
            raise _invalid("cbor", f"{len(data) - end} bytes after the item")
        try:
            tree = cbor2.CBORDecoder(io.BytesIO(data), allow_duplicate_keys=False).decode()
        except Exception as exc:
            raise _invalid("cbor", exc) from None
        return from_tree("cbor", tree, message_type)


class MsgPackEncoding:
    """MessagePack of the protobuf JSON mapping's value tree, rpckit's ``msgpack`` codec."""

    name = "msgpack"
    content_type = "application/msgpack"
    stream_content_type = "application/vnd.msgpack-seq"

    def encode(self, message: Message) -> bytes:
        """MessagePack of the same tree JSON would write."""
        packed: bytes = msgpack.packb(to_tree(message))
        return packed

    def decode(self, data: bytes, message_type: type[M]) -> M:
        """Parses one MessagePack object (no trailing bytes) holding a JSON-mapping tree."""
        try:
            tree = msgpack.unpackb(data, raw=False, strict_map_key=True)
        except msgpack.StackError:  # deeper than msgpack's own stack, far past MAX_DEPTH
            raise too_deep("msgpack") from None
        except Exception as exc:
            raise _invalid("msgpack", exc) from None
        return from_tree("msgpack", tree, message_type)


def media_type(content_type: str) -> str:
    """A content type without parameters, lower-cased: ``"application/json"``."""
    return content_type.split(";", 1)[0].strip().lower()


class EncodingRegistry:
    """Encodings by codec name and by content type, in registration order."""

    def __init__(self) -> None:
        self._by_name: dict[str, Encoding] = {}

    def register(self, encoding: Encoding, *, replace: bool = False) -> None:
        """Adds an encoding; a taken name is a ValueError unless ``replace`` is set."""
        if encoding.name in self._by_name and not replace:
            raise ValueError(f"an encoding named {encoding.name!r} is already registered")
        self._by_name[encoding.name] = encoding

    def get(self, name: str) -> Encoding | None:
        """The encoding with this codec name, or None."""
        return self._by_name.get(name)

    def names(self) -> list[str]:
        """The registered codec names, in registration order."""
        return list(self._by_name)

    def by_content_type(self, content_type: str) -> Encoding | None:
        """The encoding whose single-message content type matches, ignoring parameters."""
        wanted = media_type(content_type)
        for encoding in self._by_name.values():
            if encoding.content_type.lower() == wanted:
                return encoding
        return None

    def copy(self) -> EncodingRegistry:
        """An independent registry with the same encodings, to extend without side effects."""
        clone = EncodingRegistry()
        clone._by_name = dict(self._by_name)
        return clone


encodings = EncodingRegistry()
for _encoding in (
    ProtoEncoding(),
    JsonEncoding(),
    CborEncoding(),
    MsgPackEncoding(),
    PostcardEncoding(),
):
    encodings.register(_encoding)


def register(encoding: Encoding, *, replace: bool = False) -> None:
    """Adds an encoding to the default registry."""
    encodings.register(encoding, replace=replace)


def get(name: str) -> Encoding | None:
    """The default registry's encoding with this codec name, or None."""
    return encodings.get(name)


def connect_codec(content_type: str) -> tuple[str, bool] | None:
    """The Connect codec name in a content type and whether it is the streaming form."""
    media = media_type(content_type)
    if media.startswith("application/connect+"):
        name, streaming = media.removeprefix("application/connect+"), True
    elif media.startswith("application/"):
        name, streaming = media.removeprefix("application/"), False
    else:
        return None
    return (name, streaming) if name else None
