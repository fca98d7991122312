"""``rpckit generate --ts``: the generated TypeScript type-checks under ``tsc --strict`` (and
its types are not ``any``), binds routes exactly as the server does, and a compiled client
talks to a real ``rpckit serve`` of the streams example from Node (tests/node/
ts_client.test.mjs)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rpckit.codegen.typescript import RUNTIME_FILE, run_typescript
from tests.support import NODE_MODULES, ROOT, free_port, require_tool

TSC = NODE_MODULES / ".bin" / "tsc"
EXAMPLE = ["examples/streams/v1/streams.proto"]
LIBRARY = ["aip/library/v1/library.proto"]
CODEGEN_PROTOS = ROOT / "tests" / "codegen" / "protos"

TSCONFIG = {
    "compilerOptions": {
        "target": "es2022",
        "module": "es2022",
        "moduleResolution": "bundler",
        "lib": ["es2022", "dom", "dom.iterable"],
        "strict": True,
        "skipLibCheck": True,
    }
}

# Each line under a @ts-expect-error must fail to type-check: the types are not `any`.
TYPE_CHECKS = """\
import {
  StreamsServiceClient, type Dog, type GetDogRequest,
} from "./examples/streams/v1/streams.js";
import { RpcError, type Code } from "./rpckit-client.js";

