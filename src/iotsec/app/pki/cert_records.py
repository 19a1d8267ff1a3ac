"""The certificate record: a ``certificates`` row as the services see it, the row a newly
issued certificate is written as, and the reads of one certificate or of many.

The reads are SQL text run by the store's :class:`~iotsec.store.reader.Reader` (the same
for the CLI, the API and the console): ``cert list`` and ``cert show`` import no SQLAlchemy.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from iotsec.errors import InvalidInputError, NotFoundError
from iotsec.identity.registry import parse_device_id
from iotsec.pki.reasons import RevocationReason
from iotsec.pki.serial import format_serial, parse_serial
from iotsec.timeutil import from_ts, ts

if TYPE_CHECKING:
    from sqlalchemy import Row

    from iotsec.app.reads import Reads
    from iotsec.app.runtime import Runtime
    from iotsec.pki.issue import IssuedCertificate
    from iotsec.store.direct import Direct, Unit

__all__ = [
    "CertificateRecord", "certificate_row", "get_certificate", "list_certificates",
    "locked_certificate", "record_from_row", "record_of"
]


@dataclass(frozen=True, slots=True)
class CertificateRecord:
    serial: str
    device_id: str | None
    kind: str
    profile: str
    subject: str
    not_before: datetime
    not_after: datetime
    sha256: str
    der: bytes
    revoked_at: datetime | None
    revocation_reason: RevocationReason | None
    replaced_by: str | None

    @property
    def pem(self) -> str:
        """The certificate in PEM (RFC 7468): its stored DER, which the CA encoded,
        wrapped as is (not parsed again)."""
        from iotsec.pki.x509 import to_pem  # deferred: listing certificates needs no PEM

        return to_pem(self.der, "CERTIFICATE").decode("ascii")

    def status(self, now: datetime) -> str:
        if self.revoked_at is not None and self.revoked_at <= now:
            return "revoked"
        if self.not_after <= now:
            return "expired"
        if self.revoked_at is not None:
            return "superseded"  # revocation scheduled at the end of a grace period
        return "valid"


_SELECT = ("SELECT serial, device_id, kind, profile, subject, not_before, not_after, sha256, "
           "der, revoked_at, revocation_reason, replaced_by FROM certificates ")
_ONE = _SELECT + "WHERE serial = :serial"
_EXPIRING = ("not_after > :now AND not_after <= :until AND "
             "(revoked_at IS NULL OR revoked_at > :now) ORDER BY not_after LIMIT :limit")
_NEWEST = "ORDER BY created_at DESC, serial LIMIT :limit"
#: The list statements, by (one device only, expiring only).
_LISTS = {
    (False, False): _SELECT + _NEWEST,
    (True, False): _SELECT + "WHERE device_id = :device_id " + _NEWEST,
    (False, True): _SELECT + "WHERE " + _EXPIRING,
    (True, True): _SELECT + "WHERE device_id = :device_id AND " + _EXPIRING,
}


def record_of(r: Row[Any] | Any) -> CertificateRecord:
    """The record a ``certificates`` row holds (a row of SQLAlchemy's or of the reader's)."""
    return CertificateRecord(
        serial=r.serial, device_id=r.device_id, kind=r.kind, profile=r.profile,
        subject=r.subject, not_before=from_ts(r.not_before), not_after=from_ts(r.not_after),
        sha256=r.sha256, der=bytes(r.der),
        revoked_at=from_ts(r.revoked_at) if r.revoked_at is not None else None,
        revocation_reason=RevocationReason(r.revocation_reason)
        if r.revocation_reason is not None else None,
        replaced_by=r.replaced_by)


def certificate_row(issued: IssuedCertificate, *, authority_id: int, device_id: str | None,
                    kind: str, profile: str, now: int,
                    crl_partition: int | None = None) -> dict[str, Any]:
    """The ``certificates`` row a newly issued certificate is written as (``crl_partition``:
    the CRL partition its CDP names, if any)."""
    return {
        "serial": format_serial(issued.serial), "authority_id": authority_id,
        "device_id": device_id, "kind": kind, "profile": profile,
        "subject": issued.subject_cn, "not_before": ts(issued.not_before),
        "not_after": ts(issued.not_after), "sha256": issued.sha256, "der": issued.der,
        "created_at": now, "revoked_at": None, "revocation_reason": None, "crl_entry": None,
        "replaced_by": None, "spki_sha256": issued.spki_sha256, "crl_partition": crl_partition,
    }


def record_from_row(v: dict[str, Any]) -> CertificateRecord:
    """The record of a certificate just written from :func:`certificate_row`."""
    return CertificateRecord(
        serial=v["serial"], device_id=v["device_id"], kind=v["kind"], profile=v["profile"],
        subject=v["subject"], not_before=from_ts(v["not_before"]),
        not_after=from_ts(v["not_after"]), sha256=v["sha256"], der=v["der"], revoked_at=None,
        revocation_reason=None, replaced_by=None)


def get_certificate(rt: Runtime, serial: str) -> CertificateRecord:
    """One certificate by its serial (hex), or NotFoundError."""
    key = format_serial(parse_serial(serial))
    with rt.reading() as reader:
        row = reader.first(_ONE, {"serial": key})
    if row is None:
        raise NotFoundError(f"no certificate with serial {key}",
                            hint="list certificates with 'iotsec cert list'")
    return record_of(row)


def list_certificates(rt: Reads, *, device_id: str | None = None,
                      expiring_within: timedelta | None = None,
                      limit: int = 1000) -> list[CertificateRecord]:
    """Certificates, newest first; with ``expiring_within``, the unrevoked ones that expire
    in that window, soonest first (an index range scan on ``not_after``)."""
    if not 1 <= limit <= 100_000:
        raise InvalidInputError("limit must be between 1 and 100000")
    params: dict[str, Any] = {"limit": limit}
    if device_id is not None:
        params["device_id"] = parse_device_id(device_id)
    if expiring_within is not None:
        now = ts(rt.now())
        params.update(now=now, until=now + int(expiring_within.total_seconds()))
    sql = _LISTS[device_id is not None, expiring_within is not None]
    with rt.reading() as reader:
        return [record_of(r) for r in reader.rows(sql, params)]


@functools.cache
def _locked() -> Direct:
    """The statement that locks a certificate, on the driver (iotsec.store.direct): every
    renewal and revocation runs it. Built on first use, for start-up time: the reads above
    need no SQLAlchemy, a revocation does."""
    from sqlalchemy import bindparam, select

    from iotsec.store import models as m
    from iotsec.store.direct import Direct

    return Direct(select(m.certificates).where(m.certificates.c.serial == bindparam("serial"))
                  .with_for_update())


def locked_certificate(conn: Unit, serial: str) -> Any:
    """The certificate row, locked for the rest of the transaction, or NotFoundError."""
    row = _locked().first(conn, {"serial": serial})
    if row is None:
        raise NotFoundError(f"no certificate with serial {serial}",
                            hint="list certificates with 'iotsec cert list'")
    return row
