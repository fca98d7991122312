"""TLS with a real browser: Debian's Chromium trusts the test server's key only through
``--ignore-certificate-errors-spki-list`` (that one key, not the test CA, not any error), and
the same browser without the flag refuses the certificate."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from playwright.sync_api import Browser, Error, sync_playwright

from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS
from tests.serving.certs import Certs, make_certs
from tests.serving.process import Served
from tests.support import require_tool

pytestmark = pytest.mark.browser


def spki_hash(cert: Path) -> str:
    """Base64 SHA-256 of the certificate's SubjectPublicKeyInfo, as Chromium's flag wants."""
    public = x509.load_pem_x509_certificate(cert.read_bytes()).public_key()
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def browsers(certs: Certs) -> Iterator[tuple[Browser, Browser]]:
    """(Chromium trusting only the server's key, Chromium with default trust)."""
    require_tool(Path(CHROMIUM).exists(), "needs Debian's chromium (apt-get install chromium)")
    flag = f"--ignore-certificate-errors-spki-list={spki_hash(certs.server_cert)}"
    with sync_playwright() as playwright:
        trusting = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=[*CHROMIUM_ARGS, flag]
        )
        plain = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield trusting, plain
        finally:
            trusting.close()
            plain.close()


@pytest.mark.parametrize("server", ["uvicorn", "granian"])
def test_chromium_over_tls(certs: Certs, browsers: tuple[Browser, Browser], server: str) -> None:
    trusting, plain = browsers
    with Served(
        "examples.streams.server:create_service", "--http", "127.0.0.1:0", "--server", server,
        "--tls-cert", str(certs.server_cert), "--tls-key", str(certs.server_key),
    ) as served:  # fmt: skip
        url = f"https://127.0.0.1:{served.ports()['HTTP']}/api/dogs/3"
        page = trusting.new_page()
        try:
            response = page.goto(url, timeout=15_000)
            assert response is not None
            assert response.status == 200
            assert response.url == url  # no redirect to an error or interstitial page
            assert json.loads(response.text()) == {"name": "Dog 3", "age": 3}
        finally:
            page.close()
        control = plain.new_page()
        try:
            with pytest.raises(Error, match=r"net::ERR_CERT_(AUTHORITY_INVALID|INVALID)"):
                control.goto(url, timeout=15_000)
        finally:
            control.close()
