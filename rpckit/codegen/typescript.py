"""``rpckit generate --ts DIR``: a typed TypeScript client over fetch. Pure: descriptors in,
text out (``run_typescript`` adds the protoc run).

Output: one ES module per ``.proto`` (``examples/streams/v1/streams.ts``) with an interface
per message, a string-union type per enum and a client class per service, plus
``rpckit-client.ts``, the small runtime every module imports (fetch, NDJSON/SSE/Connect
readers, WebSocket calls, uploads and downloads). Imports are relative with ``.js``
extensions, so ``tsc`` output loads in a browser or Node without a bundler.

Why these choices:

* **Plain proto3-JSON interfaces, not protoc-gen-es types.** rpckit's plain-HTTP routes,
  SSE events, NDJSON lines, WebSocket frames and Connect JSON bodies all carry the proto3
  JSON mapping, so the interfaces *are* the wire: ``int64`` and ``bytes`` are strings
  (decimal, base64), enums their value names, ``Timestamp``/``Duration``/``FieldMask``
  their string forms, wrappers nullable primitives, ``Struct``/``Value`` JSON values, maps
  ``Record<string, V>``. No message classes, no binary codec, no runtime dependency at all:
  nothing beyond what a connect-es user already has (fetch, streams, WebSocket), and no
  version coupling with @bufbuild/protobuf. Every field is optional (``?:``), as in the
  mapping: the server omits default values and a request sets only what it needs. Oneof
  members are optional fields. The cost: no message validation at run time, and int64
  arithmetic is the caller's (``BigInt(x)``).
* **REST where the schema has a route, bound as the server binds it** (rpckit.http.rest.
  routes): ``{field}`` and ``{a.b=pattern/*}`` variables from their fields (a multi-segment
  variable keeps its ``/``), ``body: "*"`` or one field as the JSON body, every other set
  field a query parameter (dotted paths for nested messages, repeated keys for repeated
  fields), ``response_body`` unwrapped. Only the first binding is used. Methods without a
  route use Connect JSON (unary POST ``application/json``; server streams
  ``application/connect+json`` envelopes), bidi and route-less client streams use rpckit's
  WebSocket sub-protocol (``rpckit.v1.json``).
* **Streams are ``AsyncIterable``** (``for await``): NDJSON by default, SSE per call
  (``framing: "sse"``); the in-band error record (NDJSON ``{"error":...}``, SSE
  ``event: error``, Connect's end envelope) throws a typed ``RpcError``; SSE's ``event: end``
  is the clean end. Durability is a server-side decorator, not in the schema, so the client
  recognises a durable stream by its ``rpckit-stream-id`` response header, counts items and,
  after a network error, re-requests with ``?stream=<id>&offset=<count>`` (request headers
  when the request has fields of those names, and on Connect) a bounded number of times.
* **Bytes and files** (``rpckit.v1.Bytes``/``google.api.HttpBody`` over a route) are
  uploads from ``File``/``Blob``/``ReadableStream``/bytes with Content-Disposition and
  X-Content-Size, and downloads with the name and size from the headers. Upload progress:
  ``XMLHttpRequest`` where it exists (browsers: real progress over HTTP/1.1, where Chromium
  refuses streaming request bodies), a counting ``ReadableStream`` with ``duplex: "half"``
  elsewhere (Node has no XHR), or ``mode: "blob"`` (one fetch, progress at the end).
* **Every call** takes ``signal``, ``timeoutMs`` (``connect-timeout-ms`` and a local
  deadline), ``headers`` and ``credentials``; interceptors are ``(req, next) => ...``
  around fetch (and around the XHR of uploads). WebSocket calls carry the headers in their
  ``start`` frame; interceptors do not see them (there is no Request to show).

Names: types are ``Outer_Inner`` (nested), ones that would hide a TypeScript global or
keyword get a ``$`` suffix (never in a proto name); other files' types are reached through
namespace imports (``$i1.Bytes``), so no two files' names can clash. Client methods are
lowerCamelCase, de-duplicated with ``_2``, ``_3``.
"""

from __future__ import annotations

import json
import re
import tempfile
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor_pb2

__all__ = ["RUNTIME", "RUNTIME_FILE", "generate_typescript", "run_typescript", "ts_module"]

#: The runtime module's file name, written at the output's root.
RUNTIME_FILE = "rpckit-client.ts"

_FD = descriptor_pb2.FieldDescriptorProto
_NUMBER = "number"
_SCALARS = {
    _FD.TYPE_DOUBLE: _NUMBER, _FD.TYPE_FLOAT: _NUMBER, _FD.TYPE_INT32: _NUMBER,
    _FD.TYPE_UINT32: _NUMBER, _FD.TYPE_SINT32: _NUMBER, _FD.TYPE_FIXED32: _NUMBER,
    _FD.TYPE_SFIXED32: _NUMBER, _FD.TYPE_INT64: "string", _FD.TYPE_UINT64: "string",
    _FD.TYPE_SINT64: "string", _FD.TYPE_FIXED64: "string", _FD.TYPE_SFIXED64: "string",
    _FD.TYPE_BOOL: "boolean", _FD.TYPE_STRING: "string", _FD.TYPE_BYTES: "string",
}  # fmt: skip
#: Well-known types in the proto3 JSON mapping (``$rt`` is the runtime module).
_WELL_KNOWN = {
    ".google.protobuf.Timestamp": "string",
    ".google.protobuf.Duration": "string",
    ".google.protobuf.FieldMask": "string",
    ".google.protobuf.DoubleValue": "number | null",
    ".google.protobuf.FloatValue": "number | null",
    ".google.protobuf.Int32Value": "number | null",
    ".google.protobuf.UInt32Value": "number | null",
    ".google.protobuf.Int64Value": "string | null",
    ".google.protobuf.UInt64Value": "string | null",
    ".google.protobuf.BoolValue": "boolean | null",
    ".google.protobuf.StringValue": "string | null",
    ".google.protobuf.BytesValue": "string | null",
    ".google.protobuf.Struct": "$rt.JsonObject",
    ".google.protobuf.Value": "$rt.JsonValue",
    ".google.protobuf.ListValue": "$rt.JsonValue[]",
    ".google.protobuf.Any": "$rt.AnyMessage",
    ".google.protobuf.Empty": "$rt.EmptyMessage",
    ".google.protobuf.NullValue": "null",
}
_RAW = frozenset({".rpckit.v1.Bytes", ".google.api.HttpBody"})
_TEXT = ".rpckit.v1.Text"
#: Names a generated type must not take: TypeScript keywords and the globals generated code
#: reads. Such a type gets a ``$`` suffix.
_RESERVED = frozenset({
    "break", "case", "catch", "class", "const", "continue", "debugger", "default", "delete",
    "do", "else", "enum", "export", "extends", "false", "finally", "for", "function", "if",
    "import", "in", "instanceof", "new", "null", "return", "super", "switch", "this", "throw",
    "true", "try", "typeof", "var", "void", "while", "with", "as", "implements", "interface",
    "let", "package", "private", "protected", "public", "static", "yield", "any", "boolean",
    "constructor", "declare", "get", "module", "require", "number", "set", "string", "symbol",
    "type", "from", "of", "unknown", "never", "object", "bigint", "undefined", "async", "await",
    "Promise", "AsyncIterable", "Iterable", "Record", "Array", "Blob", "ReadableStream",
    "Uint8Array", "Error", "Headers", "Response", "Request", "Object", "String", "Number",
    "Boolean", "Symbol", "Map", "Set", "Date", "JSON"
})  # fmt: skip
_IDENT = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*\Z")


def ts_module(proto_file: str) -> str:
    """The module a .proto file becomes: ``a/b/c.proto`` -> ``a/b/c.ts``."""
    return proto_file.removesuffix(".proto") + ".ts"


