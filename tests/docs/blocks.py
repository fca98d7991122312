"""The runnable blocks of a Markdown page, as a reader sees them. No I/O but the includes.

A fenced block with ``title="path"`` is a file to write; an ``sh`` block is commands, one
logical line each (``\\`` continues a line); a ``python`` block without a title is a script to
run. A ``# prints: TEXT`` line under a command says what that command's output contains. An
``--8<-- "path"`` line (pymdownx.snippets, as the site renders it) stands for the whole file.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Block", "Command", "commands", "parse"]

_FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,})(?P<info>[^`]*)$")
_TITLE = re.compile(r'\btitle="(?P<title>[^"]+)"')
_INCLUDE = re.compile(r'^--8<-- "(?P<path>[^":]+)"$')
_PRINTS = "# prints: "


@dataclass(frozen=True)
class Block:
    """One fenced block: its language, the file it is (``title``), its text and line."""

    lang: str
    title: str | None
    text: str
    line: int


@dataclass(frozen=True)
class Command:
    """One logical shell line and what its output must contain."""

    text: str
    prints: list[str] = field(default_factory=list)


def parse(markdown: str, include: Callable[[str], str]) -> list[Block]:
    """Every fenced block of ``markdown``, includes resolved with ``include(path)``."""
    blocks: list[Block] = []
    lines = markdown.splitlines()
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        index += 1
        if opening is None:
            continue
        fence, info = opening.group("fence"), opening.group("info").strip()
        start, body = index, []
        while index < len(lines) and not lines[index].strip().startswith(fence):
            body.append(lines[index])
            index += 1
        index += 1  # the closing fence
        lang = info.split(maxsplit=1)[0] if info else ""
        title = _TITLE.search(info)
        text = "\n".join(_resolve(line, include) for line in body)
        blocks.append(Block(lang, title.group("title") if title else None, text + "\n", start))
    return blocks


def _resolve(line: str, include: Callable[[str], str]) -> str:
    found = _INCLUDE.match(line.strip())
    return include(found.group("path")).rstrip("\n") if found else line


def commands(block: Block) -> list[Command]:
    """The logical lines of a shell block, with the ``# prints:`` lines that follow each."""
    found: list[Command] = []
    pending = ""
    for raw in block.text.splitlines():
        stripped = raw.strip()
        if stripped.startswith(_PRINTS) and found and not pending:
            found[-1].prints.append(stripped[len(_PRINTS) :])
            continue
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if raw.endswith("\\"):  # as bash joins it: the backslash and newline go
            pending += raw[:-1]
            continue
        found.append(Command(pending + raw))
        pending = ""
    if pending:
        raise ValueError(f"line {block.line}: a shell block ends inside a continued line")
    return found
