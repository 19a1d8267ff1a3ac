"""The console's certificate views: the most recent revocations (an index range scan on
``(authority_id, revoked_at)`` per CA, newest first), beside the expiring ones that
:func:`iotsec.app.pki.cert_records.list_certificates` gives."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Row, select

from iotsec.app.pki.cert_records import CertificateRecord, record_of
from iotsec.app.runtime import Runtime
from iotsec.errors import InvalidInputError
from iotsec.store import models as m
from iotsec.store.db import reading
from iotsec.timeutil import ts

__all__ = ["recently_revoked"]


def recently_revoked(rt: Runtime, *, limit: int = 50) -> list[CertificateRecord]:
    """The ``limit`` certificates revoked last (revocation in effect now), newest first."""
    if not 1 <= limit <= 1000:
        raise InvalidInputError("limit must be between 1 and 1000")
    c = m.certificates.c
    now = ts(rt.now())
    with reading(rt.engine) as conn:
        authorities = list(conn.execute(select(m.authorities.c.id)).scalars())
        rows: list[Row[Any]] = []
        for authority in authorities:
            rows.extend(conn.execute(
                select(m.certificates).where(c.authority_id == authority,
                                             c.revoked_at.is_not(None), c.revoked_at <= now)
                .order_by(c.revoked_at.desc()).limit(limit)))
    records = sorted((record_of(r) for r in rows),
                     key=lambda r: (r.revoked_at, r.serial), reverse=True)
    return records[:limit]
