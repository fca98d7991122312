"""``python -m rpckit serve`` as a real process, with its output read line by line."""

from __future__ import annotations

import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from tests.support import ROOT, stop_process_tree

__all__ = ["Served", "serve_example"]


class Served:
    """A running ``rpckit serve``; stdout and stderr merged, lines kept for ``expect``."""

    def __init__(
        self,
        target: str,
        *args: str,
        cwd: str | None = None,
        python: str = sys.executable,
        env: dict[str, str] | None = None,
    ) -> None:
        """``python`` and ``env``: another interpreter (a venv's) and its environment."""
        command = [python, "-m", "rpckit", "serve", target, *args]
        self.process = subprocess.Popen(
            command,
            cwd=cwd or ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            self._queue.put(raw.decode(errors="replace").rstrip("\n"))
        self._queue.put(None)

    def expect(self, pattern: str, timeout: float = 20) -> re.Match[str]:
        """The first new output line matching ``pattern`` (fails on timeout or exit)."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no line matching {pattern!r}; output: {self.lines}"
            try:
                line = self._queue.get(timeout=remaining)
            except queue.Empty:
                continue
            assert line is not None, f"exited before {pattern!r}; output: {self.lines}"
            self.lines.append(line)
            found = re.search(pattern, line)
            if found:
                return found

    def ports(self, names: Sequence[str] = ("HTTP",)) -> dict[str, int]:
        """Wait for the ``listening`` line of each transport in ``names``."""
        found = {}
        for _ in names:
            match = self.expect(r"(gRPC|HTTP) listening on \S+:(\d+)")
            found[match.group(1)] = int(match.group(2))
        assert set(found) == set(names), found
        return found

    def rest(self, timeout: float = 30) -> str:
        """Everything the process prints until it exits (it must exit within ``timeout``)."""
        self.process.wait(timeout=timeout)
        while True:
            line = self._queue.get(timeout=10)
            if line is None:
                return "\n".join(self.lines)
            self.lines.append(line)

    def stop(self) -> None:
        stop_process_tree(self.process)

    def __enter__(self) -> Served:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_example(kind: str, files_dir: Path, *extra: str) -> Served:
    """The streams example on HTTP alone, on the server ``kind`` (uvicorn or granian), its
    files in ``files_dir``, a one-second grace, warnings only; ``extra`` flags after."""
    return Served(
        "examples.streams.server:create_service", "--http", "127.0.0.1:0", "--server", kind,
        "--files", str(files_dir), "--grace", "1", "--log-level", "warning", *extra,
    )  # fmt: skip
