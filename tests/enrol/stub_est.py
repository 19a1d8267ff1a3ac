"""A scripted EST server over real TLS, for what a conforming server never answers (a body
too large, a wrong content type, garbage) and for timing the client's polite waiting: each
request gets the next scripted answer, and every request is recorded."""

from __future__ import annotations

import contextlib
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import IPv4Address
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from iotsec.pki.est import CONTENT_PKCS7_CERTS, certs_only, encode_base64_body


@dataclass
class Pki:
    """A CA, a server certificate for 127.0.0.1 under it, and client certificates issued on
    demand (with the extensions a TLS client certificate has), written under ``root``."""

    root: Path
    key: ec.EllipticCurvePrivateKey = field(init=False)
    ca: x509.Certificate = field(init=False)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Stub EST CA")])
        now = datetime.now(UTC)
        ski = x509.SubjectKeyIdentifier.from_public_key(self.key.public_key())
        self.ca = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                   .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - timedelta(days=1))
                   .not_valid_after(now + timedelta(days=3650))
                   .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                   .add_extension(_key_usage(cert_sign=True), critical=True)
                   .add_extension(ski, critical=False)
                   .sign(self.key, hashes.SHA256()))
        self.ca_file.write_bytes(self.ca.public_bytes(serialization.Encoding.PEM))
        server_key = ec.generate_private_key(ec.SECP256R1())
        server = self.issue(server_key.public_key(), "127.0.0.1", server=True)
        self.server_cert.write_bytes(server.public_bytes(serialization.Encoding.PEM))
        self.server_key.write_bytes(server_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))

    @property
    def ca_file(self) -> Path:
        return self.root / "ca.pem"

    @property
    def server_cert(self) -> Path:
        return self.root / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.root / "server.key"

    def issue(self, public_key: PublicKeyTypes, cn: str, *, server: bool = False,
              days: int = 30) -> x509.Certificate:
        now = datetime.now(UTC)
        san: list[x509.GeneralName] = (
            [x509.IPAddress(IPv4Address(cn))] if server
            else [x509.UniformResourceIdentifier(f"urn:iotsec:device:{cn}")])
        eku = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        return (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
                .issuer_name(self.ca.subject).public_key(public_key)  # type: ignore[arg-type]
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - timedelta(minutes=5))
                .not_valid_after(now + timedelta(days=days))
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(_key_usage(), critical=True)
                .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
                .add_extension(x509.SubjectAlternativeName(san), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                    self.key.public_key()), critical=False)
                .sign(self.key, hashes.SHA256()))


def _key_usage(*, cert_sign: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=not cert_sign, content_commitment=False,
                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                         key_cert_sign=cert_sign, crl_sign=cert_sign, encipher_only=False,
                         decipher_only=False)


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


def certs_answer(*certs: x509.Certificate) -> Answer:
    return Answer(200, encode_base64_body(certs_only(certs)),
                  (("Content-Type", CONTENT_PKCS7_CERTS),
                   ("Content-Transfer-Encoding", "base64")))


@dataclass
class StubEst:
    """The running stub: ``answers`` are served in order (the last one repeats)."""

    port: int
    answers: list[Answer]
    seen: list[Seen]

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"


@contextlib.contextmanager
def stub_est(pki: Pki, answers: list[Answer]) -> Iterator[StubEst]:
    stub = StubEst(0, list(answers), [])
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            with lock:
                stub.seen.append(Seen(self.command, self.path,
                                      {k.lower(): v for k, v in self.headers.items()}, body))
                answer = stub.answers.pop(0) if len(stub.answers) > 1 else stub.answers[0]
            self.send_response(answer.status)
            names = {k.lower() for k, _ in answer.headers}
            for name, value in answer.headers:
                self.send_header(name, value)
            if "content-length" not in names and "transfer-encoding" not in names:
                self.send_header("Content-Length", str(len(answer.body)))
            self.send_header("Connection", "close")
            self.end_headers()
            if answer.headers and ("Transfer-Encoding", "chunked") in answer.headers:
                for start in range(0, len(answer.body), 4096):
                    piece = answer.body[start:start + 4096]
                    self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                self.wfile.write(b"0\r\n\r\n")
            else:
                self.wfile.write(answer.body)

        do_GET = do_POST = _answer

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(pki.server_cert), str(pki.server_key))
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    stub.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield stub
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
