"""Hardening 2, item 13: ``rpckit serve --no-reflection`` serves no reflection on either port:
gRPC answers ``unimplemented``, the bridge 404 (Connect and gRPC-Web alike); without the
flag both answer."""

from __future__ import annotations

import struct
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests.serving.process import Served

pytestmark = pytest.mark.process

TARGET = "examples.streams.server:create_service"
STREAMS = "examples.streams.v1.StreamsService"
NAMES = ("grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection")
LIST = reflection_pb2.ServerReflectionRequest(list_services="")


def _grpc_list(address: str) -> list[str] | grpc.StatusCode:
    """The services listed over gRPC, or the status of the refusal."""
    with grpc.insecure_channel(address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        try:
            answers = list(stub.ServerReflectionInfo(iter([LIST]), timeout=10))
        except grpc.RpcError as exc:
            code: grpc.StatusCode = exc.code()
            return code
    return [s.name for s in answers[0].list_services_response.service]


def _http_asks(url: str, name: str) -> list[httpx.Response]:
    """One list_services request over Connect and over gRPC-Web (both streaming)."""
    frame = LIST.SerializeToString()
    body = struct.pack(">BI", 0, len(frame)) + frame
    path = f"{url}/{name}/ServerReflectionInfo"
    return [
        httpx.post(path, content=body, headers={"content-type": kind}, timeout=10)
        for kind in ("application/connect+proto", "application/grpc-web+proto")
    ]


def _serve(files: Path, *flags: str) -> Served:
    return Served(
        TARGET, "--grpc", "127.0.0.1:0", "--http", "127.0.0.1:0", "--files", str(files),
        "--log-level", "warning", *flags,
    )  # fmt: skip


def test_no_reflection_turns_it_off_on_both_ports(files_dir: Path) -> None:
    with _serve(files_dir, "--no-reflection") as served:
        ports = served.ports(("gRPC", "HTTP"))
        refused = _grpc_list(f"127.0.0.1:{ports['gRPC']}")
        answers = [
            r for name in NAMES for r in _http_asks(f"http://127.0.0.1:{ports['HTTP']}", name)
        ]
    assert refused == grpc.StatusCode.UNIMPLEMENTED
    assert [r.status_code for r in answers] == [404] * len(answers)


def test_reflection_is_on_by_default_on_both_ports(files_dir: Path) -> None:
    with _serve(files_dir) as served:
        ports = served.ports(("gRPC", "HTTP"))
        listed = _grpc_list(f"127.0.0.1:{ports['gRPC']}")
        answers = [
            r for name in NAMES for r in _http_asks(f"http://127.0.0.1:{ports['HTTP']}", name)
        ]
    assert isinstance(listed, list)
    assert STREAMS in listed
    for response in answers:
        assert response.status_code == 200, response.text[:200]
        assert STREAMS.encode() in response.content
