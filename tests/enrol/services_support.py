"""Builders for the enrolment service tests: CSRs with the subject a template reads, a
manufacturer's claim CA and its device certificates, a tiny pre-provisioning hook, and
the events a flow recorded."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import NameOID
from sqlalchemy import select

from iotsec.app.enrol import est, templates
from iotsec.app.events import Event, list_events
from iotsec.app.runtime import Runtime
from iotsec.identity.enrolment import Template
from iotsec.store import models as m
from tests.helpers import make_key

Key = CertificateIssuerPrivateKeyTypes


def csr(key: Key | None = None, *, cn: str | None = None, serial: str | None = None) -> bytes:
    """A DER CSR whose subject holds ``cn`` and ``serial`` (serialNumber), when given."""
    attributes = []
    if cn is not None:
        attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    if serial is not None:
        attributes.append(x509.NameAttribute(NameOID.SERIAL_NUMBER, serial))
    request = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name(attributes))
               .sign(key or make_key(), hashes.SHA256()))
    return request.public_bytes(serialization.Encoding.DER)


@dataclass
class Factory:
    """A manufacturer's CA that signs claim certificates into its devices."""

    key: Key
    cert: x509.Certificate
    now: datetime
    serial: int = field(default=1000)

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def claim(self, *, hardware_id: str | None = None, cn: str = "factory device",
              serial: int | None = None, not_before: datetime | None = None,
              not_after: datetime | None = None, key: Key | None = None) -> est.ClientChain:
        """A claim certificate (leaf only), as the TLS layer would hand it over."""
        self.serial += 1
        attributes = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
        if hardware_id is not None:
            attributes.append(x509.NameAttribute(NameOID.SERIAL_NUMBER, hardware_id))
        leaf = (x509.CertificateBuilder().subject_name(x509.Name(attributes))
                .issuer_name(self.cert.subject).public_key((key or make_key()).public_key())
                .serial_number(serial if serial is not None else self.serial)
                .not_valid_before(not_before or self.now - timedelta(days=1))
                .not_valid_after(not_after or self.now + timedelta(days=3650))
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .sign(self.key, hashes.SHA256()))
        return est.ClientChain((leaf,))


def factory(now: datetime, name: str = "Factory CA", *, ca: bool = True,
            cert_sign: bool = True) -> Factory:
    """A claim CA valid around ``now``; ``ca``/``cert_sign`` False make a certificate that
    is not a CA."""
    key = make_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=30)).not_valid_after(now + timedelta(days=7300))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=not cert_sign, content_commitment=False,
                key_encipherment=False, data_encipherment=False, key_agreement=False,
                key_cert_sign=cert_sign, crl_sign=cert_sign, encipher_only=False,
                decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    return Factory(key=key, cert=cert, now=now)


@dataclass
class Hook:
    """A pre-provisioning hook on loopback: answers ``status`` (after ``delay`` seconds)
    and keeps the JSON bodies it was sent."""

    status: int = 200
    delay: float = 0.0
    received: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""


@contextmanager
def hook_server(hook: Hook) -> Iterator[Hook]:
    """Serve ``hook`` on 127.0.0.1 (a free port) in a thread for the block."""
    stop = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            hook.received.append(json.loads(self.rfile.read(length)))
            if stop.wait(hook.delay):
                return
            self.send_response(hook.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return

    with ThreadingHTTPServer(("127.0.0.1", 0), Handler) as server:  # closed on leaving
        server.daemon_threads = True
        hook.url = f"http://127.0.0.1:{server.server_address[1]}/claims"
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            yield hook
        finally:
            stop.set()  # a delayed answer gives up at once
            server.shutdown()  # returns once serve_forever has returned


def add_template(rt: Runtime, name: str = "sensors", **kwargs: Any) -> Template:
    """Store the template ``Template.parse(name, **kwargs)`` describes."""
    return templates.add_template(rt, Template.parse(name, **kwargs))


def common_name(cert: x509.Certificate | bytes) -> str:
    """The subject CN of a certificate (or of its DER)."""
    if isinstance(cert, bytes):
        cert = x509.load_der_x509_certificate(cert)
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def refusals(rt: Runtime) -> list[str]:
    """Why each refused EST request was refused (the events' reasons), oldest first."""
    return [str((e.detail or {}).get("reason")) for e in events(rt, "est.refused")]


def events(rt: Runtime, kind: str) -> list[Event]:
    """The events of ``kind``, oldest first."""
    rt.events.flush()
    return list(reversed(list_events(rt.engine, kind=kind, limit=1000)))


def dump(rt: Runtime) -> bytes:
    """Every value of every table, as bytes: what an attacker with the database holds."""
    parts: list[bytes] = []
    with rt.engine.connect() as conn:
        for table in m.metadata.sorted_tables:
            for row in conn.execute(select(table)):
                for value in row:
                    parts.append(bytes(value) if isinstance(value, bytes | memoryview)
                                 else str(value).encode())
    return b"\n".join(parts)
