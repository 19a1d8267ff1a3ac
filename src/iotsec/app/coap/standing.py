"""Whether a DTLS peer may still be served: its certificate and its device, read from the
store in one indexed query (the certificate's primary key, the device's primary key).

The full check at the handshake (:func:`iotsec.app.pki.infrastructure.stored_status`) also
compares the certificate byte for byte with the stored one; a serial's bytes never change,
so each later request reads only what can change: the revocation, the expiry and the
device's state.
"""

from __future__ import annotations

from datetime import datetime

from cryptography import x509
from cryptography.x509.oid import NameOID
from sqlalchemy import bindparam, select

from iotsec.app.pki.infrastructure import stored_status
from iotsec.app.runtime import Runtime
from iotsec.identity.registry import DeviceState
from iotsec.pki.serial import format_serial
from iotsec.store import models as m
from iotsec.store.db import reading
from iotsec.timeutil import ts

__all__ = ["common_name", "refusal_at_handshake", "refusal_now"]

_c, _d = m.certificates.c, m.devices.c
_NOW = (select(_c.revoked_at, _c.not_after, _c.device_id, _d.state)
        .select_from(m.certificates.outerjoin(m.devices, _d.id == _c.device_id))
        .where(_c.serial == bindparam("serial")))
_SERVED = frozenset({DeviceState.ACTIVE.value, DeviceState.PENDING.value})


def common_name(cert: x509.Certificate) -> str | None:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if len(names) == 1 else None


def refusal_now(rt: Runtime, serial: str, device_id: str, now: datetime) -> str | None:
    """Why the certificate ``serial`` of ``device_id`` may not be served at ``now``, or
    None: revoked, expired, unknown, held by another device, or the device not active or
    pending."""
    with reading(rt.engine) as conn:
        row = conn.execute(_NOW, {"serial": serial}).first()
    if row is None:
        return f"certificate {serial} is unknown"
    moment = ts(now)
    if row.revoked_at is not None and row.revoked_at <= moment:
        return f"certificate {serial} is revoked"
    if row.not_after <= moment:
        return f"certificate {serial} is expired"
    if row.device_id != device_id or row.state is None:
        return f"certificate {serial} names no registered device"
    if row.state not in _SERVED:
        return f"device {device_id!r} is {row.state}"
    return None


def refusal_at_handshake(rt: Runtime, cert: x509.Certificate) -> str | None:
    """The handshake's check: the certificate is the store's own (byte for byte) and valid,
    it names a device, and :func:`refusal_now` finds nothing."""
    serial = format_serial(cert.serial_number)
    status = stored_status(rt, cert)
    if status != "valid":
        return f"certificate {serial} is {status}"
    device_id = common_name(cert)
    if device_id is None:
        return f"certificate {serial} names no device"
    return refusal_now(rt, serial, device_id, rt.now())
