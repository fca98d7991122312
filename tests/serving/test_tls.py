"""TLS and mTLS on both transports, with real clients: grpcio, httpx and curl."""

from __future__ import annotations

import shutil
import ssl
import subprocess
import sys
from pathlib import Path

import grpc
import httpx
import pytest

from tests.serving.certs import Certs, make_certs
from tests.serving.grpc_calls import get_dog
from tests.serving.process import Served
from tests.support import ROOT, require_tool

pytestmark = pytest.mark.process

TARGET = "examples.streams.server:create_service"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


def _serve(certs: Certs, server: str, *extra: str) -> Served:
    return Served(
        TARGET, "--grpc", "127.0.0.1:0", "--http", "127.0.0.1:0", "--server", server,
        "--tls-cert", str(certs.server_cert), "--tls-key", str(certs.server_key), *extra,
    )  # fmt: skip


def _curl(*args: str) -> subprocess.CompletedProcess[str]:
    curl = shutil.which("curl")
    require_tool(curl is not None, "curl is not installed")
    assert curl is not None
    return subprocess.run(
        [curl, "-sS", "--max-time", "10", *args], capture_output=True, text=True, timeout=30
    )


@pytest.mark.parametrize("server", ["uvicorn", "granian"])
def test_tls_on_both_transports(certs: Certs, server: str) -> None:
    with _serve(certs, server) as served:
        ports = served.ports(["gRPC", "HTTP"])
        url = f"https://127.0.0.1:{ports['HTTP']}/api/dogs/2"
        response = httpx.get(url, verify=ssl.create_default_context(cafile=certs.ca), timeout=10)
        assert response.json() == {"name": "Dog 2", "age": 2}
        with pytest.raises(httpx.ConnectError):  # a client that does not trust the test CA
            httpx.get(url, timeout=10)
        done = _curl("--cacert", str(certs.ca), url)
        assert done.returncode == 0, done.stderr
        assert '"Dog 2"' in done.stdout
        credentials = grpc.ssl_channel_credentials(root_certificates=certs.ca.read_bytes())
        assert get_dog(f"127.0.0.1:{ports['gRPC']}", 3, credentials).name == "Dog 3"
        # Plain HTTP on the TLS port is refused, not answered.
        with pytest.raises(httpx.HTTPError):
            httpx.get(url.replace("https", "http"), timeout=10)


@pytest.mark.parametrize("server", ["uvicorn", "granian"])
def test_mtls_requires_a_client_certificate(certs: Certs, server: str) -> None:
    with _serve(certs, server, "--tls-client-ca", str(certs.ca)) as served:
        ports = served.ports(["gRPC", "HTTP"])
        url = f"https://127.0.0.1:{ports['HTTP']}/api/dogs/4"
        trusted = ssl.create_default_context(cafile=certs.ca)
        with pytest.raises(httpx.HTTPError):
            httpx.get(url, verify=trusted, timeout=10)
        with_cert = ssl.create_default_context(cafile=certs.ca)
        with_cert.load_cert_chain(certs.client_cert, certs.client_key)
        assert httpx.get(url, verify=with_cert, timeout=10).json()["name"] == "Dog 4"
        assert _curl("--cacert", str(certs.ca), url).returncode != 0
        done = _curl(
            "--cacert", str(certs.ca), "--cert", str(certs.client_cert),
            "--key", str(certs.client_key), url,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert '"Dog 4"' in done.stdout

        address = f"127.0.0.1:{ports['gRPC']}"
        anonymous = grpc.ssl_channel_credentials(root_certificates=certs.ca.read_bytes())
        with pytest.raises(grpc.RpcError) as failed:
            get_dog(address, 1, anonymous)
        assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
        authenticated = grpc.ssl_channel_credentials(
            root_certificates=certs.ca.read_bytes(),
            private_key=certs.client_key.read_bytes(),
            certificate_chain=certs.client_cert.read_bytes(),
        )
        assert get_dog(address, 1, authenticated).name == "Dog 1"


def _serve_once(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rpckit", "serve", TARGET, "--http", "127.0.0.1:0", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.mark.parametrize(
    "bad",
    ["garbage key", "wrong key", "missing cert", "garbage ca"],
)
def test_bad_files_are_one_line_errors(certs: Certs, tmp_path: Path, bad: str) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n")
    other_key = make_certs(tmp_path).client_key
    cert, key, ca = str(certs.server_cert), str(certs.server_key), []
    if bad == "garbage key":
        key = str(garbage)
    elif bad == "wrong key":
        key = str(other_key)
    elif bad == "missing cert":
        cert = str(tmp_path / "absent.pem")
    else:
        ca = ["--tls-client-ca", str(garbage)]
    done = _serve_once("--tls-cert", cert, "--tls-key", key, *ca)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("rpckit: --tls-"), lines[0]
    assert "Traceback" not in done.stderr


def test_cert_without_key_is_a_usage_error(certs: Certs) -> None:
    done = _serve_once("--tls-cert", str(certs.server_cert))
    assert done.returncode == 2
    assert "--tls-cert and --tls-key go together" in done.stderr
