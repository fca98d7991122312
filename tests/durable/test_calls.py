"""Durable methods in-process: the example's ``Complete`` (``@durable``) on every dialect the
harness offers, resumed by metadata, ``Last-Event-ID`` and query parameters; the handler runs
once; ends (ok, error, cancel) are durable; an expired offset is refused, never skipped."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from examples.streams.server import StreamsExample
from examples.streams.v1.streams_pb2 import CompleteRequest, Token
from examples.streams.v1.streams_rpckit import StreamsServiceClient
from rpckit import Code, Context, Metadata, RpcError
from rpckit.client import ResponseMetadata, Resuming, StreamCall
from rpckit.durable import durable
from rpckit.durable.calls import DurableCalls, resume_point
from rpckit.durable.options import (
    CANCEL_HEADER,
    EARLIEST_HEADER,
    FINAL_HEADER,
    OFFSET_HEADER,
    STREAM_HEADER,
)
from rpckit.durable.service import DurableStreams
from rpckit.service import MethodKind
from rpckit.testing import Dialect, bridge_for, transport_for

WAIT = 10  # seconds: a bound on every wait, never a pause

DIALECTS = ["connect", "grpc-web", pytest.param("grpc", marks=pytest.mark.loopback)]


class Watched(StreamsExample):
    """The example with a gate: ``Complete`` waits for ``go`` before each token past
    ``free`` tokens, and says when its handler was cancelled."""

    def __init__(self, files_dir: Path, free: int = 1_000_000) -> None:
        super().__init__(files_dir)
        self.free = free
        self.go = asyncio.Event()
        self.sent = 0
        self.cancelled = asyncio.Event()
        self.fail_after: int | None = None

    @durable(ttl=60, max_items=5, lease_seconds=5)
    async def complete(self, request: CompleteRequest, ctx: Context) -> AsyncIterator[Token]:
        self.generations += 1
        try:
            for index in range(request.tokens or 3):
                if index >= self.free:
                    await self.go.wait()
                if self.fail_after is not None and index == self.fail_after:
                    raise RpcError(Code.RESOURCE_EXHAUSTED, "the model ran out of tokens")
                self.sent += 1
                yield Token(text=f"t{index} ", index=index, generation="g")
        except asyncio.CancelledError:
            self.cancelled.set()
            raise


async def collect(call: AsyncIterator[Token]) -> tuple[list[int], RpcError | None]:
    """The indices a call gives, and the error it ends with (None for a clean end)."""
    got: list[int] = []
    try:
        async for token in call:
            got.append(token.index)
    except RpcError as exc:
        return got, exc
    return got, None


@pytest.fixture
def watched(files_dir: Path) -> Watched:
    return Watched(files_dir)


def test_only_server_streams_can_be_durable(files_dir: Path) -> None:
    class Wrong(StreamsExample):
        @durable()
        async def get_dog(self, request: Any, ctx: Context) -> Any:
            return None

    with pytest.raises(TypeError, match="only a server-streaming method can be @durable"):
        Wrong(files_dir).bind()
    bound = dict((m.name, m) for m, _ in StreamsExample(files_dir).bind())
    assert bound["Complete"].durable is not None
    assert bound["Complete"].kind is MethodKind.SERVER_STREAM
    assert bound["JsonStream"].durable is None


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_the_stream_is_named_and_resumed_by_metadata(
    watched: Watched, dialect: Dialect
) -> None:
    async with transport_for([watched], dialect) as transport:
        client = StreamsServiceClient(transport)
        first = ResponseMetadata()
        tokens = [t.text async for t in client.complete(CompleteRequest(tokens=4), response=first)]
        assert tokens == ["t0 ", "t1 ", "t2 ", "t3 "]
        stream = first.headers.get(STREAM_HEADER)
        assert stream is not None
        assert len(stream) == 32
        assert first.headers.get(OFFSET_HEADER) == "0"
        # A reader from offset 2 gets the tail, then the same clean end; no new generation.
        again = ResponseMetadata()
        tail = client.complete(
            CompleteRequest(), metadata={STREAM_HEADER: stream, OFFSET_HEADER: "2"}, response=again
        )
        assert [t.index async for t in tail] == [2, 3]
        assert again.headers.get(OFFSET_HEADER) == "2"
        assert watched.generations == 1


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_the_producer_outlives_its_client(watched: Watched, dialect: Dialect) -> None:
    watched.free = 2
    async with transport_for([watched], dialect) as transport:
        client = StreamsServiceClient(transport)
        first = ResponseMetadata()
        call = client.complete(CompleteRequest(tokens=5), response=first)
        got = []
        async with call:
            async for token in call:
                got.append(token.index)
                if len(got) == 2:
                    break  # the client leaves; the generation goes on
        watched.go.set()
        stream = first.headers[STREAM_HEADER]
        rest = client.complete(
            CompleteRequest(), metadata={STREAM_HEADER: stream, OFFSET_HEADER: "2"}
        )
        assert [t.index async for t in rest] == [2, 3, 4]
        assert watched.generations == 1
        assert not watched.cancelled.is_set()


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_an_error_end_is_durable(watched: Watched, dialect: Dialect) -> None:
    watched.fail_after = 2
    async with transport_for([watched], dialect) as transport:
        client = StreamsServiceClient(transport)
        first = ResponseMetadata()
        got, error = await collect(client.complete(CompleteRequest(tokens=4), response=first))
        assert got == [0, 1]
        assert error is not None
        assert error.code is Code.RESOURCE_EXHAUSTED
        stream = first.headers[STREAM_HEADER]
        got, again = await collect(
            client.complete(CompleteRequest(), metadata={STREAM_HEADER: stream, OFFSET_HEADER: "1"})
        )
        assert got == [1]
        assert again is not None
        assert (again.code, again.message) == (
            Code.RESOURCE_EXHAUSTED,
            "the model ran out of tokens",
        )
        assert (FINAL_HEADER, "1") in again.metadata


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_cancel_by_metadata_reaches_the_handler(watched: Watched, dialect: Dialect) -> None:
    watched.free = 1
    async with transport_for([watched], dialect) as transport:
        client = StreamsServiceClient(transport)
        first = ResponseMetadata()
        call = client.complete(CompleteRequest(tokens=5), response=first)
        async with call:
            assert (await call.__anext__()).index == 0
            stream = first.headers[STREAM_HEADER]
            canceller = client.complete(
                CompleteRequest(), metadata={STREAM_HEADER: stream, CANCEL_HEADER: "1"}
            )
            with pytest.raises(RpcError) as cancelled:
                [t async for t in canceller]
            assert cancelled.value.code is Code.CANCELLED
            await asyncio.wait_for(watched.cancelled.wait(), WAIT)
            with pytest.raises(RpcError) as reader:
                await call.__anext__()
            assert reader.value.code is Code.CANCELLED


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_an_expired_offset_is_refused_with_the_earliest(
    watched: Watched, dialect: Dialect
) -> None:
    async with transport_for([watched], dialect) as transport:
        client = StreamsServiceClient(transport)
        first = ResponseMetadata()
        # Retention keeps 5 records (the end record included). The first reader either keeps
        # up with the producer or is refused once it falls behind: never a gap.
        got, error = await collect(client.complete(CompleteRequest(tokens=8), response=first))
        assert got == list(range(len(got)))
        if error is not None:
            assert error.code is Code.OUT_OF_RANGE
            assert int(dict(error.metadata)[EARLIEST_HEADER]) > len(got)
        stream = first.headers[STREAM_HEADER]
        # Offset 8 is after the last item: this read returns at the end record.
        end = client.complete(
            CompleteRequest(), metadata={STREAM_HEADER: stream, OFFSET_HEADER: "8"}
        )
        assert [t async for t in end] == []
        with pytest.raises(RpcError) as again:
            [
                t
                async for t in client.complete(
                    CompleteRequest(), metadata={STREAM_HEADER: stream, OFFSET_HEADER: "1"}
                )
            ]
        assert again.value.code is Code.OUT_OF_RANGE
        assert (EARLIEST_HEADER, "4") in again.value.metadata
        tail = client.complete(
            CompleteRequest(), metadata={STREAM_HEADER: stream, OFFSET_HEADER: "4"}
        )
        assert [t.index async for t in tail] == [4, 5, 6, 7]
        assert watched.generations == 1


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_unknown_and_malformed_streams(watched: Watched, dialect: Dialect) -> None:
    async with transport_for([watched], dialect) as transport:
        client = StreamsServiceClient(transport)
        for metadata, code in [
            ({STREAM_HEADER: "0" * 32}, Code.NOT_FOUND),
            ({STREAM_HEADER: "../etc"}, Code.INVALID_ARGUMENT),
            ({STREAM_HEADER: "a" * 32, OFFSET_HEADER: "-3"}, Code.INVALID_ARGUMENT),
            ({CANCEL_HEADER: "1"}, Code.INVALID_ARGUMENT),
        ]:
            with pytest.raises(RpcError) as caught:
                [t async for t in client.complete(CompleteRequest(), metadata=metadata)]
            assert caught.value.code is code, metadata
    assert watched.generations == 0


async def test_sse_ids_are_positions_and_last_event_id_resumes(watched: Watched) -> None:
    async with bridge_for([watched]) as bridge:
        response = await bridge.http.get(
            "/api/complete?tokens=3", headers={"accept": "text/event-stream"}
        )
        assert response.status_code == 200
        stream = response.headers[STREAM_HEADER]
        ids = [line[4:] for line in response.text.splitlines() if line.startswith("id: ")]
        # The position before the first item comes first (with no data: no message), so an
        # EventSource cut before any item resumes this stream rather than starting another.
        assert response.text.startswith(f"id: {stream}:0\nretry: 1000\n\n")
        assert ids == [f"{stream}:0", f"{stream}:1", f"{stream}:2", f"{stream}:3"]
        assert "event: end" in response.text
        resumed = await bridge.http.get(
            "/api/complete?tokens=3",
            headers={"accept": "text/event-stream", "last-event-id": ids[1]},
        )
        data = [
            json.loads(line[6:]) for line in resumed.text.splitlines() if line.startswith("data: {")
        ]
        assert [d.get("index", 0) for d in data] == [1, 2]
        bad = await bridge.http.get(
            "/api/complete", headers={"accept": "text/event-stream", "last-event-id": "17"}
        )
        assert bad.status_code == 400
        assert "Last-Event-ID" in bad.json()["message"]
    assert watched.generations == 1


async def test_ndjson_resumes_by_query_and_an_expired_offset_is_410(watched: Watched) -> None:
    async with bridge_for([watched]) as bridge:
        response = await bridge.http.get("/api/complete?tokens=8")
        assert response.status_code == 200
        stream = response.headers[STREAM_HEADER]
        lines = [json.loads(line) for line in response.text.splitlines()]
        # Every item in order, or (the reader fell behind retention) an in-band refusal.
        items = [line.get("index", 0) for line in lines if "error" not in line]
        assert items == list(range(len(items)))
        assert len(items) == 8 or lines[-1]["error"]["code"] == "out_of_range"
        at_end = await bridge.http.get(f"/api/complete?stream={stream}&offset=8")
        assert (at_end.status_code, at_end.text) == (200, "")
        tail = await bridge.http.get(f"/api/complete?stream={stream}&offset=6")
        assert [json.loads(x)["index"] for x in tail.text.splitlines()] == [6, 7]
        gone = await bridge.http.get(f"/api/complete?stream={stream}&offset=2")
        assert gone.status_code == 410
        assert gone.headers[EARLIEST_HEADER] == "4"
        assert gone.json()["code"] == "out_of_range"
        cancel_unknown = await bridge.http.get(f"/api/complete?stream={'f' * 32}&cancel=1")
        assert cancel_unknown.status_code == 404
    assert watched.generations == 1


def test_resume_point_reads_every_form(files_dir: Path) -> None:
    method = dict((m.name, m) for m, _ in StreamsExample(files_dir).bind())["Complete"]
    ctx = Context(method, transport="http", dialect="plain", query=b"stream=abc&offset=7&tokens=3")
    point = resume_point(ctx)
    assert point is not None
    assert (point.stream, point.offset, point.cancel) == ("abc", 7, False)
    ctx = Context(
        method,
        transport="http",
        dialect="plain",
        request_headers=Metadata([("last-event-id", "s-1:12")]),
    )
    point = resume_point(ctx)
    assert point is not None
    assert (point.stream, point.offset) == ("s-1", 12)
    assert resume_point(Context(method, transport="grpc")) is None


def _cbor_items(body: bytes) -> list[Any]:
    import io

    import cbor2

    decoder = cbor2.CBORDecoder(io.BytesIO(body))
    items = []
    while decoder.fp.tell() < len(body):
        items.append(decoder.decode())
    return items


def _msgpack_items(body: bytes) -> list[Any]:
    import msgpack  # type: ignore[import-untyped]  # msgpack ships no stubs

    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(body)
    return list(unpacker)


@pytest.mark.parametrize(
    ("accept", "decode"),
    [("application/cbor-seq", _cbor_items), ("application/vnd.msgpack-seq", _msgpack_items)],
)
async def test_binary_sequences_resume_by_query(watched: Watched, accept: str, decode: Any) -> None:
    """CBOR and MsgPack sequences resume like NDJSON: ``?stream=&offset=`` names the point,
    the stream id comes back in a header, the offset is the count of items received."""
    async with bridge_for([watched]) as bridge:
        first = await bridge.http.get("/api/complete?tokens=4", headers={"accept": accept})
        assert first.status_code == 200
        assert first.headers["content-type"].startswith(accept)
        stream = first.headers[STREAM_HEADER]
        items = decode(first.content)
        assert [item.get("index", 0) for item in items] == [0, 1, 2, 3]
        tail = await bridge.http.get(
            f"/api/complete?stream={stream}&offset=3", headers={"accept": accept}
        )
        assert tail.headers[OFFSET_HEADER] == "3"
        assert [item["index"] for item in decode(tail.content)] == [3]
    assert watched.generations == 1


class Attached(Watched):
    """``detach=False``: the client that starts the stream cancels it by leaving."""

    @durable(detach=False)
    async def complete(self, request: CompleteRequest, ctx: Context) -> AsyncIterator[Token]:
        async for token in Watched.complete(self, request, ctx):
            yield token


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_an_attached_stream_ends_with_its_first_client(
    files_dir: Path, dialect: Dialect
) -> None:
    service = Attached(files_dir, free=1)
    async with transport_for([service], dialect) as transport:
        client = StreamsServiceClient(transport)
        first = ResponseMetadata()
        call = client.complete(CompleteRequest(tokens=5), response=first)
        async with call:
            assert (await call.__anext__()).index == 0
        await asyncio.wait_for(service.cancelled.wait(), WAIT)
        stream = first.headers[STREAM_HEADER]
        got, error = await collect(
            client.complete(CompleteRequest(), metadata={STREAM_HEADER: stream})
        )
        assert got == [0]
        assert error is not None
        assert error.code is Code.CANCELLED


@pytest.mark.process
async def test_two_instances_share_streams_on_redis(files_dir: Path, make_redis_log: Any) -> None:
    """Two bridges ("instances") on one redis-server: a stream started on one is read from an
    offset on the other, and cancelled from the other (DELETE) while the first produces."""
    producer = Watched(files_dir, free=3)
    other = Watched(files_dir)
    calls_a, calls_b = DurableCalls(make_redis_log()), DurableCalls(make_redis_log())
    async with (
        bridge_for([producer, DurableStreams(calls_a)]) as a,
        bridge_for([other, DurableStreams(calls_b)]) as b,
    ):
        a.app.runner.durable, b.app.runner.durable = calls_a, calls_b
        first = ResponseMetadata()
        call = StreamsServiceClient(a.transport()).complete(
            CompleteRequest(tokens=6), response=first
        )
        async with call:
            assert [(await call.__anext__()).index for _ in range(3)] == [0, 1, 2]
            stream = first.headers[STREAM_HEADER]
            # b's reader follows a's producer: it ends only when the stream does. Cancel it
            # from b; a's handler sees it, and both readers end ``cancelled``.
            reading = asyncio.ensure_future(
                b.http.get(f"/api/complete?stream={stream}&offset=1&tokens=99")
            )
            cancel = await b.http.delete(f"/rpckit/v1/streams/{stream}")
            assert cancel.status_code == 200
            await asyncio.wait_for(producer.cancelled.wait(), WAIT)
            tail = await asyncio.wait_for(reading, WAIT)
            assert tail.status_code == 200
            _, error = await collect(call)
            assert error is not None
            assert error.code is Code.CANCELLED
        lines = [json.loads(line) for line in tail.text.splitlines()]
        assert [line["index"] for line in lines[:-1]] == [1, 2]
        assert lines[-1]["error"]["code"] == "canceled"
        missing = await b.http.delete(f"/rpckit/v1/streams/{'0' * 32}")
        assert missing.status_code == 404
    assert (producer.generations, other.generations) == (1, 0)
    await calls_a.aclose()
    await calls_b.aclose()


class Flaky:
    """A real transport whose first server stream breaks after ``after`` items with a
    transport-level ``unavailable`` (what a dropped connection gives), once."""

    def __init__(self, inner: Any, after: int) -> None:
        self.inner = inner
        self.after = after
        self.calls: list[dict[str, str]] = []

    def server_stream(self, method: Any, request: Any, options: Any) -> Any:
        self.calls.append(dict(options.metadata.items()) if options.metadata else {})
        call = self.inner.server_stream(method, request, options)
        if len(self.calls) > 1:
            return call

        async def broken() -> AsyncIterator[Any]:
            count = 0
            async with call:
                async for item in call:
                    yield item
                    count += 1
                    if count == self.after:
                        raise RpcError(Code.UNAVAILABLE, "connection reset")

        return StreamCall(broken())


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_resuming_client_continues_after_a_transport_error(
    watched: Watched, dialect: Dialect
) -> None:
    async with transport_for([watched], dialect) as transport:
        flaky = Flaky(transport, after=2)
        client = StreamsServiceClient(Resuming(flaky))  # type: ignore[arg-type]
        # 4 tokens and the end fit the 5 records retained: no reader can fall behind.
        tokens = [t.index async for t in client.complete(CompleteRequest(tokens=4))]
        assert tokens == [0, 1, 2, 3]
        assert len(flaky.calls) == 2
        assert flaky.calls[1][OFFSET_HEADER] == "2"
        assert len(flaky.calls[1][STREAM_HEADER]) == 32
        # A final error (the stream's own end) is not resumed.
        watched.fail_after = 1
        final = Flaky(transport, after=99)
        client = StreamsServiceClient(Resuming(final))  # type: ignore[arg-type]
        got, error = await collect(client.complete(CompleteRequest(tokens=5)))
        assert got == [0]
        assert error is not None
        assert error.code is Code.RESOURCE_EXHAUSTED
        assert len(final.calls) == 1
    assert watched.generations == 2


class Stubborn(Watched):
    """A handler that swallows its cancellation and returns as if it had finished."""

    @durable()
    async def complete(self, request: CompleteRequest, ctx: Context) -> AsyncIterator[Token]:
        yield Token(text="t0 ", index=0, generation="g")
        try:
            await self.go.wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            return  # swallowed
        yield Token(text="t1 ", index=1, generation="g")


async def test_a_handler_that_swallows_its_cancel_still_ends_cancelled(files_dir: Path) -> None:
    service = Stubborn(files_dir)
    async with transport_for([service], "connect") as transport:
        client = StreamsServiceClient(transport)
        first = ResponseMetadata()
        call = client.complete(CompleteRequest(), response=first)
        async with call:
            assert (await call.__anext__()).index == 0
            stream = first.headers[STREAM_HEADER]
            got, error = await collect(
                client.complete(
                    CompleteRequest(), metadata={STREAM_HEADER: stream, CANCEL_HEADER: "1"}
                )
            )
            await asyncio.wait_for(service.cancelled.wait(), WAIT)
        assert got == [0]
        assert error is not None
        assert error.code is Code.CANCELLED  # not a clean end after one token
