"""rpckit.serving.guard's body-progress limit, in process: a stalled piece ends the call with
``deadline_exceeded``, steady pieces never do, and other cancellations pass through."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from rpckit import Code, RpcError
from rpckit.serving.guard import RequestGuard, _watches

Message = dict[str, Any]


def _waiting() -> set[Any]:
    watch = _watches.peek(asyncio.get_running_loop())
    assert watch is not None
    return watch.waiting


class Body:
    """A receive() fed by the test: each put() releases one message."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Message] = asyncio.Queue()

    def put(self, data: bytes, more: bool) -> None:
        self.queue.put_nowait({"type": "http.request", "body": data, "more_body": more})

    async def __call__(self) -> Message:
        return await self.queue.get()


def _scope() -> dict[str, Any]:
    return {"type": "http", "method": "POST", "headers": [(b"content-length", b"9")]}


async def _read_all(receive: Any) -> bytes:
    data = b""
    while True:
        message = await receive()
        piece: bytes = message["body"]
        data += piece
        if not message["more_body"]:
            return data


async def _guarded_read(limit: float, body: Body, *, bind_loop: bool) -> bytes:
    """The body as an app behind the guard reads it (or the RpcError it raised)."""
    result: list[bytes] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        result.append(await _read_all(receive))

    guard = RequestGuard(app, body_timeout=limit)
    if bind_loop:
        guard.loop = asyncio.get_running_loop()
    await guard(_scope(), body, None)
    return result[0]


@pytest.mark.parametrize("bind_loop", [True, False])
async def test_a_stalled_piece_is_deadline_exceeded(bind_loop: bool) -> None:
    body = Body()
    body.put(b"abc", more=True)  # then nothing
    started = time.monotonic()
    task = asyncio.ensure_future(_guarded_read(0.05, body, bind_loop=bind_loop))
    with pytest.raises(RpcError) as caught:
        await asyncio.wait_for(task, 5)
    assert caught.value.code is Code.DEADLINE_EXCEEDED
    assert "stalled" in caught.value.message
    assert time.monotonic() - started >= 0.05
    assert task.cancelling() == 0  # the stall's cancel was taken back, not left pending
    assert not _waiting()


async def test_steady_pieces_take_longer_than_the_limit_in_all() -> None:
    body = Body()
    timeout = 0.2

    async def feed() -> None:
        for _ in range(6):  # 6 pieces 0.05 s apart: 0.3 s in all, each well inside 0.2 s
            await asyncio.sleep(0.05)
            body.put(b"x", more=True)
        body.put(b"!", more=False)

    feeder = asyncio.ensure_future(feed())
    data = await asyncio.wait_for(_guarded_read(timeout, body, bind_loop=True), 5)
    await feeder
    assert data == b"xxxxxx!"


async def test_a_shorter_limit_fires_first_and_the_longer_one_still_holds() -> None:
    slow, fast = Body(), Body()
    long_call = asyncio.ensure_future(_guarded_read(30, slow, bind_loop=True))
    await asyncio.sleep(0)  # the 30 s receive is waiting: the watch's timer is at +30 s
    with pytest.raises(RpcError) as caught:
        await asyncio.wait_for(_guarded_read(0.05, fast, bind_loop=True), 5)
    assert caught.value.code is Code.DEADLINE_EXCEEDED
    assert not long_call.done()
    slow.put(b"done", more=False)
    assert await asyncio.wait_for(long_call, 5) == b"done"


async def test_other_cancellations_pass_through() -> None:
    body = Body()
    task = asyncio.ensure_future(_guarded_read(30, body, bind_loop=True))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not _waiting()
