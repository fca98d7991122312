"""TLS files for both transports, checked up front so that a bad file is a one-line error."""

from __future__ import annotations

import ssl
from typing import Any

from rpckit.serving.options import TlsFiles

__all__ = ["TlsError", "check_tls", "grpc_credentials"]


class TlsError(ValueError):
    """A certificate, key or CA file that cannot be used (the message is one line)."""


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason).lower().replace("_", " ")
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def check_tls(tls: TlsFiles) -> None:
    """Raise ``TlsError`` unless the certificate and key load, match, and the CA loads."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(tls.cert, tls.key)
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise TlsError(
            f"--tls-cert {tls.cert} / --tls-key {tls.key}: not a usable PEM certificate and "
            f"matching private key ({_reason(exc)})"
        ) from None
    if tls.client_ca is not None:
        try:
            context.load_verify_locations(cafile=tls.client_ca)
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise TlsError(
                f"--tls-client-ca {tls.client_ca}: not a usable PEM CA certificate ({_reason(exc)})"
            ) from None


def grpc_credentials(tls: TlsFiles) -> Any:
    """grpcio server credentials for ``tls`` (client certificates required with a CA)."""
    import grpc

    ca = tls.client_ca.read_bytes() if tls.client_ca is not None else None
    return grpc.ssl_server_credentials(
        [(tls.key.read_bytes(), tls.cert.read_bytes())],
        root_certificates=ca,
        require_client_auth=ca is not None,
    )
