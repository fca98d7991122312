"""Typed-client transports over the REST routes of ``google.api.http`` rules (httpx):
``RestTransport`` (async) and ``RestTransportSync`` (blocking), one set of calls for both.

A request is bound to its method's rule exactly as the bridge reads it back (path variables,
query parameters in their URL forms, the ``body`` field); a method without a rule is a POST
of its JSON request to ``/<package>.<Service>/<Method>`` (the bridge answers unary calls
there). Answers: one JSON body (or ``response_body``), raw octets for ``HttpBody``/``Bytes``
streams, NDJSON (default) or SSE for message streams, with their in-band end and error
records. Client streams upload a raw body (``Bytes``, ``HttpBody``, ``Text`` inputs; file
name and size as ``content-disposition`` and ``x-content-size`` metadata) or NDJSON. Bidi
needs a socket: ``unimplemented``, call it over WebSocket or gRPC.
"""

from __future__ import annotations

import codecs
import json
import math
from collections.abc import AsyncIterable, Callable, Iterable
from typing import Any, TypeVar
from urllib.parse import urlencode

import httpx
from google.api.httpbody_pb2 import HttpBody
from google.protobuf.message import Message

from rpckit.client import (
    AsyncClosing,
    CallOptions,
    Closing,
    StreamCall,
    StreamCallSync,
    request_metadata,
)
from rpckit.encodings import Encoding, EncodingRegistry, encodings, from_tree
from rpckit.errors import Code, RpcError, message_too_large
from rpckit.http.exchange import (
    READ,
    READ_ALL,
    Answer,
    Emit,
    Exchange,
    Send,
    run_async,
    run_sync,
    single,
    single_sync,
)
from rpckit.http.rest.routes import (
    decode_response_body,
    default_rule,
    encode_request_body,
    expand_path,
    query_params,
    stream_item_type,
    stream_response,
)
from rpckit.http.wire import error_from_json
from rpckit.http.wire import request_metadata as header_metadata
from rpckit.limits import DEFAULT_MAX_MESSAGE_SIZE
from rpckit.metadata import Metadata
from rpckit.service import HttpRule, MethodKind, MethodSpec
from rpckit.v1.stream_pb2 import Bytes, Text

__all__ = ["RestTransport", "RestTransportSync"]

I = TypeVar("I", bound=Message)  # noqa: E741 - request type
O = TypeVar("O", bound=Message)  # noqa: E741 - response type

_FRAMINGS = {"ndjson": "application/x-ndjson", "sse": "text/event-stream"}
_RAW = (Bytes, HttpBody)
_MAX_ERROR_BODY = 64 * 1024


# --- pure decoding of the answers ----------------------------------------------------------


class _Lines:
    """NDJSON records as chunks arrive: complete, non-blank lines."""

    def __init__(self, max_size: int) -> None:
        self.buffer = bytearray()
        self.max_size = max_size

    def feed(self, chunk: bytes) -> list[bytes]:
        self.buffer += chunk
        *lines, rest = self.buffer.split(b"\n")
        if len(rest) > self.max_size:
            raise message_too_large(self.max_size)
        self.buffer = bytearray(rest)
        return [line for line in (bytes(x).strip() for x in lines) if line]

    def close(self) -> None:
        if bytes(self.buffer).strip():
            raise RpcError(Code.INTERNAL, "malformed response: the last NDJSON line was cut off")


class _Events:
    """Server-sent events as chunks arrive: (event name or None, data) once each is complete."""

    def __init__(self, max_size: int) -> None:
        self.decoder = codecs.getincrementaldecoder("utf-8")()
        self.partial = ""
        self.data: list[str] = []
        self.event: str | None = None
        self.max_size = max_size

    def feed(self, chunk: bytes) -> list[tuple[str | None, str]]:
        text = self.partial + self.decoder.decode(chunk)
        *lines, self.partial = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        if len(self.partial) > self.max_size:
            raise message_too_large(self.max_size)
        out: list[tuple[str | None, str]] = []
        for line in lines:
            if not line:
                if self.data or self.event is not None:
                    out.append((self.event, "\n".join(self.data)))
                self.data, self.event = [], None
                continue
            if line.startswith(":"):
                continue  # a comment: the keep-alive
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                self.data.append(value)
            elif name == "event":
                self.event = value
        return out


