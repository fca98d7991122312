"""``rpckit serve``'s flags and ``ServeOptions``' fields correspond one to one, through the one
table ``SERVE_FLAGS``, with equal defaults; the option objects are frozen and reach the servers."""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from rpckit.cli import build_parser, serve_flags, serve_options
from rpckit.compression import compressions
from rpckit.encodings import encodings
from rpckit.http import BridgeOptions
from rpckit.serving.options import NOT_FLAGS, SERVE_FLAGS, ServeOptions, field_paths
from tests.serving.process import Served

TARGET = "examples.streams.server:create_service"

#: For every flag: arguments that set it to something other than its default, and the value
#: its field then holds.
SAMPLES: dict[str, tuple[list[str], Any]] = {
    "target": ([], "pkg.mod:attr"),
    "--grpc": (["--grpc", ":50051"], "127.0.0.1:50051"),
    "--http": (["--http", "0.0.0.0:8080"], "0.0.0.0:8080"),
    "--workers": (["--workers", "3"], 3),
    "--separate-grpc": (["--separate-grpc"], True),
    "--server": (["--server", "granian"], "granian"),
    "--h2c": (["--h2c"], True),
    "--max-message-size": (["--max-message-size", "1000"], 1000),
    "--compress-min-bytes": (["--compress-min-bytes", "0"], 0),
    "--require-connect-version": (["--require-connect-version"], True),
    "--sse-keep-alive": (["--sse-keep-alive", "0.5"], 0.5),
    "--tls-cert": (["--tls-cert", "c.pem", "--tls-key", "k.pem"], Path("c.pem")),
    "--tls-key": (["--tls-cert", "c.pem", "--tls-key", "k.pem"], Path("k.pem")),
    "--tls-client-ca": (
        ["--tls-cert", "c.pem", "--tls-key", "k.pem", "--tls-client-ca", "ca.pem"],
        Path("ca.pem"),
    ),
    "--header-timeout": (["--header-timeout", "1.5"], 1.5),
    "--idle-timeout": (["--idle-timeout", "2.5"], 2.5),
    "--body-timeout": (["--body-timeout", "3.5"], 3.5),
    "--handshake-timeout": (["--handshake-timeout", "4.5"], 4.5),
    "--grpc-window": (["--grpc-window", "0"], 0),
    "--reflection": (["--no-reflection"], False),
    "--backlog": (["--backlog", "300"], 300),
    "--max-connections": (["--max-connections", "5000"], 5000),
    "--grace": (["--grace", "7"], 7.0),
    "--drain-delay": (["--drain-delay", "0.25"], 0.25),
    "--liveness-path": (["--liveness-path", "/live"], "/live"),
    "--readiness-path": (["--readiness-path", "/ready"], "/ready"),
    "--static": (["--static", "site"], Path("site")),
    "--cors-origin": (["--cors-origin", "https://a", "--cors-origin", "*"], ("https://a", "*")),
    "--interceptor": (["--interceptor", "m:a", "--interceptor", "m:b"], ("m:a", "m:b")),
    "--access-log": (["--no-access-log"], False),
    "--otel": (["--otel"], True),
    "--docs": (["--docs"], True),
    "--durable-path": (["--durable-path", "/v1/stream"], "/v1/stream"),
    "--streams": (["--streams", "memory"], "memory"),
    "--durable-long-poll": (["--durable-long-poll", "2"], 2.0),
    "--reload": (["--reload"], True),
    "--log-level": (["--log-level", "debug"], "debug"),
}


def _options(*args: str) -> ServeOptions:
    parser = build_parser()
    parsed, extra = parser.parse_known_args(["serve", "pkg.mod:attr", *args])
    return serve_options(parser, parsed, extra)


def test_every_flag_sets_one_field_and_every_field_has_a_flag() -> None:
    flags = set(serve_flags(build_parser()))
    assert flags == set(SERVE_FLAGS), "a flag without a field, or a field entry without a flag"
    targets = list(SERVE_FLAGS.values())
    assert len(targets) == len(set(targets)), "two flags set the same field"
    fields = set(field_paths())
    assert set(targets) <= fields, set(targets) - fields
    assert not set(targets) & set(NOT_FLAGS)
    assert set(targets) | set(NOT_FLAGS) == fields, fields - set(targets) - set(NOT_FLAGS)


