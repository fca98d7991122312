"""``rpckit call`` as a process against ``rpckit serve`` of the example and of the tutorial's
Greeter: every call shape, errors and exit codes, headers, reflection and local protos, on
gRPC and Connect."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from rpckit.tools.call import Target, UsageError, parse_target
from tests.serving.certs import Certs, make_certs
from tests.serving.process import Served
from tests.support import ROOT, free_port

from .conftest import TUTORIAL

pytestmark = pytest.mark.process

GREET = "greet.v1.GreeterService"
DOGS = "examples.streams.v1.StreamsService"
PROTOCOLS = ["grpc", "http"]


def call(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rpckit", "call", *args], input=stdin, cwd=ROOT,
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def lines(out: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.splitlines()]


def test_parse_target() -> None:
    assert parse_target("localhost:50051", None, False) == Target("grpc", "localhost:50051", False)
    assert parse_target("http://h:80/", None, False) == Target("connect", "http://h:80", False)
    assert parse_target("https://h", None, False) == Target("connect", "https://h", True)
    assert parse_target("h:443", "connect", True) == Target("connect", "https://h:443", True)
    assert parse_target("https://h:9", "grpc", False) == Target("grpc", "h:9", True)
    with pytest.raises(UsageError, match="scheme"):
        parse_target("ftp://h", None, False)


@pytest.mark.parametrize("side", PROTOCOLS)
def test_unary_by_reflection(example: dict[str, str], side: str) -> None:
    done = call(example[side], f"{DOGS}/GetDog", "-d", '{"index": 3}')
    assert done.returncode == 0, done.stderr
    assert lines(done.stdout) == [{"name": "Dog 3", "age": 3}]


@pytest.mark.parametrize("side", PROTOCOLS)
def test_error_exit_status_and_details(example: dict[str, str], side: str) -> None:
    done = call(example[side], f"{DOGS}/GetDog", "-d", '{"index": 99}')
    assert done.returncode == 64 + 5  # not_found
    assert done.stderr.startswith("rpckit call: not_found (code 5): no dog 99")
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("side", PROTOCOLS)
def test_invalid_argument_and_headers(tutorial: dict[str, str], side: str) -> None:
    bad = call(tutorial[side], f"{GREET}/Greet", "-d", "{}")
    assert bad.returncode == 64 + 3, bad.stderr
    assert "invalid_argument (code 3): name is required" in bad.stderr
    done = call(
        tutorial[side], f"{GREET}/Greet", "-d", '{"name": "Ada"}', "-H", "x-greeting: Hi", "-v"
    )
    assert done.returncode == 0, done.stderr
    assert lines(done.stdout) == [{"greeting": "Hi, Ada!"}]


@pytest.mark.parametrize("side", PROTOCOLS)
def test_server_stream_prints_items_as_they_arrive(tutorial: dict[str, str], side: str) -> None:
    request = json.dumps({"name": "Ada", "count": 2, "intervalMs": 3000})
    command = [sys.executable, "-m", "rpckit", "call", tutorial[side], f"{GREET}/GreetMany"]
    process = subprocess.Popen(
        [*command, "-d", request], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert json.loads(first) == {"greeting": "Hello #1, Ada!"}
        assert process.poll() is None  # the second item is 3 s away: the stream is still open
        rest = process.stdout.read()
        assert process.wait(timeout=30) == 0
        assert json.loads(rest) == {"greeting": "Hello #2, Ada!"}
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.parametrize("side", PROTOCOLS)
def test_client_stream_from_stdin(
    tutorial: dict[str, str], example: dict[str, str], side: str
) -> None:
    done = call(tutorial[side], f"{GREET}/GreetAll", stdin='{"name":"Ada"}\n\n{"name":"Bob"}\n')
    assert done.returncode == 0, done.stderr
    assert lines(done.stdout) == [{"greeting": "Hello, Ada and Bob!"}]
    dogs = '{"name": "Rex", "age": 3}\n{"name": "Fido", "age": 4}\n'
    done = call(example[side], f"{DOGS}/AdoptDogs", "-d", "@-", stdin=dogs)
    assert lines(done.stdout) == [{"count": 2, "totalAge": 7, "names": ["Rex", "Fido"]}]


@pytest.mark.parametrize("side", PROTOCOLS)
def test_list_and_describe(tutorial: dict[str, str], side: str) -> None:
    listed = call(tutorial[side], "list")
    assert listed.returncode == 0, listed.stderr
    assert GREET in listed.stdout.split()
    shown = call(tutorial[side], "describe", f"{GREET}/GreetMany")
    assert "rpc GreetMany(greet.v1.GreetManyRequest) returns (stream greet.v1.GreetResponse)" in (
        shown.stdout
    )
    assert "uint32 interval_ms = 3;" in shown.stdout


@pytest.mark.parametrize("side", PROTOCOLS)
def test_local_protos(tutorial: dict[str, str], side: str) -> None:
    protos = str(TUTORIAL / "protos")
    done = call(tutorial[side], f"{GREET}/Greet", "-I", protos, "-d", '{"name": "Lin"}')
    assert lines(done.stdout) == [{"greeting": "Hello, Lin!"}], done.stderr
    shown = call(tutorial[side], "describe", "greet.v1.GreetRequest", "-I", protos)
    assert "string name = 1;" in shown.stdout


def test_local_mistakes_exit_1(tutorial: dict[str, str]) -> None:
    for args, text in [
        ([f"{GREET}/Greet", "-d", "{nope"], "rpckit call: -d:"),
        ([f"{GREET}/Nope"], "has no method 'Nope'"),
        (["no.Such/Method"], "no service 'no.Such'"),
        ([f"{GREET}/Greet", "-H", "novalue"], "-H expects 'key: value'"),
    ]:
        done = call(tutorial["http"], *args)
        assert done.returncode == 1, (args, done.stderr)
        assert text in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1


def test_input_mistakes_name_the_shape(tutorial: dict[str, str]) -> None:
    for args, stdin, text in [
        ([f"{GREET}/GreetAll", "-d", '[{"name":"Ada"},{"name":"Bob"}]'], "",
         "request line 1: a client stream takes one JSON object per line, not an array"),
        ([f"{GREET}/Greet", "-d", '{"name":"Ada"}\n{"name":"Bob"}'], "",
         "-d: a unary call takes one JSON object, not 2 lines"),
        ([f"{GREET}/Greet", "-d", "@-"], '[{"name":"Ada"}]',
         "-d: a unary call takes one JSON object, not an array"),
    ]:  # fmt: skip
        done = call(tutorial["http"], *args, stdin=stdin)
        assert done.returncode == 1, (args, done.stderr)
        assert done.stderr == f"rpckit call: {text}\n"


@pytest.mark.parametrize("scheme", ["", "http://"])
def test_server_down_asks_whether_it_runs(scheme: str) -> None:
    address = f"127.0.0.1:{free_port()}"
    done = call(scheme + address, "list", "--timeout", "5")
    assert done.returncode == 64 + 14  # unavailable, as any failed call
    assert done.stderr == (
        f"rpckit call: cannot connect to {address} (connection refused); "
        "is the server running there?\n"
    )


@pytest.fixture(scope="module")
def tls_example(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Certs, dict[str, str]]]:
    """The streams example over TLS on both transports."""
    certs = make_certs(tmp_path_factory.mktemp("certs"))
    with Served(
        "examples.streams.server:create_service", "--grpc", ":0", "--http", ":0",
        "--tls-cert", str(certs.server_cert), "--tls-key", str(certs.server_key),
    ) as served:  # fmt: skip
        ports = served.ports(("gRPC", "HTTP"))
        yield certs, {"grpc": f"127.0.0.1:{ports['gRPC']}", "http": f"127.0.0.1:{ports['HTTP']}"}


@pytest.mark.parametrize("side", PROTOCOLS)
def test_tls_mistakes_get_their_hint(tls_example: tuple[Certs, dict[str, str]], side: str) -> None:
    certs, addresses = tls_example
    address = addresses[side]
    plain = f"http://{address}" if side == "http" else address
    done = call(plain, f"{DOGS}/GetDog", "-d", '{"index": 3}', "--timeout", "10")
    assert done.returncode == 64 + 14, done.stderr
    assert done.stderr == (
        f"rpckit call: {address} closed the connection at once; "
        "is it a TLS port? add --tls (or https://)\n"
    )
    done = call(plain, f"{DOGS}/GetDog", "-d", '{"index": 3}', "--tls", "--timeout", "10")
    assert done.returncode == 64 + 14, done.stderr
    assert done.stderr == (
        f"rpckit call: the certificate of {address} is not signed by a CA this client trusts; "
        "give the CA with --cacert PEM\n"
    )
    trusted = call(
        plain, f"{DOGS}/GetDog", "-d", '{"index": 3}', "--tls", "--cacert", str(certs.ca)
    )
    assert lines(trusted.stdout) == [{"name": "Dog 3", "age": 3}], trusted.stderr


def test_missing_token_is_unauthenticated_with_a_hint() -> None:
    with Served(
        "examples.streams.server:create_service", "--http", ":0",
        "--interceptor", "tests.serving.auth_all:everything",
    ) as served:  # fmt: skip
        url = f"http://127.0.0.1:{served.ports()['HTTP']}"
        done = call(url, f"{DOGS}/GetDog", "-d", '{"index": 3}')  # reflection is refused
        assert done.returncode == 64 + 16, done.stderr
        assert done.stderr.splitlines() == [
            "rpckit call: unauthenticated (code 16): missing credentials: "
            "send authorization: Bearer <token>",
            "rpckit call: send credentials, e.g. -H 'authorization: Bearer TOKEN'",
        ]
        token = ["-H", "authorization: Bearer test-token"]
        done = call(url, f"{DOGS}/GetDog", "-d", '{"index": 3}', *token)
        assert lines(done.stdout) == [{"name": "Dog 3", "age": 3}], done.stderr


def test_only_a_server_without_reflection_asks_for_proto_path() -> None:
    server = grpc.server(ThreadPoolExecutor(max_workers=2))  # no services, no reflection
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        done = call(f"127.0.0.1:{port}", "list")
    finally:
        server.stop(0)
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("rpckit call: the server does not offer reflection (")
    assert done.stderr.endswith("); give the schema with --proto-path DIR\n")
