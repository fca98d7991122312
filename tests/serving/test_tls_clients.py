"""rpckit's own Python clients over TLS against ``rpckit serve --tls-cert``: the generated
client on Connect and gRPC-Web (an httpx client that trusts the CA), gRPC (a secure grpc.aio
channel) and WebSocket (``ssl=``), as the deployment page shows them."""

from __future__ import annotations

import ssl
from collections.abc import Iterator

import grpc
import httpx
import pytest

from examples.streams.v1.streams_pb2 import GetDogRequest
from examples.streams.v1.streams_rpckit import StreamsServiceClient
from rpckit.errors import Code, RpcError
from rpckit.grpc import GrpcTransport
from rpckit.http import ConnectTransport, GrpcWebTransport, WebSocketTransport
from tests.serving.certs import Certs, make_certs
from tests.serving.process import Served

pytestmark = pytest.mark.process

TARGET = "examples.streams.server:create_service"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Certs, str, str]]:
    certs = make_certs(tmp_path_factory.mktemp("certs"))
    with Served(
        TARGET, "--grpc", "127.0.0.1:0", "--http", "127.0.0.1:0",
        "--tls-cert", str(certs.server_cert), "--tls-key", str(certs.server_key),
    ) as server:  # fmt: skip
        ports = server.ports(["gRPC", "HTTP"])
        yield certs, f"https://127.0.0.1:{ports['HTTP']}", f"127.0.0.1:{ports['gRPC']}"


AnyTransport = ConnectTransport | GrpcWebTransport | GrpcTransport | WebSocketTransport


def _transports(certs: Certs, url: str, target: str) -> dict[str, AnyTransport]:
    trusted = ssl.create_default_context(cafile=certs.ca)
    credentials = grpc.ssl_channel_credentials(root_certificates=certs.ca.read_bytes())
    return {
        "connect": ConnectTransport(url, client=httpx.AsyncClient(verify=trusted)),
        "grpc-web": GrpcWebTransport(url, client=httpx.AsyncClient(verify=trusted)),
        "grpc": GrpcTransport(grpc.aio.secure_channel(target, credentials)),
        "websocket": WebSocketTransport(url, ssl=trusted),
    }


@pytest.mark.parametrize("dialect", ["connect", "grpc-web", "grpc", "websocket"])
async def test_python_clients_over_tls(served: tuple[Certs, str, str], dialect: str) -> None:
    certs, url, target = served
    async with _transports(certs, url, target)[dialect] as transport:
        dog = await StreamsServiceClient(transport).get_dog(GetDogRequest(index=3))
    assert dog.name == "Dog 3"


async def test_websocket_without_the_ca_is_unavailable(served: tuple[Certs, str, str]) -> None:
    _, url, _ = served
    async with WebSocketTransport(url, ssl=ssl.create_default_context()) as transport:
        with pytest.raises(RpcError) as refused:
            await StreamsServiceClient(transport).get_dog(GetDogRequest(index=3))
    assert refused.value.code is Code.UNAVAILABLE
    assert "certificate" in refused.value.message


def test_ssl_is_refused_for_plain_urls() -> None:
    with pytest.raises(ValueError, match="https"):
        WebSocketTransport("http://127.0.0.1:1", ssl=ssl.create_default_context())
