"""Plain-HTTP routes from ``google.api.http`` rules, for fetch, EventSource and curl.

The request comes from the path, the query and an optional body; the response is framed
from the method's output type and ``Accept``: raw text for TextStream, raw octets for bytes
and files, otherwise NDJSON (default), SSE, CBOR or MsgPack sequences or delimited protobuf.
Errors before the first byte are an HTTP status with a JSON error; after it, an in-band
record (see ``rpckit.http.rest.framing``).
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import parse_qsl

from google.api.httpbody_pb2 import HttpBody
from google.protobuf.message import Message

from rpckit.call import CallRunner, Prepared, Request
from rpckit.context import Context
from rpckit.durable.calls import StreamExpired, reserved_query
from rpckit.durable.options import OFFSET_HEADER, STREAM_HEADER
from rpckit.errors import Code, RpcError
from rpckit.files import sanitize_filename
from rpckit.http.adapter import HttpCall, checked_size
from rpckit.http.asgi import (
    BodyWriter,
    BridgeOptions,
    Receive,
    Scope,
    Send,
    header_list,
    send_error,
)
from rpckit.http.rest.filesend import send_file
from rpckit.http.rest.framing import (
    KEEP_ALIVE,
    PART_END,
    Framing,
    MultipartEvent,
    MultipartReader,
    Negotiated,
    NegotiationError,
    PartHead,
    deframer_for,
    multipart_boundary,
    negotiate_single,
    negotiate_stream,
    request_encoding,
    sse_event,
)
from rpckit.http.rest.routes import (
    PathTemplate,
    bind_request,
    decode_body,
    encode_response_body,
    response_item,
)
from rpckit.http.wire import Head, parse_timeout, request_metadata
from rpckit.metadata import Metadata
from rpckit.numbers import try_int
from rpckit.service import HttpRule, MethodKind, MethodSpec
from rpckit.streams import ByteStream, Event, FileStream, TextStream
from rpckit.v1.stream_pb2 import Bytes, Text
from rpckit.wellknown import checked_chunks, declared_size, file_upload

__all__ = ["PlainRoute", "PlainRouter"]

#: How soon (ms) an EventSource reconnects to a durable stream after losing it.
DURABLE_RETRY_MS = 1000

log = logging.getLogger("rpckit.http")

Handler = Callable[..., Any]
_RAW_OUTPUTS = (Bytes, HttpBody)


@dataclass(frozen=True)
class PlainRoute:
    """One ``google.api.http`` binding of one method."""

    rule: HttpRule
    template: PathTemplate
    method: MethodSpec[Any, Any]
    handler: Handler


_UNKNOWN = object()
#: Distinct Accept values remembered per router before the memory starts over.
_NEGOTIATED_LIMIT = 256


def _remember(cache: dict[Any, Any], key: Any, value: Any) -> None:
    if len(cache) >= _NEGOTIATED_LIMIT:
        cache.clear()
    cache[key] = value


class PlainRouter:
    """The ASGI app for every plain route: matches verb and path template, then serves."""

    def __init__(
        self, routes: list[PlainRoute], options: BridgeOptions, runner: CallRunner | None = None
    ) -> None:
        self.routes = routes
        self._by_verb: dict[str, list[PlainRoute]] = {}
        for route in routes:
            self._by_verb.setdefault(route.rule.method, []).append(route)
        self.options = options
        self.runner = runner if runner is not None else CallRunner()
        # Clients send few distinct Accept values: negotiate each once (bounded).
        self._framings: dict[tuple[str | None, type[Message]], object] = {}
        self._singles: dict[str | None, Negotiated] = {}
        self._skips: dict[tuple[int, frozenset[str]], frozenset[str]] = {}

    def match(self, verb: str, raw_path: str) -> tuple[PlainRoute, dict[str, str]] | None:
        """The route and path variables for a request, or None."""
        plain = "%" not in raw_path  # else literals may be escaped: match every template
        for route in self._by_verb.get("GET" if verb == "HEAD" else verb, ()):
            if plain and not raw_path.startswith(route.template.prefix):
                continue
            params = route.template.match(raw_path)
            if params is not None:
                return route, params
        return None

    def stream_framing(self, accept: str | None, output: type[Message]) -> Framing | None:
        """``negotiate_stream`` for this bridge's encodings, remembered per Accept value."""
        key = (accept, output)
        found = self._framings.get(key, _UNKNOWN)
        if found is _UNKNOWN:
            found = negotiate_stream(accept, output, self.options.encodings)  # raises 406
            _remember(self._framings, key, found)
        assert found is None or isinstance(found, Framing)
        return found

    def single_encoding(self, accept: str | None) -> Negotiated:
        """``negotiate_single`` for this bridge's encodings, remembered per Accept value."""
        found = self._singles.get(accept)
        if found is None:
            found = negotiate_single(accept, self.options.encodings)  # raises 406
            _remember(self._singles, accept, found)
        return found

    def allowed(self, raw_path: str) -> list[str]:
        """The verbs that have a route for this path."""
        return sorted(
            {r.rule.method for r in self.routes if r.template.match(raw_path) is not None}
        )

    def head(self, method: MethodSpec[Any, Any], headers: Metadata) -> Head:
        """The head step of a plain route (no I/O): the call metadata, the timeout, and the
        refusal of a bidi method (HTTP/1.1 cannot carry it) or of an Accept that nothing the
        route produces satisfies (406); the answer's media type itself is chosen by the
        responder's ``negotiate`` (remembered per Accept value)."""
        head = Head(request_metadata(headers))
        if method.kind is MethodKind.BIDI_STREAM:
            head.refusal = RpcError(
                Code.UNIMPLEMENTED, f"{method.name} is a bidi stream: call it over gRPC"
            )
            return head
        timeout = headers.get("connect-timeout-ms")
        if timeout is not None:
            try:
                head.timeout = parse_timeout(timeout)
            except RpcError as error:
                head.refusal = error
        return head

    def skip(self, method: MethodSpec[Any, Any]) -> frozenset[str]:
        """The query parameters left out of ``method``'s request message (the interceptors'
        and a durable route's own), worked out once per method."""
        # By identity: a MethodSpec is a frozen dataclass, whose hash walks every field.
        key = (id(method), self.runner.chain.query_parameters)
        found = self._skips.get(key)
        if found is None:
            found = self.runner.chain.query_parameters | reserved_query(method)
            _remember(self._skips, key, found)
        return found

    async def serve(
        self, route: PlainRoute, params: dict[str, str], scope: Scope, receive: Receive, send: Send
    ) -> None:
        """Serve one matched request: decode it, hand it to the runner, write its answer."""
        headers = Metadata.from_asgi(scope["headers"])
        method = route.method
        head = self.head(method, headers)
        call = HttpCall(self.runner, method, route.handler, scope, receive, send, head, "plain")
        responder = _PlainResponder(self, route, scope, receive, send, headers)
        if head.refusal is None:
            try:
                responder.negotiate()
            except NegotiationError as error:
                head.refusal = error
        if head.refusal is not None:
            await call.refuse(head.refusal, partial(responder.finish, call.ctx))
            return
        request: Request
        if method.kind is MethodKind.CLIENT_STREAM or route.rule.body:
            plain = _PlainRequest(self.options, route, params, scope, headers, call)
            plain.skip = self.skip(method)
            request = Prepared(plain.upload) if method.kind.client_streams else plain.message
        else:  # nothing to read: the request comes from the path and the query alone
            request = partial(_bound, method.input, params, scope, skip=self.skip(method))
        try:
            await call.run(
                request,
                responder,
                watch=not method.kind.client_streams,
                read=not route.rule.body,
            )
        finally:
            if responder.streaming:
                await responder.close()


