"""Which certificates may re-enrol over EST, and the keys server-side key generation
makes: checks made against the store, whatever the TLS layer already verified."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from sqlalchemy import bindparam, select

from iotsec.app.enrol.claims import issued_by
from iotsec.app.pki.cert_records import CertificateRecord, record_of
from iotsec.app.runtime import Runtime
from iotsec.errors import EnrolmentForbiddenError
from iotsec.identity.registry import DeviceState
from iotsec.pki.keys import KeyType
from iotsec.store import models as m
from iotsec.store.db import reading
from iotsec.store.direct import Direct, Unit
from iotsec.timeutil import ts

__all__ = ["issued_here", "key_like", "renewable", "renewal_in"]


# A re-enrolment's reads run on the driver (iotsec.store.direct): in a renewal storm each
# costs more through SQLAlchemy than in the database. Each function reads in one
# transaction (the explicit begin: a statement on the driver does not start one).
_C = m.certificates.c
_BY_SHA256 = Direct(select(m.certificates).where(_C.sha256 == bindparam("sha256")))
_BY_SERIAL = Direct(select(m.certificates).where(_C.serial == bindparam("serial")))
_AUTHORITY = Direct(select(m.authorities.c.cert_der, m.authorities.c.state)
                    .where(m.authorities.c.id == bindparam("id")))
_DEVICE_STATE = Direct(select(m.devices.c.state).where(m.devices.c.id == bindparam("id")))


def _forbidden(reason: str) -> EnrolmentForbiddenError:
    return EnrolmentForbiddenError(f"this certificate cannot be renewed: {reason}")


def _renewable(rt: Runtime, leaf: x509.Certificate, der: bytes, row: Any, issuer: Any,
               state: str | None, moment: datetime) -> CertificateRecord:
    if row is None or bytes(row.der) != der or issuer is None or not issued_by(
            leaf, x509.load_der_x509_certificate(bytes(issuer))):
        raise _forbidden("iotsec did not issue it, or its CA is retired")
    record = record_of(row)
    if record.kind != "device" or state is None:
        raise _forbidden("it is not a device's certificate")
    if record.revoked_at is not None or record.replaced_by is not None:
        raise _forbidden("it is revoked or already renewed")
    if not DeviceState(state).may_hold_certificates:
        raise _forbidden(f"the device is {state}")
    window = timedelta(seconds=rt.settings.renew_after_expiry)
    if not record.not_before <= moment <= record.not_after + window:
        raise _forbidden("it is expired or not yet valid")
    return record


def _issuer_and_state(conn: Any, row: Any) -> tuple[Any, str | None]:
    """The DER of ``row``'s CA (None once it is retired) and its device's state."""
    authority = _AUTHORITY.first(conn, {"id": row.authority_id})
    # A retired CA's certificates no longer authenticate (the EST listener drops the CA
    # within its poll, iotsec.api.live_tls: refused here meanwhile).
    issuer = None if authority is None or authority.state == "retired" else authority.cert_der
    device = _DEVICE_STATE.first(conn, {"id": row.device_id})
    return issuer, None if device is None else device.state


def renewable(rt: Runtime, leaf: x509.Certificate, moment: datetime) -> CertificateRecord:
    """The record of ``leaf`` if it may re-enrol now: iotsec issued it (same DER, signed by
    one of iotsec's CAs) to a device that may hold certificates, it is neither revoked nor
    renewed already, and ``moment`` lies in its validity (plus the renew-after-expiry
    window)."""
    der = leaf.public_bytes(serialization.Encoding.DER)
    issuer = state = None
    with reading(rt.engine) as conn, conn.begin():
        row = _BY_SHA256.first(conn, {"sha256": hashlib.sha256(der).hexdigest()})
        if row is not None:
            issuer, state = _issuer_and_state(conn, row)
    return _renewable(rt, leaf, der, row, issuer, state, moment)


def _repeated(old: Any, new: Any, spki: bytes, moment: datetime) -> CertificateRecord | None:
    in_grace = old.revoked_at is not None and old.revoked_at > ts(moment)
    if (not in_grace or new is None or new.revoked_at is not None
            or new.spki_sha256 != hashlib.sha256(spki).hexdigest()):
        return None
    return record_of(new)


def renewal_in(conn: Unit, rt: Runtime, leaf: x509.Certificate, spki: bytes,
               moment: datetime) -> tuple[CertificateRecord, bool]:
    """Whether ``leaf`` may re-enrol now for the key ``spki``, in the caller's unit of work
    (its reads on the driver): ``(the certificate that already renewed leaf for spki,
    True)`` for a retry inside the grace period (a retry whose answer was lost: a dropped
    connection, a crash before the device saved it; only the holder of leaf's key can ask,
    and only for the key it asked for before, so the answer tells it nothing new), else
    ``(leaf's record, False)`` if it may re-enrol now (:func:`renewable`); refused
    otherwise."""
    der = leaf.public_bytes(serialization.Encoding.DER)
    issuer = state = new = None
    row = _BY_SHA256.first(conn, {"sha256": hashlib.sha256(der).hexdigest()})
    if row is not None and bytes(row.der) == der and row.replaced_by is not None:
        new = _BY_SERIAL.first(conn, {"serial": row.replaced_by})
    if row is not None:
        issuer, state = _issuer_and_state(conn, row)
    if new is not None:
        again = _repeated(row, new, spki, moment)
        if again is not None:
            return again, True
    return _renewable(rt, leaf, der, row, issuer, state, moment), False


def issued_here(rt: Runtime, leaf: x509.Certificate) -> bool:
    """Is ``leaf`` a certificate iotsec issued (any kind, any status)?"""
    digest = hashlib.sha256(leaf.public_bytes(serialization.Encoding.DER)).hexdigest()
    with reading(rt.engine) as conn:
        return conn.execute(select(m.certificates.c.serial)
                            .where(m.certificates.c.sha256 == digest)).first() is not None


def key_like(public_key: CertificatePublicKeyTypes
             ) -> ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey:
    """A new key of the CSR key's kind: the same curve, RSA-3072 for RSA, else P-256."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return ec.generate_private_key(public_key.curve)
    if isinstance(public_key, rsa.RSAPublicKey):
        return KeyType.RSA_3072.generate()
    return KeyType.ECDSA_P256.generate()