def _js(value: Any) -> str:
    """A JavaScript literal (ASCII JSON: schema text is untrusted)."""
    return json.dumps(value, ensure_ascii=True)


def _doc(text: str, indent: str) -> list[str]:
    if not text:
        return []
    safe = text.replace("*/", "*\\/").replace("\r\n", "\n")
    lines = [line.rstrip() for line in safe.split("\n")]
    if len(lines) == 1:
        return [f"{indent}/** {lines[0]} */"]
    return [f"{indent}/**", *(f"{indent} * {line}".rstrip() for line in lines), f"{indent} */"]


def _camel(name: str) -> str:
    """``GetDog`` -> ``getDog``; ``HTTPGet`` -> ``httpGet``; ``get_dog`` -> ``getDog``."""
    words: list[str] = re.findall(r"[A-Z]+(?=[A-Z][a-z]|[0-9]|\b|_)|[A-Z]?[a-z0-9]+|[A-Z]+", name)
    if not words:
        return "call"
    first, *rest = words
    return first.lower() + "".join(w[:1].upper() + w[1:].lower() for w in rest)


@dataclass
class _Type:
    full: str
    file: str
    ts: str
    message: descriptor_pb2.DescriptorProto | None = None
    enum: descriptor_pb2.EnumDescriptorProto | None = None
    path: tuple[int, ...] = ()
    map_entry: bool = False


@dataclass
class _Index:
    types: dict[str, _Type] = field(default_factory=dict)
    files: dict[str, descriptor_pb2.FileDescriptorProto] = field(default_factory=dict)

    def add_file(self, f: descriptor_pb2.FileDescriptorProto) -> None:
        self.files[f.name] = f
        prefix = f".{f.package}" if f.package else ""
        for i, message in enumerate(f.message_type):
            self._message(f.name, prefix, "", message, (4, i))
        for i, enum in enumerate(f.enum_type):
            self._enum(f.name, prefix, "", enum, (5, i))

    def _ts_name(self, flat: str) -> str:
        return flat + "$" if flat in _RESERVED else flat

    def _message(
        self, file: str, prefix: str, outer: str, m: descriptor_pb2.DescriptorProto,
        path: tuple[int, ...],
    ) -> None:  # fmt: skip
        full = f"{prefix}.{m.name}"
        flat = f"{outer}_{m.name}" if outer else m.name
        self.types[full] = _Type(
            full, file, self._ts_name(flat), message=m, path=path,
            map_entry=m.options.map_entry,
        )  # fmt: skip
        for i, nested in enumerate(m.nested_type):
            self._message(file, full, flat, nested, (*path, 3, i))
        for i, enum in enumerate(m.enum_type):
            self._enum(file, full, flat, enum, (*path, 4, i))

    def _enum(
        self, file: str, prefix: str, outer: str, e: descriptor_pb2.EnumDescriptorProto,
        path: tuple[int, ...],
    ) -> None:  # fmt: skip
        full = f"{prefix}.{e.name}"
        flat = f"{outer}_{e.name}" if outer else e.name
        self.types[full] = _Type(full, file, self._ts_name(flat), enum=e, path=path)


def _field_types(t: _Type) -> Iterable[str]:
    if t.message is not None:
        for f in t.message.field:
            if f.type in (_FD.TYPE_MESSAGE, _FD.TYPE_GROUP, _FD.TYPE_ENUM):
                yield f.type_name


def _reachable(index: _Index, to_generate: Sequence[str]) -> list[str]:
    """The files to emit: those asked for, and those holding a type they reach (whole
    files, so that every type a file emits can name its own fields' types)."""
    wanted = set(to_generate)
    pending = [name for name, t in index.types.items() if t.file in wanted]
    for file in to_generate:
        for service in index.files[file].service:
            for method in service.method:
                pending += [method.input_type, method.output_type]
    seen: set[str] = set()
    while pending:
        name = pending.pop()
        if name in seen or name in _WELL_KNOWN or name not in index.types:
            continue
        seen.add(name)
        t = index.types[name]
        if t.file not in wanted:
            wanted.add(t.file)
            pending += [n for n, other in index.types.items() if other.file == t.file]
        pending += list(_field_types(t))
    return [f for f in index.files if f in wanted]


def _comments(f: descriptor_pb2.FileDescriptorProto) -> dict[tuple[int, ...], str]:
    return {
        tuple(loc.path): textwrap.dedent(loc.leading_comments).strip()
        for loc in f.source_code_info.location
        if loc.leading_comments.strip()
    }


def _relative(from_file: str, to_module: str) -> str:
    """A relative ESM specifier from the module of ``from_file`` to ``to_module`` (.ts)."""
    here = PurePosixPath(ts_module(from_file)).parent
    target = PurePosixPath(to_module).with_suffix(".js")
    up = len(here.parts)
    spec = "/".join([".."] * up + list(target.parts)) if up else f"./{target}"
    return spec


class _Module:
    """One output module: its imports (namespaces of other files) and its lines."""

    def __init__(self, index: _Index, file: str) -> None:
        self.index = index
        self.file = file
        self.imports: dict[str, str] = {}  # other proto file -> namespace alias

    def ref(self, full: str) -> str:
        if full in _WELL_KNOWN:
            return _WELL_KNOWN[full]
        t = self.index.types.get(full)
        if t is None:
            return "$rt.JsonValue"  # a google.protobuf type the mapping gives no shape
        if t.file == self.file:
            return t.ts
        alias = self.imports.setdefault(t.file, f"$i{len(self.imports) + 1}")
        return f"{alias}.{t.ts}"

    def field_type(self, f: descriptor_pb2.FieldDescriptorProto) -> str:
        if f.type in (_FD.TYPE_MESSAGE, _FD.TYPE_GROUP):
            entry = self.index.types.get(f.type_name)
            if entry is not None and entry.map_entry and entry.message is not None:
                value = next(v for v in entry.message.field if v.number == 2)
                return f"Record<string, {self.field_type(value)}>"
            base = self.ref(f.type_name)
        elif f.type == _FD.TYPE_ENUM:
            base = self.ref(f.type_name)
        else:
            base = _SCALARS[f.type]
        if f.label == _FD.LABEL_REPEATED:
            return f"({base})[]" if " " in base else f"{base}[]"
        return base


def _json_path(index: _Index, message: str, path: str) -> list[str] | None:
    """A field path (proto or JSON names) as JSON names, or None if it names no field."""
    out = []
    current = message
    for part in path.split("."):
        t = index.types.get(current)
        if t is None or t.message is None:
            return None
        found = next((f for f in t.message.field if part in (f.name, f.json_name)), None)
        if found is None:
            return None
        out.append(found.json_name)
        current = found.type_name
    return out


def _route(index: _Index, method: descriptor_pb2.MethodDescriptorProto) -> dict[str, Any] | None:
    http_option: Any = annotations_pb2.http
    if not method.options.HasExtension(http_option):
        return None
    rule: http_pb2.HttpRule = method.options.Extensions[http_option]
    pattern = rule.WhichOneof("pattern")
    if pattern is None:
        return None
    if pattern == "custom":
        verb, path = rule.custom.kind.upper(), rule.custom.path
    else:
        verb, path = pattern.upper(), getattr(rule, pattern)
    parts: list[Any] = []
    for piece in re.split(r"(\{[^}]*\})", path):
        if not piece:
            continue
        if piece.startswith("{"):
            name, _, inner = piece[1:-1].partition("=")
            json_path = _json_path(index, method.input_type, name)
            if json_path is None:
                raise ValueError(f"{method.name}: path variable {{{name}}} names no field")
            multi = "/" in inner or inner == "**"
            parts.append({"field": json_path, "multi": multi})
        elif parts and isinstance(parts[-1], str):
            parts[-1] += piece
        else:
            parts.append(piece)
    out: dict[str, Any] = {"verb": verb, "path": parts, "body": "", "responseBody": ""}
    if rule.body == "*":
        out["body"] = "*"
    elif rule.body:
        body = _json_path(index, method.input_type, rule.body)
        if body is None or len(body) != 1:
            raise ValueError(f"{method.name}: body {rule.body!r} names no field")
        out["body"] = body[0]
        request = index.types[method.input_type].message
        assert request is not None
        f = next(f for f in request.field if f.json_name == body[0])
        entry = index.types.get(f.type_name)
        if f.label == _FD.LABEL_REPEATED:
            out["bodyDefault"] = {} if entry is not None and entry.map_entry else []
        else:
            out["bodyDefault"] = {} if f.type in (_FD.TYPE_MESSAGE, _FD.TYPE_GROUP) else None
    if rule.response_body:
        response = _json_path(index, method.output_type, rule.response_body)
        if response is None or len(response) != 1:
            raise ValueError(f"{method.name}: response_body {rule.response_body!r} names no field")
        out["responseBody"] = response[0]
    return out


