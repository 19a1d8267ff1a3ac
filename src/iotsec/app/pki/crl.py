"""Publishing CRLs.

The latest CRL of each CA is kept in the store and served as it is until a revocation
marks it stale, a grace-period revocation falls due, it reaches its refresh age, or its
thisUpdate lies in the future (it was signed while the clock ran ahead). A
rebuild locks the CA's CRL row, so concurrent servers never publish two CRLs with the
same number.

A serving process answers ``GET /crl`` from memory (:func:`served_crl`) for up to
``IOTSEC_HOT_CACHE_SECONDS`` after it last asked the store, and at once again after a
revocation recorded in the same process: under load (a renewal storm) the CRL is then
answered on the event loop, without a thread or a database read per request.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Row, exists, select, update

from iotsec.app.pki.revocation import revocation_mark
from iotsec.app.runtime import Runtime, Slot
from iotsec.errors import InvalidInputError
from iotsec.pki.crl import build_crl
from iotsec.store import models as m
from iotsec.store.db import reading, transaction
from iotsec.timeutil import from_ts, ts

__all__ = ["FETCH_BATCH", "PublishedCrl", "current_crl", "load_served_crl", "served_crl"]

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


def current_crl(rt: Runtime, *, role: str = "issuing", force: bool = False,
                authority_id: int | None = None) -> PublishedCrl:
    """The CA's current CRL, rebuilt and re-signed only when needed (or when ``force``).
    ``authority_id`` names any CA of the store (a retiring one) instead of ``role``'s
    active one."""
    authority_id = authority_id if authority_id is not None else _authority_id(rt, role)
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
    ca = rt.authority_by_id(authority_id)
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


@dataclass(frozen=True, slots=True)
class _Served:
    crl: PublishedCrl
    read_at: float  # time.monotonic()
    read_at_clock: datetime  # rt.now(): a test clock moved on also ends it
    mark: int  # revocation_mark() when it was read


_SERVED: Slot[dict[str, _Served]] = Slot("crl.served")


def served_crl(rt: Runtime, role: str) -> PublishedCrl | None:
    """The CRL this process last read for ``role``, while it may still be answered from
    memory: read less than ``hot_cache_seconds`` ago (by the monotonic clock and by the
    runtime's), with no revocation recorded in this process since, and before its
    nextUpdate. ``None`` means: ask :func:`load_served_crl`. No I/O."""
    ttl = rt.settings.hot_cache_seconds
    held = (rt.get(_SERVED) or {}).get(role)
    if held is None or ttl <= 0 or held.mark != revocation_mark():
        return None
    age = time.monotonic() - held.read_at
    moment = rt.now()
    if not 0 <= age < ttl or not held.read_at_clock <= moment < held.read_at_clock + timedelta(
            seconds=ttl) or moment >= held.crl.next_update:
        return None
    return held.crl


def load_served_crl(rt: Runtime, role: str) -> PublishedCrl:
    """:func:`current_crl`, kept for :func:`served_crl`."""
    mark = revocation_mark()
    read_at, read_at_clock = time.monotonic(), rt.now()
    published = current_crl(rt, role=role)
    served = rt.get_or_put(_SERVED, dict)
    served[role] = _Served(published, read_at, read_at_clock, mark)
    return published
