"""Event-loop helpers for the per-request path: the current task without a system call,
and one shared object per loop (watchers that keep one timer for many calls)."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from typing import Any, Generic, TypeVar, cast

__all__ = ["PerLoop", "current_task", "weak_loop"]

T = TypeVar("T")


def current_task(loop: asyncio.AbstractEventLoop | None = None) -> asyncio.Task[Any]:
    """The running task. With ``loop`` (the one running, when the server knows it) this is
    a dict lookup; ``asyncio.current_task()`` alone makes a getpid() system call on Python
    3.11, and system calls per request show in the latency of small calls."""
    task = asyncio.current_task(loop) if loop is not None else None
    if task is None:
        task = asyncio.current_task()
        assert task is not None
    return task


def weak_loop(loop: asyncio.AbstractEventLoop) -> asyncio.AbstractEventLoop:
    """A stand-in for ``loop`` that does not keep it alive: what a ``PerLoop`` object holds."""
    return cast(asyncio.AbstractEventLoop, weakref.proxy(loop))


class PerLoop(Generic[T]):
    """One ``make(loop)`` per event loop, made on first use; the last one found is kept at
    hand (a server runs one loop). A closed loop's object goes with the loop, as long as the
    object holds the loop only weakly (``weak_loop``)."""

    def __init__(self, make: Callable[[asyncio.AbstractEventLoop], T]) -> None:
        self._make = make
        self._by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, T] = (
            weakref.WeakKeyDictionary()
        )
        self._last: tuple[asyncio.AbstractEventLoop, T] | None = None

    def get(self, loop: asyncio.AbstractEventLoop) -> T:
        last = self._last
        if last is not None and last[0] is loop:
            return last[1]
        found = self._by_loop.get(loop)
        if found is None:
            found = self._by_loop[loop] = self._make(loop)
        self._last = (loop, found)
        return found

    def peek(self, loop: asyncio.AbstractEventLoop) -> T | None:
        """``loop``'s object if it has one (for tests and diagnostics)."""
        return self._by_loop.get(loop)