def _response_field(
    index: _Index, method: descriptor_pb2.MethodDescriptorProto, json_name: str
) -> descriptor_pb2.FieldDescriptorProto:
    output = index.types[method.output_type].message
    assert output is not None
    return next(f for f in output.field if f.json_name == json_name)


def _emit_file(index: _Index, file: str) -> str:
    f = index.files[file]
    mod = _Module(index, file)
    comments = _comments(f)
    body: list[str] = []
    own = [t for t in index.types.values() if t.file == file and not t.map_entry]
    for t in own:
        body.append("")
        body += _doc(comments.get(t.path, ""), "")
        if t.enum is not None:
            names = " | ".join(_js(v.name) for v in t.enum.value)
            body.append(f"export type {t.ts} = {names};")
            continue
        assert t.message is not None
        body.append(f"export interface {t.ts} {{")
        for i, fd in enumerate(t.message.field):
            body += _doc(comments.get((*t.path, 2, i), ""), "  ")
            key = fd.json_name if _IDENT.match(fd.json_name) else _js(fd.json_name)
            body.append(f"  {key}?: {mod.field_type(fd)};")
        body.append("}")
    for s_index, service in enumerate(f.service):
        body += _emit_service(index, mod, f, service, s_index, comments)
    head = [
        f"// Generated by rpckit generate --ts from {_js(file)[1:-1]}. Do not edit.",
        "/* eslint-disable */",
    ]
    if any("$rt." in line for line in body):
        head.append(f'import * as $rt from "{_relative(file, RUNTIME_FILE)}";')
    for other, alias in mod.imports.items():
        head.append(f'import type * as {alias} from "{_relative(file, ts_module(other))}";')
    return "\n".join(head + body) + "\n"


def _emit_service(
    index: _Index,
    mod: _Module,
    f: descriptor_pb2.FileDescriptorProto,
    service: descriptor_pb2.ServiceDescriptorProto,
    s_index: int,
    comments: dict[tuple[int, ...], str],
) -> list[str]:
    full = f"{f.package}.{service.name}" if f.package else service.name
    taken = {t.ts for t in index.types.values() if t.file == f.name}
    cls = service.name + "Client"
    while cls in taken or cls in _RESERVED:
        cls += "$"
    infos: list[str] = []
    members: list[str] = []
    used: set[str] = set()
    for m_index, method in enumerate(service.method):
        name = _camel(method.name)
        if name in _RESERVED or name in ("constructor", "transport"):
            name += "_"
        base, n = name, 2
        while name in used:
            name, n = f"{base}_{n}", n + 1
        used.add(name)
        const = f"$m{s_index}_{m_index}"
        kind = {
            (False, False): "unary", (False, True): "server_stream",
            (True, False): "client_stream", (True, True): "bidi_stream",
        }[(method.client_streaming, method.server_streaming)]  # fmt: skip
        route = _route(index, method) if kind != "bidi_stream" else None
        info: dict[str, Any] = {"service": full, "name": method.name, "kind": kind}
        if route is not None:
            info["http"] = route
        if method.output_type == _TEXT:
            info["output"] = "text"
        request_type = index.types.get(method.input_type)
        if request_type is not None and request_type.message is not None:
            names = {fd.json_name for fd in request_type.message.field}
            if names & {"stream", "offset"}:
                info["resumeByHeaders"] = True
        infos.append(f"const {const}: $rt.MethodInfo = {_js(info)};")
        raw_in = method.input_type in _RAW
        raw_out = method.output_type in _RAW
        inp = mod.ref(method.input_type) if not (route is not None and raw_in) else ""
        if route is not None and route["responseBody"]:
            out = mod.field_type(_response_field(index, method, route["responseBody"]))
        elif route is not None and raw_out and kind == "server_stream":
            out = ""
        else:
            out = mod.ref(method.output_type)
        members.append("")
        members += _doc(comments.get((6, s_index, 2, m_index), ""), "  ")
        if kind == "unary":
            sig = f"{name}(request: {inp}, options?: $rt.CallOptions): Promise<{out}>"
            call = f"$rt.unary<{out}>(this.#transport, {const}, request, options)"
        elif kind == "server_stream" and route is not None and raw_out:
            sig = f"{name}(request: {inp}, options?: $rt.DownloadOptions): Promise<$rt.Download>"
            call = f"$rt.download(this.#transport, {const}, request, options)"
        elif kind == "server_stream":
            sig = f"{name}(request: {inp}, options?: $rt.StreamOptions): $rt.ServerStream<{out}>"
            call = f"new $rt.ServerStream<{out}>(this.#transport, {const}, request, options)"
        elif kind == "client_stream" and route is not None and raw_in:
            sig = f"{name}(source: $rt.UploadSource, options?: $rt.UploadOptions): Promise<{out}>"
            call = f"$rt.upload<{out}>(this.#transport, {const}, source, options)"
        elif kind == "client_stream" and route is not None:
            sig = (
                f"{name}(requests: AsyncIterable<{inp}> | Iterable<{inp}>, "
                f"options?: $rt.CallOptions): Promise<{out}>"
            )
            call = f"$rt.clientStream<{out}>(this.#transport, {const}, requests, options)"
        elif kind == "client_stream":
            sig = f"{name}(options?: $rt.CallOptions): $rt.ClientStreamCall<{inp}, {out}>"
            call = f"new $rt.ClientStreamCall<{inp}, {out}>(this.#transport, {const}, options)"
        else:
            sig = f"{name}(options?: $rt.CallOptions): $rt.Duplex<{inp}, {out}>"
            call = f"new $rt.Duplex<{inp}, {out}>(this.#transport, {const}, options)"
        members += [f"  {sig} {{", f"    return {call};", "  }"]
    lines = ["", *infos, ""]
    lines += _doc(comments.get((6, s_index), ""), "")
    lines += [
        f"export class {cls} {{",
        "  readonly #transport: $rt.Transport;",
        "  /** A client on a shared Transport, or on its own built from the options. */",
        "  constructor(transport: $rt.Transport | $rt.ClientOptions = {}) {",
        "    this.#transport =",
        "      transport instanceof $rt.Transport ? transport : new $rt.Transport(transport);",
        "  }",
        *members,
        "}",
    ]
    return lines


def generate_typescript(
    files: Sequence[descriptor_pb2.FileDescriptorProto], to_generate: Sequence[str]
) -> dict[str, str]:
    """The TypeScript modules (by output path) for ``to_generate``, with every file whose
    types they reach, and the runtime ``rpckit-client.ts``. ``files`` must include every
    import (``protoc --include_imports``). ValueError for a route naming no field."""
    index = _Index()
    for f in files:
        index.add_file(f)
    out = {RUNTIME_FILE: RUNTIME}
    for file in _reachable(index, to_generate):
        if file.startswith("google/protobuf/"):
            continue  # the well-known types are mapped, never emitted
        out[ts_module(file)] = _emit_file(index, file)
    return out