def _bound(
    message_type: type[Message],
    params: dict[str, str],
    scope: Scope,
    body: Message | None = None,
    skip: frozenset[str] = frozenset(),
) -> Message:
    """The request message from the path, the query and a decoded body (if any); query
    parameters in ``skip`` belong to interceptors (credentials) and are left out."""
    raw = scope.get("query_string", b"")
    query = (
        parse_qsl(raw.decode("latin-1"), keep_blank_values=True, encoding="utf-8", errors="replace")
        if raw
        else ()
    )
    if skip and query:
        query = [(key, value) for key, value in query if key not in skip]
    request: Message = bind_request(
        message_type, path_params=params, query=query, body=body, body_field="*"
    )
    return request


class _PlainRequest:
    """How one plain-route request becomes the handler's input."""

    def __init__(
        self,
        options: BridgeOptions,
        route: PlainRoute,
        params: dict[str, str],
        scope: Scope,
        headers: Metadata,
        call: HttpCall,
    ) -> None:
        self.options = options
        self.route = route
        self.method = route.method
        self.params = params
        self.scope = scope
        self.headers = headers
        self.call = call
        #: Query parameters the interceptors take (left out of the request message).
        self.skip: frozenset[str] = frozenset()

    async def message(self) -> Message:
        """The request message, from the path, the query and the body."""
        body_field = self.route.rule.body
        body: Message | None = None
        if body_field:
            raw = await self.call.body(self.options.max_message_size)
            if raw.strip():
                encoding = request_encoding(
                    self.headers.get("content-type"), self.options.encodings
                )
                body = decode_body(raw, encoding, self.method.input, body_field)
        return self.bound(body)

    def bound(self, body: Message | None = None) -> Message:
        """The request message from the path, the query and a decoded body (if any)."""
        return _bound(self.method.input, self.params, self.scope, body, self.skip)

    def upload(self) -> Any:
        """The request body of a client-streaming call, as the handler receives it."""
        chunks = self.call.chunks()
        if self.method.input is HttpBody:
            boundary = multipart_boundary(self.headers.get("content-type"))
            if boundary is not None:  # an HTML form: its one file part is the upload
                return _form_upload(chunks, MultipartReader(boundary), self.headers)
            length = self.headers.get("content-length")
            return file_upload(
                chunks,
                self.headers,
                self.headers.get("content-type"),
                size=None if length is None else try_int(length.strip()),
            )
        if self.method.input is Bytes:
            return ByteStream(checked_chunks(chunks, declared_size(self.headers)))
        if self.method.input is Text:
            return TextStream(_utf8(chunks))
        deframer = deframer_for(
            self.headers.get("content-type"),
            self.method.input,
            self.options.encodings,
            self.options.max_message_size,
        )
        return _messages(chunks, deframer, self.call.ctx)