const client = new StreamsServiceClient({ baseUrl: "http://localhost" });
const ok: GetDogRequest = { index: 3 };
// @ts-expect-error index is a number (uint32), not a string
const bad: GetDogRequest = { index: "3" };
// @ts-expect-error no such field
const unknown: GetDogRequest = { idx: 3 };
async function use(): Promise<void> {
  const dog: Dog = await client.getDog(ok);
  // @ts-expect-error name is a string
  const n: number = dog.name;
  // @ts-expect-error age is a number
  const s: string | undefined = dog.age;
  for await (const d of client.jsonStream({ intervalMs: 1 }, { framing: "sse" })) {
    // @ts-expect-error items are Dogs
    const t: boolean = d.name;
  }
  // @ts-expect-error framing is ndjson or sse
  client.jsonStream({}, { framing: "xml" });
  // @ts-expect-error uploads take Blob, ReadableStream or bytes
  await client.uploadAsByteStream("not a blob");
  const summary = await client.uploadAsByteStream(new Blob([]), { onProgress: (n) => n });
  // @ts-expect-error size is an int64: a string in the JSON mapping
  const size: number | undefined = summary.size;
  const chat = client.chat();
  // @ts-expect-error Chat sends ChatMessages
  await chat.send({ name: "x" });
  // @ts-expect-error AdoptDogs takes Dogs
  await client.adoptDogs([{ text: "x" }]);
  const code: Code = "not_found";
  // @ts-expect-error codes are Connect's lower_snake names
  const wrong: Code = "NOT_FOUND";
  const error = new RpcError(code, "x");
  void [bad, unknown, n, s, size, wrong, error.details];
}
void use;
"""

LIBRARY_CHECKS = """\
import type { Book, UpdateBookRequest } from "./aip/library/v1/library.js";
const update: UpdateBookRequest = { book: { name: "shelves/1/books/2" }, updateMask: "title" };
// @ts-expect-error a FieldMask is a string in the JSON mapping
const mask: UpdateBookRequest = { updateMask: ["title"] };
// @ts-expect-error Book has no field isbn13
const book: Book = { isbn13: "x" };
void [update, mask, book];
"""

# The library's generated client with a recording fetch: what each call sends.
BIND_CHECKS = """\
import { LibraryClient } from "./aip/library/v1/library.js";
const sent = [];
const client = new LibraryClient({
  baseUrl: "http://h",
  fetch: async (url, init) => {
    sent.push({ verb: init.method, url: String(url), body: init.body ?? null });
    return new Response("{}", { headers: { "content-type": "application/json" } });
  },
});
await client.getBook({ name: "shelves/1/books/a b%" });
await client.listBooks({ parent: "shelves/s 1", pageSize: 5, pageToken: "t&x" });
await client.createBook({ parent: "shelves/1", book: { title: "T" }, bookId: "b1" });
await client.updateBook({
  book: { name: "shelves/1/books/2", title: "T" }, updateMask: "title,author",
});
await client.deleteBook({ name: "shelves/1/books/2" });
console.log(JSON.stringify(sent));
"""

# What the server's binding reads from each of those requests: path variables, query, body.
BOUND = [
    ("GET", "/v1/{name=shelves/*/books/*}", {"name": "shelves/1/books/a b%"}, [], None),
    (
        "GET",
        "/v1/{parent=shelves/*}/books",
        {"parent": "shelves/s 1"},
        [("pageSize", "5"), ("pageToken", "t&x")],
        None,
    ),
    (
        "POST",
        "/v1/{parent=shelves/*}/books",
        {"parent": "shelves/1"},
        [("bookId", "b1")],
        {"title": "T"},
    ),
    (
        "PATCH",
        "/v1/{book.name=shelves/*/books/*}",
        {"book.name": "shelves/1/books/2"},
        [("updateMask", "title,author")],
        {"name": "shelves/1/books/2", "title": "T"},
    ),
    ("DELETE", "/v1/{name=shelves/*/books/*}", {"name": "shelves/1/books/2"}, [], None),
]


def _tsc_available() -> None:
    require_tool(TSC.exists(), "needs typescript (cd tests/node && npm ci)")
    require_tool(shutil.which("node") is not None, "needs node")


def _generate(out: Path) -> None:
    run_typescript(EXAMPLE, proto_paths=[ROOT / "protos"], out=out)
    run_typescript(LIBRARY, proto_paths=[CODEGEN_PROTOS], out=out)


def _tsc(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(TSC), "-p", str(directory / "tsconfig.json"), *args],
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip


def compile_client(out: Path, *, emit: bool) -> None:
    """Generate the example's and the library's clients into ``out`` and run tsc --strict
    (emitting ES modules next to the sources when ``emit``)."""
    _generate(out)
    (out / "tsconfig.json").write_text(json.dumps(TSCONFIG))
    result = _tsc(out, *([] if emit else ["--noEmit"]))
    assert result.returncode == 0, result.stdout + result.stderr


def test_generated_modules(tmp_path: Path) -> None:
    """In process: the files, the interfaces in the JSON mapping and the routes' bindings."""
    written = run_typescript(EXAMPLE, proto_paths=[ROOT / "protos"], out=tmp_path)
    names = sorted(p.relative_to(tmp_path).as_posix() for p in written)
    assert names == sorted(
        [
            RUNTIME_FILE,
            "examples/streams/v1/streams.ts",
            "google/api/httpbody.ts",
            "rpckit/v1/stream.ts",
        ]
    )
    text = (tmp_path / "examples/streams/v1/streams.ts").read_text()
    assert 'import * as $rt from "../../../rpckit-client.js";' in text
    assert re.search(r"export interface UploadSummary \{[^}]*size\?: string;", text)  # uint64
    assert "intervalMs?: number;" in text  # JSON names
    assert '"path": ["/api/dogs/", {"field": ["index"], "multi": false}]' in text
    assert "getDog(request: GetDogRequest, options?: $rt.CallOptions): Promise<Dog>" in text
    assert "chat(options?: $rt.CallOptions): $rt.Duplex<ChatMessage, ChatMessage>" in text
    assert "complete(request: CompleteRequest, options?: $rt.StreamOptions)" in text
    assert "$rt.ServerStream<Token>" in text
    assert "uploadAsByteStream(source: $rt.UploadSource" in text
    assert "Promise<$rt.Download>" in text

    library = run_typescript(LIBRARY, proto_paths=[CODEGEN_PROTOS], out=tmp_path / "lib")
    lib = next(p for p in library if p.name == "library.ts").read_text()
    assert "updateMask?: string;" in lib  # FieldMask
    update = re.search(r'"name": "UpdateBook".*', lib)
    assert update is not None
    assert '{"field": ["book", "name"], "multi": true}' in update.group(0)
    assert '"body": "book"' in update.group(0)
    assert '"bodyDefault": {}' in update.group(0)
    assert "Promise<$rt.EmptyMessage>" in lib  # DeleteBook returns Empty


def test_cli_ts_alone_writes_no_python(tmp_path: Path) -> None:
    from rpckit.cli import main

    code = main(["generate", "-I", str(ROOT / "protos"), *EXAMPLE, "--ts", str(tmp_path / "ts")])
    assert code == 0
    assert (tmp_path / "ts" / "examples/streams/v1/streams.ts").is_file()
    assert not list(tmp_path.rglob("*.py"))


