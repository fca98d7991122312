"""Handler binding: every method's handler, checked for its shape at start-up."""

from __future__ import annotations

from pathlib import Path

import pytest

from examples.streams.server import StreamsExample
from examples.streams.v1.streams_pb2 import Dog, GetDogRequest
from rpckit import Context
from rpckit.http import create_app


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
