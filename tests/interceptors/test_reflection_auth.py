"""Reflection follows the server's interceptors on both transports: behind a bearer check
on every method, neither gRPC (grpcio's reflection client, ``rpckit call ... list``) nor the
bridge lists the schema without the token, and both do with it; a check on some methods
by name leaves reflection open on both."""

from __future__ import annotations

import subprocess
import sys

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from tests.serving.process import Served
from tests.support import ROOT

pytestmark = pytest.mark.process

STREAMS = "examples.streams.v1.StreamsService"
TOKEN = ("authorization", "Bearer test-token")


def _list(address: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rpckit", "call", address, "list", *args], cwd=ROOT,
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def _served(interceptor: str) -> Served:
    return Served(
        "examples.streams.server:create_service", "--grpc", "127.0.0.1:0",
        "--http", "127.0.0.1:0", "--no-access-log", "--interceptor", interceptor,
    )  # fmt: skip


def _grpc_list(address: str, metadata: tuple[tuple[str, str], ...]) -> list[str]:
    """The services grpcio's own reflection stub lists (a bidi call, two requests)."""
    with grpc.insecure_channel(address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        asks = [
            reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(file_containing_symbol=STREAMS),
        ]
        answers = list(stub.ServerReflectionInfo(iter(asks), metadata=metadata, timeout=10))
    assert answers[1].file_descriptor_response.file_descriptor_proto
    return [s.name for s in answers[0].list_services_response.service]


def test_reflection_follows_the_interceptors_on_both_transports() -> None:
    with _served("tests.serving.auth_all:everything") as served:
        ports = served.ports(("gRPC", "HTTP"))
        grpc_address = f"127.0.0.1:{ports['gRPC']}"
        http = f"http://127.0.0.1:{ports['HTTP']}"
        with grpc.insecure_channel(grpc_address) as channel:
            database = ProtoReflectionDescriptorDatabase(channel)
            try:
                database.get_services()
            except grpc.RpcError as exc:
                refused = exc.code()
            else:
                refused = None
        listed = _grpc_list(grpc_address, (TOKEN,))
        answers = {
            (where, with_token): _list(where, *(["-H", ": ".join(TOKEN)] if with_token else []))
            for where in (grpc_address, http)
            for with_token in (False, True)
        }
    assert refused == grpc.StatusCode.UNAUTHENTICATED
    assert STREAMS in listed
    for where in (grpc_address, http):
        without, with_token = answers[(where, False)], answers[(where, True)]
        assert without.returncode == 64 + 16, (where, without.stdout, without.stderr)
        assert "unauthenticated" in without.stderr
        assert with_token.returncode == 0, (where, with_token.stderr)
        assert STREAMS in with_token.stdout.splitlines()

    # A check on some methods by name leaves reflection open, on both transports alike.
    with _served("examples.streams.server:upload_auth") as served:
        ports = served.ports(("gRPC", "HTTP"))
        grpc_address = f"127.0.0.1:{ports['gRPC']}"
        listed = _grpc_list(grpc_address, ())
        with grpc.insecure_channel(grpc_address) as channel:
            database = ProtoReflectionDescriptorDatabase(channel)  # one request at a time
            services = database.get_services()
            found = database.FindFileContainingSymbol(STREAMS)
        opened = [_list(grpc_address), _list(f"http://127.0.0.1:{ports['HTTP']}")]
    assert STREAMS in listed
    assert "grpc.reflection.v1alpha.ServerReflection" in listed
    assert STREAMS in services
    assert found.package == "examples.streams.v1"
    for answer in opened:
        assert answer.returncode == 0, answer.stderr
        assert STREAMS in answer.stdout.splitlines()
