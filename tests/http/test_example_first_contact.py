"""The streams example through ``python -m rpckit serve`` (real processes, uvicorn and granian)
as a first-time user meets it: a traversal name refused with the same code on the plain route,
Connect, gRPC-Web and gRPC; an unsupported Content-Type refused alike on every dialect; an HTML
form upload (multipart/form-data) stored as the file it carries, in bounded memory; and both
uploads behind the example's token on gRPC and WebSocket."""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import shutil
import subprocess
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Subprotocol

from examples.streams.v1.streams_pb2 import DownloadFileRequest, UploadProgress, UploadSummary
from examples.streams.v1.streams_rpckit import StreamsServiceClient
from rpckit.errors import Code, RpcError
from rpckit.grpc import GrpcTransport
from rpckit.http import ConnectTransport, WebSocketTransport
from rpckit.http.grpc_web.client import GrpcWebTransport
from rpckit.v1.stream_pb2 import Bytes
from tests.serving.process import Served
from tests.support import ROOT, free_port, process_tree, require_tool, rss

pytestmark = pytest.mark.process

SERVICE = "/examples.streams.v1.StreamsService/"
TOKEN = [("authorization", "Bearer demo-token")]
TIMEOUT = 30.0
#: The most a server may grow while a large form streams through it.
RSS_GROWTH_LIMIT = 64 << 20


@dataclass
class Example:
    served: Served
    url: str
    grpc: str
    files: Path

    def stored(self) -> set[str]:
        return {p.name for p in self.files.iterdir()}

    def rss(self) -> int:
        return sum(rss(pid) for pid in process_tree(self.served.process.pid))


def _serve(server: str, base: Path) -> Iterator[Example]:
    files = base / "files"
    files.mkdir()
    (files / "hello.txt").write_text("Hello from rpckit!\n")
    (base / "secret.txt").write_text("not for download\n")
    (files / "out").symlink_to(base / "secret.txt")
    port = free_port()
    with Served(
        "examples.streams.server:create_service",
        "--grpc", "127.0.0.1:0", "--http", f"127.0.0.1:{port}", "--server", server,
        "--interceptor", "examples.streams.server:upload_auth", "--files", str(files),
    ) as served:  # fmt: skip
        ports = served.ports(("gRPC", "HTTP"))
        yield Example(
            served, f"http://127.0.0.1:{ports['HTTP']}", f"127.0.0.1:{ports['gRPC']}", files
        )


@pytest.fixture(scope="module")
def uvicorn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Example]:
    yield from _serve("uvicorn", tmp_path_factory.mktemp("uvicorn"))


@pytest.fixture(scope="module")
def granian(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Example]:
    yield from _serve("granian", tmp_path_factory.mktemp("granian"))


@pytest.fixture(params=["uvicorn", "granian"])
def example(request: pytest.FixtureRequest) -> Example:
    found: Example = request.getfixturevalue(request.param)
    return found


def _transports(example: Example) -> dict[str, ConnectTransport | GrpcWebTransport | GrpcTransport]:
    return {
        "connect": ConnectTransport(example.url),
        "grpc-web": GrpcWebTransport(example.url),
        "grpc": GrpcTransport(example.grpc),
    }


# --- 1. a client's file name never leaves the files directory -----------------------------


@pytest.mark.parametrize(
    ("name", "status", "code"),
    [
        ("../../../etc/hostname", 400, Code.INVALID_ARGUMENT),
        ("/etc/hostname", 400, Code.INVALID_ARGUMENT),
        ("..", 400, Code.INVALID_ARGUMENT),
        ("out", 404, Code.NOT_FOUND),  # a symlink that leads out of the directory
        ("missing.txt", 404, Code.NOT_FOUND),
    ],
)
async def test_traversal_is_refused_alike_on_every_dialect(
    uvicorn: Example, name: str, status: int, code: Code
) -> None:
    quoted = "".join(f"%{byte:02X}" for byte in name.encode())  # so that httpx keeps ".."
    async with httpx.AsyncClient(base_url=uvicorn.url, timeout=TIMEOUT) as http:
        plain = await http.get(f"/api/files/{quoted}")
        good = await http.get("/api/files/hello.txt")
    assert good.content == b"Hello from rpckit!\n"
    assert plain.status_code == status, plain.text
    error = plain.json()
    assert error["code"] == code.name.lower()
    assert "not for download" not in plain.text
    assert str(uvicorn.files.parent) not in error["message"]
    for dialect, transport in _transports(uvicorn).items():
        client = StreamsServiceClient(transport)
        with pytest.raises(RpcError) as caught:
            _ = [c async for c in client.download_file(DownloadFileRequest(name=name))]
        assert (dialect, caught.value.code) == (dialect, code)
        assert caught.value.message == error["message"]
        await transport.aclose()


# --- 3. an unsupported Content-Type: 415 and one code on every dialect --------------------


