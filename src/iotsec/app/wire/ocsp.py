"""Wire model of an OCSP check (``iotsec ocsp check --json``)."""

from __future__ import annotations

from datetime import datetime

from iotsec.app.pki.ocsp_check import OcspCheck
from iotsec.app.wire.base import Wire
from iotsec.pki.serial import format_serial

__all__ = ["OcspStatusOut"]


class OcspStatusOut(Wire):
    """A certificate's status as a responder said it, after the answer was verified."""

    serial: str
    status: str
    revoked_at: datetime | None
    reason: str | None
    this_update: datetime
    next_update: datetime | None
    produced_at: datetime
    signed_by: str
    responder: str
    nonce_checked: bool
    url: str

    @classmethod
    def from_domain(cls, done: OcspCheck) -> OcspStatusOut:
        c = done.checked
        return cls(serial=format_serial(c.serial), status=c.status.value,
                   revoked_at=c.revoked_at, reason=c.reason.name if c.reason else None,
                   this_update=c.this_update, next_update=c.next_update,
                   produced_at=c.produced_at, signed_by=c.signed_by, responder=c.responder,
                   nonce_checked=c.nonce_checked, url=done.url)
