"""Turns proto descriptors into ``*_rpckit.py`` modules. Pure: descriptors in, text out.

Each module has, per service ``Foo``: a method table (``FooMethods``, one ``MethodSpec`` per
RPC, and the ``ServiceSpec`` constant ``FOO``), the abstract service base ``Foo`` (every
handler abstract, so mypy and ``abc`` report a missing one), ``UnimplementedFoo`` (every
handler raises ``RpcError(Code.UNIMPLEMENTED)``; subclass it to implement only some), the
typed async client ``FooClient`` and the blocking one ``FooClientSync`` (``with`` closes
its transport).

Any valid schema gives a module that imports and passes ruff and mypy strict:

* Every string from the schema (comments, names, route templates) is written as an escaped
  ASCII literal, never spliced between quotes.
* Names are never left to clash. A handler is ``snake_case`` of its RPC name, leading and
  trailing ``_`` dropped. If that is a Python keyword, a member of ``Service`` or of the
  client (``bind``, ``spec``, ``transport``), a name the class bodies read (``abc``,
  ``annotations``, ``bytes``, ``float``, ``str``) or the name of an earlier RPC of the
  service (``HTTPGet`` and ``HttpGet`` are both ``http_get``), it gets a trailing ``_``,
  and if that is taken too ``_2``, ``_3``, ... in declaration order (``Bind`` -> ``bind_``;
  ``HTTPGet``, ``HttpGet``, ``Http_Get`` -> ``http_get``, ``http_get_``, ``http_get_2``).
  Module-level names (``Foo``, ``FooMethods``, ``FOO``, ``UnimplementedFoo``, ``FooClient``,
  ``FooClientSync``)
  follow the same rule against keywords, every name the module imports (``Context``,
  ``Event``, ``Service``, ...) and one another: ``service Context`` is class ``Context_``.
  The handler name is what ``MethodSpec.handler`` records, so serving follows the rename.
"""

from __future__ import annotations

import keyword
import re
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor_pb2

from rpckit.service import PROTO_ROOT

__all__ = ["HANDLER_RESERVED", "MODULE_RESERVED", "generate_files", "python_module", "snake_case"]

_SERVICE_PATH = 6  # FileDescriptorProto.service
_METHOD_PATH = 2  # ServiceDescriptorProto.method
_LINE_LIMIT = 100  # the line length ruff checks (E501)

_TEXT = ".rpckit.v1.Text"
_BYTES = ".rpckit.v1.Bytes"
_HTTP_BODY = ".google.api.HttpBody"
# Extra Python types a handler may produce for, or receive as, the well-known messages.
_OUTPUT_EXTRA = {_TEXT: "str", _BYTES: "bytes", _HTTP_BODY: "bytes"}
_INPUT_STREAM = {_TEXT: "TextStream", _BYTES: "ByteStream", _HTTP_BODY: "FileStream"}

# Every name a generated module may import, by module (the set is fixed, used or not, so
# that renames do not depend on which imports one schema happens to need).
_IMPORTS: dict[str, tuple[str, ...]] = {
    "collections.abc": ("AsyncIterable", "AsyncIterator", "Iterable"),
    "typing": ("Final",),
    "rpckit": (
        "ByteStream",
        "Code",
        "Context",
        "Event",
        "FileStream",
        "HttpRule",
        "Idempotency",
        "MethodKind",
        "MethodSpec",
        "RpcError",
        "ServerStream",
        "Service",
        "ServiceSpec",
        "TextStream",
    ),
    "rpckit.client": (
        "CallOptions",
        "ResponseMetadata",
        "StreamCall",
        "StreamCallSync",
        "Transport",
        "TransportSync",
    ),
    "rpckit.metadata": ("MetadataLike",),
}
#: Builtins and modules the class bodies read; a handler or class of that name would hide them.
_READ_NAMES = frozenset({"abc", "annotations", "bytes", "float", "str"})
#: Handler names that get a trailing ``_``: ``Service`` and client members, names read.
HANDLER_RESERVED = frozenset({"bind", "spec", "transport"}) | _READ_NAMES
#: Module-level names that get a trailing ``_``: everything the module imports or reads.
MODULE_RESERVED = frozenset(n for names in _IMPORTS.values() for n in names) | _READ_NAMES