async def test_unsupported_content_type_is_refused_alike(uvicorn: Example) -> None:
    async with httpx.AsyncClient(base_url=uvicorn.url, timeout=TIMEOUT) as http:
        plain = await http.post(
            "/api/dogs:adopt", content=b"Rex,3\n", headers={"content-type": "text/csv"}
        )
        connect = await http.post(
            SERVICE + "GetDog", content=b"index=1", headers={"content-type": "text/csv"}
        )
        connect_stream = await http.post(
            SERVICE + "AdoptDogs", content=b"", headers={"content-type": "application/connect+csv"}
        )
        grpc_web = await http.post(
            SERVICE + "GetDog", content=b"", headers={"content-type": "application/grpc-web+csv"}
        )
    for name, response in [
        ("plain", plain),
        ("connect", connect),
        ("connect stream", connect_stream),
        ("grpc-web", grpc_web),
    ]:
        assert (name, response.status_code) == (name, 415)
        assert response.headers["content-type"] == "application/json"
        assert (name, response.json()["code"]) == (name, "unimplemented")
        assert response.headers["accept-post"], name
    assert "application/x-ndjson" in plain.headers["accept-post"]
    assert "application/json" in connect.headers["accept-post"]
    assert "application/grpc-web+proto" in grpc_web.headers["accept-post"]
    # gRPC-Web clients read the code from grpc-status, as in a trailers-only answer
    assert grpc_web.headers["grpc-status"] == str(int(Code.UNIMPLEMENTED))
    assert "unsupported content type" in grpc_web.headers["grpc-message"]


# --- 2. an HTML form upload is the file it carries ----------------------------------------


async def test_form_upload_stores_the_file(example: Example) -> None:
    content = hashlib.sha256(b"seed").digest() * 10_000 + b"\r\n--not-the-boundary\r\n"
    async with httpx.AsyncClient(base_url=example.url, timeout=TIMEOUT) as http:
        response = await http.post(
            "/api/upload_as_file_stream",
            data={"comment": "first"},
            files={"file": ("../report 1.csv", content, "text/csv")},
            headers={"x-content-size": str(len(content))},  # the file's size, not the form's
        )
    assert response.status_code == 200, response.text
    summary = response.json()
    assert summary["size"] == str(len(content))
    assert summary["sha256"] == hashlib.sha256(content).hexdigest()
    assert summary["filename"] == "report 1.csv"  # the client's name, sanitised
    assert (example.files / summary["filename"]).read_bytes() == content
    (example.files / summary["filename"]).unlink()


@pytest.mark.parametrize(
    ("files", "data", "headers", "needle"),
    [
        (
            [("a", ("a.txt", b"a", "text/plain")), ("b", ("b.txt", b"b", "text/plain"))],
            {},
            {},
            "second file part",
        ),
        ([], {"comment": "no file"}, {}, "no file part"),
        ([("a", ("a.txt", b"abc", "text/plain"))], {}, {"x-content-size": "4"}, "x-content-size"),
    ],
)
async def test_form_upload_refusals(
    example: Example,
    files: list[tuple[str, tuple[str, bytes, str]]],
    data: dict[str, str],
    headers: dict[str, str],
    needle: str,
) -> None:
    before = example.stored()
    async with httpx.AsyncClient(base_url=example.url, timeout=TIMEOUT) as http:
        if files:
            response = await http.post(
                "/api/upload_as_file_stream", files=files, data=data, headers=headers
            )
        else:  # httpx sends a form without files urlencoded: build the multipart body by hand
            body = (
                b'--B\r\nContent-Disposition: form-data; name="comment"\r\n\r\nno file\r\n--B--\r\n'
            )
            response = await http.post(
                "/api/upload_as_file_stream",
                content=body,
                headers={"content-type": "multipart/form-data; boundary=B"},
            )
    assert response.status_code == 400, response.text
    error = response.json()
    assert error["code"] == "invalid_argument"
    assert needle in error["message"]
    assert example.stored() == before  # nothing kept, no temporary file left


async def test_large_form_upload_streams_in_bounded_memory(example: Example) -> None:
    block = hashlib.sha256(b"block").digest() * 32768  # 1 MiB
    blocks = 192
    boundary = "----rpckitBoundary7MA4YWxkTrZu0gW"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()

    async def body() -> AsyncIterator[bytes]:
        yield head
        for _ in range(blocks):
            yield block
        yield f"\r\n--{boundary}--\r\n".encode()

    peak = example.rss()
    start = peak
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(0.05):
            peak = max(peak, example.rss())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        async with httpx.AsyncClient(base_url=example.url, timeout=120) as http:
            response = await http.post(
                "/api/upload_as_file_stream",
                content=body(),
                headers={"content-type": f"multipart/form-data; boundary={boundary}"},
            )
    finally:
        done.set()
        sampler.join(timeout=5)
    assert response.status_code == 200, response.text
    summary = response.json()
    assert summary["size"] == str(blocks * len(block))
    stored = example.files / summary["filename"]
    assert stored.stat().st_size == blocks * len(block)
    stored.unlink()
    assert peak - start < RSS_GROWTH_LIMIT, f"grew by {(peak - start) >> 20} MiB"


# --- 5. both uploads need the example's token ---------------------------------------------


