"""``rpckit serve --workers N``: N worker processes sharing both ports, supervised as one.

The parent binds each port first with ``SO_REUSEPORT`` (never listening: it only holds the
port, so port 0 resolves once for every worker), then starts the workers, which listen on
the same ports; the kernel balances connections between them. SIGINT or SIGTERM to the
parent drains every worker within the grace period; a worker that dies is logged and
restarted. With ``--separate-grpc`` each worker is two processes, one per transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

from rpckit.serving.http_server import bind_tcp
from rpckit.serving.options import ServeOptions

__all__ = ["WorkerFailed", "supervise"]

log = logging.getLogger("rpckit")

#: Seconds past drain delay and grace before a worker that has not exited is killed.
KILL_MARGIN = 5.0
#: A worker that dies sooner than this after starting is restarted only after this long.
RESTART_BACKOFF = 1.0


class WorkerFailed(RuntimeError):
    """A worker exited before it was ready (bad target, port in use, ...)."""


def _worker_main(options: ServeOptions, name: str, ready: Connection) -> None:
    """A worker process's entry point (spawned: it imports the target itself)."""
    from rpckit.serving.target import load_services
    from rpckit.serving.worker import run_process

    logging.basicConfig(
        level=options.log_level.upper(),
        format=f"%(levelname)s %(name)s[worker {name}]: %(message)s",
    )
    services = load_services(options.target, options.target_args)

    def on_ready(ports: dict[str, int]) -> None:
        ready.send(ports)
        ready.close()

    run_process(services, options, reuse_port=True, on_ready=on_ready)


@dataclass(frozen=True)
class _Slot:
    """One worker process to keep running: its name and what it serves."""

    name: str
    options: ServeOptions


def _slots(options: ServeOptions) -> list[_Slot]:
    """``options.workers`` slots; two per worker (gRPC, HTTP) when the transports are split."""
    slots = []
    for index in range(1, options.workers + 1):
        if options.split_transports:
            slots.append(_Slot(f"{index} gRPC", replace(options, http=None)))
            slots.append(_Slot(f"{index} HTTP", replace(options, grpc=None)))
        else:
            slots.append(_Slot(str(index), options))
    return slots


@dataclass
class _Worker:
    slot: _Slot
    process: BaseProcess
    ready: Connection
    started: float = field(default_factory=time.monotonic)


def _reserve(address: str, what: str) -> tuple[socket.socket, str]:
    sock = bind_tcp(address, reuse_port=True, what=what)
    host, port = sock.getsockname()[:2]
    return sock, f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def supervise(options: ServeOptions, announce: Callable[[str, str], None]) -> None:
    """Run ``options.workers`` workers until SIGINT/SIGTERM; ``announce(name, address)``
    is called for each transport once every worker is ready."""
    held: list[socket.socket] = []
    try:
        if options.grpc:
            sock, grpc_address = _reserve(options.grpc, "gRPC")
            held.append(sock)
            options = replace(options, grpc=grpc_address)
        if options.http:
            sock, http_address = _reserve(options.http, "HTTP")
            held.append(sock)
            options = replace(options, http=http_address)
        asyncio.run(_Supervisor(options).run(announce))
    finally:
        for sock in held:
            sock.close()