def snake_case(name: str) -> str:
    """``UploadAsByteStream`` -> ``upload_as_byte_stream``; keywords get a trailing ``_``."""
    name = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    name = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()
    return name + "_" if keyword.iskeyword(name) else name


def python_module(proto_file: str, suffix: str = "_pb2") -> str:
    """The module protoc's Python output gives a .proto file: ``a/b/c.proto`` -> ``a.b.c_pb2``."""
    return proto_file.removesuffix(".proto").replace("/", ".").replace("-", "_") + suffix


def _check_module(proto_file: str, module: str) -> None:
    for part in module.split("."):
        if not part.isidentifier() or keyword.iskeyword(part):
            raise ValueError(
                f"{proto_file}: its Python module {module} cannot be imported "
                f"({part!r} is not a Python identifier); move the file to a path that is"
            )


def _literal(text: str) -> str:
    """A double-quoted, pure-ASCII Python literal for any string (schema text is untrusted)."""
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif " " <= ch <= "~":
            out.append(ch)
        else:
            out.append(ascii(ch)[1:-1])  # \n, \x00, \u2019, \U0001f600
    return '"' + "".join(out) + '"'


def _doc_line(line: str) -> str:
    """One docstring line, escaped like ``_literal`` but keeping its layout readable."""
    return _literal(line.expandtabs(4).rstrip())[1:-1]


def _docstring(text: str, indent: str) -> list[str]:
    if not text:
        return []
    lines = [_doc_line(line) for line in text.replace("\r\n", "\n").split("\n")]
    if len(lines) == 1:
        return [f'{indent}"""{lines[0]}"""']
    rest = [f"{indent}{line}".rstrip() for line in lines[1:]]
    return [f'{indent}"""{lines[0]}', *rest, f'{indent}"""']


def _overlong(line: str) -> bool:
    """Whether ruff's E501 reports ``line`` (it spares single words and trailing URLs)."""
    if len(line) <= _LINE_LIMIT:
        return False
    chunks = line.split()
    if len(chunks) < 2:
        return False
    return not ("://" in chunks[-1] and len(line.rstrip()) - len(chunks[-1]) <= _LINE_LIMIT)


def _all_key(name: str) -> tuple[int, list[Any]]:
    """ruff's RUF022 order: SCREAMING_CASE, then CamelCase, then the rest; digits naturally."""
    group = 0 if len(name) > 1 and name.isupper() else 1 if name[:1].isupper() else 2
    parts = re.split(r"(\d+)", name)
    return group, [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts if p]


class _Allocator:
    """Hands out names: taken or reserved ones get ``_``, then ``_2``, ``_3``, ..."""

    def __init__(self, reserved: Iterable[str]) -> None:
        self.taken = set(reserved)

    def take(self, wanted: str) -> str:
        name = wanted
        if name in self.taken or keyword.iskeyword(name):
            name += "_"
        n = 2
        while name in self.taken or keyword.iskeyword(name):
            name = f"{wanted}_{n}"
            n += 1
        self.taken.add(name)
        return name


@dataclass(frozen=True)
class _Type:
    module: str
    attr: str


class _Names:
    """Where each message type lives in Python, and the import aliases one output uses."""

    def __init__(self, files: Iterable[descriptor_pb2.FileDescriptorProto]) -> None:
        self.types: dict[str, _Type] = {}
        for f in files:
            prefix = f".{f.package}" if f.package else ""
            for message in f.message_type:
                self._add(prefix, "", message, python_module(f.name))
        self.aliases: dict[str, str] = {}

    def _add(
        self, prefix: str, outer: str, message: descriptor_pb2.DescriptorProto, module: str
    ) -> None:
        attr = f"{outer}.{message.name}" if outer else message.name
        self.types[f"{prefix}.{message.name}"] = _Type(module, attr)
        for nested in message.nested_type:
            self._add(f"{prefix}.{message.name}", attr, nested, module)

    def ref(self, full_name: str) -> str:
        t = self.types[full_name]
        if any(keyword.iskeyword(part) for part in t.attr.split(".")):
            raise ValueError(
                f"message {full_name.lstrip('.')} cannot be named in Python (a keyword)"
            )
        alias = self.aliases.get(t.module)
        if alias is None:
            _check_module(t.module, t.module)
            alias = "_" + t.module.replace("_", "__").replace(".", "_")
            if alias.startswith("__"):  # a leading "__" would be name-mangled in class bodies
                alias = "_m" + alias
            self.aliases[t.module] = alias
        return f"{alias}.{t.attr}"


