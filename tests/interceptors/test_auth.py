"""BearerAuth and ApiKeyAuth in-process: sync and async verify, method selection by name and
by predicate, the principal on the context, static_tokens; gRPC and Connect alike."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from examples.streams.server import StreamsExample
from examples.streams.v1.streams_pb2 import Dog, GetDogRequest, ListFilesRequest
from examples.streams.v1.streams_rpckit import StreamsServiceClient
from rpckit import Code, Context, RpcError
from rpckit.client import Transport
from rpckit.grpc import GrpcTransport
from rpckit.http import ConnectTransport
from rpckit.interceptors import Interceptor
from rpckit.interceptors.auth import ApiKeyAuth, BearerAuth, static_tokens
from tests.interceptors.serving import Served, serve_both

pytestmark = pytest.mark.loopback


class WhoAmI(StreamsExample):
    """GetDog answers with the principal's name."""

    async def get_dog(self, request: GetDogRequest, ctx: Context) -> Dog:
        return Dog(name=repr(ctx.principal))


async def _verify_async(token: str, ctx: Context) -> Any:
    if token == "forbidden":
        raise PermissionError
    return {"user": token} if token.startswith("u-") else None


def _transport(dialect: str, served: Served) -> Transport:
    return GrpcTransport(served.grpc) if dialect == "grpc" else ConnectTransport(served.http)


async def _call(
    dialect: str, served: Served, method: str, metadata: list[tuple[str, str]]
) -> str | Code:
    """Call GetDog or ListFiles; the dog's name, the file count, or the error code."""
    transport = _transport(dialect, served)
    client = StreamsServiceClient(transport)
    try:
        if method == "get_dog":
            return (await client.get_dog(GetDogRequest(index=1), metadata=metadata)).name
        return str(len((await client.list_files(ListFilesRequest(), metadata=metadata)).files))
    except RpcError as exc:
        return exc.code
    finally:
        await transport.aclose()  # type: ignore[attr-defined]


@pytest.fixture
def served_with(tmp_path: Path) -> Any:
    def serve(interceptor: Interceptor) -> Any:
        return serve_both(WhoAmI(tmp_path), [interceptor])

    return serve


@pytest.mark.parametrize("dialect", ["grpc", "connect"])
async def test_async_verify_and_a_predicate(served_with: Any, dialect: str) -> None:
    auth = BearerAuth(_verify_async, methods=lambda method: method.name == "GetDog")
    async with served_with(auth) as served:

        async def get_dog(metadata: list[tuple[str, str]]) -> str | Code:
            return await _call(dialect, served, "get_dog", metadata)

        assert await get_dog([]) is Code.UNAUTHENTICATED
        assert await get_dog([("authorization", "Basic dTpw")]) is Code.UNAUTHENTICATED
        assert await get_dog([("authorization", "Bearer nobody")]) is Code.UNAUTHENTICATED
        assert await get_dog([("authorization", "bearer forbidden")]) is Code.PERMISSION_DENIED
        assert await get_dog([("authorization", "Bearer u-ada")]) == "{'user': 'u-ada'}"
        assert await _call(dialect, served, "list_files", []) == "0"  # not selected


@pytest.mark.parametrize("dialect", ["grpc", "connect"])
async def test_api_key_with_static_tokens_and_method_names(served_with: Any, dialect: str) -> None:
    verify = static_tokens({"k-1": "svc-a", "k-2": "svc-b"})
    auth = ApiKeyAuth(verify, methods={"/examples.streams.v1.StreamsService/ListFiles"})
    async with served_with(auth) as served:
        assert await _call(dialect, served, "list_files", []) is Code.UNAUTHENTICATED
        assert await _call(dialect, served, "list_files", [("x-api-key", "k-3")]) is (
            Code.UNAUTHENTICATED
        )
        assert await _call(dialect, served, "list_files", [("x-api-key", "k-2")]) == "0"
        assert await _call(dialect, served, "get_dog", []) == "None"  # not selected


async def test_verify_raising_rpc_error_passes_it_through(served_with: Any) -> None:
    def verify(token: str, ctx: Context) -> Any:
        raise RpcError(Code.UNAVAILABLE, "token service down")

    async with served_with(BearerAuth(verify)) as served:
        got = await _call("grpc", served, "get_dog", [("authorization", "Bearer x")])
    assert got is Code.UNAVAILABLE


def test_static_tokens_maps_tokens_to_principals() -> None:
    verify = static_tokens({"a": 1, "b": 2})
    ctx: Any = None
    assert (verify("a", ctx), verify("b", ctx), verify("c", ctx), verify("", ctx)) == (
        1,
        2,
        None,
        None,
    )
