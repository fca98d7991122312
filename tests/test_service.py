"""Handler binding: every method's handler, checked for its shape at start-up."""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from examples.streams.server import StreamsExample
from examples.streams.v1.streams_pb2 import (
    Dog,
    GetDogRequest,
    JsonStreamRequest,
    ListFilesRequest,
    ListFilesResponse,
)
from examples.streams.v1.streams_rpckit import StreamsService, UnimplementedStreamsService
from rpckit import Context
from rpckit.http import create_app
from rpckit.serving.target import load_services


class SyncHandler(StreamsExample):
    def get_dog(self, request: GetDogRequest, ctx: Context) -> Dog:  # type: ignore[override]
        return Dog(name="sync")


def test_plain_def_handler_is_refused_at_start(files_dir: Path) -> None:
    with pytest.raises(TypeError) as caught:
        create_app([SyncHandler(files_dir)])
    assert str(caught.value) == (
        "SyncHandler.get_dog (/examples.streams.v1.StreamsService/GetDog) "
        "must be an async def, not a plain def"
    )


def test_async_handlers_and_generators_bind(files_dir: Path) -> None:
    bound = StreamsExample(files_dir).bind()
    assert len(bound) == len(StreamsExample.spec().methods)


class SyncGenerator(StreamsExample):
    def json_stream(self, request: JsonStreamRequest, ctx: Context) -> Iterator[Dog]:  # type: ignore[override]
        yield Dog(name="sync")


class AsyncGeneratorForUnary(StreamsExample):
    async def get_dog(self, request: GetDogRequest, ctx: Context) -> AsyncIterator[Dog]:  # type: ignore[override]
        yield Dog(name="many")


class MissingContext(StreamsExample):
    async def get_dog(self, request: GetDogRequest) -> Dog:  # type: ignore[override]
        return Dog(name="no ctx")


@pytest.mark.parametrize(
    ("service", "message"),
    [
        (SyncGenerator, "SyncGenerator.json_stream (/examples.streams.v1.StreamsService/JsonStream)"
         " is a plain generator (def with yield): use async def, so that it can yield without "
         "blocking the server"),
        (AsyncGeneratorForUnary, "AsyncGeneratorForUnary.get_dog "
         "(/examples.streams.v1.StreamsService/GetDog) is an async generator, but GetDog answers "
         "one message: return it instead of yielding"),
        (MissingContext, "MissingContext.get_dog (/examples.streams.v1.StreamsService/GetDog) "
         "takes (request: 'GetDogRequest'); handlers are called with (request, ctx)"),
    ],
)  # fmt: skip
def test_wrong_handler_shapes_are_refused_at_start(
    service: type[StreamsExample], message: str, files_dir: Path
) -> None:
    """Issue 16: shapes that start, then fail every call with ``internal``."""
    with pytest.raises(TypeError) as caught:
        service(files_dir).bind()
    assert str(caught.value) == message


def _passthrough(handler: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(handler)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        return await handler(*args, **kwargs)

    return wrapper


class Wrapped(StreamsExample):
    """Decorated handlers whose wrapper takes anything, and a streaming plain def that
    returns an async iterable: all valid, none refused."""

    @_passthrough
    async def get_dog(self, request: GetDogRequest, ctx: Context) -> Dog:
        return Dog(name="wrapped")

    def json_stream(self, request: JsonStreamRequest, ctx: Context) -> AsyncIterator[Dog]:  # type: ignore[override]
        async def dogs() -> AsyncIterator[Dog]:
            yield Dog(name="plain def")

        return dogs()


def test_only_wrong_shapes_are_refused(files_dir: Path) -> None:
    """No false positives: a wrapper taking ``*args`` and a plain def returning a stream
    bind; the same service with a generator handler does not."""
    assert len(Wrapped(files_dir).bind()) == len(StreamsExample.spec().methods)

    class WrappedSyncGenerator(Wrapped):
        def json_stream(self, request: JsonStreamRequest, ctx: Context) -> Iterator[Dog]:  # type: ignore[override]
            yield Dog(name="sync")

    with pytest.raises(TypeError, match=r"json_stream .* is a plain generator"):
        WrappedSyncGenerator(files_dir).bind()


class TypoStreams(StreamsService):
    """Implements nothing; ``get_dgo`` is a typo of ``get_dog``, the rest helpers."""

    async def get_dgo(self, request: GetDogRequest, ctx: Context) -> Dog:
        return Dog(name="typo")

    async def list_file(self, directory: str) -> list[str]:  # not (request, ctx)
        return [directory]

    def adopt_dog(self, request: GetDogRequest, ctx: Context) -> None:  # not async
        return None

    async def _chatt(self, request: GetDogRequest, ctx: Context) -> None:  # private
        return None


class PartialTypo(UnimplementedStreamsService):
    """Starts (every RPC answers unimplemented) though ``lst_files`` meant ``list_files``;
    ``get_dogs`` is close only to ``get_dog``, which it implements."""

    async def lst_files(self, request: ListFilesRequest, ctx: Context) -> ListFilesResponse:
        return ListFilesResponse()

    async def get_dog(self, request: GetDogRequest, ctx: Context) -> Dog:
        return Dog(name="implemented")

    async def get_dogs(self, request: GetDogRequest, ctx: Context) -> list[Dog]:
        return [await self.get_dog(request, ctx)]


def test_typo_handler_of_an_abstract_service_is_named() -> None:
    """Issue 16: the real generated ``Unimplemented*`` class, and the typo with its RPC."""
    with pytest.raises(SystemExit) as caught:
        load_services(f"{__name__}:TypoStreams")
    missing = ", ".join(sorted(m.handler for m in StreamsService.spec().methods))
    assert str(caught.value).split("\n") == [
        "rpckit: TypoStreams.get_dgo matches no RPC of examples.streams.v1.StreamsService; "
        "did you mean get_dog?",
        f"rpckit: {__name__}:TypoStreams does not implement {missing}; implement them, or "
        "subclass UnimplementedStreamsService to answer them with unimplemented",
    ]


def test_typo_handler_of_a_service_that_starts_is_warned(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="rpckit"):
        (service,) = load_services(f"{__name__}:PartialTypo")
    assert isinstance(service, PartialTypo)
    assert [r.getMessage() for r in caplog.records if r.name == "rpckit"] == [
        "PartialTypo.lst_files matches no RPC of examples.streams.v1.StreamsService; "
        "did you mean list_files?"
    ]
