"""The TLS of the EST listener: a client certificate requested, verified, and handed to the
application in the ASGI TLS extension.

EST (RFC 7030) authenticates a device by the certificate it presents in the handshake, and
uvicorn gives an application nothing of the handshake. So the EST listener brings:

- :func:`est_server_context`: the server context of :mod:`iotsec.api.tls` (TLS 1.2+, its
  suites, no compression, no renegotiation) that *requests* a client certificate
  (``CERT_OPTIONAL``: a device with only a bootstrap secret connects too) and verifies one
  against iotsec's trusted issuing CAs (active and retiring during a rollover, not retired;
  loaded live while serving) and the registered claim CAs, each a trust anchor of its own
  (a manufacturer's CA need not be a root; the roots are not anchors, so that no chain
  reaches one through a retired issuing CA). A presented certificate that does not
  verify fails the handshake. Python's ``ssl`` has no verify callback: when expired
  certificates may still be renewed (``IOTSEC_RENEW_AFTER_EXPIRY``) the handshake skips the
  time check altogether and the application checks the validity and its window. Session
  tickets are off; a TLS 1.2 session resumed by its id (OpenSSL's session cache, which
  Python cannot turn off) keeps the client certificate it was verified with, but not its
  chain: its requests carry the leaf alone.
- :class:`TlsScopeHttp` (``http=``): the guarded protocols of :mod:`iotsec.api.connections`
  that put the ASGI TLS extension (``scope["extensions"]["tls"]``: ``server_cert``,
  ``client_cert_chain``, ``client_cert_name``, ``client_cert_error``, ``tls_version``,
  ``cipher_suite``) into the scope of every request of a TLS connection. The chain is the
  verified one, leaf first, taken from the TLS layer; nothing a client sends in a header
  ever gets there.
- :func:`est_context` builds the listener's context over the store; a running server keeps
  its trust store current (CAs rotated, imported or retired, claim CAs registered or
  removed) with :mod:`iotsec.api.live_tls`.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from iotsec.api.connections import GuardedHttp, H11Guarded, HttpToolsGuarded
from iotsec.api.tls import server_context
from iotsec.app.enrol.claims import claim_generation, trust_anchors
from iotsec.app.pki.authorities import trust_generation, trusted_authorities
from iotsec.app.pki.server_tls import ServerTls
from iotsec.app.runtime import Runtime

__all__ = [
    "NO_CHECK_TIME", "TLS_VERSIONS", "H11Tls", "HttpToolsTls", "TlsScopeHttp", "est_context",
    "est_generation", "est_server_context", "load_anchors", "tls_extension", "verified_chain"
]

#: OpenSSL's X509_V_FLAG_NO_CHECK_TIME: verify a chain without looking at the clock.
NO_CHECK_TIME = 0x200000
#: The ASGI extension's ``tls_version``: the protocol version's number on the wire.
TLS_VERSIONS = {"TLSv1": 0x0301, "TLSv1.1": 0x0302, "TLSv1.2": 0x0303, "TLSv1.3": 0x0304}


def load_anchors(context: ssl.SSLContext, certificates: Iterable[x509.Certificate]) -> None:
    """Add ``certificates`` to the trust store of ``context`` (a live one included: the
    handshakes that start afterwards verify against them)."""
    pem = "".join(c.public_bytes(serialization.Encoding.PEM).decode("ascii")
                  for c in certificates)
    if pem:
        context.load_verify_locations(cadata=pem)


def est_server_context(certfile: str | Path, keyfile: str | Path | None,
                       password: str | None, *, anchors: Iterable[x509.Certificate],
                       skip_time_check: bool) -> ssl.SSLContext:
    """The EST listener's context: :func:`iotsec.api.tls.server_context` over the server
    certificate files, requesting a client certificate and verifying it against
    ``anchors`` (each one a trust anchor, root or not); ``skip_time_check`` leaves the
    certificates' validity to the application."""
    context = server_context(certfile, keyfile, password)
    context.verify_mode = ssl.CERT_OPTIONAL
    # Any registered CA ends a chain: a claim CA may be a manufacturer's intermediate.
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    if skip_time_check:
        context.verify_flags |= NO_CHECK_TIME
    # No session tickets: a resumed session brings the leaf but not its verified chain,
    # and an EST request is worth a full handshake.
    context.options |= ssl.OP_NO_TICKET
    context.num_tickets = 0
    load_anchors(context, anchors)
    return context


def _anchors(rt: Runtime) -> list[x509.Certificate]:
    # iotsec's trusted issuing CAs (active and retiring: a device still holding a
    # certificate of the retiring CA re-enrols onto the new one) and the claim CAs. Not the
    # roots: a device that sends its chain would otherwise reach a trusted root through a
    # retired issuing CA, and each issuing CA ends a chain anyway (partial chains).
    return [*(a.certificate for a in trusted_authorities(rt) if a.role == "issuing"),
            *trust_anchors(rt)]


def est_generation(rt: Runtime) -> tuple[str, str]:
    """What the EST trust store is made of, as a value that changes with it: the claim
    CAs' generation and iotsec's CAs' (:func:`trust_generation`)."""
    return claim_generation(rt), trust_generation(rt)


