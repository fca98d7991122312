"""``rpckit serve --reload``: run the server as a child process and restart it when a ``.py``
or ``.proto`` file under the current directory changes.

A ``.proto`` change runs ``rpckit generate`` (its defaults: ``-I protos --out .``) first; if
generation fails the running server is kept and protoc's diagnostics are shown. Generated
files (``*_pb2.py``, ``*_pb2.pyi``, ``*_rpckit.py``) never trigger a restart themselves.
Changes are watched with watchfiles (``pip install rpckit[reload]``).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from rpckit.serving.options import ServeOptions

__all__ = ["GENERATED_SUFFIXES", "serve_with_reload", "watched"]

GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_rpckit.py")
_IGNORED_DIRS = {".git", ".venv", "venv", "node_modules", "__pycache__", ".mypy_cache",
                 ".ruff_cache", ".pytest_cache", "build", "dist"}  # fmt: skip


def watched(path: str) -> bool:
    """Whether a change to ``path`` restarts the server (pure: a name check)."""
    parts = Path(path).parts
    if any(part in _IGNORED_DIRS or part.endswith(".egg-info") for part in parts[:-1]):
        return False
    name = parts[-1] if parts else ""
    if name.endswith(GENERATED_SUFFIXES):
        return False
    return name.endswith((".py", ".proto"))


def _child_argv(argv: Sequence[str]) -> list[str]:
    return [sys.executable, "-m", "rpckit", *(a for a in argv if a != "--reload")]


class _Child:
    """The serving child process. When it exits unasked (a port in use, a bad target, ...)
    the reloader says so, instead of waiting silently with nothing served."""

    def __init__(self, command: Sequence[str]) -> None:
        self.process = subprocess.Popen(command)
        self._stopping = threading.Event()
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self) -> None:
        status = self.process.wait()
        if not self._stopping.is_set():
            print(
                f"rpckit: the server exited (status {status}); waiting for a change to restart it",
                file=sys.stderr,
                flush=True,
            )

    def stop(self, grace: float) -> None:
        self._stopping.set()
        child = self.process
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(timeout=grace + 5)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


def serve_with_reload(options: ServeOptions, argv: Sequence[str]) -> int:
    """Serve in a child process, restarted on every relevant change, until a signal."""
    try:
        import watchfiles
    except ImportError:
        print("rpckit: --reload needs watchfiles: pip install 'rpckit[reload]'", file=sys.stderr)
        return 1
    root = Path.cwd()
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    command = _child_argv(argv)
    child = _Child(command)
    print(f"rpckit: reloading on .py/.proto changes under {root}", flush=True)
    try:
        changes: Any
        for changes in watchfiles.watch(
            root,
            watch_filter=lambda change, path: watched(path),
            stop_event=stop,
            raise_interrupt=False,
            yield_on_timeout=False,
        ):
            paths = sorted({str(Path(p).relative_to(root)) for _, p in changes})
            if any(p.endswith(".proto") for p in paths):
                generate = [sys.executable, "-m", "rpckit", "generate"]
                if subprocess.run(generate, check=False).returncode != 0:
                    print("rpckit: generate failed; the running server is kept", flush=True)
                    continue
            print(f"rpckit: {', '.join(paths)} changed; restarting", flush=True)
            child.stop(options.drain.grace)
            child = _Child(command)
    finally:
        child.stop(options.drain.grace)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