def _comments(f: descriptor_pb2.FileDescriptorProto) -> dict[tuple[int, ...], str]:
    return {
        tuple(loc.path): textwrap.dedent(loc.leading_comments).strip()
        for loc in f.source_code_info.location
        if loc.leading_comments.strip()
    }


def _http_rules(method: descriptor_pb2.MethodDescriptorProto) -> list[str]:
    # The .pyi types the extension as a plain FieldDescriptor.
    http_option: Any = annotations_pb2.http
    if not method.options.HasExtension(http_option):
        return []
    top: http_pb2.HttpRule = method.options.Extensions[http_option]
    return [_http_rule(rule) for rule in [top, *top.additional_bindings]]


def _http_rule(rule: http_pb2.HttpRule) -> str:
    pattern = rule.WhichOneof("pattern")
    if pattern is None:
        raise ValueError("google.api.http rule without a pattern")
    if pattern == "custom":
        verb, path = rule.custom.kind.upper(), rule.custom.path
    else:
        verb, path = pattern.upper(), getattr(rule, pattern)
    args = [_literal(verb), _literal(path)]
    if rule.body:
        args.append(f"body={_literal(rule.body)}")
    if rule.response_body:
        args.append(f"response_body={_literal(rule.response_body)}")
    return f"HttpRule({', '.join(args)})"


_KINDS = {
    (False, False): "UNARY",
    (False, True): "SERVER_STREAM",
    (True, False): "CLIENT_STREAM",
    (True, True): "BIDI_STREAM",
}
_IDEMPOTENCY = {0: "UNKNOWN", 1: "NO_SIDE_EFFECTS", 2: "IDEMPOTENT"}


@dataclass(frozen=True)
class _Method:
    name: str
    attr: str
    kind: str
    input: str
    output: str
    input_full: str
    output_full: str
    idempotency: str
    http: list[str]
    doc: str


@dataclass(frozen=True)
class _ServiceNames:
    """The module-level names one service gets."""

    full: str
    cls: str
    methods: str
    const: str
    unimplemented: str
    client: str
    client_sync: str


def _handler_names(rpcs: Sequence[str]) -> list[str]:
    names = _Allocator(HANDLER_RESERVED)
    return [names.take(snake_case(rpc).lstrip("_").rstrip("_") or "rpc") for rpc in rpcs]


#: What a module that records its source says about it (see ``rpckit.service.stale_source``).
_SOURCE_COMMENT = f"""\
# The .proto this module was generated from, and a digest of its content when rpckit generate
# read it. rpckit serve reads {PROTO_ROOT}/<that name> under its current directory (the default
# include path of rpckit generate and --reload) and refuses to start when that file exists
# and its digest differs: the schema changed since, run rpckit generate. Not found (an
# installed package, another layout): nothing is checked."""


