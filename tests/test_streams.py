"""rpckit.streams: the bounded sender, spawn and wrap, FileStream (from_root property-tested on
a real directory with symlinks that lead out)."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rpckit import ByteStream, Code, FileStream, RpcError, Sender, Streaming, TextStream


async def test_wraps_an_async_iterable() -> None:
    async def words() -> AsyncIterator[str]:
        for word in ["a", "b", "c"]:
            yield word

    assert [w async for w in TextStream(words())] == ["a", "b", "c"]


async def test_spawn_delivers_in_order_and_ends() -> None:
    async def produce(tx: Sender[int]) -> None:
        for i in range(100):
            assert await tx.send(i)

    assert [i async for i in Streaming[int].spawn(produce, bound=4)] == list(range(100))


async def test_producer_starts_only_when_read() -> None:
    started = asyncio.Event()

    async def produce(tx: Sender[str]) -> None:
        started.set()
        await tx.send("x")

    stream = TextStream.spawn(produce)
    await asyncio.sleep(0)
    assert not started.is_set()
    assert await anext(stream) == "x"
    assert started.is_set()


async def test_sender_is_bounded() -> None:
    sent: list[int] = []
    blocked = asyncio.Event()

    async def produce(tx: Sender[int]) -> None:
        for i in range(10):
            if len(sent) == 3:
                blocked.set()  # about to wait: the buffer (bound 3) is full
            await tx.send(i)
            sent.append(i)

    stream = Streaming[int].spawn(produce, bound=3)
    assert await anext(stream) == 0
    await asyncio.wait_for(blocked.wait(), timeout=2)
    for _ in range(5):
        await asyncio.sleep(0)
    # 1 and 2 are unread, 3 waits: the producer stays blocked until half the bound is read.
    assert sent == [0, 1, 2]
    assert await anext(stream) == 1
    for _ in range(5):
        await asyncio.sleep(0)
    # Down to one unread item (half of 3): the producer refills the buffer in one go.
    assert sent == [0, 1, 2, 3, 4]
    assert [i async for i in stream] == list(range(2, 10))


async def test_send_reports_false_once_reader_is_gone() -> None:
    results: list[bool] = []
    finished = asyncio.Event()

    async def produce(tx: Sender[str]) -> None:
        while await tx.send("tick"):
            results.append(True)
            await asyncio.sleep(0)
        results.append(tx.closed)
        finished.set()

    stream = TextStream.spawn(produce, bound=1)
    assert await anext(stream) == "tick"
    await stream.aclose()
    await asyncio.wait_for(finished.wait(), timeout=1)
    assert results[-1] is True  # the sender knows it is closed


async def test_blocked_send_wakes_with_false_on_close() -> None:
    outcome: list[bool] = []
    about_to_block = asyncio.Event()
    done = asyncio.Event()

    async def produce(tx: Sender[int]) -> None:
        await tx.send(1)
        await tx.send(2)  # fits once 1 is read; now the buffer (bound 1) is full
        about_to_block.set()
        outcome.append(await tx.send(3))  # waits for room until the reader leaves
        done.set()

    stream = Streaming[int].spawn(produce, bound=1)
    assert await anext(stream) == 1
    await asyncio.wait_for(about_to_block.wait(), timeout=1)
    await stream.aclose()
    await asyncio.wait_for(done.wait(), timeout=1)
    assert outcome == [False]


async def test_producer_ignoring_false_is_cancelled_after_grace() -> None:
    cancelled = asyncio.Event()

    async def stubborn(tx: Sender[int]) -> None:
        await tx.send(0)
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    stream = Streaming[int].spawn(stubborn, grace=0.05)
    assert await anext(stream) == 0
    await stream.aclose()
    await asyncio.wait_for(cancelled.wait(), timeout=2)


async def test_producer_error_reaches_the_reader_after_items() -> None:
    async def failing(tx: Sender[str]) -> None:
        await tx.send("first")
        raise RpcError(Code.ABORTED, "gave up")

    stream = TextStream.spawn(failing)
    assert await anext(stream) == "first"
    with pytest.raises(RpcError) as caught:
        await anext(stream)
    assert caught.value.code is Code.ABORTED


def test_bound_must_be_positive() -> None:
    async def produce(tx: Sender[int]) -> None:
        return None

    with pytest.raises(ValueError, match="bound"):
        Streaming[int].spawn(produce, bound=0)


async def test_file_stream_from_path(tmp_path: Path) -> None:
    path = tmp_path / "report.csv"
    data = b"x,y\n" * 50_000
    path.write_bytes(data)
    stream = FileStream.from_path(path, chunk_size=4096)
    assert (stream.filename, stream.size, stream.content_type) == (
        "report.csv",
        len(data),
        "text/csv",
    )
    chunks = [c async for c in stream]
    assert b"".join(chunks) == data
    assert max(len(c) for c in chunks) == 4096


def test_file_stream_missing_file_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(RpcError) as caught:
        FileStream.from_path(tmp_path / "nope")
    assert caught.value.code is Code.NOT_FOUND
    with pytest.raises(RpcError):
        FileStream.from_path(tmp_path)  # a directory is not a file


def _tree(base: Path) -> Path:
    """A root with a file, a subdirectory, a hidden file and symlinks in and out; beside it
    a secret that no name may reach."""
    (base / "secret.txt").write_text("secret")
    root = base / "root"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("a")
    (root / "sub" / "b.txt").write_text("b")
    (root / ".hidden").write_text("h")
    (root / "in").symlink_to("a.txt")
    (root / "out").symlink_to(base / "secret.txt")
    (root / "outdir").symlink_to(base)
    (root / "loop").symlink_to("loop")
    return root


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return _tree(tmp_path)


async def test_from_root_serves_files_under_the_root(tree: Path) -> None:
    stream = FileStream.from_root(tree, "sub/b.txt")
    assert (stream.filename, stream.size, stream.path) == ("b.txt", 1, tree / "sub" / "b.txt")
    assert b"".join([c async for c in stream]) == b"b"
    linked = FileStream.from_root(tree, "in")  # a symlink that stays inside is followed
    assert (linked.filename, linked.path) == ("in", tree / "a.txt")
    assert b"".join([c async for c in linked]) == b"a"
    assert FileStream.from_root(tree, ".hidden", hidden=True).size == 1


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("../secret.txt", Code.INVALID_ARGUMENT),
        ("../../../etc/hostname", Code.INVALID_ARGUMENT),
        ("/etc/hostname", Code.INVALID_ARGUMENT),
        ("", Code.INVALID_ARGUMENT),
        ("a\x00", Code.INVALID_ARGUMENT),
        ("..\\secret.txt", Code.INVALID_ARGUMENT),
        ("sub/../a.txt", Code.INVALID_ARGUMENT),
        ("missing.txt", Code.NOT_FOUND),
        ("sub", Code.NOT_FOUND),  # a directory
        (".hidden", Code.NOT_FOUND),
        ("out", Code.NOT_FOUND),  # a symlink that leads out of the root
        ("outdir/secret.txt", Code.NOT_FOUND),
        ("loop", Code.NOT_FOUND),
    ],
)
def test_from_root_refuses(tree: Path, name: str, code: Code) -> None:
    with pytest.raises(RpcError) as caught:
        FileStream.from_root(tree, name)
    assert caught.value.code is code
    assert str(tree.parent) not in caught.value.message
    assert "\n" not in caught.value.message


@pytest.fixture(scope="module")
def shared_tree() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as base:
        yield _tree(Path(base))


@settings(max_examples=300, deadline=None)
@given(
    name=st.lists(
        st.sampled_from(
            [
                "..",
                ".",
                "/",
                "\\",
                "a.txt",
                "sub",
                "b.txt",
                "in",
                "out",
                "outdir",
                "secret.txt",
                "loop",
                ".hidden",
                "root",
                "%2e",
            ]
        ),
        max_size=8,
    ).map("".join),
    hidden=st.booleans(),
)
def test_from_root_never_leaves_the_root(shared_tree: Path, name: str, hidden: bool) -> None:
    refused: Code | None
    try:
        stream = FileStream.from_root(shared_tree, name, hidden=hidden)
    except RpcError as error:
        refused = error.code
    else:
        refused = None
    if refused is not None:
        assert refused in (Code.INVALID_ARGUMENT, Code.NOT_FOUND)
        return
    assert stream.path is not None
    assert stream.path.resolve().is_relative_to(shared_tree.resolve())
    assert stream.path.read_text() != "secret"


async def test_file_stream_save(tmp_path: Path) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for i in range(10):
            yield bytes([i]) * 1000

    upload = FileStream(chunks(), filename="u.bin", size=10_000)
    written = await upload.save(tmp_path / "out.bin")
    assert written == 10_000
    assert (tmp_path / "out.bin").read_bytes() == b"".join(bytes([i]) * 1000 for i in range(10))


async def test_byte_stream_spawn() -> None:
    async def produce(tx: Sender[bytes]) -> None:
        await tx.send(b"ab")
        await tx.send(b"cd")

    assert b"".join([c async for c in ByteStream.spawn(produce)]) == b"abcd"
