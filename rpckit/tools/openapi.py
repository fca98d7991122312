"""OpenAPI 3.2 for the plain HTTP routes (``google.api.http``), free of I/O: method specs in,
a JSON-ready dict out.

Messages become JSON Schemas per the protobuf JSON mapping (lowerCamelCase names, int64 as
string, enums by name, well-known types as their JSON forms, maps as objects). Streams are
described as the bridge sends them: NDJSON, SSE (with its ``error`` and ``end`` events) or
raw text and bytes with their headers; each record's schema is the media type's
``itemSchema`` (OpenAPI 3.2, as FastAPI writes it for SSE and JSON Lines). Errors are the
bridge's JSON error object.

Interceptors that guard methods (``BearerAuth``, ``ApiKeyAuth``: anything with
``security_schemes()`` and ``protects(method)``) add their security schemes to the
components and a ``security`` requirement to each operation they guard, so that the docs
page's Authorize button sends their credentials.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor

from rpckit.errors import Code
from rpckit.service import HttpRule, MethodKind, MethodSpec

__all__ = ["ERROR_SCHEMA", "SecuritySource", "document", "document_from_protos", "http_rules"]

#: 3.2 for ``itemSchema``, the per-record schema of streaming media types: 3.1's Media Type
#: Object allows no such field (its JSON Schema says unevaluatedProperties: false).
OPENAPI_VERSION = "3.2.0"
#: For tools that read only 3.1 (``document(openapi="3.1.1")``).
OPENAPI_31 = "3.1.1"
NDJSON = "application/x-ndjson"
JSONL = "application/jsonl"
SSE = "text/event-stream"
CBOR_SEQ = "application/cbor-seq"
MSGPACK_SEQ = "application/vnd.msgpack-seq"
PROTO_DELIMITED = "application/x-protobuf-delimited"
_TEXT = "rpckit.v1.Text"
_RAW = ("rpckit.v1.Bytes", "google.api.HttpBody")
_INT64 = {
    FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_FIXED64, FieldDescriptor.TYPE_SFIXED64,
}  # fmt: skip
_INT32 = {
    FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_SINT32,
    FieldDescriptor.TYPE_FIXED32, FieldDescriptor.TYPE_SFIXED32,
}  # fmt: skip
_UNSIGNED = {
    FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32,
    FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64,
}  # fmt: skip
_FLOAT_WORDS = ["NaN", "Infinity", "-Infinity"]

#: The bridge's error body (the Connect ``Error`` object).
ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["code"],
    "properties": {
        "code": {"type": "string", "enum": sorted({c.connect_name for c in Code if c != Code.OK})},
        "message": {"type": "string"},
        "details": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["type", "value"],
                "properties": {
                    "type": {"type": "string", "description": "the detail's message type"},
                    "value": {"type": "string", "description": "base64 protobuf (unpadded)"},
                    "debug": {"description": "the detail as JSON, when the server knows it"},
                },
            },
        },
    },
}

_WELL_KNOWN: dict[str, dict[str, Any]] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]{1,9})?s$"},
    "google.protobuf.FieldMask": {"type": "string", "description": "comma-separated paths"},
    "google.protobuf.Struct": {"type": "object"},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array"},
    "google.protobuf.Empty": {"type": "object", "additionalProperties": False},
    "google.protobuf.Any": {
        "type": "object",
        "required": ["@type"],
        "properties": {"@type": {"type": "string"}},
    },
    "google.protobuf.BoolValue": {"type": ["boolean", "null"]},
    "google.protobuf.StringValue": {"type": ["string", "null"]},
    "google.protobuf.BytesValue": {"type": ["string", "null"], "contentEncoding": "base64"},
    "google.protobuf.Int32Value": {"type": ["integer", "null"], "format": "int32"},
    "google.protobuf.UInt32Value": {"type": ["integer", "null"], "minimum": 0},
    "google.protobuf.Int64Value": {"type": ["string", "integer", "null"], "format": "int64"},
    "google.protobuf.UInt64Value": {"type": ["string", "integer", "null"], "format": "uint64"},
    "google.protobuf.FloatValue": {"type": ["number", "string", "null"]},
    "google.protobuf.DoubleValue": {"type": ["number", "string", "null"]},
}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


class _Schemas:
    """Collects one component schema per message and enum reached from the routes."""

    def __init__(self) -> None:
        self.components: dict[str, Any] = {"rpckit.Error": ERROR_SCHEMA}

    def message(self, message: Descriptor) -> dict[str, Any]:
        known = _WELL_KNOWN.get(message.full_name)
        if known is not None:
            return dict(known)
        if message.full_name not in self.components:
            self.components[message.full_name] = {}  # placeholder: recursion ends here
            properties: dict[str, Any] = {}
            for field in message.fields:
                properties[field.json_name] = self.field(field)
            schema: dict[str, Any] = {"type": "object", "properties": properties}
            oneofs = [o for o in message.oneofs if len(o.fields) > 1]
            if oneofs:
                schema["description"] = "; ".join(
                    f"at most one of {', '.join(f.json_name for f in o.fields)}" for o in oneofs
                )
            self.components[message.full_name] = schema
        return _ref(message.full_name)

    def enum(self, enum: EnumDescriptor) -> dict[str, Any]:
        if enum.full_name == "google.protobuf.NullValue":
            return {"type": "null"}
        if enum.full_name not in self.components:
            self.components[enum.full_name] = {
                "anyOf": [
                    {"type": "string", "enum": [v.name for v in enum.values]},
                    {"type": "integer", "description": "the value's number"},
                ]
            }
        return _ref(enum.full_name)

    def field(self, field: FieldDescriptor) -> dict[str, Any]:
        if _is_map(field):
            _, value = _entry(field).fields
            return {"type": "object", "additionalProperties": self.single(value)}
        item = self.single(field)
        if _repeated(field):
            return {"type": "array", "items": item}
        return item

    def single(self, field: FieldDescriptor) -> dict[str, Any]:
        if field.message_type is not None:
            return self.message(field.message_type)
        if field.enum_type is not None:
            return self.enum(field.enum_type)
        return scalar_schema(field.type)


def scalar_schema(kind: int) -> dict[str, Any]:
    """The JSON Schema of a scalar field type, per the protobuf JSON mapping."""
    if kind in _INT64:
        fmt = "uint64" if kind in _UNSIGNED else "int64"
        return {"type": ["string", "integer"], "format": fmt, "pattern": r"^-?[0-9]+$"}
    if kind in _INT32:
        schema: dict[str, Any] = {"type": "integer"}
        if kind in _UNSIGNED:
            schema.update(minimum=0, maximum=2**32 - 1)
        else:
            schema.update(minimum=-(2**31), maximum=2**31 - 1)
        return schema
    if kind in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
        return {"anyOf": [{"type": "number"}, {"type": "string", "enum": _FLOAT_WORDS}]}
    if kind == FieldDescriptor.TYPE_BOOL:
        return {"type": "boolean"}
    if kind == FieldDescriptor.TYPE_BYTES:
        return {"type": "string", "contentEncoding": "base64"}
    return {"type": "string"}


def _repeated(field: FieldDescriptor) -> bool:
    return field.is_repeated


def _entry(field: FieldDescriptor) -> Descriptor:
    assert field.message_type is not None
    return field.message_type


def _is_map(field: FieldDescriptor) -> bool:
    return field.message_type is not None and field.message_type.GetOptions().map_entry


_VARIABLE = re.compile(r"\{([^}=]+)(?:=([^}]*))?\}")


def _path(template: str) -> tuple[str, list[tuple[str, str]]]:
    """An OpenAPI path for an http.proto template and its parameters (name, field path).

    A variable's literal segments stay in the path (``{name=shelves/*}`` ->
    ``shelves/{name}``); its value is still the whole match, as the bridge binds it.
    """
    params: list[tuple[str, str]] = []

    def replace(match: re.Match[str]) -> str:
        field, pattern = match.group(1), match.group(2) or "*"
        wild = [s for s in pattern.split("/") if s in ("*", "**")]
        out = []
        for segment in pattern.split("/"):
            if segment in ("*", "**"):
                name = field if len(wild) == 1 else f"{field}_{len(params) + 1}"
                params.append((name, field))
                out.append("{" + name + "}")
            else:
                out.append(segment)
        return "/".join(out)

    return _VARIABLE.sub(replace, template), params


def _query(
    schemas: _Schemas, message: Descriptor, bound: set[str], prefix: str, depth: int
) -> list[dict[str, Any]]:
    """Query parameters for the fields not bound by the path or the body."""
    out: list[dict[str, Any]] = []
    for field in message.fields:
        name = prefix + field.json_name
        if name in bound or prefix + field.name in bound:
            continue
        if _is_map(field):
            continue  # maps cannot be given in a query string
        sub = field.message_type
        if sub is not None and sub.full_name not in _WELL_KNOWN:
            if not _repeated(field) and depth < 3:
                out += _query(schemas, sub, bound, name + ".", depth + 1)
            continue
        if sub is not None and sub.full_name == "google.protobuf.Any":
            continue
        schema = schemas.field(field)
        param: dict[str, Any] = {"name": name, "in": "query", "schema": schema}
        if _repeated(field):
            param.update(style="form", explode=True)
        out.append(param)
    return out


def _field_by_path(message: Descriptor, path: str) -> FieldDescriptor | None:
    field = None
    current: Descriptor | None = message
    for part in path.split("."):
        if current is None:
            return None
        field = current.fields_by_name.get(part)
        if field is None:
            return None
        current = field.message_type
    return field


_RAW_HEADERS = {
    "Content-Disposition": {"description": "the file name, for downloads"},
    "X-Content-Size": {"description": "the total size in bytes, when known"},
    "Accept-Ranges": {"description": "`bytes` when the handler sends a file (Range works)"},
    "ETag": {"description": "for files: the entity tag (If-Range, If-None-Match)"},
    "Last-Modified": {"description": "for files"},
}


def _headers(names: Iterable[str]) -> dict[str, Any]:
    return {n: {**_RAW_HEADERS[n], "schema": {"type": "string"}} for n in names}


def _error_response(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": _ref("rpckit.Error")}},
    }


def _responses(schemas: _Schemas, method: MethodSpec[Any, Any], rule: HttpRule) -> dict[str, Any]:
    output: Descriptor = method.output.DESCRIPTOR
    item: dict[str, Any]
    if rule.response_body:
        field = _field_by_path(output, rule.response_body)
        item = schemas.field(field) if field is not None else {}
    else:
        item = schemas.message(output)
    responses: dict[str, Any] = {}
    if not method.kind.server_streams:
        responses["200"] = {
            "description": f"the {output.name}",
            "content": {"application/json": {"schema": item}},
        }
    elif output.full_name == _TEXT:
        responses["200"] = {
            "description": "the text as it is produced (raw UTF-8, chunk by chunk); an error "
            "after the first byte cuts the body off without its last chunk",
            "content": {"text/plain; charset=utf-8": {"schema": {"type": "string"}}},
        }
    elif output.full_name in _RAW:
        raw = "the bytes as they are produced; an error after the first byte cuts the body off"
        # HttpBody items and files carry their own content type; Bytes are octets.
        media = "*/*" if output.full_name == "google.api.HttpBody" else "application/octet-stream"
        responses["200"] = {
            "description": raw,
            "headers": _headers(_RAW_HEADERS),
            "content": {media: {"schema": {"type": "string"}}},
        }
        responses["206"] = {
            "description": "the requested range of a file (Range: bytes=...)",
            "headers": _headers(["Content-Disposition", "X-Content-Size", "ETag"]),
            "content": {media: {"schema": {"type": "string"}}},
        }
        responses["416"] = _error_response("the range is not satisfiable")
    else:
        name = output.full_name
        responses["200"] = {
            "description": (
                f"a stream of {name}, framed by Accept. NDJSON (default): one JSON {name} per "
                'line, and on failure a last line {"error": Error}. SSE: one `data:` event per '
                "item, an `event: error` with the Error JSON on failure, and `event: end` when "
                "the stream is complete. Also CBOR and MessagePack sequences (the JSON tree) "
                "and varint-delimited protobuf. `itemSchema` (OpenAPI 3.2) is one item."
            ),
            "content": _stream_content(item),
        }
    responses["default"] = _error_response(
        "an error before the first byte: the status follows the code (404 not_found, "
        "400 invalid_argument, ...)"
    )
    return responses


def _sequence(item: dict[str, Any]) -> dict[str, Any]:
    """A sequential media type (OpenAPI 3.2): ``schema`` is the whole body, which the data
    model treats as an array of the records; ``itemSchema`` is one record."""
    return {"schema": {"type": "array", "items": item}, "itemSchema": item}


def _sse_item_schema(item: dict[str, Any]) -> dict[str, Any]:
    """One server-sent event of a stream of ``item``, as OpenAPI 3.2 models
    ``text/event-stream``: an object of the event's fields, ``data`` the JSON text.

    Three kinds: an item (no ``event`` field, or a handler's own event name), ``error``
    (its data the Error JSON, the last event of a failed stream) and ``end`` (empty data,
    the last event of a complete one).
    """
    fields = {"id": {"type": "string"}, "retry": {"type": "integer", "minimum": 0}}
    return {
        "oneOf": [
            {
                "type": "object",
                "required": ["data"],
                "properties": {
                    "event": {"type": "string", "not": {"enum": ["error", "end"]}},
                    "data": {
                        "type": "string",
                        "contentMediaType": "application/json",
                        "contentSchema": item,
                    },
                    **fields,
                },
            },
            {
                "type": "object",
                "required": ["event", "data"],
                "properties": {
                    "event": {"const": "error"},
                    "data": {
                        "type": "string",
                        "contentMediaType": "application/json",
                        "contentSchema": _ref("rpckit.Error"),
                    },
                    **fields,
                },
            },
            {
                "type": "object",
                "required": ["event"],
                "properties": {"event": {"const": "end"}, "data": {"const": ""}, **fields},
            },
        ]
    }


def _stream_content(item: dict[str, Any]) -> dict[str, Any]:
    """The media types of a server stream of ``item``, each with its ``itemSchema``."""
    record = {
        "anyOf": [
            item,
            {
                "type": "object",
                "required": ["error"],
                "properties": {"error": _ref("rpckit.Error")},
                "additionalProperties": False,
                "description": "the last record of a stream that failed",
            },
        ]
    }
    return {
        NDJSON: _sequence(record),
        JSONL: _sequence(record),
        SSE: {"schema": {"type": "string"}, "itemSchema": _sse_item_schema(item)},
        CBOR_SEQ: _sequence(record),
        MSGPACK_SEQ: _sequence(record),
        PROTO_DELIMITED: {"schema": {"type": "string", "format": "binary"}},
    }


def _request_body(
    schemas: _Schemas, method: MethodSpec[Any, Any], rule: HttpRule
) -> dict[str, Any] | None:
    if not rule.body:
        return None
    message: Descriptor = method.input.DESCRIPTOR
    if rule.body == "*":
        schema = schemas.message(message)
    else:
        field = _field_by_path(message, rule.body)
        schema = schemas.field(field) if field is not None else {}
    if not method.kind.client_streams:
        return {"required": True, "content": {"application/json": {"schema": schema}}}
    if message.full_name in _RAW or message.full_name == _TEXT:
        kind = "text/plain" if message.full_name == _TEXT else "application/octet-stream"
        return {
            "required": False,
            "description": "the raw body, streamed to the handler as it arrives (may be empty)",
            "content": {kind: {"schema": {"type": "string"}}},
        }
    return {
        "required": False,
        "description": f"a stream of {message.full_name}, possibly empty: one JSON document "
        "per line, each line following the itemSchema (also CBOR and MessagePack sequences "
        "and varint-delimited protobuf)",
        "content": {
            media: {"schema": {"type": "array", "items": schema}, "itemSchema": schema}
            for media in (NDJSON, JSONL)
        },
    }


@runtime_checkable
class SecuritySource(Protocol):
    """An interceptor that asks some methods for credentials, as OpenAPI describes it."""

    def security_schemes(self) -> dict[str, dict[str, Any]]:
        """OpenAPI security schemes by name, each enough on its own (alternatives)."""
        ...

    def protects(self, method: MethodSpec[Any, Any]) -> bool:
        """Whether calls to ``method`` need credentials."""
        ...


_Guards = list[tuple[SecuritySource, list[str]]]


def _security(interceptors: Iterable[object]) -> tuple[dict[str, Any], _Guards]:
    """The security schemes of ``interceptors`` (a name taken by another scheme gets a
    number), and each guarding interceptor with the names of its schemes."""
    schemes: dict[str, Any] = {}
    guards: _Guards = []
    for source in interceptors:
        if not isinstance(source, SecuritySource):
            continue
        names = []
        for name, scheme in source.security_schemes().items():
            given, number = name, 2
            while given in schemes and schemes[given] != scheme:
                given, number = f"{name}{number}", number + 1
            schemes[given] = scheme
            names.append(given)
        if names:
            guards.append((source, names))
    return schemes, guards


def _requirements(guards: _Guards, method: MethodSpec[Any, Any]) -> list[dict[str, list[str]]]:
    """The operation's ``security``: every guard of the method must pass (one scheme of
    each), so the alternatives are the product of each guard's schemes."""
    required = [names for source, names in guards if source.protects(method)]
    if not required:
        return []
    return [{name: [] for name in choice} for choice in itertools.product(*required)]


