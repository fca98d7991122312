"""The access log in-process: one line per call with the outcome's fields, on every dialect,
and the same fields as ``record.rpc``; values that could break the line are quoted."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest

from examples.streams.server import StreamsExample
from examples.streams.v1.streams_pb2 import GetDogRequest, JsonStreamRequest
from examples.streams.v1.streams_rpckit import StreamsServiceClient
from rpckit import RpcError
from rpckit.grpc import GrpcTransport
from rpckit.http import ConnectTransport
from rpckit.interceptors.access_log import AccessLog, format_fields
from tests.interceptors.serving import serve_both

pytestmark = pytest.mark.loopback


def _records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "rpckit.access"]


async def test_one_line_per_call_with_its_outcome(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="rpckit.access")
    async with (
        serve_both(StreamsExample(tmp_path), [AccessLog()]) as served,
        GrpcTransport(served.grpc) as grpc_transport,
        ConnectTransport(served.http) as connect_transport,
    ):
        request = JsonStreamRequest(interval_ms=1)
        dogs = [d async for d in StreamsServiceClient(grpc_transport).json_stream(request)]
        with pytest.raises(RpcError):
            await StreamsServiceClient(connect_transport).get_dog(GetDogRequest(index=99))
    assert len(dogs) == 10
    stream, failed = _records(caplog)
    assert stream.levelno == logging.INFO
    assert stream.getMessage().startswith(
        "method=/examples.streams.v1.StreamsService/JsonStream transport=grpc dialect=grpc "
        "code=OK duration_ms="
    )
    assert stream.rpc["messages_out"] == 10  # type: ignore[attr-defined]
    assert stream.rpc["messages_in"] == 1  # type: ignore[attr-defined]
    assert stream.rpc["peer"].startswith("ipv4:127.0.0.1:")  # type: ignore[attr-defined]
    message = failed.getMessage()
    assert " dialect=connect code=NOT_FOUND " in message
    assert message.endswith(' error="no dog 99; there are 10"')


@pytest.mark.parametrize("dialect", ["connect", "plain"])
async def test_http_stream_read_to_the_end_is_ok(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, dialect: str
) -> None:
    caplog.set_level(logging.INFO, logger="rpckit.access")
    async with (
        serve_both(StreamsExample(tmp_path), [AccessLog()]) as served,
        httpx.AsyncClient() as http,
        ConnectTransport(served.http, client=http) as transport,
    ):
        if dialect == "plain":
            stream = await http.get(f"{served.http}/api/json_stream?interval_ms=1")
            assert len(stream.text.splitlines()) == 10
        else:
            client = StreamsServiceClient(transport)
            dogs = [d async for d in client.json_stream(JsonStreamRequest(interval_ms=1))]
            assert len(dogs) == 10
    (record,) = _records(caplog)
    assert record.rpc["messages_in"] == 1  # type: ignore[attr-defined]
    assert f" dialect={dialect} code=OK " in record.getMessage()


async def test_nothing_is_formatted_when_info_is_off(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="rpckit.access")
    async with (
        serve_both(StreamsExample(tmp_path), [AccessLog()]) as served,
        ConnectTransport(served.http) as transport,
    ):
        await StreamsServiceClient(transport).get_dog(GetDogRequest(index=1))
    assert _records(caplog) == []


def test_values_that_could_break_the_line_are_json_strings() -> None:
    line = format_fields({"a": "x y", "b": 'q"', "c": "new\nline", "d": "", "e": 1.5, "f": "k=v"})
    assert line == 'a="x y" b="q\\"" c="new\\nline" d="" e=1.5 f="k=v"'
