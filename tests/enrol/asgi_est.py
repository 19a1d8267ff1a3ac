"""The EST application in-process: an httpx client over ASGI, with the client certificate
chain the TLS layer would have verified put into the scope's TLS extension, and the PKI
pieces the tests enrol with (CSRs, a manufacturer's claim CA and its certificates)."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import NameOID
from starlette.types import ASGIApp, Receive, Scope, Send

from iotsec.api.est import create_est_app
from iotsec.app.runtime import Runtime
from iotsec.pki.est import CONTENT_PKCS10, decode_base64_body, read_certs_only
from tests.helpers import make_key

EST = "/.well-known/est"
BASE_URL = "https://est.test"


class WithTls:
    """What the EST listener's TLS layer does for one connection: the ASGI TLS extension
    with the verified client chain (PEM, leaf first; empty when the client sent none)."""

    def __init__(self, app: ASGIApp, chain: Sequence[str] = ()) -> None:
        self.app = app
        self.chain = list(chain)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            extensions = {**scope.get("extensions", {}),
                          "tls": {"server_cert": None, "client_cert_chain": self.chain,
                                  "tls_version": 0x0304, "cipher_suite": None}}
            scope = {**scope, "scheme": "https", "extensions": extensions}
        await self.app(scope, receive, send)


@dataclass
class EstApp:
    """``create_est_app(rt)``, asked over ASGI. Each request may name its TLS client chain
    (``chain``: PEM certificates) and its peer address (``source``)."""

    rt: Runtime
    app: ASGIApp = field(init=False)

    def __post_init__(self) -> None:
        self.app = create_est_app(self.rt)

    def client(self, *, chain: Sequence[str] = (), source: str = "192.0.2.10"
               ) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=WithTls(self.app, chain), client=(source, 50000))
        return httpx.AsyncClient(transport=transport, base_url=BASE_URL)

    def request(self, method: str, path: str, *, chain: Sequence[str] = (),
                source: str = "192.0.2.10", **kwargs: Any) -> httpx.Response:
        async def go() -> httpx.Response:
            async with self.client(chain=chain, source=source) as client:
                return await client.request(method, path, **kwargs)

        return asyncio.run(go())

    def get(self, op: str, *, label: str | None = None, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path(op, label), **kwargs)

    def post(self, op: str, csr_der: bytes | None = None, *, label: str | None = None,
             secret: tuple[str, str] | None = None, body: bytes | None = None,
             headers: dict[str, str] | None = None, **kwargs: Any) -> httpx.Response:
        """POST ``op`` with ``csr_der`` as an RFC 8951 body (or ``body`` as is), the
        enrolment secret ``(id, secret)`` as HTTP Basic."""
        sent = {"Content-Type": CONTENT_PKCS10, **(headers or {})}
        if secret is not None:
            sent["Authorization"] = basic(*secret)
        content = body if body is not None else base64.encodebytes(csr_der or b"")
        return self.request("POST", path(op, label), content=content, headers=sent, **kwargs)


def path(op: str, label: str | None = None) -> str:
    return f"{EST}/{label}/{op}" if label else f"{EST}/{op}"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def csr(key: CertificateIssuerPrivateKeyTypes | None = None, *, cn: str | None = "ignored",
        serial_number: str | None = None) -> bytes:
    """A DER PKCS#10 request with the subject given."""
    attrs = []
    if cn is not None:
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    if serial_number is not None:
        attrs.append(x509.NameAttribute(NameOID.SERIAL_NUMBER, serial_number))
    return (x509.CertificateSigningRequestBuilder().subject_name(x509.Name(attrs))
            .sign(key or make_key(), hashes.SHA256())
            .public_bytes(serialization.Encoding.DER))


def issued_certificate(resp: httpx.Response) -> x509.Certificate:
    """The one certificate of a 200 certs-only answer, its format checked."""
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "application/pkcs7-mime; smime-type=certs-only"
    assert resp.headers["content-transfer-encoding"] == "base64"
    certs = read_certs_only(decode_base64_body(resp.content))
    assert len(certs) == 1
    return certs[0]


def assert_text_error(resp: httpx.Response, status: int) -> str:
    """An EST error answer: ``status``, one line of text/plain, the security headers."""
    assert resp.status_code == status, (resp.status_code, resp.text)
    assert resp.headers["content-type"] == "text/plain; charset=utf-8", resp.headers
    assert resp.text.endswith("\n") and resp.text.count("\n") == 1 and resp.text.strip()
    assert resp.headers["x-content-type-options"] == "nosniff"
    assert resp.headers["cache-control"] == "no-store"
    if status == 401:
        assert resp.headers["www-authenticate"] == 'Basic realm="iotsec EST"'
    return resp.text.strip()


def pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


@dataclass(frozen=True)
class Manufacturer:
    """A manufacturer's CA, which signs the claim certificates of its devices."""

    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate

    @classmethod
    def create(cls, name: str = "Acme Devices Factory CA") -> Manufacturer:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.now(UTC)
        cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - timedelta(days=1))
                .not_valid_after(now + timedelta(days=3650))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(
                    digital_signature=False, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=True,
                    crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
                .sign(key, hashes.SHA256()))
        return cls(key=key, certificate=cert)

    @property
    def pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def claim(self, hardware_id: str, *, days: int = 3650
              ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        """A device's claim certificate (subject serialNumber = its hardware id) and key."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([
                    x509.NameAttribute(NameOID.COMMON_NAME, f"claim {hardware_id}"),
                    x509.NameAttribute(NameOID.SERIAL_NUMBER, hardware_id)]))
                .issuer_name(self.certificate.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - timedelta(hours=1))
                .not_valid_after(now + timedelta(days=days))
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .sign(self.key, hashes.SHA256()))
        return key, cert