def run_typescript(protos: Sequence[str], *, proto_paths: Sequence[Path], out: Path) -> list[Path]:
    """Run protoc (grpcio-tools) for the descriptors of ``protos`` and write the TypeScript
    client into ``out``. Raises ``ProtocError`` (protoc printed why) or ``ValueError``."""
    from grpc_tools import protoc

    from rpckit.codegen.protoc import ProtocError, include_paths

    with tempfile.TemporaryDirectory() as tmp:
        image = Path(tmp) / "image.binpb"
        args = ["protoc", *(f"-I{p}" for p in include_paths(proto_paths))]
        args += ["--include_imports", "--include_source_info", f"--descriptor_set_out={image}"]
        args += list(protos)
        if protoc.main(args) != 0:
            raise ProtocError(f"protoc failed for {' '.join(protos)}")
        image_set = descriptor_pb2.FileDescriptorSet.FromString(image.read_bytes())
    written = []
    for name, text in generate_typescript(list(image_set.file), protos).items():
        target = out / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        written.append(target)
    return written


#: The runtime module every generated module imports (written as rpckit-client.ts).
RUNTIME = r"""// The runtime of clients generated by `rpckit generate --ts`. Generated; do not edit.
// No dependencies: fetch, ReadableStream, TextDecoder, WebSocket.

/** A JSON value (google.protobuf.Value and friends in the proto3 JSON mapping). */
export type JsonValue =
  | null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };
/** google.protobuf.Struct in the JSON mapping. */
export type JsonObject = { [key: string]: JsonValue };
/** google.protobuf.Any in the JSON mapping: the type URL and the message's own fields. */
export type AnyMessage = { "@type": string; [key: string]: unknown };
/** google.protobuf.Empty in the JSON mapping. */
export type EmptyMessage = Record<string, never>;

/** Connect's error codes, as rpckit writes them (lower_snake). */
export type Code =
  | "canceled" | "unknown" | "invalid_argument" | "deadline_exceeded" | "not_found"
  | "already_exists" | "permission_denied" | "resource_exhausted" | "failed_precondition"
  | "aborted" | "out_of_range" | "unimplemented" | "internal" | "unavailable" | "data_loss"
  | "unauthenticated";

/** One error detail: the packed message's type name, its base64 bytes and a JSON view. */
export interface ErrorDetail {
  type: string;
  value: string;
  debug?: unknown;
}

/** A failed call: the server's in-band or HTTP error, a timeout, a cancel or a lost network. */
export class RpcError extends Error {
  readonly code: Code;
  readonly details: ErrorDetail[];
  readonly status: number | undefined;
  constructor(code: Code, message: string, details: ErrorDetail[] = [], status?: number) {
    super(message ? `[${code}] ${message}` : `[${code}]`);
    this.name = "RpcError";
    this.code = code;
    this.rawMessage = message;
    this.details = details;
    this.status = status;
  }
  /** The server's message without the `[code]` prefix. */
  readonly rawMessage: string;

  /** An error from a Connect/rpckit JSON error object (`{code, message, details}`). */
  static fromJson(value: unknown, status?: number): RpcError {
    const object = (value ?? {}) as { code?: unknown; message?: unknown; details?: unknown };
    const code = typeof object.code === "string"
      ? (object.code as Code) : codeForStatus(status ?? 500);
    const message = typeof object.message === "string" ? object.message : "";
    const details = Array.isArray(object.details) ? (object.details as ErrorDetail[]) : [];
    return new RpcError(code, message, details, status);
  }
}

const STATUS_CODES: Record<number, Code> = {
  400: "invalid_argument", 401: "unauthenticated", 403: "permission_denied", 404: "unimplemented",
  408: "deadline_exceeded", 409: "aborted", 410: "out_of_range", 412: "failed_precondition",
  413: "resource_exhausted", 429: "unavailable", 499: "canceled", 501: "unimplemented",
  502: "unavailable", 503: "unavailable", 504: "unavailable",
};

function codeForStatus(status: number): Code {
  return STATUS_CODES[status] ?? "unknown";
}

/** What one method is, as the generator saw it in the schema. */
export interface MethodInfo {
  /** `package.Service`. */
  service: string;
  /** The RPC's name. */
  name: string;
  kind: "unary" | "server_stream" | "client_stream" | "bidi_stream";
  /** The REST route (the first google.api.http binding); absent: Connect or WebSocket. */
  http?: HttpRoute;
  /** `text` for rpckit.v1.Text items (SSE data is the raw text). */
  output?: "text";
  /** The request has fields named `stream` or `offset`: resume with headers, not the query. */
  resumeByHeaders?: boolean;
}

/** A route: verb, path parts (literals and bound fields), body and response_body. */
export interface HttpRoute {
  verb: string;
  /** Literal text, or a field path (JSON names) and whether it may span segments. */
  path: (string | { field: string[]; multi: boolean })[];
  /** `""`, `"*"` or the JSON name of the body field. */
  body: string;
  /** The JSON value sent when the body field is unset (`{}`, `[]` or `null`). */
  bodyDefault?: JsonValue;
  /** The JSON name of the response field the HTTP body holds, or `""`. */
  responseBody: string;
}

/** A request on its way through the interceptors: change `url` or `init.headers` freely. */
export interface RpcRequest {
  method: MethodInfo;
  url: string;
  init: RequestInit & { headers: Headers; duplex?: "half" };
  /** Set for uploads: called with the bytes sent so far. */
  onUploadProgress?: (sent: number, total: number | undefined) => void;
}

/** Sends the request on (to the next interceptor, then fetch). */
export type Next = (request: RpcRequest) => Promise<Response>;
/** A client interceptor: `(req, next) => next(req)` with anything before or after. */
export type Interceptor = (request: RpcRequest, next: Next) => Promise<Response>;

/** Options of every call. */
export interface CallOptions {
  signal?: AbortSignal;
  /** A deadline: sent as `connect-timeout-ms` and enforced here (`deadline_exceeded`). */
  timeoutMs?: number;
  headers?: HeadersInit;
  credentials?: RequestCredentials;
}

/** Options of server streams. */
export interface StreamOptions extends CallOptions {
  /** The REST framing: NDJSON (default) or server-sent events. */
  framing?: "ndjson" | "sse";
  /** Resumes of a durable stream after network errors (default 5; 0: never resume). */
  maxResumes?: number;
  /** Resume an existing durable stream from `offset` (items the client already has). */
  resume?: { streamId: string; offset: number };
}

/** Options of uploads (bytes and file inputs). */
export interface UploadOptions extends CallOptions {
  /** Sent as Content-Disposition (default: the File's name). */
  filename?: string;
  /** Sent as X-Content-Size (default: the Blob's size). */
  size?: number;
  /** Default: the Blob's type, else application/octet-stream. */
  contentType?: string;
  /** Called as bytes leave: XHR progress in browsers, a counting stream elsewhere. */
  onProgress?: (sent: number, total: number | undefined) => void;
  /** `xhr` (default where XMLHttpRequest exists), `stream` (fetch with duplex: "half"),
   *  or `blob` (one fetch of the whole Blob: progress only at the end). */
  mode?: "xhr" | "stream" | "blob";
}

/** Options of downloads. */
export interface DownloadOptions extends CallOptions {
  /** Called as bytes arrive, with the total when the server said it. */
  onProgress?: (received: number, total: number | undefined) => void;
}

/** Options of a client. */
export interface ClientOptions {
  /** Where the server is: `https://api.example.com` (default: the page's origin). */
  baseUrl?: string;
  interceptors?: Interceptor[];
  /** Headers every call sends. */
  headers?: HeadersInit;
  credentials?: RequestCredentials;
  /** Default: globalThis.fetch. */
  fetch?: typeof fetch;
  /** Default: globalThis.WebSocket (Node 20: run with --experimental-websocket). */
  WebSocket?: typeof WebSocket;
}

/** The shared part of generated clients: base URL, interceptors and the wire code. */
export class Transport {
  readonly baseUrl: string;
  readonly options: ClientOptions;
  constructor(options: ClientOptions = {}) {
    const origin = (globalThis as { location?: { origin?: string } }).location?.origin;
    this.baseUrl = (options.baseUrl ?? origin ?? "").replace(/\/+$/, "");
    this.options = options;
  }

  /** Runs the interceptors around `final` (fetch, or XHR for uploads). */
  run(request: RpcRequest, final: Next = (r) => this.fetchOf()(r.url, r.init)): Promise<Response> {
    const chain = this.options.interceptors ?? [];
    const step = (index: number): Next => (r) =>
      index < chain.length ? chain[index]!(r, step(index + 1)) : final(r);
    return step(0)(request);
  }

  fetchOf(): typeof fetch {
    const f = this.options.fetch ?? globalThis.fetch;
    return (input, init) => f(input, init);
  }
}

// --- requests ----------------------------------------------------------------------------

const CONNECT_VERSION = "1";

function mergedHeaders(transport: Transport, options: CallOptions | undefined): Headers {
  const headers = new Headers(transport.options.headers);
  new Headers(options?.headers).forEach((value, key) => headers.set(key, value));
  return headers;
}

/** An AbortSignal for the call: the caller's, the deadline, and our own cancel. */
class CallSignal {
  readonly controller = new AbortController();
  private timer: ReturnType<typeof setTimeout> | undefined;
  timedOut = false;
  constructor(options: CallOptions | undefined) {
    const outer = options?.signal;
    if (outer) {
      if (outer.aborted) this.controller.abort(outer.reason);
      else {
        const abort = () => this.controller.abort(outer.reason);
        outer.addEventListener("abort", abort, { once: true });
      }
    }
    if (options?.timeoutMs !== undefined) {
      this.timer = setTimeout(() => {
        this.timedOut = true;
        const message = `timed out after ${options.timeoutMs} ms`;
        this.controller.abort(new RpcError("deadline_exceeded", message));
      }, options.timeoutMs);
    }
  }
  get signal(): AbortSignal {
    return this.controller.signal;
  }
  done(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
  }
  /** The RpcError for any failure: aborts become canceled/deadline_exceeded. */
  error(cause: unknown): RpcError {
    if (cause instanceof RpcError) return cause;
    if (this.timedOut) return new RpcError("deadline_exceeded", "the call's timeout passed");
    if (this.signal.aborted) {
      const reason = this.signal.reason;
      return reason instanceof RpcError ? reason : new RpcError("canceled", "the call was aborted");
    }
    return new RpcError("unavailable", cause instanceof Error ? cause.message : String(cause));
  }
}

function getPath(value: unknown, path: string[]): unknown {
  let current = value;
  for (const part of path) {
    if (current === null || typeof current !== "object") return undefined;
    current = (current as Record<string, unknown>)[part];
  }
  return current;
}

function scalarText(value: unknown): string {
  return typeof value === "string" ? value : JSON.stringify(value);
}

function encodeSegments(text: string, multi: boolean): string {
  return multi ? text.split("/").map(encodeURIComponent).join("/") : encodeURIComponent(text);
}

function appendQuery(
  query: URLSearchParams, prefix: string, value: unknown, skip: Set<string>,
): void {
  if (value === undefined || value === null || skip.has(prefix)) return;
  if (Array.isArray(value)) {
    for (const item of value) {
      if (item !== null && typeof item !== "object") query.append(prefix, scalarText(item));
    }
  } else if (typeof value === "object") {
    for (const [key, item] of Object.entries(value as Record<string, unknown>)) {
      appendQuery(query, prefix ? `${prefix}.${key}` : key, item, skip);
    }
  } else if (prefix) {
    query.append(prefix, scalarText(value));
  }
}

/** The URL and body of a REST call, bound exactly as the server binds them: path variables
 *  from their fields, the body (`*` or one field), every other set field as a query
 *  parameter (dotted paths for nested messages, a repeated field as repeated keys). */
export function bindRoute(
  base: string, route: HttpRoute, request: unknown,
): { url: string; body: string | undefined } {
  const skip = new Set<string>();
  let path = "";
  for (const part of route.path) {
    if (typeof part === "string") {
      path += part;
      continue;
    }
    const value = getPath(request, part.field);
    if (value === undefined || value === null) {
      throw new RpcError("invalid_argument", `path variable ${part.field.join(".")} is not set`);
    }
    path += encodeSegments(scalarText(value), part.multi);
    skip.add(part.field.join("."));
  }
  let body: string | undefined;
  const query = new URLSearchParams();
  if (route.body === "*") {
    body = JSON.stringify(request ?? {});
  } else {
    if (route.body) {
      const value = (request as Record<string, unknown> | undefined)?.[route.body];
      body = JSON.stringify(value ?? route.bodyDefault ?? {});
      skip.add(route.body);
    }
    appendQuery(query, "", request, skip);
  }
  const search = query.toString();
  return { url: base + path + (search ? `?${search}` : ""), body };
}

async function errorFrom(response: Response): Promise<RpcError> {
  let text = "";
  try {
    text = await response.text();
  } catch {
    // the body was cut: the status says enough
  }
  try {
    return RpcError.fromJson(JSON.parse(text), response.status);
  } catch {
    const message = text.slice(0, 200) || response.statusText;
    return new RpcError(codeForStatus(response.status), message, [], response.status);
  }
}

function connectUrl(transport: Transport, method: MethodInfo): string {
  return `${transport.baseUrl}/${method.service}/${method.name}`;
}

function baseInit(
  transport: Transport, options: CallOptions | undefined, signal: CallSignal,
): RpcRequest["init"] {
  const headers = mergedHeaders(transport, options);
  if (options?.timeoutMs !== undefined) {
    headers.set("connect-timeout-ms", String(Math.max(0, Math.round(options.timeoutMs))));
  }
  const credentials = options?.credentials ?? transport.options.credentials;
  const init: RpcRequest["init"] = { headers, signal: signal.signal };
  if (credentials !== undefined) init.credentials = credentials;
  return init;
}

/** A unary call: REST when the method has a route, Connect JSON otherwise. */
export async function unary<O>(
  transport: Transport, method: MethodInfo, request: unknown, options?: CallOptions,
): Promise<O> {
  const signal = new CallSignal(options);
  try {
    const init = baseInit(transport, options, signal);
    let url: string;
    if (method.http) {
      const bound = bindRoute(transport.baseUrl, method.http, request);
      url = bound.url;
      init.method = method.http.verb;
      if (bound.body !== undefined) {
        init.body = bound.body;
        init.headers.set("content-type", "application/json");
      }
      init.headers.set("accept", "application/json");
    } else {
      url = connectUrl(transport, method);
      init.method = "POST";
      init.body = JSON.stringify(request ?? {});
      init.headers.set("content-type", "application/json");
      init.headers.set("connect-protocol-version", CONNECT_VERSION);
    }
    const response = await transport.run({ method, url, init });
    if (!response.ok) throw await errorFrom(response);
    return (await response.json()) as O;
  } catch (error) {
    throw signal.error(error);
  } finally {
    signal.done();
  }
}

// --- server streams ----------------------------------------------------------------------

/** Lines of a byte stream (LF or CRLF), the last one even without its newline. */
async function* lines(body: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let at: number;
      while ((at = buffer.indexOf("\n")) >= 0) {
        yield buffer.slice(0, at).replace(/\r$/, "");
        buffer = buffer.slice(at + 1);
      }
    }
    buffer += decoder.decode();
    if (buffer) yield buffer;
  } finally {
    reader.releaseLock();
  }
}

interface Record_ {
  kind: "item" | "error" | "end";
  value?: unknown;
  id?: string;
}

async function* ndjsonRecords(body: ReadableStream<Uint8Array>): AsyncGenerator<Record_> {
  for await (const line of lines(body)) {
    if (!line.trim()) continue;
    const value = JSON.parse(line) as unknown;
    if (isErrorRecord(value)) yield { kind: "error", value: (value as { error: unknown }).error };
    else yield { kind: "item", value };
  }
}

function isErrorRecord(value: unknown): boolean {
  if (value === null || typeof value !== "object" || Array.isArray(value)) return false;
  const keys = Object.keys(value);
  const error = (value as { error?: unknown }).error;
  return keys.length === 1 && keys[0] === "error" && typeof error === "object" && error !== null
    && typeof (error as { code?: unknown }).code === "string";
}

async function* sseRecords(
  body: ReadableStream<Uint8Array>, text: boolean,
): AsyncGenerator<Record_> {
  let data: string[] = [];
  let event = "";
  let id: string | undefined;
  for await (const line of lines(body)) {
    if (line === "") {
      if (data.length || event) {
        const payload = data.join("\n");
        if (event === "error") yield { kind: "error", value: JSON.parse(payload) };
        else if (event === "end") yield { kind: "end" };
        else yield { kind: "item", value: text ? { text: payload } : JSON.parse(payload), id };
      }
      data = [];
      event = "";
      id = undefined;
      continue;
    }
    if (line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") data.push(value);
    else if (field === "event") event = value;
    else if (field === "id") id = value;
  }
}

/** Connect's streaming envelopes: a flags byte, a 4-byte big-endian length, the message;
 *  flag 0x02 marks the end-of-stream object (`{error?, metadata?}`). */
async function* connectRecords(body: ReadableStream<Uint8Array>): AsyncGenerator<Record_> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = new Uint8Array(0);
  try {
    for (;;) {
      while (buffer.length >= 5) {
        const flags = buffer[0]!;
        const length = new DataView(buffer.buffer, buffer.byteOffset + 1, 4).getUint32(0);
        if (buffer.length < 5 + length) break;
        if (flags & 0x01) throw new RpcError("internal", "compressed envelopes are not supported");
        const text = decoder.decode(buffer.subarray(5, 5 + length));
        const payload = JSON.parse(text || "{}") as unknown;
        buffer = buffer.slice(5 + length);
        if (flags & 0x02) {
          const error = (payload as { error?: unknown }).error;
          yield error ? { kind: "error", value: error } : { kind: "end" };
          return;
        }
        yield { kind: "item", value: payload };
      }
      const { done, value } = await reader.read();
      if (done) {
        if (buffer.length) throw new TypeError("the stream ended inside an envelope");
        throw new TypeError("the stream ended without its end-of-stream envelope");
      }
      const joined = new Uint8Array(buffer.length + value.length);
      joined.set(buffer);
      joined.set(value, buffer.length);
      buffer = joined;
    }
  } finally {
    reader.releaseLock();
  }
}

function envelope(json: string): Uint8Array {
  const data = new TextEncoder().encode(json);
  const out = new Uint8Array(5 + data.length);
  new DataView(out.buffer).setUint32(1, data.length);
  out.set(data, 5);
  return out;
}

const STREAM_ID = "rpckit-stream-id";
const STREAM_OFFSET = "rpckit-stream-offset";

/** A server stream: iterate it for the items. A durable stream (the response names
 *  `rpckit-stream-id`) is resumed after a network error from the count received, so no item
 *  is lost or repeated; `streamId` and `offset` say where it is. */
export class ServerStream<T> implements AsyncIterable<T> {
  /** The durable stream's id once the server named it. */
  streamId: string | undefined;
  /** Items received, counted from the durable stream's start. */
  offset = 0;
  /** How many times the stream was resumed after a network error. */
  resumes = 0;
  private headersReady: Promise<Headers>;
  private resolveHeaders!: (headers: Headers) => void;
  private started = false;

  constructor(
    private readonly transport: Transport,
    private readonly method: MethodInfo,
    private readonly request: unknown,
    private readonly options: StreamOptions = {},
  ) {
    this.headersReady = new Promise((resolve) => (this.resolveHeaders = resolve));
    if (options.resume) {
      this.streamId = options.resume.streamId;
      this.offset = options.resume.offset;
    }
  }

  /** The response headers of the first response. */
  get headers(): Promise<Headers> {
    return this.headersReady;
  }

  [Symbol.asyncIterator](): AsyncIterator<T> {
    if (this.started) throw new Error("a ServerStream can be iterated once");
    this.started = true;
    return this.run();
  }

  private async open(signal: CallSignal): Promise<Response> {
    const { transport, method, options } = this;
    const init = baseInit(transport, options, signal);
    let url: string;
    const resuming = this.streamId !== undefined;
    if (method.http) {
      const bound = bindRoute(transport.baseUrl, method.http, this.request);
      url = bound.url;
      init.method = method.http.verb;
      if (bound.body !== undefined) {
        init.body = bound.body;
        init.headers.set("content-type", "application/json");
      }
      const sse = options.framing === "sse";
      init.headers.set("accept", sse ? "text/event-stream" : "application/x-ndjson");
      if (resuming && !method.resumeByHeaders) {
        const extra = `stream=${encodeURIComponent(this.streamId!)}&offset=${this.offset}`;
        url += (url.includes("?") ? "&" : "?") + extra;
      }
    } else {
      url = connectUrl(transport, method);
      init.method = "POST";
      init.body = envelope(JSON.stringify(this.request ?? {})) as BodyInit;
      init.headers.set("content-type", "application/connect+json");
      init.headers.set("connect-protocol-version", CONNECT_VERSION);
    }
    if (resuming && (!method.http || method.resumeByHeaders)) {
      init.headers.set(STREAM_ID, this.streamId!);
      init.headers.set(STREAM_OFFSET, String(this.offset));
    }
    const response = await transport.run({ method, url, init });
    if (!response.ok) throw await errorFrom(response);
    if (!response.body) throw new RpcError("internal", "the response has no body");
    return response;
  }

  private async *run(): AsyncGenerator<T> {
    const signal = new CallSignal(this.options);
    const maxResumes = this.options.maxResumes ?? 5;
    let first = true;
    try {
      for (;;) {
        let response: Response | undefined;
        try {
          response = await this.open(signal);
          if (first) {
            this.resolveHeaders(response.headers);
            first = false;
          }
          const id = response.headers.get(STREAM_ID);
          if (id) {
            this.streamId = id;
            const start = Number(response.headers.get(STREAM_OFFSET));
            if (Number.isInteger(start) && start >= 0) this.offset = start;
          }
          const body = response.body!;
          const sse = !!this.method.http && this.options.framing === "sse";
          const records = !this.method.http
            ? connectRecords(body)
            : sse ? sseRecords(body, this.method.output === "text") : ndjsonRecords(body);
          let ended = false;
          for await (const record of records) {
            if (record.kind === "error") throw RpcError.fromJson(record.value);
            if (record.kind === "end") {
              ended = true;
              break;
            }
            this.offset += 1;
            yield record.value as T;
          }
          // NDJSON ends with the body; SSE with `event: end` (rpckit always sends it): an
          // SSE stream cut between events ends without it, which is a network error (a
          // durable one resumes from it), not a clean, short end.
          if (sse && !ended) {
            throw new TypeError("the stream was cut");
          }
          return;
        } catch (error) {
          if (error instanceof RpcError || signal.signal.aborted) throw error;
          if (this.streamId === undefined || this.resumes >= maxResumes) throw error;
          this.resumes += 1;
          await sleep(Math.min(2000, 100 * 2 ** (this.resumes - 1)), signal.signal);
        }
      }
    } catch (error) {
      throw signal.error(error);
    } finally {
      signal.done();
      // leaving early (break, return, throw in the loop body) aborts the request
      if (!signal.signal.aborted) {
        signal.controller.abort(new RpcError("canceled", "the stream was closed"));
      }
    }
  }
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      reject(signal.reason);
    }, { once: true });
  });
}

// --- client streams over NDJSON ----------------------------------------------------------

function isBrowser(): boolean {
  return typeof (globalThis as { XMLHttpRequest?: unknown }).XMLHttpRequest === "function";
}

/** A client stream over a REST route: the messages as an NDJSON body (streamed with
 *  `duplex: "half"` where fetch can, in browsers collected first: HTTP/1.1 cannot stream). */
export async function clientStream<O>(
  transport: Transport, method: MethodInfo,
  requests: AsyncIterable<unknown> | Iterable<unknown>, options?: CallOptions,
): Promise<O> {
  const signal = new CallSignal(options);
  try {
    const init = baseInit(transport, options, signal);
    const route = method.http!;
    const bound = bindRoute(transport.baseUrl, route, {});
    init.method = route.verb;
    init.headers.set("content-type", "application/x-ndjson");
    init.headers.set("accept", "application/json");
    const encoder = new TextEncoder();
    if (isBrowser()) {
      let text = "";
      for await (const message of requests) text += JSON.stringify(message) + "\n";
      init.body = text;
    } else {
      const iterator = (
        Symbol.asyncIterator in requests
        ? (requests as AsyncIterable<unknown>)[Symbol.asyncIterator]()
        : (requests as Iterable<unknown>)[Symbol.iterator]()
      ) as AsyncIterator<unknown> | Iterator<unknown>;
      init.body = new ReadableStream<Uint8Array>({
        async pull(controller) {
          const next = await iterator.next();
          if (next.done) controller.close();
          else controller.enqueue(encoder.encode(JSON.stringify(next.value) + "\n"));
        },
        async cancel() {
          await iterator.return?.();
        },
      });
      init.duplex = "half";
    }
    const response = await transport.run({ method, url: bound.url, init });
    if (!response.ok) throw await errorFrom(response);
    return (await response.json()) as O;
  } catch (error) {
    throw signal.error(error);
  } finally {
    signal.done();
  }
}

// --- uploads and downloads ---------------------------------------------------------------

/** What an upload sends. */
export type UploadSource = Blob | ReadableStream<Uint8Array> | Uint8Array | ArrayBuffer;

/** A Content-Disposition value: an ASCII `filename` and an RFC 5987 `filename*`. */
export function contentDisposition(filename: string): string {
  let fallback = "";
  for (const char of filename) {
    const code = char.codePointAt(0)!;
    fallback += code >= 0x20 && code < 0x7f && char !== '"' && char !== "\\" ? char : "_";
  }
  let value = `attachment; filename="${fallback}"`;
  if (fallback !== filename) {
    const hex = (c: string) => "%" + c.charCodeAt(0).toString(16).toUpperCase();
    value += `; filename*=UTF-8''${encodeURIComponent(filename).replace(/['()*]/g, hex)}`;
  }
  return value;
}

/** The file name of a Content-Disposition value (`filename*` first), or undefined. */
export function dispositionFilename(value: string | null): string | undefined {
  if (!value) return undefined;
  const extended = /filename\*\s*=\s*([^;]+)/i.exec(value);
  if (extended) {
    const match = /^([^']*)'[^']*'(.*)$/.exec(extended[1]!.trim().replace(/^"|"$/g, ""));
    if (match) {
      try {
        return decodeURIComponent(match[2]!);
      } catch {
        // fall back to filename
      }
    }
  }
  const plain = /filename\s*=\s*("((?:\\.|[^"\\])*)"|[^;]*)/i.exec(value);
  if (!plain) return undefined;
  return plain[2] !== undefined ? plain[2].replace(/\\(.)/g, "$1") : plain[1]!.trim();
}

function countingStream(
  source: ReadableStream<Uint8Array>, onChunk: (count: number) => void,
): ReadableStream<Uint8Array> {
  let count = 0;
  return source.pipeThrough(new TransformStream<Uint8Array, Uint8Array>({
    transform(chunk, controller) {
      // a Blob's stream may be one chunk: slices of 64 KiB make progress worth reporting
      for (let at = 0; at < chunk.byteLength; at += 65536) {
        const slice = chunk.subarray(at, at + 65536);
        count += slice.byteLength;
        controller.enqueue(slice);
        onChunk(count);
      }
    },
  }));
}

function xhrSend(request: RpcRequest): Promise<Response> {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open(request.init.method ?? "POST", request.url);
    xhr.responseType = "arraybuffer";
    xhr.withCredentials = request.init.credentials === "include";
    request.init.headers.forEach((value, key) => xhr.setRequestHeader(key, value));
    const progress = request.onUploadProgress;
    if (progress) {
      xhr.upload.onprogress = (event) =>
        progress(event.loaded, event.lengthComputable ? event.total : undefined);
    }
    const signal = request.init.signal;
    signal?.addEventListener("abort", () => xhr.abort(), { once: true });
    xhr.onload = () => {
      const headers = new Headers();
      for (const line of xhr.getAllResponseHeaders().trim().split(/[\r\n]+/)) {
        const at = line.indexOf(":");
        if (at > 0) headers.append(line.slice(0, at).trim(), line.slice(at + 1).trim());
      }
      const body = xhr.status === 204 ? null : (xhr.response as ArrayBuffer);
      resolve(new Response(body, { status: xhr.status, headers }));
    };
    xhr.onerror = () => reject(new TypeError("network error"));
    xhr.onabort = () =>
      reject(signal?.reason ?? new RpcError("canceled", "the upload was aborted"));
    xhr.send(request.init.body as XMLHttpRequestBodyInit);
  });
}

/** An upload to a bytes or file route: the raw body, its name in Content-Disposition and
 *  its size in X-Content-Size. */
export async function upload<O>(
  transport: Transport, method: MethodInfo, source: UploadSource, options: UploadOptions = {},
): Promise<O> {
  const signal = new CallSignal(options);
  try {
    const init = baseInit(transport, options, signal);
    const route = method.http!;
    init.method = route.verb;
    const blob = source instanceof Blob ? source : undefined;
    const named = blob && "name" in blob ? String((blob as File).name) : undefined;
    const filename = options.filename ?? named;
    const known = source instanceof Uint8Array || source instanceof ArrayBuffer
      ? source.byteLength : undefined;
    const size = options.size ?? (blob ? blob.size : known);
    if (filename) init.headers.set("content-disposition", contentDisposition(filename));
    if (size !== undefined) init.headers.set("x-content-size", String(size));
    const type = options.contentType || blob?.type || "application/octet-stream";
    init.headers.set("content-type", type);
    init.headers.set("accept", "application/json");
    const progress = options.onProgress;
    const mode = options.mode
      ?? (source instanceof ReadableStream ? "stream" : isBrowser() ? "xhr" : "stream");
    const url = bindRoute(transport.baseUrl, route, {}).url;
    let final: Next | undefined;
    const request: RpcRequest = { method, url, init };
    if (mode === "xhr") {
      init.body = blob ?? new Blob([source as BlobPart]);
      if (progress) request.onUploadProgress = progress;
      final = xhrSend;
    } else if (mode === "stream") {
      const stream = source instanceof ReadableStream ? source
        : (blob ?? new Blob([source as BlobPart])).stream();
      init.body = progress ? countingStream(stream, (sent) => progress(sent, size)) : stream;
      init.duplex = "half";
    } else {
      init.body = blob ?? new Blob([source as BlobPart]);
    }
    const response = await transport.run(request, final);
    if (!response.ok) throw await errorFrom(response);
    if (mode === "blob" && progress && size !== undefined) progress(size, size);
    return (await response.json()) as O;
  } catch (error) {
    throw signal.error(error);
  } finally {
    signal.done();
  }
}

/** A download: the name and size the server gave, and the bytes (read once). */
export class Download {
  constructor(
    readonly response: Response,
    /** The bytes, counted for `onProgress` as they are read. */
    readonly body: ReadableStream<Uint8Array>,
    private readonly finished: () => void,
  ) {}
  /** The file name from Content-Disposition. */
  get filename(): string | undefined {
    return dispositionFilename(this.response.headers.get("content-disposition"));
  }
  /** The size from X-Content-Size or Content-Length. */
  get size(): number | undefined {
    const headers = this.response.headers;
    const value = headers.get("x-content-size") ?? headers.get("content-length");
    return value !== null && /^\d+$/.test(value) ? Number(value) : undefined;
  }
  get contentType(): string {
    return this.response.headers.get("content-type") ?? "application/octet-stream";
  }
  async blob(): Promise<Blob> {
    try {
      const headers = { "content-type": this.contentType };
      return await new Response(this.body, { headers }).blob();
    } catch (error) {
      throw error instanceof RpcError ? error : new RpcError("unavailable", String(error));
    } finally {
      this.finished();
    }
  }
  async bytes(): Promise<Uint8Array> {
    return new Uint8Array(await (await this.blob()).arrayBuffer());
  }
}

/** A download from a bytes or file route, with progress as the body is read. */
export async function download(
  transport: Transport, method: MethodInfo, request: unknown, options: DownloadOptions = {},
): Promise<Download> {
  const signal = new CallSignal(options);
  try {
    const init = baseInit(transport, options, signal);
    const bound = bindRoute(transport.baseUrl, method.http!, request);
    init.method = method.http!.verb;
    if (bound.body !== undefined) {
      init.body = bound.body;
      init.headers.set("content-type", "application/json");
    }
    const response = await transport.run({ method, url: bound.url, init });
    if (!response.ok) throw await errorFrom(response);
    const done = () => signal.done();
    const result = new Download(response, response.body ?? new Blob([]).stream(), done);
    const total = result.size;
    const progress = options.onProgress;
    const body = progress ? countingStream(result.body, (n) => progress(n, total)) : result.body;
    return new Download(response, body, done);
  } catch (error) {
    signal.done();
    throw signal.error(error);
  }
}

// --- WebSocket calls ---------------------------------------------------------------------

/** A bidi call (or a client stream) over rpckit's WebSocket sub-protocol (`rpckit.v1.json`):
 *  `send()` messages, `close()` to half-close, iterate for the answers. */
export class Duplex<I, O> implements AsyncIterable<O> {
  private readonly socket: WebSocket;
  private readonly opened: Promise<void>;
  private readonly queue: O[] = [];
  private waiting: (() => void) | undefined;
  private finished = false;
  private failure: RpcError | undefined;
  private readonly signal: CallSignal;
  /** The server's `headers` frame, once it came. */
  headers: Record<string, string[]> = {};
  /** The trailers of the `end` frame. */
  trailers: Record<string, string[]> = {};

  constructor(transport: Transport, method: MethodInfo, options: CallOptions = {}) {
    const Socket = transport.options.WebSocket ?? globalThis.WebSocket;
    if (!Socket) {
      throw new RpcError("unimplemented", "no WebSocket here (Node 20: --experimental-websocket)");
    }
    const base = transport.baseUrl || "";
    const url = `${base.replace(/^http/, "ws")}/${method.service}/${method.name}`;
    this.signal = new CallSignal(options);
    this.socket = new Socket(url, ["rpckit.v1.json"]);
    this.socket.binaryType = "arraybuffer";
    const headers: Record<string, string[]> = {};
    mergedHeaders(transport, options).forEach((value, key) => (headers[key] = [value]));
    const start: Record<string, unknown> = { type: "start", headers };
    if (options.timeoutMs !== undefined) {
      start.timeout_ms = Math.max(0, Math.round(options.timeoutMs));
    }
    this.opened = new Promise((resolve, reject) => {
      this.socket.onopen = () => {
        this.socket.send(JSON.stringify(start));
        resolve();
      };
      this.socket.onerror = () => {
        const error = new RpcError("unavailable", "the WebSocket failed");
        reject(error);
        this.fail(error);
      };
    });
    this.opened.catch(() => undefined);
    const decoder = new TextDecoder();
    this.socket.onmessage = (event: MessageEvent) => {
      if (typeof event.data === "string") {
        const control = JSON.parse(event.data) as {
          type: string;
          headers?: Record<string, string[]>;
          trailers?: Record<string, string[]>;
          error?: unknown;
        };
        if (control.type === "headers") this.headers = control.headers ?? {};
        else if (control.type === "end") {
          this.trailers = control.trailers ?? {};
          if (control.error) this.fail(RpcError.fromJson(control.error));
          else this.finish();
        }
      } else {
        this.queue.push(JSON.parse(decoder.decode(event.data as ArrayBuffer)) as O);
        this.wake();
      }
    };
    this.socket.onclose = (event: CloseEvent) => {
      const message = `the WebSocket closed (${event.code}) before the call ended`;
      if (!this.finished) this.fail(new RpcError("unavailable", message));
    };
    this.signal.signal.addEventListener("abort", () => this.cancel(), { once: true });
  }

  private wake(): void {
    const waiting = this.waiting;
    this.waiting = undefined;
    waiting?.();
  }

  private finish(): void {
    this.finished = true;
    this.signal.done();
    this.wake();
  }

  private fail(error: RpcError): void {
    if (this.finished) return;
    this.failure = error;
    this.finish();
  }

  /** Sends one message (after the socket opened). */
  async send(message: I): Promise<void> {
    await this.opened;
    if (this.finished) {
      throw this.failure ?? new RpcError("failed_precondition", "the call has ended");
    }
    this.socket.send(new TextEncoder().encode(JSON.stringify(message)));
  }

  /** Half-closes: the server's handler sees the end of the client's messages. */
  async close(): Promise<void> {
    await this.opened;
    if (!this.finished) this.socket.send(JSON.stringify({ type: "end" }));
  }

  /** Cancels the call: the server's handler is cancelled. */
  cancel(): void {
    if (this.finished) return;
    if (this.socket.readyState === 1) this.socket.send(JSON.stringify({ type: "cancel" }));
    const reason = this.signal.signal.reason;
    const error = new RpcError("canceled", "the call was cancelled");
    this.fail(reason instanceof RpcError ? reason : error);
    this.socket.close(1000);
  }

  async *[Symbol.asyncIterator](): AsyncIterator<O> {
    for (;;) {
      if (this.queue.length) {
        yield this.queue.shift()!;
        continue;
      }
      if (this.finished) {
        if (this.failure) throw this.failure;
        return;
      }
      await new Promise<void>((resolve) => (this.waiting = resolve));
    }
  }
}

/** A client stream over WebSocket: `send()` messages, then `close()` for the one answer. */
export class ClientStreamCall<I, O> {
  private readonly duplex: Duplex<I, O>;
  constructor(transport: Transport, method: MethodInfo, options: CallOptions = {}) {
    this.duplex = new Duplex<I, O>(transport, method, options);
  }
  send(message: I): Promise<void> {
    return this.duplex.send(message);
  }
  /** Half-closes and waits for the answer. */
  async close(): Promise<O> {
    await this.duplex.close();
    let answer: O | undefined;
    for await (const message of this.duplex) answer = message;
    if (answer === undefined) throw new RpcError("internal", "the server sent no answer");
    return answer;
  }
  cancel(): void {
    this.duplex.cancel();
  }
}
"""
