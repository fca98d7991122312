"""A service for the serving tests: ``GetDog`` answers with the worker's PID as the name."""

from __future__ import annotations

import os
from collections.abc import Sequence

from examples.streams.server import StreamsExample, create_service
from examples.streams.v1.streams_pb2 import Dog, GetDogRequest
from rpckit import Context


class PidDogs(StreamsExample):
    """The example, except that ``GetDog`` names the process that answered."""

    async def get_dog(self, request: GetDogRequest, ctx: Context) -> Dog:
        return Dog(name=str(os.getpid()), age=request.index)


def create(argv: Sequence[str] = ()) -> PidDogs:
    """``rpckit serve tests.serving.pid_service:create [--files DIR]``."""
    return PidDogs(create_service(argv).files_dir)
