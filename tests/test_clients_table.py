"""Every typed client, in one table: each call shape of the streams example (unary GetDog and
its not_found, the JsonStream and TextStream server streams, DownloadFile's bytes with their
name and size, the AdoptDogs and UploadAsByteStream client streams with the demo token and
the guest's refusal, bidi Chat, a deadline) x every transport (gRPC, Connect, gRPC-Web,
REST with NDJSON and with SSE, WebSocket) x {async, blocking}, against ``rpckit serve`` in
a real process with the upload auth interceptor on; and the AIP standard methods of the
corpus's library (Create, Get, Update, List, Delete) the same way.

Every row is one scenario, written once: the blocking clients run it through a worker
thread (``asyncio.to_thread``), the async ones directly; the token is added by a client
interceptor (``intercept`` or ``intercept_sync``) on every transport.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import sys
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from examples.streams.v1.streams_pb2 import (
    ChatMessage,
    Dog,
    DownloadFileRequest,
    GetDogRequest,
    JsonStreamRequest,
    TextStreamRequest,
)
from examples.streams.v1.streams_rpckit import StreamsServiceClient, StreamsServiceClientSync
from rpckit import Code, Metadata, RpcError
from rpckit.client import ResponseMetadata
from rpckit.codegen.protoc import run_protoc
from rpckit.files import parse_content_disposition
from rpckit.grpc import GrpcTransport, GrpcTransportSync
from rpckit.http import (
    ConnectTransport,
    ConnectTransportSync,
    GrpcWebTransport,
    GrpcWebTransportSync,
    RestTransport,
    RestTransportSync,
    WebSocketTransport,
)
from rpckit.interceptors import ClientCall, ClientInterceptor, intercept, intercept_sync
from rpckit.v1.stream_pb2 import Bytes
from tests.serving.process import Served

pytestmark = pytest.mark.process

ROOT = Path(__file__).resolve().parent.parent
LIBRARY_PROTO = ROOT / "tests/codegen/protos/aip"


class AddToken(ClientInterceptor):
    """The demo's upload token, unless the call brings its own ``authorization``."""

    async def on_start(self, call: ClientCall) -> None:
        if call.metadata.get("authorization") is None:
            call.metadata.set("authorization", "Bearer demo-token")


@dataclass(frozen=True)
class Servers:
    grpc: str
    http: str


def _serve(target: str, *args: str, cwd: str | None = None) -> Iterator[Servers]:
    with Served(target, "--grpc", "127.0.0.1:0", "--http", "127.0.0.1:0", *args, cwd=cwd) as s:
        ports = s.ports(("gRPC", "HTTP"))
        yield Servers(f"127.0.0.1:{ports['gRPC']}", f"http://127.0.0.1:{ports['HTTP']}")


@pytest.fixture(scope="module")
def streams() -> Iterator[Servers]:
    """The streams example, uploads behind the demo's bearer token."""
    yield from _serve(
        "examples.streams.server:create_service",
        "--interceptor",
        "examples.streams.server:upload_auth",
    )


# --- transports x {async, blocking} ----------------------------------------------------------

ASYNC: dict[str, Callable[[Servers], Any]] = {
    "grpc": lambda s: GrpcTransport(s.grpc),
    "connect": lambda s: ConnectTransport(s.http),
    "grpc-web": lambda s: GrpcWebTransport(s.http),
    "rest": lambda s: RestTransport(s.http),
    "rest-sse": lambda s: RestTransport(s.http, framing="sse"),
    "websocket": lambda s: WebSocketTransport(s.http),
}
SYNC: dict[str, Callable[[Servers], Any]] = {
    "grpc": lambda s: GrpcTransportSync(s.grpc),
    "connect": lambda s: ConnectTransportSync(s.http),
    "grpc-web": lambda s: GrpcWebTransportSync(s.http),
    "rest": lambda s: RestTransportSync(s.http),
    "rest-sse": lambda s: RestTransportSync(s.http, framing="sse"),
}
TRANSPORTS = [(name, "async") for name in ASYNC] + [(name, "sync") for name in SYNC]
BIDI = {"grpc", "websocket"}


