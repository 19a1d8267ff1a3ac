"""Fleet audit fixtures: a clean fleet (no finding at all) built with the real services, and
helpers that add one weakness at a time."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from sqlalchemy import insert, select

from iotsec.app.access import api_tokens as tokens
from iotsec.app.audit import run_audit
from iotsec.app.events import Event
from iotsec.app.identity.devices import NewDevice, add_device
from iotsec.app.pki.cert_records import CertificateRecord
from iotsec.app.pki.issuance import issue_from_csr
from iotsec.app.runtime import Runtime
from iotsec.audit.model import AuditResult
from iotsec.audit.snapshot import AuditOptions
from iotsec.pki.serial import format_serial
from iotsec.store import models as m
from iotsec.store.db import transaction
from iotsec.timeutil import ts
from tests.helpers import make_csr, make_key

DEVICES = ("dev-a", "dev-b")


def found(result: AuditResult, rule: str | None = None) -> set[tuple[str, str]]:
    """(rule, location) of every finding (of ``rule``)."""
    return {(f.rule.id, f.location.uri) for f in result.findings
            if rule is None or f.rule.id == rule}


def audit(rt: Runtime, **options: object) -> AuditResult:
    return run_audit(rt, AuditOptions.parse(**options) if options else None,  # type: ignore[arg-type]
                     record=False)


@dataclass
class Fleet:
    rt: Runtime
    certs: dict[str, CertificateRecord]

    def connect(self, device: str, source: str = "192.0.2.10:40000",
                at: datetime | None = None, client_id: str | None = None) -> None:
        self.rt.events.record(Event(at or self.rt.now(), "broker.connect", "success",
                                    actor=device, source=source,
                                    detail={"client_id": client_id or device,
                                            "protocol": "mqtt", "options": None}))

    def disconnect(self, device: str, source: str, at: datetime | None = None) -> None:
        self.rt.events.record(Event(at or self.rt.now(), "broker.disconnect", "success",
                                    actor=device, source=source,
                                    detail={"reason": "disconnected"}))


def add(rt: Runtime, device: str, key: CertificateIssuerPrivateKeyTypes | None = None,
        days: int | None = None) -> CertificateRecord:
    add_device(rt, NewDevice.parse(device))
    return issue_from_csr(rt, device, make_csr(key or make_key()), days=days)


@pytest.fixture
def fleet(rt: Runtime) -> Fleet:
    """Two active devices with fresh P-256 certificates, each seen connecting; the init
    admin token replaced by one that expires. Audits clean."""
    initial = tokens.list_tokens(rt)
    tokens.issue_token(rt, "ops", tokens.Scope.ADMIN, timedelta(days=30))
    for info in initial:  # the new admin token first: the last one cannot be revoked
        tokens.revoke_token(rt, info.id)
    f = Fleet(rt, {d: add(rt, d) for d in DEVICES})
    for i, d in enumerate(DEVICES):
        f.connect(d, f"192.0.2.{10 + i}:40000")
    return f


def insert_certificate(rt: Runtime, device: str | None, key: CertificateIssuerPrivateKeyTypes,
                       *, serial: int, not_before: datetime, not_after: datetime,
                       authority: str = "issuing",
                       algorithm: hashes.HashAlgorithm | None = None) -> str:
    """A device certificate made outside iotsec's issuance checks (a legacy import): signed
    by the issuing CA's key, stored as issuance would store it."""
    ca = rt.authority(authority)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                                        device or "x")]))
            .issuer_name(ca.certificate.subject).public_key(key.public_key())
            .serial_number(serial).not_valid_before(not_before).not_valid_after(not_after)
            .sign(_ca_private_key(rt, authority), algorithm or hashes.SHA256()))
    der = cert.public_bytes(Encoding.DER)
    with transaction(rt.engine) as conn:
        conn.execute(insert(m.certificates).values(
            serial=format_serial(serial), authority_id=rt.authority_id(authority),
            device_id=device, kind="device", profile="device", subject=device or "x",
            not_before=ts(not_before), not_after=ts(not_after),
            sha256=hashlib.sha256(der).hexdigest(), der=der, created_at=ts(not_before)))
    return format_serial(serial)


def _ca_private_key(rt: Runtime, role: str) -> CertificateIssuerPrivateKeyTypes:
    """The CA key as a cryptography object (file key store in the tests)."""
    with rt.engine.connect() as conn:
        label = conn.execute(select(m.authorities.c.key_label).where(
            m.authorities.c.role == role, m.authorities.c.active.is_(True))).scalar_one()
    signer: object = rt.keys.load(label)
    while hasattr(signer, "_inner"):
        signer = signer._inner
    private = getattr(signer, "_key", None)
    assert private is not None, "the test key store must hold the CA key in process"
    return private  # type: ignore[no-any-return]


def record(rt: Runtime, events: Iterable[Event]) -> None:
    for e in events:
        rt.events.record(e)