@pytest.mark.process
def test_tsc_strict_and_types_are_not_any(tmp_path: Path) -> None:
    _tsc_available()
    _generate(tmp_path)
    (tmp_path / "checks.ts").write_text(TYPE_CHECKS)
    (tmp_path / "library_checks.ts").write_text(LIBRARY_CHECKS)
    (tmp_path / "tsconfig.json").write_text(json.dumps(TSCONFIG))
    result = _tsc(tmp_path, "--noEmit")
    assert result.returncode == 0, result.stdout + result.stderr
    # Without the directives every marked line is an error: they are real type errors.
    expected = TYPE_CHECKS.count("@ts-expect-error") + LIBRARY_CHECKS.count("@ts-expect-error")
    for name in ("checks.ts", "library_checks.ts"):
        path = tmp_path / name
        path.write_text(path.read_text().replace("// @ts-expect-error", "//"))
    result = _tsc(tmp_path, "--noEmit")
    errors = re.findall(r"error TS\d+", result.stdout)
    assert result.returncode != 0
    assert len(errors) == expected, result.stdout


@pytest.mark.process
def test_every_codegen_schema_type_checks(tmp_path: Path) -> None:
    """The hostile schemas of the Python generator's tests (keywords, clashing names,
    editions, proto2, well-known types, no package) give modules tsc --strict accepts."""
    _tsc_available()
    protos = sorted(
        p.relative_to(CODEGEN_PROTOS).as_posix() for p in CODEGEN_PROTOS.rglob("*.proto")
    )
    run_typescript(protos, proto_paths=[CODEGEN_PROTOS], out=tmp_path)
    (tmp_path / "tsconfig.json").write_text(json.dumps(TSCONFIG))
    result = _tsc(tmp_path, "--noEmit")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.process
def test_routes_bound_as_the_server_binds(tmp_path: Path) -> None:
    """Every library call's URL and body, read back by the server's own PathTemplate and
    query parsing, give the fields the client set (nested {book.name}, body "book")."""
    from urllib.parse import parse_qsl, urlsplit

    from rpckit.http.rest.routes import PathTemplate

    _tsc_available()
    compile_client(tmp_path, emit=True)
    (tmp_path / "package.json").write_text('{"type": "module"}')
    script = tmp_path / "bind.mjs"
    script.write_text(BIND_CHECKS)
    result = subprocess.run(
        ["node", str(script)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    sent = json.loads(result.stdout)
    assert len(sent) == len(BOUND)
    for call, (verb, template, variables, query, body) in zip(sent, BOUND, strict=True):
        url = urlsplit(call["url"])
        assert call["verb"] == verb
        assert PathTemplate.compile(template).match(url.path) == variables, call
        assert parse_qsl(url.query) == query, call
        assert (json.loads(call["body"]) if call["body"] else None) == body, call


def start_server(
    files: Path, *, static: Path | None = None, extra: tuple[str, ...] = ()
) -> tuple[subprocess.Popen[str], str, list[str]]:
    """``rpckit serve`` of the example on a free port; its output lines are collected."""
    import threading

    port = free_port()
    command = [
        sys.executable, "-m", "rpckit", "serve", "examples.streams.server:create_service",
        "--http", f"127.0.0.1:{port}", "--grace", "1",
        *(["--static", str(static)] if static else []), *extra, "--files", str(files),
    ]  # fmt: skip
    process = subprocess.Popen(
        command, cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    lines: list[str] = []
    ready = threading.Event()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if "listening on" in line:
                ready.set()

    threading.Thread(target=pump, daemon=True).start()
    if not ready.wait(30):
        process.kill()
        raise AssertionError("rpckit serve did not start: " + "".join(lines))
    return process, f"http://127.0.0.1:{port}", lines


def stop_server(process: subprocess.Popen[str]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture
def example_server(files_dir: Path) -> Iterator[tuple[str, list[str]]]:
    process, url, lines = start_server(files_dir)
    try:
        yield url, lines
    finally:
        stop_server(process)


@pytest.mark.process
def test_node_client_against_the_example(
    tmp_path: Path, example_server: tuple[str, list[str]]
) -> None:
    _tsc_available()
    compile_client(tmp_path, emit=True)
    (tmp_path / "package.json").write_text('{"type": "module"}')
    url, lines = example_server
    script = ROOT / "tests" / "node" / "ts_client.test.mjs"
    result = subprocess.run(
        ["node", "--experimental-websocket", str(script), url, str(tmp_path)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ALL OK" in result.stdout
    # The abort reached the server: the stream's handler was cancelled.
    deadline = time.monotonic() + 10
    pattern = re.compile(
        r"method=/examples\.streams\.v1\.StreamsService/JsonStream .*code=CANCELLED"
    )
    while not any(pattern.search(line) for line in lines) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert any(pattern.search(line) for line in lines), "".join(lines[-30:])