class Calls:
    """One client's calls as awaitables, whichever kind the client is: a scenario is written
    once. Blocking clients run in a worker thread (no event loop there, as in real use)."""

    def __init__(self, client: Any, blocking: bool) -> None:
        self.client = client
        self.blocking = blocking

    async def _run(self, work: Callable[[], Any]) -> Any:
        return await asyncio.to_thread(work)

    async def unary(self, name: str, request: Any, **options: Any) -> Any:
        """A unary or client-streaming call's answer."""
        method = getattr(self.client, name)
        if self.blocking:
            return await self._run(lambda: method(request, **options))
        return await method(request, **options)

    async def stream(self, name: str, request: Any, limit: int = 0, **options: Any) -> list[Any]:
        """A streaming call's responses (the first ``limit``, then it is closed)."""
        call = getattr(self.client, name)(request, **options)
        if self.blocking:

            def collect() -> list[Any]:
                got: list[Any] = []
                with call:
                    for item in call:
                        got.append(item)
                        if len(got) == limit:
                            break
                return got

            result: list[Any] = await self._run(collect)
            return result
        got: list[Any] = []
        async with call:
            async for item in call:
                got.append(item)
                if len(got) == limit:
                    break
        return got

    async def close(self) -> None:
        if self.blocking:
            await self._run(lambda: self.client.__exit__(None, None, None))
        else:
            await self.client.transport.aclose()


def _calls(
    servers: Servers, transport: str, mode: str, sync_client: Any, async_client: Any
) -> Calls:
    if mode == "sync":
        return Calls(sync_client(intercept_sync(SYNC[transport](servers), [AddToken()])), True)
    return Calls(async_client(intercept(ASYNC[transport](servers), [AddToken()])), False)


async def _fails(call: Awaitable[Any], code: Code, message: str | None = None) -> RpcError:
    with pytest.raises(RpcError) as caught:
        await call
    assert caught.value.code is code, caught.value
    if message is not None:
        assert caught.value.message == message
    return caught.value


# --- the streams example's call shapes -------------------------------------------------------


async def get_dog(calls: Calls, transport: str) -> None:
    dog = await calls.unary("get_dog", GetDogRequest(index=3))
    assert dog == Dog(name="Dog 3", age=3)


async def get_dog_not_found(calls: Calls, transport: str) -> None:
    await _fails(
        calls.unary("get_dog", GetDogRequest(index=30)), Code.NOT_FOUND, "no dog 30; there are 10"
    )


async def json_stream(calls: Calls, transport: str) -> None:
    dogs = await calls.stream("json_stream", JsonStreamRequest(interval_ms=1))
    assert [dog.name for dog in dogs] == [f"Dog {n}" for n in range(10)]
    assert [dog.age for dog in dogs] == list(range(10))


async def text_stream(calls: Calls, transport: str) -> None:
    texts = await calls.stream("text_stream", TextStreamRequest(interval_ms=5), limit=3)
    assert [t.text for t in texts] == [f"Hello, world! {n}" for n in range(3)]


async def download_file(calls: Calls, transport: str) -> None:
    response = ResponseMetadata()
    chunks = await calls.stream(
        "download_file", DownloadFileRequest(name="hello.txt"), response=response
    )
    assert b"".join(chunk.data for chunk in chunks) == b"Hello from rpckit!\n"
    assert chunks[0].content_type.startswith("text/plain")
    headers = response.headers
    assert parse_content_disposition(headers.get("content-disposition")) == "hello.txt"
    assert headers.get("x-content-size") == "19"


async def download_missing(calls: Calls, transport: str) -> None:
    await _fails(
        calls.stream("download_file", DownloadFileRequest(name="nope.txt")), Code.NOT_FOUND
    )