def document(
    methods: Iterable[MethodSpec[Any, Any]],
    *,
    title: str = "rpckit API",
    version: str = "0",
    description: str | None = None,
    interceptors: Iterable[object] = (),
    openapi: str = OPENAPI_VERSION,
) -> dict[str, Any]:
    """The OpenAPI 3.2 document of the plain routes of ``methods`` (methods without
    ``google.api.http`` rules have only Connect endpoints and are left out); the
    ``interceptors`` that guard methods add their security schemes.

    ``openapi="3.1.1"`` gives the same document for tools that know only 3.1 (Swagger UI 5
    renders no 3.2): every ``itemSchema`` becomes the extension ``x-itemSchema``.
    """
    if openapi not in (OPENAPI_VERSION, OPENAPI_31):
        raise ValueError(f"openapi must be {OPENAPI_VERSION!r} or {OPENAPI_31!r}")
    schemas = _Schemas()
    security_schemes, guards = _security(interceptors)
    paths: dict[str, dict[str, Any]] = {}
    for method in methods:
        for index, rule in enumerate(method.http):
            path, params = _path(rule.path)
            verb = rule.method.lower()
            operations = paths.setdefault(path, {})
            if verb in operations:
                continue  # two templates that differ only in their variable patterns
            message: Descriptor = method.input.DESCRIPTOR
            parameters: list[dict[str, Any]] = []
            for name, field_path in params:
                field = _field_by_path(message, field_path)
                schema = schemas.single(field) if field is not None else {"type": "string"}
                if "$ref" in schema or "type" not in schema or "null" in str(schema.get("type")):
                    schema = {"type": "string"}
                parameters.append({"name": name, "in": "path", "required": True, "schema": schema})
            if rule.body != "*":
                bound = {m.group(1) for m in _VARIABLE.finditer(rule.path)}
                if rule.body:
                    bound.add(rule.body)
                parameters += _query(schemas, message, bound, "", 0)
            operation: dict[str, Any] = {
                "operationId": f"{method.service}.{method.name}" + (f".{index}" if index else ""),
                "summary": f"{method.name} ({method.kind.value.replace('_', ' ')})",
                "tags": [method.service],
                "description": f"Connect: POST {method.path}",
                "parameters": parameters,
                "responses": _responses(schemas, method, rule),
            }
            body = _request_body(schemas, method, rule)
            if body is not None:
                operation["requestBody"] = body
            if method.kind == MethodKind.BIDI_STREAM:
                operation["description"] += "; bidi streams need gRPC or WebSocket"
            security = _requirements(guards, method)
            if security:
                operation["security"] = security
                responses = operation["responses"]
                responses.setdefault("401", _error_response("missing or invalid credentials"))
                responses.setdefault("403", _error_response("the credentials may not call this"))
            operations[verb] = operation
    info: dict[str, Any] = {"title": title, "version": version}
    if description:
        info["description"] = description
    components: dict[str, Any] = {"schemas": schemas.components}
    if security_schemes:
        components["securitySchemes"] = security_schemes
    out = {"openapi": openapi, "info": info, "paths": paths, "components": components}
    return out if openapi == OPENAPI_VERSION else _as_31(out)


