"""Plain-HTTP routes from ``google.api.http`` rules, for fetch, EventSource and curl.

The request comes from the path, the query and an optional body; the response is framed
from the method's output type and ``Accept``: raw text for TextStream, raw octets for bytes
and files, otherwise NDJSON (default), SSE, CBOR or MsgPack sequences or delimited protobuf.
Errors before the first byte are an HTTP status with a JSON error; after it, an in-band
record (see ``rpckit.http.framing``).
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from google.api.httpbody_pb2 import HttpBody
from google.protobuf.message import Message

from rpckit.context import Context
from rpckit.encodings import Encoding
from rpckit.errors import Code, RpcError
from rpckit.http.asgi import (
    BodyWriter,
    BridgeOptions,
    ClientGone,
    Receive,
    Scope,
    Send,
    body_chunks,
    call_context,
    deadline,
    drained,
    header_list,
    read_body,
    run_until_disconnect,
    send_error,
)
from rpckit.http.filesend import send_file
from rpckit.http.framing import (
    FRAMING_TYPES,
    KEEP_ALIVE,
    Framing,
    accepted_types,
    deframer_for,
    negotiate_framing,
    sse_event,
)
from rpckit.http.routes import PathTemplate, bind_request, body_type
from rpckit.metadata import Metadata
from rpckit.service import HttpRule, MethodKind, MethodSpec, resolve_stream
from rpckit.streams import ByteStream, Event, FileStream, TextStream, aclose
from rpckit.v1.stream_pb2 import Bytes, Text
from rpckit.wellknown import checked_chunks, declared_size, file_upload

__all__ = ["PlainRoute", "PlainRouter"]

log = logging.getLogger("rpckit.http")

Handler = Callable[..., Any]
#: Seconds of silence after which an SSE stream gets a keep-alive comment.
SSE_KEEP_ALIVE = 15.0
_RAW_OUTPUTS = (Bytes, HttpBody)
_UNARY_TYPES = {
    "application/json": "json",
    "application/cbor": "cbor",
    "application/msgpack": "msgpack",
    "application/vnd.msgpack": "msgpack",
    "application/proto": "proto",
    "application/x-protobuf": "proto",
    "application/protobuf": "proto",
}


@dataclass(frozen=True)
class PlainRoute:
    """One ``google.api.http`` binding of one method."""

    rule: HttpRule
    template: PathTemplate
    method: MethodSpec[Any, Any]
    handler: Handler


class PlainRouter:
    """The ASGI app for every plain route: matches verb and path template, then serves."""

    def __init__(self, routes: list[PlainRoute], options: BridgeOptions) -> None:
        self.routes = routes
        self.options = options
        self.sse_keep_alive = SSE_KEEP_ALIVE

    def match(self, verb: str, raw_path: str) -> tuple[PlainRoute, dict[str, str]] | None:
        """The route and path variables for a request, or None."""
        verb = "GET" if verb == "HEAD" else verb
        for route in self.routes:
            if route.rule.method == verb:
                params = route.template.match(raw_path)
                if params is not None:
                    return route, params
        return None

    def allowed(self, raw_path: str) -> list[str]:
        """The verbs that have a route for this path."""
        return sorted(
            {r.rule.method for r in self.routes if r.template.match(raw_path) is not None}
        )

    async def serve(
        self, route: PlainRoute, params: dict[str, str], scope: Scope, receive: Receive, send: Send
    ) -> None:
        """Serve one matched request."""
        headers = Metadata(
            [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        )
        call = _PlainCall(self, route, params, scope, receive, send, headers)
        try:
            await call.run()
        except ClientGone:
            return


class _PlainCall:
    """One request on a plain route."""

    def __init__(
        self,
        router: PlainRouter,
        route: PlainRoute,
        params: dict[str, str],
        scope: Scope,
        receive: Receive,
        send: Send,
        headers: Metadata,
    ) -> None:
        self.router = router
        self.options = router.options
        self.route = route
        self.method = route.method
        self.params = params
        self.scope = scope
        self.receive = receive
        self.send = send
        self.headers = headers
        self.started = False

    async def run(self) -> None:
        try:
            ctx = call_context(self.method, self.scope, self.headers, "http")
            kind = self.method.kind
            if kind is MethodKind.BIDI_STREAM:
                raise RpcError(
                    Code.UNIMPLEMENTED, f"{self.method.name} is a bidi stream: call it over gRPC"
                )
            if kind is MethodKind.CLIENT_STREAM:
                await self._client_stream(ctx)
                return
            request = await self._request()
        except RpcError as error:
            await self._fail_early(error, None)
            return
        if kind is MethodKind.UNARY:
            await run_until_disconnect(
                self._unary(ctx, request), self.receive, ctx, self.options.drain
            )
        else:
            await run_until_disconnect(
                self._server_stream(ctx, request), self.receive, ctx, self.options.drain
            )

    # --- requests --------------------------------------------------------------------------

    def _query(self) -> list[tuple[str, str]]:
        raw = self.scope.get("query_string", b"").decode("latin-1")
        return parse_qsl(raw, keep_blank_values=True, encoding="utf-8", errors="replace")

    def _body_encoding(self) -> Encoding:
        content_type = self.headers.get("content-type") or "application/json"
        media = content_type.split(";")[0].strip().lower()
        name = _UNARY_TYPES.get(media)
        encoding = self.options.encodings.get(name) if name else None
        if encoding is None:
            encoding = self.options.encodings.by_content_type(content_type)
        if encoding is None:
            accepted = ", ".join(_UNARY_TYPES)
            raise RpcError(
                Code.INVALID_ARGUMENT,
                f"unsupported request content type {media!r}; accepted: {accepted}",
            )
        return encoding

    async def _request(self) -> Message:
        body_field = self.route.rule.body
        body: Message | None = None
        if body_field:
            raw = await read_body(self.receive, self.options.max_message_size)
            if raw.strip():
                body = self._body_encoding().decode(raw, body_type(self.method.input, body_field))
        request: Message = bind_request(
            self.method.input,
            path_params=self.params,
            query=self._query(),
            body=body,
            body_field=body_field,
        )
        return request

    def _upload(self) -> Any:
        """The request body of a client-streaming call, as the handler receives it."""
        chunks = body_chunks(self.receive)
        if self.method.input is HttpBody:
            length = self.headers.get("content-length") or ""
            return file_upload(
                chunks,
                self.headers,
                self.headers.get("content-type"),
                size=int(length) if length.isdigit() else None,
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
        return _messages(chunks, deframer)

    # --- responses -------------------------------------------------------------------------

    async def _tracking_send(self, message: Any) -> None:
        if message["type"] == "http.response.start":
            self.started = True
        await self.send(message)

    async def _fail_early(self, error: RpcError, ctx: Context | None) -> None:
        extra = header_list(ctx.response_headers) if ctx is not None else []
        await send_error(self.send, error.code.http_status, error, extra)

    def _single_encoding(self) -> Encoding:
        for media in accepted_types(self.headers.get("accept")):
            name = _UNARY_TYPES.get(media)
            encoding = self.options.encodings.get(name) if name else None
            if encoding is not None:
                return encoding
            if media in ("*/*", "application/*"):
                break
        encoding = self.options.encodings.get("json")
        assert encoding is not None
        return encoding

    async def _respond_one(self, ctx: Context, response: Message) -> None:
        if isinstance(response, HttpBody):
            body, content_type = response.data, response.content_type or "application/octet-stream"
        elif isinstance(response, Text):
            body, content_type = response.text.encode(), "text/plain; charset=utf-8"
        else:
            encoding = self._single_encoding()
            body, content_type = encoding.encode(response), encoding.content_type
        headers = [
            (b"content-type", content_type.encode()),
            (b"content-length", str(len(body)).encode()),
            *header_list(ctx.response_headers),
            *header_list(ctx.response_trailers),
        ]
        await self.send({"type": "http.response.start", "status": 200, "headers": headers})
        head = self.scope["method"] == "HEAD"
        await self.send({"type": "http.response.body", "body": b"" if head else body})

    async def _unary(self, ctx: Context, request: Message) -> None:
        try:
            async with deadline(ctx):
                response = await self.route.handler(request, ctx)
        except RpcError as error:
            await self._fail_early(error, ctx)
            return
        except asyncio.CancelledError as exc:
            if (shutdown := drained(exc)) is None:
                raise
            await self._fail_early(shutdown, ctx)
            return
        except Exception:
            log.exception("%s failed", self.method.path)
            await self._fail_early(RpcError(Code.INTERNAL, "internal error"), ctx)
            return
        await self._respond_one(ctx, response)

    async def _client_stream(self, ctx: Context) -> None:
        upload: Any = None
        try:
            upload = self._upload()
            async with deadline(ctx):
                response = await self.route.handler(upload, ctx)
        except RpcError as error:
            await self._fail_early(error, ctx)
            return
        except ClientGone:
            ctx.cancel()
            raise
        except Exception:
            log.exception("%s failed", self.method.path)
            await self._fail_early(RpcError(Code.INTERNAL, "internal error"), ctx)
            return
        finally:
            await aclose(upload)
        await self._respond_one(ctx, response)

    def _framing(self, stream: object) -> Framing | None:
        """The framing for a stream's items; None for raw text or octets."""
        accept = self.headers.get("accept")
        output = self.method.output
        if output in _RAW_OUTPUTS:
            return None
        if output is Text:
            # Raw text unless a framing is preferred over text/plain (or anything).
            for media in accepted_types(accept):
                if media in ("text/plain", "text/*", "*/*"):
                    return None
                if media in FRAMING_TYPES:
                    return negotiate_framing(media, self.options.encodings)
            return None
        return negotiate_framing(accept, self.options.encodings)

    async def _start(self, ctx: Context, content_type: str) -> None:
        if self.started:
            return
        self.started = True
        headers = [
            (b"content-type", content_type.encode()),
            (b"cache-control", b"no-cache"),
            (b"x-content-type-options", b"nosniff"),
            *header_list(ctx.response_headers),
        ]
        await self.send({"type": "http.response.start", "status": 200, "headers": headers})

    async def _server_stream(self, ctx: Context, request: Message) -> None:
        stream: AsyncIterator[Any] | None = None
        try:
            async with deadline(ctx):
                stream = await resolve_stream(self.route.handler(request, ctx))
        except RpcError as error:
            await aclose(stream)
            await self._fail_early(error, ctx)
            return
        except Exception:
            await aclose(stream)
            log.exception("%s failed", self.method.path)
            await self._fail_early(RpcError(Code.INTERNAL, "internal error"), ctx)
            return
        if isinstance(stream, FileStream):
            try:
                await send_file(
                    self.scope, self.receive, self._tracking_send, stream,
                    request_headers=dict(self.headers.items()),
                    extra_headers=header_list(ctx.response_headers),
                    method=self.scope["method"],
                    watch_disconnect=False,  # run_until_disconnect already watches
                )  # fmt: skip
            except RpcError as error:
                if self.started:  # the body is incomplete: the server drops the connection
                    log.warning("%s: file failed mid-body (%s)", self.method.path, error)
                    return
                await self._fail_early(error, ctx)  # e.g. the file vanished before sending
            finally:
                await aclose(stream)
            return
        framing = self._framing(stream)
        try:
            await self._write_stream(ctx, stream, framing)
        finally:
            await aclose(stream)

    async def _write_stream(
        self, ctx: Context, stream: AsyncIterator[Any], framing: Framing | None
    ) -> None:
        output = self.method.output
        if framing is not None:
            content_type = framing.content_type
        elif output is Text:
            content_type = "text/plain; charset=utf-8"
        else:
            content_type = "application/octet-stream"
        body = BodyWriter(self.send)
        keep_alive: asyncio.Task[None] | None = None
        error: RpcError | None = None
        try:
            async with deadline(ctx):
                if framing is not None and framing.kind == "sse":
                    await self._start(ctx, content_type)
                    keep_alive = asyncio.ensure_future(self._keep_alive(body))
                first = True
                async for item in stream:
                    event = item if type(item) is Event else None
                    if event is not None:
                        item = event.data
                    if framing is None:
                        data = _raw(item)
                        if first and isinstance(item, HttpBody) and item.content_type:
                            content_type = item.content_type
                    elif framing.kind == "sse":
                        message = Text(text=item) if isinstance(item, str) else item
                        data = _sse_item(framing, message, event)
                    else:
                        data = framing.item(Text(text=item) if isinstance(item, str) else item)
                    if first:
                        await self._start(ctx, content_type)
                        first = False
                    await body.write(data)
        except RpcError as exc:
            error = exc
        except asyncio.CancelledError as exc:
            if (error := drained(exc)) is None:
                await body.abort()
                raise
        except Exception:
            log.exception("%s failed", self.method.path)
            error = RpcError(Code.INTERNAL, "internal error")
        finally:
            if keep_alive is not None:
                keep_alive.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await keep_alive
        if error is not None and not self.started:
            await self._fail_early(error, ctx)
            return
        await self._start(ctx, content_type)
        if error is None:
            await body.close(framing.end() if framing is not None else b"")
            return
        record = framing.error(error) if framing is not None else None
        if record is None:
            await body.flush()  # what was produced before the failure still goes out
            await body.abort()
            # Returning with the body incomplete makes the server drop the connection.
            log.warning("%s failed mid-body (%s): response cut off", self.method.path, error)
            return
        await body.close(record)

    async def _keep_alive(self, body: BodyWriter) -> None:
        while True:
            await asyncio.sleep(self.router.sse_keep_alive)
            await body.write(KEEP_ALIVE)


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


async def _messages(chunks: AsyncIterator[bytes], deframer: Any) -> AsyncIterator[Message]:
    async for chunk in chunks:
        for message in deframer.feed(chunk):
            yield message
    deframer.close()