async def adopt_dogs(calls: Calls, transport: str) -> None:
    dogs = [Dog(name="Rex", age=2), Dog(name="Fido", age=3)]
    summary = await calls.unary("adopt_dogs", dogs)
    assert (summary.count, summary.total_age, list(summary.names)) == (2, 5, ["Rex", "Fido"])


async def adopt_nameless(calls: Calls, transport: str) -> None:
    dogs = [Dog(name="Rex", age=2), Dog(age=3)]
    await _fails(calls.unary("adopt_dogs", dogs), Code.INVALID_ARGUMENT, "dog 1 has no name")


async def upload_bytes(calls: Calls, transport: str) -> None:
    chunks = [Bytes(data=b"abc"), Bytes(data=b"def" * 1000)]
    summary = await calls.unary("upload_as_byte_stream", chunks)
    data = b"abc" + b"def" * 1000
    assert (summary.size, summary.sha256) == (len(data), hashlib.sha256(data).hexdigest())


async def upload_as_guest(calls: Calls, transport: str) -> None:
    guest = Metadata([("authorization", "Bearer guest-token")])
    upload = calls.unary("upload_as_byte_stream", [Bytes(data=b"x")], metadata=guest)
    await _fails(upload, Code.PERMISSION_DENIED)


async def chat(calls: Calls, transport: str) -> None:
    messages = [ChatMessage(text="hi"), ChatMessage(text="there")]
    if transport in BIDI:
        echoed = await calls.stream("chat", messages)
        assert [m.text for m in echoed] == ["HI", "THERE"]
    else:
        error = await _fails(calls.stream("chat", messages), Code.UNIMPLEMENTED)
        assert "Chat is a bidi stream" in error.message


async def deadline(calls: Calls, transport: str) -> None:
    slow = calls.stream("text_stream", TextStreamRequest(interval_ms=100), timeout=0.35)
    await _fails(slow, Code.DEADLINE_EXCEEDED)


SHAPES = [
    get_dog,
    get_dog_not_found,
    json_stream,
    text_stream,
    download_file,
    download_missing,
    adopt_dogs,
    adopt_nameless,
    upload_bytes,
    upload_as_guest,
    chat,
    deadline,
]


@pytest.mark.parametrize(("transport", "mode"), TRANSPORTS, ids=[f"{t}-{m}" for t, m in TRANSPORTS])
@pytest.mark.parametrize("shape", SHAPES, ids=[shape.__name__ for shape in SHAPES])
async def test_streams_example(
    streams: Servers,
    shape: Callable[[Calls, str], Awaitable[None]],
    transport: str,
    mode: str,
) -> None:
    calls = _calls(streams, transport, mode, StreamsServiceClientSync, StreamsServiceClient)
    try:
        await shape(calls, transport)
    finally:
        await calls.close()


# --- the corpus's AIP library: Create, Get, Update, List, Delete ----------------------------

LIBRARY_IMPL = '''
from google.protobuf import empty_pb2

from aip.library.v1 import library_pb2
from aip.library.v1.library_rpckit import Library
from rpckit import Code, Context, RpcError


class Books(Library):
    """The AIP standard methods over an in-memory shelf of books."""

    def __init__(self) -> None:
        self.books: dict[str, library_pb2.Book] = {}

    def _get(self, name: str) -> library_pb2.Book:
        book = self.books.get(name)
        if book is None:
            raise RpcError(Code.NOT_FOUND, f"no book {name}")
        return book

    async def get_book(self, request, ctx: Context) -> library_pb2.Book:
        return self._get(request.name)

    async def list_books(self, request, ctx: Context) -> library_pb2.ListBooksResponse:
        found = [b for n, b in sorted(self.books.items()) if n.startswith(request.parent + "/")]
        return library_pb2.ListBooksResponse(books=found[: request.page_size or None])

    async def create_book(self, request, ctx: Context) -> library_pb2.Book:
        book = library_pb2.Book()
        book.CopyFrom(request.book)
        book.name = f"{request.parent}/books/{request.book_id}"
        if book.name in self.books:
            raise RpcError(Code.ALREADY_EXISTS, f"{book.name} exists")
        self.books[book.name] = book
        return book

    async def update_book(self, request, ctx: Context) -> library_pb2.Book:
        book = self._get(request.book.name)
        for path in request.update_mask.paths or ["title", "author", "pages"]:
            setattr(book, path, getattr(request.book, path))
        return book

    async def delete_book(self, request, ctx: Context) -> empty_pb2.Empty:
        self._get(request.name)
        del self.books[request.name]
        return empty_pb2.Empty()
'''