class _FileWriter:
    def __init__(
        self, f: descriptor_pb2.FileDescriptorProto, names: _Names, digest: str | None = None
    ) -> None:
        self.f = f
        self.names = names
        self.digest = digest
        self.comments = _comments(f)
        self.used: set[str] = set()  # imported names this module reads
        self.noqa: set[str] = set()

    def _use(self, *names: str) -> None:
        self.used.update(names)

    def write(self) -> str:
        methods = [
            [self._method(s, i, m) for i, m in enumerate(service.method)]
            for s, service in enumerate(self.f.service)
        ]
        module_names = _Allocator(MODULE_RESERVED | set(self.names.aliases.values()))
        services = [self._service_names(module_names, s) for s in self.f.service]
        body: list[str] = []
        exported: list[str] = []
        for index, (names, table) in enumerate(zip(services, methods, strict=True)):
            body += self._table(names, table)
            body += self._base(index, names, table)
            body += self._unimplemented(names, table)
            body += self._client(names, table)
            body += self._client_sync(names, table)
            exported += [names.methods, names.const, names.cls, names.unimplemented, names.client]
            exported.append(names.client_sync)
        head = [_literal_doc(f"Generated by protoc-gen-rpckit from {self.f.name}. DO NOT EDIT.")]
        head += [
            "",
            "# isort: skip_file",
            "",
            "from __future__ import annotations",
            "",
            "import abc",
        ]
        for module, candidates in _IMPORTS.items():
            used = sorted(n for n in candidates if n in self.used)
            if used:
                head.append(f"from {module} import {', '.join(used)}")
        for module, alias in sorted(self.names.aliases.items()):
            head.append(f"import {module} as {alias}")
        head += ["", "__all__ = ["]
        head += [f"    {_literal(name)}," for name in sorted(exported, key=_all_key)]
        head += ["]"]
        if self.digest is not None:
            head += ["", _SOURCE_COMMENT]
            head.append(
                f"__rpckit_source__: Final = ({_literal(self.f.name)}, {_literal(self.digest)})"
            )
        lines = "\n".join([*head, *body]).rstrip().split("\n")
        if any(_overlong(line) for line in lines):
            self.noqa.add("E501")
        if self.noqa:
            lines.insert(2, f"# ruff: noqa: {', '.join(sorted(self.noqa))}")
        return "\n".join(lines) + "\n"

    def _service_names(
        self, names: _Allocator, service: descriptor_pb2.ServiceDescriptorProto
    ) -> _ServiceNames:
        full = f"{self.f.package}.{service.name}" if self.f.package else service.name
        cls = names.take(service.name)
        stem = service.name.lstrip("_") or "Service"
        return _ServiceNames(
            full=full,
            cls=cls,
            methods=names.take(f"{stem}Methods"),
            const=names.take(snake_case(stem).rstrip("_").upper()),
            unimplemented=names.take(f"Unimplemented{stem}"),
            client=names.take(f"{stem}Client"),
            client_sync=names.take(f"{stem}ClientSync"),
        )

    def _method(self, s: int, i: int, m: descriptor_pb2.MethodDescriptorProto) -> _Method:
        attr = _handler_names([x.name for x in self.f.service[s].method])[i]
        return _Method(
            name=m.name,
            attr=attr,
            kind=_KINDS[(m.client_streaming, m.server_streaming)],
            input=self.names.ref(m.input_type),
            output=self.names.ref(m.output_type),
            input_full=m.input_type,
            output_full=m.output_type,
            idempotency=_IDEMPOTENCY[m.options.idempotency_level],
            http=_http_rules(m),
            doc=self.comments.get((_SERVICE_PATH, s, _METHOD_PATH, i), ""),
        )

    def _table(self, names: _ServiceNames, methods: Sequence[_Method]) -> list[str]:
        self._use("Final", "MethodKind", "MethodSpec", "ServiceSpec")
        out = ["", "", f"class {names.methods}:"]
        out += _docstring(f"Method table of ``{names.full}``.", "    ")
        for m in methods:
            out += [
                "",
                f"    {m.attr}: Final[MethodSpec[{m.input}, {m.output}]] = MethodSpec(",
                f"        service={_literal(names.full)},",
                f"        name={_literal(m.name)},",
                f"        handler={_literal(m.attr)},",
                f"        kind=MethodKind.{m.kind},",
                f"        input={m.input},",
                f"        output={m.output},",
            ]
            if m.idempotency != "UNKNOWN":
                self._use("Idempotency")
                out.append(f"        idempotency=Idempotency.{m.idempotency},")
            if m.http:
                self._use("HttpRule")
                out.append(f"        http=({', '.join(m.http)},),")
            out.append("    )")
        out += ["", "", f"{names.const}: Final = ServiceSpec(", f"    name={_literal(names.full)},"]
        out.append("    methods=(")
        out += [f"        {names.methods}.{m.attr}," for m in methods]
        out += ["    ),", ")"]
        return out

    def _signature(self, m: _Method, prefix: str = "") -> tuple[str, str]:
        """The handler's parameter and the item type it streams (or its output)."""
        item = m.output
        if m.output_full in _OUTPUT_EXTRA:
            item = f"{m.output} | {_OUTPUT_EXTRA[m.output_full]}"
        if m.kind in ("SERVER_STREAM", "BIDI_STREAM"):
            self._use("Event")
            item = f"{item} | Event[{item}]"
        if m.kind in ("CLIENT_STREAM", "BIDI_STREAM"):
            stream = _INPUT_STREAM.get(m.input_full)
            if stream is not None:
                self._use(stream)
                return f"requests: {stream}", item
            self._use("AsyncIterator")
            return f"requests: AsyncIterator[{m.input}]", item
        return f"request: {m.input}", item

    def _base(self, index: int, names: _ServiceNames, methods: Sequence[_Method]) -> list[str]:
        self._use("Service", "Context")
        doc = self.comments.get((_SERVICE_PATH, index), "") or f"The {names.full} service."
        out = ["", "", f"class {names.cls}(Service, abc.ABC):"]
        doc += (
            "\n\nSubclass it and implement every handler, or subclass "
            f"``{names.unimplemented}``\nto implement only some."
        )
        out += _docstring(doc, "    ")
        out += ["", f"    __rpckit_spec__ = {names.const}"]
        for m in methods:
            out += ["", "    @abc.abstractmethod"]
            arg, item = self._signature(m)
            if m.kind in ("SERVER_STREAM", "BIDI_STREAM"):
                self._use("ServerStream")
                sig = f"    def {m.attr}(self, {arg}, ctx: Context) -> ServerStream[{item}]:"
            else:
                sig = f"    async def {m.attr}(self, {arg}, ctx: Context) -> {m.output}:"
            out.append(sig)
            out += _docstring(m.doc, "        ") or _docstring(f"Handle {m.name}.", "        ")
        return out

    def _unimplemented(self, names: _ServiceNames, methods: Sequence[_Method]) -> list[str]:
        self._use("RpcError", "Code")
        out = ["", "", f"class {names.unimplemented}({names.cls}):"]
        out += _docstring(
            f"``{names.cls}`` with every handler answering ``unimplemented``: override only some.",
            "    ",
        )
        for m in methods:
            arg, item = self._signature(m)
            # The same signature as the abstract handler, so that a subclass may override a
            # streaming handler with a plain def, an async generator or an async def.
            if m.kind in ("SERVER_STREAM", "BIDI_STREAM"):
                head = f"    def {m.attr}(self, {arg}, ctx: Context) -> ServerStream[{item}]:"
            else:
                head = f"    async def {m.attr}(self, {arg}, ctx: Context) -> {m.output}:"
            message = _literal(f"{names.full}/{m.name} is not implemented")
            out += ["", head, f"        raise RpcError(Code.UNIMPLEMENTED, {message})"]
        return out

    def _client(self, names: _ServiceNames, methods: Sequence[_Method]) -> list[str]:
        self._use("Transport", "CallOptions", "ResponseMetadata")
        self._use("MetadataLike")
        out = ["", "", f"class {names.client}:"]
        out += _docstring(
            f"Typed async client for ``{names.full}`` over any rpckit transport.", "    "
        )
        out += [
            "",
            "    def __init__(self, transport: Transport) -> None:",
            "        self.transport = transport",
        ]
        for m in methods:
            table = f"{names.methods}.{m.attr}"
            if m.kind in ("CLIENT_STREAM", "BIDI_STREAM"):
                self._use("AsyncIterable", "Iterable")
                arg = f"requests: AsyncIterable[{m.input}] | Iterable[{m.input}]"
                first = "requests"
            else:
                arg = f"request: {m.input}"
                first = "request"
            if m.kind in ("SERVER_STREAM", "BIDI_STREAM"):
                self._use("StreamCall")
                ret, prefix = f"StreamCall[{m.output}]", "def"
            else:
                self.noqa.add("ASYNC109")  # ``timeout`` is the client's public keyword
                ret, prefix = m.output, "async def"
            call = {
                "UNARY": "await self.transport.unary",
                "SERVER_STREAM": "self.transport.server_stream",
                "CLIENT_STREAM": "await self.transport.client_stream",
                "BIDI_STREAM": "self.transport.bidi_stream",
            }[m.kind]
            out += [
                "",
                f"    {prefix} {m.attr}(",
                "        self,",
                f"        {arg},",
                "        *,",
                "        timeout: float | None = None,",
                "        metadata: MetadataLike | None = None,",
                "        response: ResponseMetadata | None = None,",
                f"    ) -> {ret}:",
            ]
            out += _docstring(m.doc, "        ") or _docstring(f"Call {m.name}.", "        ")
            out += [
                "        options = CallOptions(timeout, metadata, response)",
                f"        return {call}({table}, {first}, options)",
            ]
        return out

    def _client_sync(self, names: _ServiceNames, methods: Sequence[_Method]) -> list[str]:
        self._use("TransportSync", "CallOptions", "ResponseMetadata", "MetadataLike")
        out = ["", "", f"class {names.client_sync}:"]
        out += _docstring(
            f"Typed blocking client for ``{names.full}``; ``with`` closes its transport.",
            "    ",
        )
        out += [
            "",
            "    def __init__(self, transport: TransportSync) -> None:",
            "        self.transport = transport",
            "",
            f"    def __enter__(self) -> {names.client_sync}:",
            "        return self",
            "",
            "    def __exit__(self, *exc_info: object) -> None:",
            "        self.transport.close()",
        ]
        for m in methods:
            table = f"{names.methods}.{m.attr}"
            if m.kind in ("CLIENT_STREAM", "BIDI_STREAM"):
                self._use("Iterable")
                arg, first = f"requests: Iterable[{m.input}]", "requests"
            else:
                arg, first = f"request: {m.input}", "request"
            if m.kind in ("SERVER_STREAM", "BIDI_STREAM"):
                self._use("StreamCallSync")
                ret = f"StreamCallSync[{m.output}]"
            else:
                ret = m.output
            call = {
                "UNARY": "unary",
                "SERVER_STREAM": "server_stream",
                "CLIENT_STREAM": "client_stream",
                "BIDI_STREAM": "bidi_stream",
            }[m.kind]
            out += [
                "",
                f"    def {m.attr}(",
                "        self,",
                f"        {arg},",
                "        *,",
                "        timeout: float | None = None,",
                "        metadata: MetadataLike | None = None,",
                "        response: ResponseMetadata | None = None,",
                f"    ) -> {ret}:",
            ]
            out += _docstring(m.doc, "        ") or _docstring(f"Call {m.name}.", "        ")
            out += [
                "        options = CallOptions(timeout, metadata, response)",
                f"        return self.transport.{call}({table}, {first}, options)",
            ]
        return out


def _literal_doc(text: str) -> str:
    return f'"""{_doc_line(text)}"""'


def generate_files(
    files: Sequence[descriptor_pb2.FileDescriptorProto],
    targets: Iterable[str],
    digests: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """``*_rpckit.py`` sources (by output path) for each target file that declares services.

    ``files`` holds every file the targets need, dependencies included, as protoc gives them.
    ``digests`` (``proto_digest`` of a target's content, by its name) are recorded in the
    modules, so that ``rpckit serve`` can tell a schema edited since (the protoc plugin sees
    no file content and records none).
    Raises ``ValueError`` for a schema Python cannot name (a module path that is not an
    identifier, a message named after a keyword).
    """
    names = _Names(files)
    by_name = {f.name: f for f in files}
    out: dict[str, str] = {}
    for target in targets:
        f = by_name[target]
        if not f.service:
            continue
        module = python_module(f.name, "_rpckit")
        _check_module(f.name, module)
        names.aliases = {}
        path = module.replace(".", "/") + ".py"
        out[path] = _FileWriter(f, names, (digests or {}).get(target)).write()
    return out