def _error(data: bytes, status: int, headers: Metadata) -> RpcError:
    try:
        parsed = json.loads(data[:_MAX_ERROR_BODY]) if data else None
    except ValueError:
        parsed = None
    error = error_from_json(parsed, status)
    error.metadata = headers.items()
    return error


def _in_band_error(tree: Any, item_type: type[Message]) -> RpcError | None:
    """An NDJSON line ``{"error": {...}}`` is the stream's error record (unless the item type
    itself has a lone ``error`` field)."""
    if not (isinstance(tree, dict) and len(tree) == 1 and isinstance(tree.get("error"), dict)):
        return None
    if any(f.json_name == "error" for f in item_type.DESCRIPTOR.fields):
        return None
    return error_from_json(tree["error"])


def _decode_tree(tree: Any, item_type: type[O]) -> O:
    try:
        return from_tree("json", tree, item_type)
    except RpcError as error:
        raise RpcError(Code.INTERNAL, f"malformed response: {error.message}") from None


def _json(data: bytes | str) -> Any:
    try:
        return json.loads(data)
    except ValueError as exc:
        raise RpcError(Code.INTERNAL, f"malformed response: {exc}") from None


# --- the calls, written once ---------------------------------------------------------------


class _RestCalls:
    """What both REST transports share: settings, and each call as an exchange."""

    def __init__(
        self,
        base_url: str,
        framing: str,
        registry: EncodingRegistry,
        max_message_size: int,
    ) -> None:
        if framing not in _FRAMINGS:
            raise ValueError(f"unknown framing {framing!r}; known: {', '.join(_FRAMINGS)}")
        codec = registry.get("json")
        if codec is None:
            raise ValueError("the REST transport needs the json encoding")
        self.json: Encoding = codec
        self.base_url = base_url.rstrip("/")
        self.framing = framing
        self.max_message_size = max_message_size

    def _headers(self, options: CallOptions) -> list[tuple[str, str]]:
        headers: list[tuple[str, str]] = []
        if options.timeout is not None:
            # the plain routes read Connect's timeout header
            headers.append(("connect-timeout-ms", str(max(1, math.ceil(options.timeout * 1000)))))
        return headers + request_metadata(options)

    def _accept(self, method: MethodSpec[Any, Any]) -> str:
        if method.kind.server_streams:
            return "*/*" if method.output in _RAW else _FRAMINGS[self.framing]
        return "*/*" if method.output in (*_RAW, Text) else "application/json"

    def _url(self, rule: HttpRule, request: Message) -> str:
        path, bound = expand_path(rule.path, request)
        query = query_params(request, rule, bound)
        return self.base_url + path + (f"?{urlencode(query)}" if query else "")

    def call(
        self, method: MethodSpec[Any, Any], request: Message, options: CallOptions
    ) -> Exchange:
        """A unary or server-streaming call: the request from path, query and body."""
        rule = default_rule(method)
        if not method.http and method.kind is not MethodKind.UNARY:
            raise RpcError(
                Code.UNIMPLEMENTED,
                f"{method.name} has no google.api.http rule; only unary methods are reached "
                "without one over REST: call it over Connect, gRPC-Web, gRPC or WebSocket",
            )
        url = self._url(rule, request)
        headers = [("accept", self._accept(method)), *self._headers(options)]
        body = encode_request_body(request, rule, self.json)
        if body is not None:
            headers.insert(0, ("content-type", "application/json"))
        answer = yield Send(rule.method, url, headers, content=body, decoded=True)
        yield from self._answer(method, rule, answer, options)

    def upload(
        self,
        method: MethodSpec[Any, Any],
        requests: AsyncIterable[Any] | Iterable[Any],
        options: CallOptions,
    ) -> Exchange:
        """A client-streaming call: the requests as one raw or NDJSON body."""
        if not method.http:
            raise RpcError(
                Code.UNIMPLEMENTED,
                f"{method.name} has no google.api.http rule: a client stream needs one over "
                "REST; call it over Connect, gRPC-Web, gRPC or WebSocket",
            )
        rule = method.http[0]
        url = self._url(rule, method.input())
        headers = [("accept", self._accept(method)), *self._headers(options)]
        first = None
        encode: Callable[[Any], bytes]
        if method.input is HttpBody:
            encode = _data

            def first(body: HttpBody | None) -> list[tuple[str, str]]:
                return [("content-type", (body and body.content_type) or _OCTETS)]

        elif method.input is Bytes:
            encode, headers = _data, [("content-type", _OCTETS), *headers]
        elif method.input is Text:
            encode, headers = _text, [("content-type", "text/plain; charset=utf-8"), *headers]
        else:
            codec = self.json

            def encode(message: Any) -> bytes:
                return codec.encode(message) + b"\n"

            headers = [("content-type", _FRAMINGS["ndjson"]), *headers]
        send = Send(rule.method, url, headers, requests=requests, encode=encode, first=first)
        send.decoded = True
        answer = yield send
        yield from self._answer(method, rule, answer, options)

    def _answer(
        self, method: MethodSpec[Any, Any], rule: HttpRule, answer: Answer, options: CallOptions
    ) -> Exchange:
        headers = header_metadata(answer.headers)
        if options.response is not None:
            options.response.headers = headers
            options.response.trailers = Metadata()
        if answer.status != 200:
            data = yield READ_ALL
            raise _error(data, answer.status, headers)
        content_type = Metadata(answer.headers).get("content-type") or ""
        if not method.kind.server_streams:
            data = yield READ_ALL
            yield Emit(self._single(method, rule, data, content_type))
        elif method.output in _RAW:
            yield from _raw(method.output, content_type)
        elif content_type.startswith("text/event-stream"):
            yield from self._events(method, rule)
        elif content_type.startswith("text/plain"):
            yield from _texts()
        else:
            yield from self._lines(method, rule)

    def _single(
        self, method: MethodSpec[Any, Any], rule: HttpRule, data: bytes, content_type: str
    ) -> Message:
        if method.output is HttpBody:
            return HttpBody(content_type=content_type, data=data)
        if method.output is Text and not content_type.startswith("application/json"):
            return Text(text=data.decode(errors="replace"))
        decoded: Message = decode_response_body(data, self.json, method.output, rule.response_body)
        return decoded

    def _lines(self, method: MethodSpec[Any, Any], rule: HttpRule) -> Exchange:
        item_type = stream_item_type(method.output, rule.response_body)
        lines = _Lines(self.max_message_size)
        while (chunk := (yield READ)) is not None:
            for line in lines.feed(chunk):
                tree = _json(line)
                error = _in_band_error(tree, item_type)
                if error is not None:
                    raise error
                item = _decode_tree(tree, item_type)
                yield Emit(stream_response(method.output, rule.response_body, item))
        lines.close()

    def _events(self, method: MethodSpec[Any, Any], rule: HttpRule) -> Exchange:
        item_type = stream_item_type(method.output, rule.response_body)
        events = _Events(self.max_message_size)
        while (chunk := (yield READ)) is not None:
            for event, data in events.feed(chunk):
                if event == "end":
                    return
                if event == "error":
                    raise error_from_json(_json(data))
                if item_type is Text:
                    item: Message = Text(text=data)
                else:
                    item = _decode_tree(_json(data), item_type)
                yield Emit(stream_response(method.output, rule.response_body, item))
        raise RpcError(Code.INTERNAL, "the event stream ended without its end event")