def test_flag_defaults_are_the_field_defaults() -> None:
    defaults = field_paths(ServeOptions(target="pkg.mod:attr"))
    parsed = field_paths(_options())
    for flag, path in SERVE_FLAGS.items():
        assert parsed[path] == defaults[path], (flag, parsed[path], defaults[path])
    assert _options() == ServeOptions(target="pkg.mod:attr")


@pytest.mark.parametrize("flag", sorted(SAMPLES))
def test_each_flag_reaches_its_field(flag: str) -> None:
    assert set(SAMPLES) == set(SERVE_FLAGS)  # a new flag needs a sample here
    args, expected = SAMPLES[flag]
    path = SERVE_FLAGS[flag]
    value = field_paths(_options(*args))[path]
    assert value == expected
    if flag != "target":
        assert value != field_paths(ServeOptions(target="pkg.mod:attr"))[path]


def test_arguments_after_the_flags_go_to_the_target() -> None:
    assert _options("--http", ":0", "--files", "x").target_args == ("--files", "x")


def test_bridge_options_are_frozen_and_checked() -> None:
    options = BridgeOptions()
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.compress_min_bytes = 0  # type: ignore[misc]
    with pytest.raises(ValueError, match="max_message_size"):
        BridgeOptions(max_message_size=0)
    with pytest.raises(ValueError, match="compress_min_bytes"):
        BridgeOptions(compress_min_bytes=-1)
    with pytest.raises(ValueError, match="sse_keep_alive"):
        BridgeOptions(sse_keep_alive=0)


def test_a_worker_copy_keeps_the_process_registries() -> None:
    """Workers are spawned: the options travel pickled, and the process-wide registries must
    stay the worker's own (its imports register encodings there), not a stale copy."""
    options = ServeOptions(target="m:a", bridge=BridgeOptions(max_message_size=1234))
    copy = pickle.loads(pickle.dumps(options))
    assert copy.bridge.encodings is encodings
    assert copy.bridge.compressions is compressions
    assert copy.bridge.max_message_size == 1234
    own = encodings.copy()
    moved = pickle.loads(pickle.dumps(BridgeOptions(encodings=own)))
    assert moved.encodings is not encodings
    assert moved.encodings.names() == own.names()


@pytest.mark.process
def test_sse_keep_alive_flag_reaches_the_bridge() -> None:
    with Served(TARGET, "--http", "127.0.0.1:0", "--sse-keep-alive", "0.05") as served:
        port = served.ports()["HTTP"]
        url = f"http://127.0.0.1:{port}/api/json_stream?interval_ms=60000"
        headers = {"accept": "text/event-stream"}
        with (
            httpx.Client(timeout=10) as client,
            client.stream("GET", url, headers=headers) as response,
        ):
            seen: list[str] = []
            # the first event comes at once, the second after a minute: only the comment,
            # after 0.05 s (15 s by default: the 10 s read timeout would end the test) fills
            # the silence
            for line in response.iter_lines():
                seen.append(line)
                if line == ": keep-alive":
                    break
        assert any(line.startswith("data: ") for line in seen), seen


@pytest.mark.process
def test_max_message_size_flag_holds_on_both_transports() -> None:
    padded = b'{"index": 1' + b" " * 2000 + b"}"
    with Served(
        TARGET, "--grpc", "127.0.0.1:0", "--http", "127.0.0.1:0", "--max-message-size", "1000",
    ) as served:  # fmt: skip
        ports = served.ports(["gRPC", "HTTP"])
        path = "/examples.streams.v1.StreamsService/GetDog"
        with httpx.Client(timeout=10) as client:
            small = client.post(
                f"http://127.0.0.1:{ports['HTTP']}{path}",
                content=b'{"index": 1}',
                headers={"content-type": "application/json"},
            )
            assert small.status_code == 200
            big = client.post(
                f"http://127.0.0.1:{ports['HTTP']}{path}",
                content=padded,
                headers={"content-type": "application/json"},
            )
        assert big.json()["code"] == "resource_exhausted"
        # an unknown length-delimited field (15) pads the request past the limit
        request = b"\x08\x01" + b"\x7a" + b"\xd0\x0f" + b"x" * 2000
        with grpc.insecure_channel(f"127.0.0.1:{ports['gRPC']}") as channel:
            call = channel.unary_unary(path)
            assert call(b"\x08\x01", timeout=10)  # a small one is answered
            with pytest.raises(grpc.RpcError) as failed:
                call(request, timeout=10)
        assert failed.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