class _Supervisor:
    def __init__(self, options: ServeOptions) -> None:
        self.options = options
        self.context = multiprocessing.get_context("spawn")
        self.workers: dict[str, _Worker] = {}
        self.stopping = asyncio.Event()
        self.changed = asyncio.Event()
        #: Workers whose sentinel reported their exit, not yet restarted.
        self.exited: list[_Worker] = []

    def _spawn(self, slot: _Slot) -> _Worker:
        receiver, sender = self.context.Pipe(duplex=False)
        process = self.context.Process(
            target=_worker_main,
            args=(slot.options, slot.name, sender),
            name=f"rpckit-worker-{slot.name.replace(' ', '-')}",
        )
        process.start()
        sender.close()
        worker = _Worker(slot, process, receiver)
        self.workers[slot.name] = worker
        return worker

    async def _until_ready(self, worker: _Worker) -> None:
        """Wait for the worker's ready message; WorkerFailed if it exits first."""
        loop = asyncio.get_running_loop()
        readable = asyncio.Event()
        loop.add_reader(worker.ready.fileno(), readable.set)
        try:
            await readable.wait()
        finally:
            loop.remove_reader(worker.ready.fileno())
        try:
            worker.ready.recv()
        except EOFError:
            worker.process.join(5)
            raise WorkerFailed(
                f"worker {worker.slot.name} exited while starting ({_how(worker.process)})"
            ) from None
        finally:
            worker.ready.close()

    def _watch(self, worker: _Worker) -> None:
        loop = asyncio.get_running_loop()
        sentinel = worker.process.sentinel

        def exited() -> None:
            loop.remove_reader(sentinel)
            self.exited.append(worker)
            self.changed.set()

        loop.add_reader(sentinel, exited)

    async def run(self, announce: Callable[[str, str], None]) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stopping.set)
        try:
            started = [self._spawn(slot) for slot in _slots(self.options)]
            await asyncio.gather(*(self._until_ready(w) for w in started))
            for name, address in (("gRPC", self.options.grpc), ("HTTP", self.options.http)):
                if address:
                    announce(name, address)
            pids = " ".join(str(w.process.pid) for w in started)
            log.info("%d workers ready, pids %s", len(started), pids)
            for worker in started:
                self._watch(worker)
            await self._supervise()
        finally:
            await self._stop_all()

    async def _supervise(self) -> None:
        stop = asyncio.ensure_future(self.stopping.wait())
        try:
            while not self.stopping.is_set():
                change = asyncio.ensure_future(self.changed.wait())
                await asyncio.wait([stop, change], return_when=asyncio.FIRST_COMPLETED)
                change.cancel()
                self.changed.clear()
                if self.stopping.is_set():
                    return
                while self.exited:
                    worker = self.exited.pop(0)
                    # The sentinel closes a moment before the exit status can be collected.
                    await asyncio.get_running_loop().run_in_executor(None, worker.process.join)
                    log.warning(
                        "worker %s (pid %s) %s; restarting",
                        worker.slot.name,
                        worker.process.pid,
                        _how(worker.process),
                    )
                    if time.monotonic() - worker.started < RESTART_BACKOFF:
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self.stopping.wait(), RESTART_BACKOFF)
                        if self.stopping.is_set():
                            return
                    replacement = self._spawn(worker.slot)
                    try:
                        await self._until_ready(replacement)
                    except WorkerFailed as exc:
                        log.error("%s", exc)
                        self.exited.append(replacement)  # try again (after the back-off)
                        continue
                    self._watch(replacement)
                    log.info(
                        "worker %s restarted, pid %s", worker.slot.name, replacement.process.pid
                    )
        finally:
            stop.cancel()

    async def _stop_all(self) -> None:
        """SIGTERM every worker, wait for them to drain, kill what is left after the grace."""
        workers = [w.process for w in self.workers.values() if w.process.is_alive()]
        for process in workers:
            process.terminate()
        limit = self.options.drain.delay + self.options.drain.grace + KILL_MARGIN
        deadline = time.monotonic() + limit
        loop = asyncio.get_running_loop()
        for process in workers:
            remaining = max(0.0, deadline - time.monotonic())
            await loop.run_in_executor(None, process.join, remaining)
            if process.is_alive():
                log.warning("worker pid %s did not drain in %.0fs; killing it", process.pid, limit)
                process.kill()
                await loop.run_in_executor(None, process.join, 5)


def _how(process: BaseProcess) -> str:
    code = process.exitcode
    if code is None:
        return "is still running"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
    return f"exited with status {code}"