_OCTETS = "application/octet-stream"


def _data(message: Bytes | HttpBody) -> bytes:
    return bytes(message.data)


def _text(message: Text) -> bytes:
    return message.text.encode()


def _raw(output: type[Message], content_type: str) -> Exchange:
    """Raw octets: one ``HttpBody`` (content type on the first) or ``Bytes`` per chunk."""
    first = True
    while (chunk := (yield READ)) is not None:
        if not chunk:
            continue
        if output is HttpBody:
            yield Emit(HttpBody(content_type=content_type if first else "", data=chunk))
        else:
            yield Emit(Bytes(data=chunk))
        first = False


def _texts() -> Exchange:
    """A raw text/plain stream: one ``Text`` per chunk of whole characters."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    while (chunk := (yield READ)) is not None:
        text = decoder.decode(chunk)
        if text:
            yield Emit(Text(text=text))


def _refused(method: MethodSpec[Any, Any]) -> Exchange:
    raise RpcError(
        Code.UNIMPLEMENTED,
        f"{method.name} is a bidi stream: plain HTTP cannot carry it; call it over WebSocket "
        "(WebSocketTransport) or gRPC",
    )
    yield  # pragma: no cover - makes this a generator


# --- the transports ------------------------------------------------------------------------


class RestTransport(_RestCalls, AsyncClosing):
    """Calls services over their REST routes (``google.api.http``).

    ``framing`` picks how server streams come back: ``ndjson`` (default) or ``sse``. Pass
    ``client`` to share an ``httpx.AsyncClient``; otherwise the transport owns one (close
    it, or use ``async with``).
    """

    def __init__(
        self,
        base_url: str,
        *,
        client: httpx.AsyncClient | None = None,
        framing: str = "ndjson",
        encodings: EncodingRegistry = encodings,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    ) -> None:
        super().__init__(base_url, framing, encodings, max_message_size)
        self._owned = client is None
        self.client = client or httpx.AsyncClient(timeout=httpx.Timeout(None))

    async def aclose(self) -> None:
        """Close the HTTP client if this transport created it."""
        if self._owned:
            await self.client.aclose()

    async def unary(self, method: MethodSpec[I, O], request: I, options: CallOptions) -> O:
        """Call a unary method on its route."""
        exchange = self.call(method, request, options)
        result: O = await single(run_async(self.client, exchange, options.timeout), "REST call")
        return result

    def server_stream(
        self, method: MethodSpec[I, O], request: I, options: CallOptions
    ) -> StreamCall[O]:
        """Call a server-streaming method; iterate the result for the responses."""
        exchange = self.call(method, request, options)
        return StreamCall(run_async(self.client, exchange, options.timeout))

    async def client_stream(
        self,
        method: MethodSpec[I, O],
        requests: AsyncIterable[I] | Iterable[I],
        options: CallOptions,
    ) -> O:
        """Call a client-streaming method: the requests are uploaded as they come."""
        exchange = self.upload(method, requests, options)
        result: O = await single(run_async(self.client, exchange, options.timeout), "REST upload")
        return result

    def bidi_stream(
        self,
        method: MethodSpec[I, O],
        requests: AsyncIterable[I] | Iterable[I],
        options: CallOptions,
    ) -> StreamCall[O]:
        """Plain HTTP has no bidi streams: fails with ``unimplemented``; use WebSocket."""
        return StreamCall(run_async(self.client, _refused(method), options.timeout))


class RestTransportSync(_RestCalls, Closing):
    """``RestTransport`` for blocking clients (``*ClientSync``), over ``httpx.Client``."""

    def __init__(
        self,
        base_url: str,
        *,
        client: httpx.Client | None = None,
        framing: str = "ndjson",
        encodings: EncodingRegistry = encodings,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    ) -> None:
        super().__init__(base_url, framing, encodings, max_message_size)
        self._owned = client is None
        self.client = client or httpx.Client(timeout=httpx.Timeout(None))

    def close(self) -> None:
        """Close the HTTP client if this transport created it."""
        if self._owned:
            self.client.close()

    def unary(self, method: MethodSpec[I, O], request: I, options: CallOptions) -> O:
        """Call a unary method on its route."""
        exchange = self.call(method, request, options)
        result: O = single_sync(run_sync(self.client, exchange, options.timeout), "REST call")
        return result

    def server_stream(
        self, method: MethodSpec[I, O], request: I, options: CallOptions
    ) -> StreamCallSync[O]:
        """Call a server-streaming method; iterate the result for the responses."""
        exchange = self.call(method, request, options)
        return StreamCallSync(run_sync(self.client, exchange, options.timeout))

    def client_stream(
        self, method: MethodSpec[I, O], requests: Iterable[I], options: CallOptions
    ) -> O:
        """Call a client-streaming method: the requests are uploaded as they come."""
        exchange = self.upload(method, requests, options)
        result: O = single_sync(run_sync(self.client, exchange, options.timeout), "REST upload")
        return result

    def bidi_stream(
        self, method: MethodSpec[I, O], requests: Iterable[I], options: CallOptions
    ) -> StreamCallSync[O]:
        """Plain HTTP has no bidi streams: fails with ``unimplemented``; use WebSocket."""
        return StreamCallSync(run_sync(self.client, _refused(method), options.timeout))