@dataclass(frozen=True)
class Library:
    servers: Servers
    pb2: Any
    client: Any
    client_sync: Any


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Library]:
    """The corpus's library.proto generated alone (nothing but ``aip`` on the path) and
    served by an in-memory implementation."""
    out = tmp_path_factory.mktemp("library")
    run_protoc(["aip/library/v1/library.proto"], proto_paths=[LIBRARY_PROTO.parent], out=out)
    (out / "library_impl.py").write_text(LIBRARY_IMPL)
    sys.path.insert(0, str(out))
    try:
        pb2 = importlib.import_module("aip.library.v1.library_pb2")
        module = importlib.import_module("aip.library.v1.library_rpckit")
        for servers in _serve("library_impl:Books", cwd=str(out)):
            yield Library(servers, pb2, module.LibraryClient, module.LibraryClientSync)
    finally:
        sys.path.remove(str(out))


async def _library_scenario(calls: Calls, pb2: Any, shelf: str) -> None:
    book = pb2.Book(title="Dune", author="Herbert", pages=412)
    created = await calls.unary(
        "create_book", pb2.CreateBookRequest(parent=shelf, book=book, book_id="dune")
    )
    name = f"{shelf}/books/dune"
    assert created == pb2.Book(name=name, title="Dune", author="Herbert", pages=412)
    assert await calls.unary("get_book", pb2.GetBookRequest(name=name)) == created
    change = pb2.UpdateBookRequest(book=pb2.Book(name=name, title="Dune Messiah", pages=1))
    change.update_mask.paths.append("title")  # a FieldMask in the query over REST
    updated = await calls.unary("update_book", change)
    assert (updated.title, updated.pages) == ("Dune Messiah", 412)
    await calls.unary(
        "create_book",
        pb2.CreateBookRequest(parent=shelf, book=pb2.Book(title="Emma"), book_id="emma"),
    )
    listed = await calls.unary("list_books", pb2.ListBooksRequest(parent=shelf, page_size=5))
    assert [b.title for b in listed.books] == ["Dune Messiah", "Emma"]
    only = await calls.unary("list_books", pb2.ListBooksRequest(parent=shelf, page_size=1))
    assert [b.title for b in only.books] == ["Dune Messiah"]
    await calls.unary("delete_book", pb2.DeleteBookRequest(name=name))
    await _fails(
        calls.unary("get_book", pb2.GetBookRequest(name=name)), Code.NOT_FOUND, f"no book {name}"
    )
    bad = calls.unary("get_book", pb2.GetBookRequest(name="not-a-book-name"))
    if calls_transport(calls).startswith("rest"):
        # the name cannot fill the route's {name=shelves/*/books/*}: refused before sending
        await _fails(bad, Code.INVALID_ARGUMENT)
    else:
        await _fails(bad, Code.NOT_FOUND)


def calls_transport(calls: Calls) -> str:
    """The innermost transport's class name, lower-cased."""
    transport = calls.client.transport
    return type(getattr(transport, "transport", transport)).__name__.lower()


@pytest.mark.parametrize(("transport", "mode"), TRANSPORTS, ids=[f"{t}-{m}" for t, m in TRANSPORTS])
async def test_library_standard_methods(library: Library, transport: str, mode: str) -> None:
    calls = _calls(library.servers, transport, mode, library.client_sync, library.client)
    try:
        await _library_scenario(calls, library.pb2, f"shelves/{transport}-{mode}")
    finally:
        await calls.close()