def _as_31(node: Any) -> Any:
    """``node`` with every Media Type Object's ``itemSchema`` renamed ``x-itemSchema``."""
    if isinstance(node, list):
        return [_as_31(v) for v in node]
    if not isinstance(node, dict):
        return node
    return {("x-itemSchema" if k == "itemSchema" else k): _as_31(v) for k, v in node.items()}


def http_rules(method: descriptor_pb2.MethodDescriptorProto) -> tuple[HttpRule, ...]:
    """The ``google.api.http`` rules of a method, as the generator reads them."""
    from google.api import annotations_pb2

    extension: Any = annotations_pb2.http
    if not method.options.HasExtension(extension):
        return ()
    top = method.options.Extensions[extension]
    rules = []
    for rule in [top, *top.additional_bindings]:
        pattern = rule.WhichOneof("pattern")
        if pattern is None:
            raise ValueError(f"{method.name}: google.api.http rule without a pattern")
        if pattern == "custom":
            verb, path = rule.custom.kind.upper(), rule.custom.path
        else:
            verb, path = pattern.upper(), getattr(rule, pattern)
        rules.append(HttpRule(verb, path, rule.body, rule.response_body))
    return tuple(rules)


def methods_of(
    files: Sequence[descriptor_pb2.FileDescriptorProto], only: Iterable[str] = ()
) -> list[MethodSpec[Any, Any]]:
    """Method specs (dynamic messages, http rules) of the services in ``files`` (or in the
    files named in ``only``)."""
    from rpckit.tools.schema import Schema

    schema = Schema(files)
    wanted = set(only) or {f.name for f in files}
    out = []
    for f in files:
        if f.name not in wanted:
            continue
        for service in f.service:
            full = f"{f.package}.{service.name}" if f.package else service.name
            for method in service.method:
                spec = schema.method_spec(f"{full}/{method.name}")
                out.append(_with_rules(spec, http_rules(method)))
    return out


def _with_rules(spec: MethodSpec[Any, Any], rules: tuple[HttpRule, ...]) -> MethodSpec[Any, Any]:
    return MethodSpec(
        service=spec.service, name=spec.name, handler=spec.handler, kind=spec.kind,
        input=spec.input, output=spec.output, idempotency=spec.idempotency, http=rules,
    )  # fmt: skip


def document_from_protos(
    proto_paths: Sequence[Path], protos: Sequence[str] = (), *, title: str = "rpckit API"
) -> dict[str, Any]:
    """``rpckit openapi``: compile ``protos`` (default: all under ``proto_paths``) and
    describe their routes."""
    from rpckit.tools.schema import compile_protos

    files = compile_protos(proto_paths, protos)
    only = protos or [f.name for f in files if any((p / f.name).is_file() for p in proto_paths)]
    return document(methods_of(files, only), title=title)
