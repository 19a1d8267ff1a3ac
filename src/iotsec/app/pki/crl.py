"""Publishing CRLs: the complete CRL of each CA and its delta CRLs.

The latest CRL of each CA is kept in the store and served as it is until a revocation
marks it stale, a grace-period revocation falls due, it reaches its refresh age, or its
thisUpdate lies in the future (it was signed while the clock ran ahead). A
rebuild locks the CA's CRL row, so concurrent servers never publish two CRLs with the
same number.

Delta CRLs (RFC 5280 5.2.4) complete a *base*: a complete CRL published earlier, whose
number and thisUpdate the CA's ``delta_crls`` row keeps with the delta. A delta lists
every revocation that took effect since that thisUpdate, so any complete CRL from the base
on completes it. The base moves on every ``IOTSEC_CRL_REFRESH_HOURS``: the first complete
CRL signed after that becomes the new base (a delta request that finds the base due signs
it, or adopts the current complete CRL when it holds every revocation); and earlier when a
delta would list more than ``IOTSEC_CRL_DELTA_MAX_ENTRIES``. Relying parties then fetch
the complete CRL again. A delta takes its number from the one sequence it shares with the
complete CRLs (5.2.3), under the same row lock, and is re-signed after a revocation, when
a newer complete CRL exists, when its base moves, or after half of
``IOTSEC_CRL_DELTA_HOURS``. Revocations are final, so a delta never needs removeFromCRL; a
certificate that expired since the base just leaves the next delta (its status no longer
matters, RFC 5280 3.3) and stays on the base the relying party holds.

A serving process answers ``GET /crl`` and ``GET /crl/delta`` from memory
(:func:`served_crl`) for up to ``IOTSEC_HOT_CACHE_SECONDS`` after it last asked the store,
and at once again after a revocation recorded in the same process: under load (a renewal
storm) the CRL is then answered on the event loop, without a thread or a database read per
request.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Row, Select, exists, func, insert, select, update

from iotsec.app.pki.crl_urls import delta_crl_url
from iotsec.app.pki.revocation import revocation_mark
from iotsec.app.runtime import Runtime, Slot
from iotsec.errors import InvalidInputError, NotFoundError
from iotsec.pki.ca import Authority
from iotsec.pki.crl import CrlScope, build_crl
from iotsec.store import models as m
from iotsec.store.db import reading, transaction
from iotsec.timeutil import from_ts, ts

__all__ = [
    "FETCH_BATCH", "CrlAuthority", "PublishedCrl", "crl_authority", "current_crl",
    "current_delta_crl", "load_served", "load_served_crl", "load_served_delta", "served",
    "served_crl"
]

FETCH_BATCH = 50_000


@dataclass(frozen=True, slots=True)
class PublishedCrl:
    der: bytes
    number: int
    this_update: datetime
    next_update: datetime
    #: A delta CRL: the number of the complete CRL it completes.
    base_number: int | None = None


@dataclass(frozen=True, slots=True)
class CrlAuthority:
    """The CA a CRL is signed for: its store id and role; :attr:`load` gives its signer."""

    id: int
    role: str
    load: Callable[[], Authority]


def crl_authority(rt: Runtime, role: str = "issuing",
                  authority_id: int | None = None) -> CrlAuthority:
    """The active CA of ``role``, or the CA ``authority_id`` (any CA in the store, active
    or not: its CRLs keep being published while its certificates are valid)."""
    if authority_id is None:
        if role not in ("issuing", "root"):
            raise InvalidInputError(f"unknown CA {role!r}", hint="choose 'issuing' or 'root'")
        active = rt.authority_id(role)
        # Loaded by id, not by role: a rotation between the two reads cannot pair this
        # CA's CRL row with the next CA's key.
        return CrlAuthority(active, role, lambda: rt.authority_by_id(active))
    for known in ("issuing", "root"):
        if rt.authority_id(known) == authority_id:
            return crl_authority(rt, known)
    with reading(rt.engine) as conn:
        row = conn.execute(select(m.authorities.c.role, m.authorities.c.cert_der,
                                  m.authorities.c.key_label)
                           .where(m.authorities.c.id == authority_id)).first()
    if row is None:
        raise NotFoundError(f"no CA with id {authority_id}", hint="list the CAs of the store")
    return CrlAuthority(authority_id, str(row.role), lambda: rt.authority_by_id(authority_id))


def _published(row: Row[Any]) -> PublishedCrl:
    return PublishedCrl(der=row.der, number=row.number, this_update=from_ts(row.this_update),
                        next_update=from_ts(row.next_update))


def _due(conn: Connection, authority_id: int, since: int, now: int) -> bool:
    """A revocation took effect after ``since`` (a grace period ended): it is not on a
    CRL signed at ``since`` yet."""
    c = m.certificates.c
    return bool(conn.execute(select(exists().where(
        c.authority_id == authority_id, c.revoked_at > since, c.revoked_at <= now))).scalar())


def _fresh(conn: Connection, row: Row[Any] | None, authority_id: int, now: int,
           refresh: int) -> bool:
    """``row`` (of ``crls``, with ``der`` or ``der_length``) holds the current complete
    CRL."""
    if row is None or not _has_der(row) or row.stale or now >= row.this_update + refresh:
        return False
    if row.this_update > now:
        # Signed while the clock ran ahead: relying parties refuse it ("CRL is not yet
        # valid") until that moment, so it is rebuilt now, with the next CRL number.
        return False
    return not _due(conn, authority_id, row.this_update, now)


def _has_der(row: Row[Any]) -> bool:
    mapping = row._mapping
    return (mapping["der_length"] if "der_length" in mapping else mapping["der"]) is not None


def _entries(conn: Connection, authority_id: int, now: int) -> Iterator[bytes]:
    c = m.certificates.c
    # Expired certificates leave the CRL (RFC 5280 3.3): their status no longer matters.
    result = conn.execute(
        select(c.crl_entry).where(c.authority_id == authority_id, c.revoked_at <= now,
                                  c.not_after > now).execution_options(
            stream_results=True, max_row_buffer=FETCH_BATCH))
    yield from result.scalars()


def _delta_row(conn: Connection, authority_id: int) -> Row[Any]:
    """The CA's ``delta_crls`` row, created on first use. Called only while the CA's
    ``crls`` row is locked, so two servers never both create it."""
    query = select(m.delta_crls).where(m.delta_crls.c.authority_id == authority_id)
    row = conn.execute(query).first()
    if row is None:
        conn.execute(insert(m.delta_crls).values(authority_id=authority_id, stale=True))
        row = conn.execute(query).one()
    return row


def _sign_complete(conn: Connection, rt: Runtime, ca: CrlAuthority, last_number: int,
                   delta: Row[Any], moment: datetime) -> PublishedCrl:
    """Within the transaction that holds the CA's ``crls`` row locked: sign and store the
    next complete CRL. When the deltas' base is due to move on, this CRL becomes it: a
    relying party that just fetched it can apply the next delta."""
    now = ts(moment)
    number = max(last_number, delta.number or 0) + 1
    next_update = moment + timedelta(hours=rt.settings.crl_lifetime_hours)
    freshest = delta_crl_url(rt.settings, ca.id)
    der = build_crl(ca.load(), _entries(conn, ca.id, now), number=number,
                    this_update=moment, next_update=next_update,
                    scope=CrlScope(freshest_url=freshest) if freshest else None)
    conn.execute(update(m.crls).where(m.crls.c.authority_id == ca.id).values(
        number=number, this_update=now, next_update=ts(next_update), stale=False, der=der))
    if _base_due(delta, now, rt.settings.crl_refresh_hours * 3600):
        conn.execute(update(m.delta_crls).where(m.delta_crls.c.authority_id == ca.id)
                     .values(base=number, base_update=now))
    return PublishedCrl(der=der, number=number, this_update=moment, next_update=next_update)


def _no_crl_state(ca: CrlAuthority) -> InvalidInputError:
    return InvalidInputError(f"the {ca.role} CA has no CRL state",
                             hint="the store is incomplete; run 'iotsec init'")


def current_crl(rt: Runtime, *, role: str = "issuing", force: bool = False,
                authority_id: int | None = None) -> PublishedCrl:
    """The CA's current complete CRL, rebuilt and re-signed only when needed (or when
    ``force``). ``authority_id`` names the CA instead of ``role``."""
    ca = crl_authority(rt, role, authority_id)
    refresh = rt.settings.crl_refresh_hours * 3600
    moment = rt.now().replace(microsecond=0)
    now = ts(moment)
    query = select(m.crls).where(m.crls.c.authority_id == ca.id)
    if not force:
        with reading(rt.engine) as conn:
            row = conn.execute(query).first()
            if row is not None and _fresh(conn, row, ca.id, now, refresh):
                return _published(row)
    ca.load()  # the key is unlocked before the row is locked
    with transaction(rt.engine) as conn:
        row = conn.execute(query.with_for_update()).first()
        if row is None:
            raise _no_crl_state(ca)
        if not force and _fresh(conn, row, ca.id, now, refresh):
            return _published(row)
        return _sign_complete(conn, rt, ca, row.number, _delta_row(conn, ca.id), moment)


# --------------------------------------------------------------------------- delta CRLs

# The complete CRL's state without its DER (which may be 53 MB): SQLite reads a blob whole
# for ``der IS NOT NULL`` but answers length() from the record header (130 ms against
# 0.03 ms at a million entries), and PostgreSQL's length() of a TOASTed value does not
# fetch it either.
_STATE: Select[Any] = select(m.crls.c.number, m.crls.c.this_update, m.crls.c.next_update,
                             m.crls.c.stale,
                             func.length(m.crls.c.der).label("der_length"))


def _delta_fresh(conn: Connection, state: Row[Any], delta: Row[Any] | None, authority_id: int,
                 now: int, refresh: int, delta_refresh: int) -> bool:
    if (delta is None or delta.der is None or delta.stale or delta.number is None
            or state.number >= delta.number  # a newer complete CRL: the delta must follow
            or _base_due(delta, now, refresh)
            or not delta.this_update <= now < delta.this_update + delta_refresh):
        return False
    return not _due(conn, authority_id, delta.this_update, now)


def _base_due(delta: Row[Any], now: int, refresh: int) -> bool:
    """The deltas' base must move on: there is none, it is older than the refresh period,
    or it was signed while the clock ran ahead."""
    base = delta.base_update
    return delta.base is None or base is None or not base <= now < base + refresh


def _delta_entries(conn: Connection, authority_id: int, since: int, now: int) -> list[bytes]:
    """The entries of the revocations that took effect from ``since`` (the base's
    thisUpdate) on: a range scan of the covering index on (authority_id, revoked_at, ...).
    A revocation of that very second may or may not be on the base (it may have committed
    just after the base was read): listing it again is harmless, missing it is not."""
    c = m.certificates.c
    return list(conn.execute(select(c.crl_entry).where(
        c.authority_id == authority_id, c.revoked_at >= since, c.revoked_at <= now,
        c.not_after > now)).scalars())


def _delta_published(row: Row[Any]) -> PublishedCrl:
    return PublishedCrl(der=row.der, number=row.number, this_update=from_ts(row.this_update),
                        next_update=from_ts(row.next_update), base_number=row.base)


def current_delta_crl(rt: Runtime, *, role: str = "issuing", force: bool = False,
                      authority_id: int | None = None) -> PublishedCrl:
    """The CA's current delta CRL (RFC 5280 5.2.4), re-signed only when needed (or when
    ``force``); its base moves on when due, re-signing the complete CRL if that is due too.
    ``authority_id`` names the CA instead of ``role``."""
    ca = crl_authority(rt, role, authority_id)
    settings = rt.settings
    refresh = settings.crl_refresh_hours * 3600
    delta_refresh = settings.crl_delta_hours * 3600 // 2
    moment = rt.now().replace(microsecond=0)
    now = ts(moment)
    state_query = _STATE.where(m.crls.c.authority_id == ca.id)
    delta_query = select(m.delta_crls).where(m.delta_crls.c.authority_id == ca.id)
    if not force:
        with reading(rt.engine) as conn:
            state = conn.execute(state_query).first()
            delta = conn.execute(delta_query).first()
            if state is not None and _delta_fresh(conn, state, delta, ca.id, now, refresh,
                                                  delta_refresh):
                assert delta is not None
                return _delta_published(delta)
    authority = ca.load()
    with transaction(rt.engine) as conn:
        # The lock on the CA's crls row orders every CRL number of the CA; the row itself
        # is not written unless the complete CRL is re-signed.
        state = conn.execute(state_query.with_for_update(of=m.crls)).first()
        if state is None:
            raise _no_crl_state(ca)
        delta = _delta_row(conn, ca.id)
        if not force and _delta_fresh(conn, state, delta, ca.id, now, refresh, delta_refresh):
            return _delta_published(delta)
        complete_number = state.number
        if _base_due(delta, now, refresh):
            if _fresh(conn, state, ca.id, now, refresh):
                base, base_update = state.number, state.this_update
            else:
                signed = _sign_complete(conn, rt, ca, state.number, delta, moment)
                complete_number = base = signed.number
                base_update = now
        else:
            base, base_update = delta.base, delta.base_update
        entries = _delta_entries(conn, ca.id, base_update, now)
        if len(entries) > settings.crl_delta_max_entries:
            # Too many for a delta: a new base, which relying parties fetch once (the
            # complete CRL as it is, when it holds every revocation up to now).
            state = conn.execute(state_query).one()
            if _fresh(conn, state, ca.id, now, refresh):
                base, base_update = state.number, state.this_update
            else:
                signed = _sign_complete(conn, rt, ca, state.number, delta, moment)
                complete_number = base = signed.number
                base_update = now
            entries = _delta_entries(conn, ca.id, base_update, now)
        number = max(complete_number, delta.number or 0) + 1
        next_update = moment + timedelta(hours=settings.crl_delta_hours)
        der = build_crl(authority, entries, number=number, this_update=moment,
                        next_update=next_update, scope=CrlScope(delta_of=base))
        conn.execute(update(m.delta_crls).where(m.delta_crls.c.authority_id == ca.id).values(
            number=number, base=base, base_update=base_update, this_update=now,
            next_update=ts(next_update), stale=False, der=der))
    return PublishedCrl(der=der, number=number, this_update=moment, next_update=next_update,
                        base_number=base)


# --------------------------------------------------------------------------- served


@dataclass(frozen=True, slots=True)
class _Served:
    crl: PublishedCrl
    read_at: float  # time.monotonic()
    read_at_clock: datetime  # rt.now(): a test clock moved on also ends it
    mark: int  # revocation_mark() when it was read


_SERVED: Slot[dict[str, _Served]] = Slot("crl.served")


def served(rt: Runtime, key: str) -> PublishedCrl | None:
    """The CRL this process last read under ``key`` (see :func:`load_served`), while it may
    still be answered from memory: read less than ``hot_cache_seconds`` ago (by the
    monotonic clock and by the runtime's), with no revocation recorded in this process
    since, and before its nextUpdate. ``None`` means: ask :func:`load_served`. No I/O."""
    ttl = rt.settings.hot_cache_seconds
    held = (rt.get(_SERVED) or {}).get(key)
    if held is None or ttl <= 0 or held.mark != revocation_mark():
        return None
    age = time.monotonic() - held.read_at
    moment = rt.now()
    if not 0 <= age < ttl or not held.read_at_clock <= moment < held.read_at_clock + timedelta(
            seconds=ttl) or moment >= held.crl.next_update:
        return None
    return held.crl


def load_served(rt: Runtime, key: str, load: Callable[[], PublishedCrl]) -> PublishedCrl:
    """``load()`` (a CRL read from the store, or re-signed), kept under ``key`` for
    :func:`served`."""
    mark = revocation_mark()
    read_at, read_at_clock = time.monotonic(), rt.now()
    published = load()
    rt.get_or_put(_SERVED, dict)[key] = _Served(published, read_at, read_at_clock, mark)
    return published


def served_crl(rt: Runtime, role: str) -> PublishedCrl | None:
    """The complete CRL of ``role`` this process may answer from memory (:func:`served`)."""
    return served(rt, role)


def load_served_crl(rt: Runtime, role: str) -> PublishedCrl:
    """:func:`current_crl`, kept for :func:`served_crl`."""
    return load_served(rt, role, lambda: current_crl(rt, role=role))


def load_served_delta(rt: Runtime, role: str) -> PublishedCrl:
    """:func:`current_delta_crl`, kept for ``served(rt, "delta:" + role)``."""
    return load_served(rt, f"delta:{role}", lambda: current_delta_crl(rt, role=role))
