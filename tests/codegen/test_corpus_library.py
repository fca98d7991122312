"""The corpus's AIP standard methods (``aip/library/v1/library.proto``: Get, List, Create,
Update, Delete as AIP-131 to AIP-135 bind them) under ``rpckit serve``: AIP-134's Update
(``patch: "/v1/{book.name=shelves/*/books/*}" body: "book"``) starts, and its handler sees
the same request over the REST route (the path's ``book.name`` wins over the body's),
Connect and gRPC.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import httpx
import pytest

from tests.codegen.test_corpus import corpus  # noqa: F401 - the fixture
from tests.serving.process import Served

pytestmark = pytest.mark.process

IMPL = "aip_library_impl"
_IMPL = """
from aip.library.v1 import library_pb2
from aip.library.v1.library_rpckit import UnimplementedLibrary
from rpckit import Context


class Books(UnimplementedLibrary):
    \"\"\"Update answers with what it was asked: the book, its author the mask's paths.\"\"\"

    async def update_book(
        self, request: library_pb2.UpdateBookRequest, ctx: Context
    ) -> library_pb2.Book:
        seen = library_pb2.Book()
        seen.CopyFrom(request.book)
        seen.author = ",".join(request.update_mask.paths)
        return seen
"""
SEEN = {"name": "shelves/s1/books/b1", "title": "New", "author": "title"}
UPDATE = "/aip.library.v1.Library/UpdateBook"


def _library_pb2(out: Path) -> Any:  # a protoc module: its classes are unknown to mypy
    """The generated ``library_pb2``, loaded from its file: putting the corpus on
    ``sys.path`` would shadow installed packages (google.longrunning) in this process."""
    path = out / "aip/library/v1/library_pb2.py"
    spec = importlib.util.spec_from_file_location("aip.library.v1.library_pb2", path)
    assert spec is not None
    assert spec.loader is not None
    module: ModuleType = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def library(corpus: Path) -> Iterator[tuple[str, str]]:  # noqa: F811 - the fixture above
    """``rpckit serve`` of the library with Update implemented: (gRPC address, base URL)."""
    impl = corpus / f"{IMPL}.py"
    impl.write_text(_IMPL)
    try:
        with Served(
            f"{IMPL}:Books", "--grpc", "127.0.0.1:0", "--http", "127.0.0.1:0", cwd=str(corpus)
        ) as served:
            ports = served.ports(("gRPC", "HTTP"))
            yield f"127.0.0.1:{ports['gRPC']}", f"http://127.0.0.1:{ports['HTTP']}"
    finally:
        impl.unlink()


async def test_update_over_rest_the_path_wins(library: tuple[str, str]) -> None:
    _, base = library
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        response = await http.patch(
            "/v1/shelves/s1/books/b1",
            params={"updateMask": "title"},
            json={"name": "shelves/other/books/elsewhere", "title": "New"},
        )
        assert response.status_code == 200, response.text
        assert response.json() == SEEN
        # the other standard methods are routed too (answered by UnimplementedLibrary)
        for verb, path in (("GET", "/v1/shelves/s1/books/b1"), ("GET", "/v1/shelves/s1/books"),
                           ("POST", "/v1/shelves/s1/books"),
                           ("DELETE", "/v1/shelves/s1/books/b1")):  # fmt: skip
            other = await http.request(verb, path, json={} if verb == "POST" else None)
            assert (other.status_code, other.json()["code"]) == (501, "unimplemented"), path


async def test_update_over_connect_and_grpc(
    library: tuple[str, str],
    corpus: Path,  # noqa: F811 - the fixture imported above
) -> None:
    address, base = library
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        response = await http.post(
            UPDATE,
            json={"book": {"name": "shelves/s1/books/b1", "title": "New"}, "updateMask": "title"},
        )
        assert response.status_code == 200, response.text
        assert response.json() == SEEN
    pb2 = _library_pb2(corpus)
    request = pb2.UpdateBookRequest(book=pb2.Book(name="shelves/s1/books/b1", title="New"))
    request.update_mask.paths.append("title")
    async with grpc.aio.insecure_channel(address) as channel:
        update = channel.unary_unary(
            UPDATE,
            request_serializer=pb2.UpdateBookRequest.SerializeToString,
            response_deserializer=pb2.Book.FromString,
        )
        reply = await update(request, timeout=10)
    assert reply == pb2.Book(**SEEN)
