"""Publishing CRLs.

The latest CRL of each CA is kept in the store and served as it is until a revocation
marks it stale, a grace-period revocation falls due, it reaches its refresh age, or its
thisUpdate lies in the future (it was signed while the clock ran ahead). A
rebuild locks the CA's CRL row, so concurrent servers never publish two CRLs with the
same number.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Row, exists, select, update

from iotsec.app.runtime import Runtime
from iotsec.errors import InvalidInputError
from iotsec.pki.crl import build_crl
from iotsec.store import models as m
from iotsec.store.db import reading, transaction
from iotsec.timeutil import from_ts, ts

__all__ = ["FETCH_BATCH", "PublishedCrl", "current_crl"]

FETCH_BATCH = 50_000


@dataclass(frozen=True, slots=True)
class PublishedCrl:
    der: bytes
    number: int
    this_update: datetime
    next_update: datetime


def _authority_id(rt: Runtime, role: str) -> int:
    if role not in ("issuing", "root"):
        raise InvalidInputError(f"unknown CA {role!r}", hint="choose 'issuing' or 'root'")
    return rt.authority_id(role)


def _fresh(conn: Connection, row: Row[Any] | None, authority_id: int, now: int,
           refresh: int) -> bool:
    if row is None or row.der is None or row.stale or now >= row.this_update + refresh:
        return False
    if row.this_update > now:
        # Signed while the clock ran ahead: relying parties refuse it ("CRL is not yet
        # valid") until that moment, so it is rebuilt now, with the next CRL number.
        return False
    c = m.certificates.c
    due = conn.execute(select(exists().where(
        c.authority_id == authority_id, c.revoked_at > row.this_update, c.revoked_at <= now)
    )).scalar()
    return not due


def _entries(conn: Connection, authority_id: int, now: int) -> Iterator[bytes]:
    c = m.certificates.c
    # Expired certificates leave the CRL (RFC 5280 3.3): their status no longer matters.
    result = conn.execute(
        select(c.crl_entry).where(c.authority_id == authority_id, c.revoked_at <= now,
                                  c.not_after > now).execution_options(
            stream_results=True, max_row_buffer=FETCH_BATCH))
    yield from result.scalars()


def current_crl(rt: Runtime, *, role: str = "issuing", force: bool = False) -> PublishedCrl:
    """The CA's current CRL, rebuilt and re-signed only when needed (or when ``force``)."""
    authority_id = _authority_id(rt, role)
    settings = rt.settings
    refresh = settings.crl_refresh_hours * 3600
    moment = rt.now().replace(microsecond=0)
    now = ts(moment)
    query = select(m.crls).where(m.crls.c.authority_id == authority_id)
    if not force:
        with reading(rt.engine) as conn:
            row = conn.execute(query).first()
            if row is not None and _fresh(conn, row, authority_id, now, refresh):
                return PublishedCrl(der=row.der, number=row.number,
                                    this_update=from_ts(row.this_update),
                                    next_update=from_ts(row.next_update))
    ca = rt.authority(role)
    with transaction(rt.engine) as conn:
        row = conn.execute(query.with_for_update()).first()
        if row is None:
            raise InvalidInputError(f"the {role} CA has no CRL state",
                                    hint="the store is incomplete; run 'iotsec init'")
        if not force and _fresh(conn, row, authority_id, now, refresh):
            return PublishedCrl(der=row.der, number=row.number,
                                this_update=from_ts(row.this_update),
                                next_update=from_ts(row.next_update))
        number = row.number + 1
        next_update = moment + timedelta(hours=settings.crl_lifetime_hours)
        der = build_crl(ca, _entries(conn, authority_id, now), number=number,
                        this_update=moment, next_update=next_update)
        conn.execute(update(m.crls).where(m.crls.c.authority_id == authority_id).values(
            number=number, this_update=now, next_update=ts(next_update), stale=False, der=der))
    return PublishedCrl(der=der, number=number, this_update=moment, next_update=next_update)
