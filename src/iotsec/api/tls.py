"""The TLS server context of ``iotsec serve``.

uvicorn's own context takes OpenSSL's default TLS 1.2 suites, CBC ones (with SHA-1 MACs and
RSA key exchange) included. This one speaks TLS 1.2 and 1.3 only; in TLS 1.2 it offers only
forward-secret ECDHE key exchange with AEAD ciphers (AES-GCM, ChaCha20-Poly1305), the
suites of RFC 9325's recommendations; TLS 1.3's suites are all AEAD and keep OpenSSL's
defaults. TLS compression (CRIME) and renegotiation (a client-driven CPU cost) are off.

The certificate and key are the files :func:`iotsec.app.pki.server_tls.ensure_server_tls`
produces; uvicorn passes their paths through its ``Config``.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

from iotsec.errors import ConfigError

__all__ = ["ALPN", "TLS12_CIPHERS", "server_context", "ssl_context_factory"]

# TLS 1.2 only (``set_ciphers`` does not touch TLS 1.3): ECDHE key exchange, AEAD ciphers;
# ECDSA first because iotsec's server key is an EC key, RSA for a key brought from outside.
TLS12_CIPHERS = ":".join((
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-RSA-CHACHA20-POLY1305",
))
ALPN = ["http/1.1"]


def server_context(certfile: str | Path, keyfile: str | Path | None,
                   password: str | None) -> ssl.SSLContext:
    """A server context for the certificate chain in ``certfile`` and the (encrypted) key in
    ``keyfile``: TLS 1.2+ with the suites of :data:`TLS12_CIPHERS`, no compression, no
    renegotiation. Unreadable files or a wrong passphrase raise ``ConfigError``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(TLS12_CIPHERS)
    context.options |= (ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
                        | ssl.OP_CIPHER_SERVER_PREFERENCE)
    context.set_alpn_protocols(ALPN)
    try:
        context.load_cert_chain(certfile, keyfile, password)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load the server certificate {certfile}: {exc}",
                          hint="run 'iotsec serve' again to reissue the server "
                               "certificate") from exc
    return context


def ssl_context_factory(config: Any, default: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
    """uvicorn's ``ssl_context_factory``: :func:`server_context` over the files named in
    uvicorn's ``Config`` (``default``, uvicorn's own context, is not used)."""
    del default
    return server_context(config.ssl_certfile, config.ssl_keyfile,
                          config.ssl_keyfile_password)
