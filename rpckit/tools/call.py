"""``rpckit call``: a command-line client in the spirit of grpcurl and ``buf curl``.

``rpckit call ADDRESS package.Service/Method -d JSON`` calls any method of a running server
with protobuf JSON in and out; ``list`` and ``describe NAME`` explore its schema. The schema
comes from server reflection (gRPC, or the bridge's over Connect) or from local protos.
Exit status: 0 on success, 1 for a local problem (bad input, unknown method), and
64 + the status code when the call fails (as grpcurl), e.g. 69 for ``not_found``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import ssl
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from google.protobuf import any_pb2, json_format
from google.protobuf.message import Message

from rpckit.client import AsyncClosing, CallOptions, ResponseMetadata, Transport
from rpckit.errors import Code, RpcError
from rpckit.metadata import Metadata
from rpckit.service import MethodKind, MethodSpec
from rpckit.tools.schema import Schema, SchemaError, compile_protos

__all__ = ["EXIT_RPC_BASE", "Target", "add_parser", "parse_target", "run"]

#: The exit status of a failed call is this plus its status code (grpcurl's convention).
EXIT_RPC_BASE = 64
PROTOCOLS = ("grpc", "connect", "grpc-web")


class UsageError(Exception):
    """Bad input on the command line or stdin (one-line message, exit status 1)."""


@dataclass(frozen=True)
class Target:
    """Where and how to call: the protocol, ``host:port`` or a base URL, and TLS."""

    protocol: str
    address: str
    tls: bool


def parse_target(address: str, protocol: str | None, tls: bool) -> Target:
    """``http(s)://`` means the HTTP bridge (Connect), ``host:port`` gRPC, unless
    ``--protocol`` says otherwise; ``https://`` or ``--tls`` means TLS."""
    scheme, sep, rest = address.partition("://")
    if sep:
        if scheme not in ("http", "https"):
            raise UsageError(f"unsupported address scheme {scheme!r}: use http(s):// or host:port")
        tls = tls or scheme == "https"
        host = rest.rstrip("/")
    else:
        host = address
    if not host:
        raise UsageError(f"no host in address {address!r}")
    chosen = protocol or ("connect" if sep else "grpc")
    if chosen == "grpc":
        if "/" in host:
            raise UsageError(f"gRPC addresses are host:port, not a URL with a path: {address!r}")
        return Target("grpc", host, tls)
    return Target(chosen, f"{'https' if tls else 'http'}://{host}", tls)


def _grpc_transport(target: Target, cacert: Path | None) -> Transport:
    import grpc

    from rpckit.grpc import GrpcTransport

    if target.tls:
        roots = cacert.read_bytes() if cacert is not None else None
        credentials = grpc.ssl_channel_credentials(root_certificates=roots)
        channel = grpc.aio.secure_channel(target.address, credentials)
    else:
        channel = grpc.aio.insecure_channel(target.address)
    transport = GrpcTransport(channel)
    transport._owned = True  # the channel is this transport's to close
    return transport


def _http_transport(target: Target, cacert: Path | None) -> Transport:
    import httpx

    verify: ssl.SSLContext | bool = True
    if cacert is not None:
        verify = ssl.create_default_context(cafile=str(cacert))
    client = httpx.AsyncClient(timeout=httpx.Timeout(None), verify=verify)
    if target.protocol == "grpc-web":
        from rpckit.http.grpc_web.client import GrpcWebTransport

        return _Owning(GrpcWebTransport(target.address, client=client), client)
    from rpckit.http.connect.client import ConnectTransport

    return _Owning(ConnectTransport(target.address, client=client), client)


class _Owning(AsyncClosing):
    """An HTTP transport that also closes the httpx client it was given."""

    def __init__(self, transport: Any, client: Any) -> None:
        self.transport = transport
        self.client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)

    async def aclose(self) -> None:
        await self.client.aclose()


def open_transport(target: Target, cacert: Path | None = None) -> Transport:
    """An rpckit client transport for ``target`` (close it with ``aclose()``)."""
    if target.protocol == "grpc":
        return _grpc_transport(target, cacert)
    return _http_transport(target, cacert)


def parse_headers(values: list[str]) -> Metadata:
    """``-H 'key: value'`` (repeatable) as request metadata."""
    metadata = Metadata()
    for value in values:
        key, sep, text = value.partition(":")
        if not sep or not key.strip():
            raise UsageError(f"-H expects 'key: value', got {value!r}")
        metadata.add(key.strip().lower(), text.strip())
    return metadata


def _data_text(data: str | None, stdin: TextIO) -> str | None:
    if data is None:
        return None
    if data == "@-":
        return stdin.read()
    if data.startswith("@"):
        try:
            return Path(data[1:]).read_text()
        except OSError as exc:
            raise UsageError(f"-d {data}: {exc.strerror}") from None
    return data


def _parse(text: str, message_type: type[Message], where: str) -> Message:
    try:
        return json_format.Parse(text, message_type())
    except json_format.ParseError as exc:
        raise UsageError(f"{where}: {str(exc).splitlines()[0]}") from None