def est_context(rt: Runtime, files: ServerTls) -> ssl.SSLContext:
    """:func:`est_server_context` for the home of ``rt``: its server TLS files, its trusted
    CAs (active and retiring, not retired) and its claim CAs; the time check is skipped when
    ``IOTSEC_RENEW_AFTER_EXPIRY`` allows renewing expired certificates."""
    return est_server_context(files.chain_file, files.key_file, files.key_password,
                              anchors=_anchors(rt),
                              skip_time_check=rt.settings.renew_after_expiry > 0)


# --- the ASGI TLS extension -------------------------------------------------------------

def verified_chain(ssl_object: ssl.SSLObject) -> list[bytes]:
    """The client's chain as the handshake verified it, leaf first, in DER; the leaf alone
    where the chain is not kept (a resumed session); empty without a client certificate."""
    # Public from Python 3.13 (DER bytes); before, the method of the underlying _ssl
    # object (certificate objects).
    getter = getattr(ssl_object, "get_verified_chain", None) \
        or getattr(getattr(ssl_object, "_sslobj", None), "get_verified_chain", None)
    chain: list[bytes] = []
    for cert in (getter() if getter is not None else None) or ():
        chain.append(cert if isinstance(cert, bytes)
                     else ssl.PEM_cert_to_DER_cert(cert.public_bytes()))
    if not chain:
        leaf = ssl_object.getpeercert(binary_form=True)
        if leaf:
            chain.append(leaf)
    return chain


_SUITES: dict[str, int] = {}


def _suite_number(context: ssl.SSLContext, name: str) -> int | None:
    """The IANA number of the cipher suite OpenSSL calls ``name``."""
    if name not in _SUITES:
        # OpenSSL's id is 0x0300XXXX, XXXX being the suite's two bytes on the wire.
        _SUITES.update({c["name"]: c["id"] & 0xFFFF for c in context.get_ciphers()})
    return _SUITES.get(name)


def tls_extension(ssl_object: ssl.SSLObject, server_cert: str | None) -> dict[str, Any]:
    """The ASGI TLS extension of a connection whose handshake is done."""
    chain = verified_chain(ssl_object)
    name: str | None = None
    error: str | None = None
    if chain:
        try:
            name = x509.load_der_x509_certificate(chain[0]).subject.rfc4514_string()
        except ValueError:
            # OpenSSL took it and cryptography cannot read it: the application gets no
            # chain it could not read either, only the reason.
            chain, error = [], "the client certificate cannot be parsed"
    cipher = ssl_object.cipher()
    return {
        "server_cert": server_cert,
        "client_cert_chain": [ssl.DER_cert_to_PEM_cert(der) for der in chain],
        "client_cert_name": name,
        "client_cert_error": error,
        "tls_version": TLS_VERSIONS.get(ssl_object.version() or ""),
        "cipher_suite": _suite_number(ssl_object.context, cipher[0]) if cipher else None,
    }


_SERVED: dict[str, tuple[int, str | None]] = {}


def _server_certificate(certfile: str) -> str | None:
    """The leaf of the chain file a listener serves, read again when the file changed (a
    running server loads a reissued certificate live: :mod:`iotsec.api.live_tls`)."""
    try:
        changed = os.stat(certfile).st_mtime_ns
    except OSError:
        return None
    held = _SERVED.get(certfile)
    if held is not None and held[0] == changed:
        return held[1]
    try:
        pem: str | None = x509.load_pem_x509_certificates(Path(certfile).read_bytes())[
            0].public_bytes(serialization.Encoding.PEM).decode("ascii")
    except (OSError, ValueError, IndexError):
        pem = None
    _SERVED[certfile] = (changed, pem)
    return pem


class _WithTls:
    """The application behind a TLS connection: each request's scope gets the
    connection's TLS extension (a copy of its own)."""

    __slots__ = ("app", "extension")

    def __init__(self, app: Any, extension: dict[str, Any]) -> None:
        self.app = app
        self.extension = extension

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        tls = {**self.extension, "client_cert_chain": list(self.extension["client_cert_chain"])}
        scope["extensions"] = {**(scope.get("extensions") or {}), "tls": tls}
        await self.app(scope, receive, send)


def _add_tls_scope(protocol: HttpToolsTls | H11Tls, transport: Any) -> None:
    """After the guarded ``connection_made`` (the handshake is done by then): the
    connection's requests go to the application through :class:`_WithTls`. A connection
    that is not over TLS gets no extension, as the specification wants."""
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is None or transport.is_closing():
        return
    certfile = protocol.config.ssl_certfile
    server_cert = _server_certificate(str(certfile)) if certfile else None
    protocol.app = _WithTls(protocol.app, tls_extension(ssl_object, server_cert))


class HttpToolsTls(HttpToolsGuarded):
    """The guarded httptools protocol that puts the ASGI TLS extension into every scope."""

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        _add_tls_scope(self, transport)


class H11Tls(H11Guarded):
    """The guarded h11 protocol that puts the ASGI TLS extension into every scope."""

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        _add_tls_scope(self, transport)


class TlsScopeHttp(GuardedHttp):
    """uvicorn's ``http=`` for the EST listener: :class:`GuardedHttp` with the protocols
    that give the application the ASGI TLS extension."""

    protocols: ClassVar[Mapping[str, type[HttpToolsGuarded | H11Guarded]]] = {
        "httptools": HttpToolsTls, "h11": H11Tls}
