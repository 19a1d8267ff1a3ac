"""iotsec's own certificates in the store: the API's and the broker's TLS server
certificates (kind ``server``), the broker's probe (``broker-probe``) and its canary
(``broker-canary``), the CoAP gateway's MQTT bridge (``coap-bridge``). They belong to no
device.

They are recorded like any certificate (listed, counted, in the CRL once revoked), but they
are not revoked through the device commands and routes: what holds one must get a
replacement at the same moment, or the holder breaks (a revoked probe fails every broker
sync's check, so the broker's CRL would never change again). Their holders ask
:func:`stored_status` before reusing one, and reissue it when it is not what they need.
"""

from __future__ import annotations

from typing import Literal, get_args

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import insert, select

from iotsec.app.pki.cert_records import (
    CertificateRecord,
    certificate_row,
    get_certificate,
    locked_certificate,
)
from iotsec.app.pki.revocation import ensure_revocable, mark_revoked
from iotsec.app.runtime import Runtime
from iotsec.errors import InfrastructureCertificateError
from iotsec.pki.crl import RevocationReason
from iotsec.pki.issue import IssuedCertificate
from iotsec.pki.serial import format_serial, parse_serial
from iotsec.store import models as m
from iotsec.store.db import reading, transaction
from iotsec.timeutil import from_ts, ts

__all__ = ["INFRASTRUCTURE_KINDS", "InfrastructureKind", "record_infrastructure",
           "revoke_infrastructure", "stored_status"]

InfrastructureKind = Literal["server", "broker-probe", "broker-canary", "coap-bridge"]
#: The kinds of iotsec's own certificates.
INFRASTRUCTURE_KINDS: frozenset[str] = frozenset(get_args(InfrastructureKind))


def record_infrastructure(rt: Runtime, issued: IssuedCertificate, kind: InfrastructureKind, *,
                          revoked: RevocationReason | None = None) -> None:
    """Record one of iotsec's own certificates, issued by the current issuing CA; with
    ``revoked``, revoked in the same transaction (the canary, which must be in every CRL
    from its first moment)."""
    moment = rt.now().replace(microsecond=0)
    authority_id = rt.issuing_id()
    with transaction(rt.engine) as conn:
        conn.execute(insert(m.certificates).values(certificate_row(
            issued, authority_id=authority_id, device_id=None, kind=kind, profile=kind,
            now=ts(moment))))
        if revoked is not None:
            mark_revoked(conn, format_serial(issued.serial), moment, revoked, authority_id)


def stored_status(rt: Runtime, cert: x509.Certificate) -> str:
    """What the store says of ``cert`` now: ``valid``, ``revoked``, ``expired``,
    ``superseded`` (see :meth:`CertificateRecord.status`), or ``unknown`` when the store
    holds no such certificate (another home's, or one written behind iotsec's back)."""
    c = m.certificates.c
    with reading(rt.engine) as conn:
        row = conn.execute(select(c.der, c.not_after, c.revoked_at).where(
            c.serial == format_serial(cert.serial_number))).first()
    if row is None or bytes(row.der) != cert.public_bytes(Encoding.DER):
        return "unknown"
    now = rt.now()
    if row.revoked_at is not None and from_ts(row.revoked_at) <= now:
        return "revoked"
    if from_ts(row.not_after) <= now:
        return "expired"
    return "superseded" if row.revoked_at is not None else "valid"


def revoke_infrastructure(rt: Runtime, serial: str,
                          reason: RevocationReason = RevocationReason.unspecified
                          ) -> CertificateRecord:
    """Revoke one of iotsec's own certificates: the first step of replacing it, which
    :func:`iotsec.app.broker.infrastructure.replace_infrastructure` completes at once.
    A device's certificate is refused (it is revoked with the device commands)."""
    key = format_serial(parse_serial(serial))
    moment = rt.now().replace(microsecond=0)
    with transaction(rt.engine) as conn:
        row = locked_certificate(conn, key)
        if row.device_id is not None:
            raise InfrastructureCertificateError(
                f"certificate {key} belongs to device {row.device_id!r}, not to iotsec",
                hint=f"revoke it with 'iotsec cert revoke {key}' (without --infrastructure)")
        ensure_revocable(row, ts(moment))
        mark_revoked(conn, key, moment, reason, row.authority_id)
    return get_certificate(rt, key)