class _PlainResponder:
    """Writes a plain-route answer: one body, a framed stream, raw octets or a file."""

    def __init__(
        self,
        router: PlainRouter,
        route: PlainRoute,
        scope: Scope,
        receive: Receive,
        send: Send,
        headers: Metadata,
    ) -> None:
        self.router = router
        self.options = router.options
        self.method = route.method
        self.scope = scope
        self.receive = receive
        self.send = send
        self.headers = headers
        self.started = False
        self.complete = False  # the whole response was sent by send_stream (a file)
        self.streaming = route.method.kind.server_streams
        self.rule = route.rule
        self.framing: Framing | None = None
        self.single: Negotiated | None = None
        self.content_type = ""
        self._body: BodyWriter | None = None  # made by the first streamed write
        self.keep_alive: asyncio.Task[None] | None = None
        self.first = True

    @property
    def body(self) -> BodyWriter:
        """The streamed body's writer (a unary answer never makes one)."""
        if self._body is None:
            self._body = BodyWriter(self.send)
        return self._body

    async def _tracking_send(self, message: Any) -> None:
        if message["type"] == "http.response.start":
            self.started = True
        await self.send(message)

    async def _fail_early(self, error: RpcError, ctx: Context) -> None:
        self.started = True
        ctx.mark_headers_sent()
        status = error.code.http_status
        headers = header_list(ctx.response_headers)
        if isinstance(error, StreamExpired):  # 410 Gone, the earliest offset in a header
            status = error.http_status
            headers.extend((k.encode(), v.encode()) for k, v in error.metadata)
        elif isinstance(error, NegotiationError):
            status = error.http_status
            if status == 415:  # what the route reads, as Connect and gRPC-Web say it
                headers.append((b"accept-post", ", ".join(error.offered).encode()))
        await send_error(self.send, status, error, headers)

    def negotiate(self) -> None:
        """Choose the answer's media type from Accept before the handler runs (406 if none)."""
        accept = self.headers.get("accept")
        if self.streaming:
            self.framing = self.router.stream_framing(accept, self.method.output)
        elif self.method.output not in (*_RAW_OUTPUTS, Text):
            self.single = self.router.single_encoding(accept)

    # --- unary answers ---------------------------------------------------------------------

    async def _respond_one(self, ctx: Context, response: Message) -> None:
        if isinstance(response, HttpBody):
            body, content_type = response.data, response.content_type or "application/octet-stream"
        elif isinstance(response, Text):
            body, content_type = response.text.encode(), "text/plain; charset=utf-8"
        else:
            single = self.single or negotiate_single(None, self.options.encodings)
            body = encode_response_body(response, self.rule.response_body, single.encoding)
            content_type = single.content_type
        body = checked_size(body, self.options.max_message_size)
        headers = [
            (b"content-type", content_type.encode()),
            (b"content-length", b"%d" % len(body)),
        ]
        if ctx.response_headers:
            headers += header_list(ctx.response_headers)
        if ctx.response_trailers:
            headers += header_list(ctx.response_trailers)
        self.started = True
        ctx.mark_headers_sent()
        ctx.stats.bytes_out += len(body)
        await self.send({"type": "http.response.start", "status": 200, "headers": headers})
        head = self.scope["method"] == "HEAD"
        await self.send({"type": "http.response.body", "body": b"" if head else body})

    # --- streams ---------------------------------------------------------------------------

    async def send_headers(self, ctx: Context) -> None:
        if self.started or not self.streaming:
            return  # a single answer's headers go out with it
        self.started = True
        ctx.mark_headers_sent()
        headers = [
            (b"content-type", self.content_type.encode()),
            (b"cache-control", b"no-cache"),
            (b"x-content-type-options", b"nosniff"),
            # Proxies (nginx) must pass a stream on as it is produced, not buffer it.
            (b"x-accel-buffering", b"no"),
            *header_list(ctx.response_headers),
        ]
        await self.send({"type": "http.response.start", "status": 200, "headers": headers})

    async def send_stream(self, ctx: Context, stream: AsyncIterator[Any]) -> bool:
        if isinstance(stream, FileStream):
            try:
                await send_file(
                    self.scope, self.receive, self._tracking_send, stream,
                    request_headers=dict(self.headers.items()),
                    extra_headers=header_list(ctx.response_headers),
                    method=self.scope["method"],
                    watch_disconnect=False,  # the call's disconnect watch already watches
                )  # fmt: skip
            except RpcError as error:
                if not self.started:
                    raise  # e.g. the file vanished before sending: an ordinary error answer
                # The body is incomplete: returning makes the server drop the connection.
                log.warning("%s: file failed mid-body (%s)", self.method.path, error)
            ctx.mark_headers_sent()
            self.complete = True
            return True
        output = self.method.output
        if self.framing is not None:
            self.content_type = self.framing.content_type
        elif output is Text:
            self.content_type = "text/plain; charset=utf-8"
        else:
            self.content_type = "application/octet-stream"
        if self.framing is not None and self.framing.kind == "sse":
            await self.send_headers(ctx)
            durable = ctx.response_headers.get(STREAM_HEADER)
            if durable is not None:
                # A durable stream's position before its first item, and a prompt reconnect:
                # an EventSource that loses the connection before any item resumes this
                # stream (Last-Event-ID) instead of starting another.
                offset = ctx.response_headers.get(OFFSET_HEADER) or "0"
                await self.body.write(
                    f"id: {durable}:{offset}\nretry: {DURABLE_RETRY_MS}\n\n".encode()
                )
            self.keep_alive = asyncio.ensure_future(self._keep_alive())
        return False

    async def send_message(self, ctx: Context, message: Any, event: Event[Any] | None) -> None:
        if not self.streaming:
            await self._respond_one(ctx, message)
            return
        framing = self.framing
        if framing is None:
            data = _raw(message)
            if self.first and isinstance(message, HttpBody) and message.content_type:
                self.content_type = message.content_type
        elif framing.kind == "sse":
            item = response_item(message, self.rule.response_body)
            data = checked_size(_sse_item(framing, item, event), self.options.max_message_size)
        else:
            item = response_item(message, self.rule.response_body)
            data = checked_size(framing.item(item), self.options.max_message_size)
        if self.first:
            self.first = False
            await self.send_headers(ctx)
        ctx.stats.bytes_out += len(data)
        await self.body.write(data)

    async def finish(self, ctx: Context, error: RpcError | None) -> None:
        if self.keep_alive is not None:
            await self._stop_keep_alive()
        if self.complete:
            return
        if error is not None and not self.started:
            await self._fail_early(error, ctx)
            return
        if not self.streaming:
            return  # the answer went out in send_message
        await self.send_headers(ctx)
        framing = self.framing
        if error is None:
            await self.body.close(framing.end() if framing is not None else b"")
            return
        record = framing.error(error) if framing is not None else None
        if record is None:
            await self.body.flush()  # what was produced before the failure still goes out
            await self.body.abort()
            # Returning with the body incomplete makes the server drop the connection.
            log.warning("%s failed mid-body (%s): response cut off", self.method.path, error)
            return
        await self.body.close(record)

    async def close(self) -> None:
        """Release what the answer holds (after the call, whatever its end)."""
        await self._stop_keep_alive()
        if self._body is not None:
            await self._body.abort()

    async def _stop_keep_alive(self) -> None:
        if self.keep_alive is not None:
            self.keep_alive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.keep_alive
            self.keep_alive = None

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(self.router.options.sse_keep_alive)
            await self.body.write(KEEP_ALIVE)