def print_json(message: Message, out: TextIO) -> None:
    """One response as one line of protobuf JSON, flushed at once (streams show live)."""
    tree = json_format.MessageToDict(message, preserving_proto_field_name=False)
    out.write(json.dumps(tree, separators=(",", ":"), ensure_ascii=False) + "\n")
    out.flush()


async def _stdin_lines(stdin: TextIO) -> AsyncIterator[str]:
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, stdin.readline)
        if not line:
            return
        yield line


async def _requests(
    method: MethodSpec[Any, Any], data: str | None, stdin: TextIO
) -> AsyncIterator[Message]:
    """A client stream's requests: one JSON document per line of ``-d`` (or of stdin)."""
    if data is None or data == "@-":
        lines: AsyncIterator[str] = _stdin_lines(stdin)
    else:
        text = _data_text(data, stdin) or ""

        async def given() -> AsyncIterator[str]:
            for line in text.splitlines():
                yield line

        lines = given()
    number = 0
    what = "a client stream" if method.kind == MethodKind.CLIENT_STREAM else "a bidi stream"
    async for line in lines:
        number += 1
        if line.lstrip().startswith("["):
            raise UsageError(
                f"request line {number}: {what} takes one JSON object per line, not an array"
            )
        if line.strip():
            yield _parse(line, method.input, f"request line {number}")


def _parse_single(text: str, method: MethodSpec[Any, Any]) -> Message:
    """The one request of a unary or server-streaming call, from ``-d``."""
    what = "a unary call" if method.kind == MethodKind.UNARY else "a server-streaming call"
    if text.lstrip().startswith("["):
        raise UsageError(f"-d: {what} takes one JSON object, not an array")
    documents = [line for line in text.splitlines() if line.strip()]
    if len(documents) > 1 and not _is_json(text) and all(_is_json(d) for d in documents):
        raise UsageError(f"-d: {what} takes one JSON object, not {len(documents)} lines")
    return _parse(text, method.input, "-d")


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def describe_error(error: RpcError, schema: Schema | None) -> str:
    """The code, the message and each detail as JSON (decoded when its type is known)."""
    lines = [f"rpckit call: {error.code.connect_name} (code {int(error.code)}): {error.message}"]
    for detail in error.details:
        lines.append("  detail: " + json.dumps(_detail_json(detail, schema), sort_keys=True))
    return "\n".join(lines)


def _detail_json(detail: Message, schema: Schema | None) -> Any:
    if not isinstance(detail, any_pb2.Any):
        tree = json_format.MessageToDict(detail)
        return {"@type": f"type.googleapis.com/{detail.DESCRIPTOR.full_name}", **tree}
    pools = [None] + ([schema.pool] if schema is not None else [])
    for pool in pools:
        try:
            return json_format.MessageToDict(detail, descriptor_pool=pool)
        except (TypeError, KeyError, json_format.Error):
            continue
    return {"@type": detail.type_url, "value": base64.b64encode(detail.value).decode()}


async def _load_schema(
    args: argparse.Namespace, transport: Transport, options: CallOptions
) -> Schema:
    if args.proto_path or args.proto:
        paths = [Path(p) for p in args.proto_path or ["."]]
        return Schema(compile_protos(paths, args.proto))
    from rpckit.tools.reflection import fetch_schema

    try:
        asked = CallOptions(timeout=options.timeout, metadata=options.metadata)
        return await fetch_schema(transport, asked)
    except RpcError as exc:
        if exc.code is not Code.UNIMPLEMENTED:
            raise  # the server is unreachable, or refused: reported as any failed call
        raise SchemaError(
            f"the server does not offer reflection ({exc.message}); "
            "give the schema with --proto-path DIR"
        ) from None


def connection_problem(error: RpcError, target: Target) -> str | None:
    """One line saying why no connection was made, with what to do, when the error says so
    (grpcio's and httpx's texts); None for any other failure."""
    if error.code is not Code.UNAVAILABLE:
        return None
    text = error.message
    where = target.address.partition("://")[2] or target.address
    if "Connection refused" in text or "All connection attempts failed" in text:
        return f"cannot connect to {where} (connection refused); is the server running there?"
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return (
            f"the certificate of {where} is not signed by a CA this client trusts; "
            "give the CA with --cacert PEM"
        )
    if "WRONG_VERSION_NUMBER" in text or "wrong version number" in text:
        return f"{where} does not speak TLS; call it without --tls (http:// for the bridge)"
    closed = ("Socket closed", "Server disconnected without sending a response")
    if not target.tls and (text == "connection failed: " or any(c in text for c in closed)):
        return f"{where} closed the connection at once; is it a TLS port? add --tls (or https://)"
    return None


def error_hint(error: RpcError) -> str | None:
    """What to try after a failed call, when its code says (one line), else None."""
    if error.code is Code.UNAUTHENTICATED:
        return "send credentials, e.g. -H 'authorization: Bearer TOKEN'"
    return None