async def _chunks() -> AsyncIterator[Bytes]:
    for i in range(3):
        yield Bytes(data=bytes([i]) * 100)


def _grpc_upload(example: Example, method: str, metadata: list[tuple[str, str]]) -> list[Any]:
    """Call an upload with a grpcio stub (grpcio's own client, not rpckit's)."""
    requests = [Bytes(data=bytes([i]) * 100) for i in range(3)]
    with grpc.insecure_channel(example.grpc) as channel:
        if method == "UploadWithProgress":
            bidi = channel.stream_stream(
                SERVICE + method,
                request_serializer=Bytes.SerializeToString,
                response_deserializer=UploadProgress.FromString,
            )
            return list(bidi(iter(requests), metadata=metadata, timeout=TIMEOUT))
        upload = channel.stream_unary(
            SERVICE + method,
            request_serializer=Bytes.SerializeToString,
            response_deserializer=UploadSummary.FromString,
        )
        return [upload(iter(requests), metadata=metadata, timeout=TIMEOUT)]


@pytest.mark.parametrize("method", ["UploadWithProgress", "UploadAsByteStream"])
def test_both_uploads_need_the_token_on_grpc(uvicorn: Example, method: str) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        _grpc_upload(uvicorn, method, [])
    assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert refused.value.details() == "missing credentials: send authorization: Bearer <token>"
    answers = _grpc_upload(uvicorn, method, TOKEN)
    sent = bytes(100) + b"\x01" * 100 + b"\x02" * 100
    if method == "UploadWithProgress":
        assert [p.received for p in answers] == [100, 200, 300, 300]
        assert answers[-1].sha256 == hashlib.sha256(sent).hexdigest()
    else:
        assert answers[0].size == 300


async def test_both_uploads_need_the_token_on_websocket(uvicorn: Example) -> None:
    transport = WebSocketTransport(uvicorn.url)
    client = StreamsServiceClient(transport)
    try:
        with pytest.raises(RpcError) as progress_refused:
            _ = [p async for p in client.upload_with_progress(_chunks(), timeout=TIMEOUT)]
        with pytest.raises(RpcError) as bytes_refused:
            await client.upload_as_byte_stream(_chunks(), timeout=TIMEOUT)
        progress = [
            p async for p in client.upload_with_progress(_chunks(), metadata=TOKEN, timeout=TIMEOUT)
        ]
        summary = await client.upload_as_byte_stream(_chunks(), metadata=TOKEN, timeout=TIMEOUT)
    finally:
        await transport.aclose()
    for refused in (progress_refused, bytes_refused):
        assert refused.value.code is Code.UNAUTHENTICATED
        assert refused.value.message == "missing credentials: send authorization: Bearer <token>"
    assert [p.received for p in progress] == [100, 200, 300, 300]
    assert summary.size == 300


# --- 4. what the docs say is what the wire does -------------------------------------------

PLAIN_HTTP_DOC = ROOT / "examples" / "site" / "docs" / "howto" / "plain-http.md"


def _documented_uploads() -> list[str]:
    """The curl commands plain-http.md gives for UploadFileAsFileStream."""
    row = next(
        line
        for line in PLAIN_HTTP_DOC.read_text().splitlines()
        if line.startswith("| UploadFileAsFileStream |")
    )
    commands = re.findall(r"`(curl [^`]+)`", row.split("|")[2])
    assert len(commands) == 2, row
    return commands


@pytest.mark.parametrize("which", [0, 1], ids=["raw body", "form"])
def test_documented_curl_uploads_work(uvicorn: Example, tmp_path: Path, which: int) -> None:
    require_tool(shutil.which("curl") is not None, "curl is needed")
    big = tmp_path / "big.iso"
    content = hashlib.sha256(b"iso").digest() * 4096
    big.write_bytes(content)
    command = _documented_uploads()[which].replace("localhost:8080", uvicorn.url)
    argv = [str(big) if arg == "big.iso" else arg for arg in shlex.split(command)]
    argv = [arg.replace("@big.iso", f"@{big}") for arg in argv]
    done = subprocess.run(
        [*argv, "--silent", "--show-error", "--fail-with-body"],
        capture_output=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, (command, done.stdout, done.stderr)
    summary = json.loads(done.stdout)
    assert summary["size"] == str(len(content))
    assert summary["sha256"] == hashlib.sha256(content).hexdigest()
    assert summary["filename"] == "big.iso"
    (uvicorn.files / "big.iso").unlink()


async def test_refused_subprotocol_is_403_at_the_handshake(example: Example) -> None:
    """websocket.md: a client offering only unknown sub-protocols gets HTTP 403, no socket."""
    url = "ws" + example.url[4:] + SERVICE + "GetDog"
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url, subprotocols=[Subprotocol("rpckit.v1.xml")], proxy=None):
            pass
    assert refused.value.response.status_code == 403
    async with connect(url, subprotocols=[Subprotocol("rpckit.v1.json")], proxy=None) as ws:
        assert ws.subprotocol == "rpckit.v1.json"