def _raw(item: Any) -> bytes:
    if isinstance(item, str):
        return item.encode()
    if isinstance(item, bytes | bytearray | memoryview):
        return bytes(item)
    if isinstance(item, Text):
        return item.text.encode()
    if isinstance(item, Bytes | HttpBody):
        return bytes(item.data)
    raise TypeError(f"a raw stream cannot carry {type(item).__name__}")


def _sse_item(framing: Framing, message: Message, event: Event[Any] | None) -> bytes:
    assert framing.encoding is not None
    data = message.text if isinstance(message, Text) else framing.encoding.encode(message).decode()
    if event is None:
        return sse_event(data)
    return sse_event(data, id=event.id, event=event.event, retry=event.retry)


async def _utf8(chunks: AsyncIterator[bytes]) -> AsyncIterator[str]:
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        async for chunk in chunks:
            text = decoder.decode(chunk)
            if text:
                yield text
        tail = decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise RpcError(Code.INVALID_ARGUMENT, "request body is not valid UTF-8") from None
    if tail:
        yield tail


async def _form_upload(
    chunks: AsyncIterator[bytes], reader: MultipartReader, headers: Metadata
) -> FileStream:
    """A ``multipart/form-data`` upload as the handler's FileStream: read up to the head of
    the form's file part (the fields before it are skipped), then stream that part's data.

    Nothing is held whole; ``x-content-size``, if sent, is the file's size (Content-Length
    counts the whole form). A form without a file part fails here, before the handler runs;
    a second file part, or a form cut short, fails the handler's read at the end.
    """
    events = _form_events(chunks, reader)
    async for event in events:
        if isinstance(event, PartHead) and event.filename is not None:
            head = event
            break
    else:
        raise RpcError(
            Code.INVALID_ARGUMENT,
            "multipart/form-data upload has no file part (a part with a filename)",
        )
    declared = declared_size(headers)
    return FileStream(
        checked_chunks(_form_file(events), declared),
        filename=sanitize_filename(head.filename),
        size=declared if declared is not None and declared >= 0 else None,
        content_type=head.content_type or "application/octet-stream",
    )


async def _form_events(
    chunks: AsyncIterator[bytes], reader: MultipartReader
) -> AsyncIterator[MultipartEvent]:
    async for chunk in chunks:
        for event in reader.feed(chunk):
            yield event
    reader.close()


async def _form_file(events: AsyncIterator[MultipartEvent]) -> AsyncIterator[bytes]:
    """The file part's data, then the rest of the form read through (one file only)."""
    async for event in events:
        if event is PART_END:
            break
        assert isinstance(event, bytes)
        yield event
    async for event in events:
        if isinstance(event, PartHead) and event.filename is not None:
            raise RpcError(
                Code.INVALID_ARGUMENT,
                "multipart/form-data upload has a second file part; send one file per request",
            )


async def _messages(
    chunks: AsyncIterator[bytes], deframer: Any, ctx: Context
) -> AsyncIterator[Message]:
    stats = ctx.stats
    async for chunk in chunks:
        for message in deframer.feed(chunk):
            stats.messages_in += 1
            yield message
    deframer.close()
