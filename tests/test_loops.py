"""rpckit.loops: one object per event loop, and the current task with a known loop."""

from __future__ import annotations

import asyncio
import gc
import weakref

from rpckit.loops import PerLoop, current_task


def test_one_object_per_loop_and_none_kept_for_a_closed_loop() -> None:
    made: list[int] = []

    def make(loop: asyncio.AbstractEventLoop) -> list[int]:
        made.append(id(loop))
        return [id(loop)]

    per_loop = PerLoop(make)

    async def twice() -> bool:
        loop = asyncio.get_running_loop()
        return per_loop.get(loop) is per_loop.get(loop)

    assert asyncio.run(twice())
    assert asyncio.run(twice())
    assert len(made) == 2  # once per loop, not per call
    asyncio.run(twice())  # a third loop: the previous ones are not kept alive by the map
    gc.collect()
    assert len(per_loop._by_loop) == 1  # the last loop, held by the at-hand pair only


def test_the_shared_watchers_do_not_keep_their_loop_alive() -> None:
    """A loop's disconnect sweeper and stall watch hold it weakly: once closed and dropped,
    the loop is freed (only the last loop used stays at hand)."""
    from rpckit.http.asgi import _sweepers
    from rpckit.serving.guard import _watches

    loops: list[weakref.ref[asyncio.AbstractEventLoop]] = []

    async def use() -> None:
        loop = asyncio.get_running_loop()
        loops.append(weakref.ref(loop))
        assert _sweepers.get(loop).loop.is_running()  # a working stand-in for the loop
        _watches.get(loop)

    for _ in range(3):
        asyncio.run(use())
    gc.collect()
    assert [ref() is None for ref in loops] == [True, True, False]  # the last one is at hand


async def test_current_task_with_and_without_the_loop() -> None:
    here = asyncio.current_task()
    loop = asyncio.get_running_loop()
    assert current_task() is here
    assert current_task(loop) is here
    other = asyncio.new_event_loop()
    try:
        assert current_task(other) is here  # not running: falls back to asyncio's lookup
    finally:
        other.close()