async def _call(
    args: argparse.Namespace,
    schema: Schema,
    transport: Transport,
    options: CallOptions,
    out: TextIO,
    stdin: TextIO,
) -> None:
    method = schema.method_spec(args.method)
    if method.kind.client_streams:
        requests = _requests(method, args.data, stdin)
        if method.kind == MethodKind.CLIENT_STREAM:
            print_json(await transport.client_stream(method, requests, options), out)
            return
        async with transport.bidi_stream(method, requests, options) as responses:
            async for response in responses:
                print_json(response, out)
        return
    text = _data_text(args.data, stdin)
    request = _parse_single(text, method) if text and text.strip() else method.input()
    if method.kind == MethodKind.UNARY:
        print_json(await transport.unary(method, request, options), out)
        return
    async with transport.server_stream(method, request, options) as responses:
        async for response in responses:
            print_json(response, out)


def _print_metadata(label: str, metadata: Metadata, err: TextIO) -> None:
    for key, value in metadata:
        err.write(f"< {label} {key}: {value}\n")


async def run(args: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
    """Run one ``rpckit call``; returns the exit status."""
    schema: Schema | None = None
    try:
        target = parse_target(args.address, args.protocol, args.tls)
        metadata = parse_headers(args.header)
        transport = open_transport(target, args.cacert)
    except (UsageError, OSError) as exc:
        err.write(f"rpckit call: {exc}\n")
        return 1
    response = ResponseMetadata()
    options = CallOptions(timeout=args.timeout, metadata=metadata, response=response)
    try:
        schema = await _load_schema(args, transport, options)
        if args.method == "list":
            for name in schema.services:
                out.write(name + "\n")
        elif args.method == "describe":
            if not args.name:
                raise UsageError("describe needs a NAME (a service, method, message or enum)")
            out.write(schema.describe(args.name) + "\n")
        else:
            await _call(args, schema, transport, options, out, stdin)
            if args.verbose:
                _print_metadata("header", response.headers, err)
                _print_metadata("trailer", response.trailers, err)
    except (UsageError, SchemaError) as exc:
        err.write(f"rpckit call: {exc}\n")
        return 1
    except RpcError as exc:
        if args.verbose:
            _print_metadata("header", response.headers, err)
            _print_metadata("trailer", Metadata(exc.metadata), err)
        problem = connection_problem(exc, target)
        if problem is not None:
            err.write(f"rpckit call: {problem}\n")
        else:
            err.write(describe_error(exc, schema) + "\n")
        hint = error_hint(exc)
        if hint is not None:
            err.write(f"rpckit call: {hint}\n")
        code = exc.code if exc.code.known else Code.UNKNOWN
        return EXIT_RPC_BASE + int(code)
    finally:
        await _close(transport)
    return 0


async def _close(transport: Transport) -> None:
    close: Callable[[], Any] | None = getattr(transport, "aclose", None)
    if close is not None:
        await close()


def add_parser(commands: Any) -> argparse.ArgumentParser:
    """The ``call`` subcommand's arguments."""
    call: argparse.ArgumentParser = commands.add_parser(
        "call",
        help="call a method of a running server (JSON in, JSON lines out)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    call.add_argument("address", help="http(s)://HOST:PORT (the HTTP bridge) or HOST:PORT (gRPC)")
    call.add_argument(
        "method", help="package.Service/Method, or `list`, or `describe NAME`", metavar="METHOD"
    )
    call.add_argument("name", nargs="?", help="what `describe` shows")
    call.add_argument(
        "-d",
        "--data",
        help="request JSON, @FILE or @- for stdin (client streams: one JSON per line; "
        "default stdin)",
    )
    call.add_argument("--protocol", choices=PROTOCOLS, help="default: from the address")
    call.add_argument(
        "-H", "--header", action="append", default=[], metavar="'KEY: VALUE'",
        help="request metadata; repeatable",
    )  # fmt: skip
    call.add_argument("--timeout", type=float, metavar="SECONDS", help="the call's deadline")
    call.add_argument("--tls", action="store_true", help="TLS for a HOST:PORT address")
    call.add_argument("--cacert", type=Path, metavar="PEM", help="trust this CA (TLS)")
    call.add_argument(
        "-I", "--proto-path", action="append", default=[], metavar="DIR",
        help="use local protos under DIR instead of reflection; repeatable",
    )  # fmt: skip
    call.add_argument(
        "--proto", action="append", default=[], metavar="FILE",
        help="only these protos (relative to a --proto-path)",
    )  # fmt: skip
    call.add_argument(
        "-v", "--verbose", action="store_true", help="print response headers and trailers"
    )
    return call


def main(args: argparse.Namespace) -> int:
    """Run ``rpckit call`` with the process's stdio."""
    try:
        return asyncio.run(run(args, sys.stdout, sys.stderr, sys.stdin))
    except KeyboardInterrupt:
        return EXIT_RPC_BASE + int(Code.CANCELLED)
    except BrokenPipeError:  # `rpckit call ... | head`: the reader has gone, as intended
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_RPC_BASE + int(Code.CANCELLED)
