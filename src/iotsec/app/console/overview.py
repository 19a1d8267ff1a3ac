"""The fleet at a glance: devices and certificates by state, certificates expiring per week,
the CRLs' age, the broker's last sync and the open alerts by severity.

The aggregates read every device and certificate row once (about a second at a million
of each), so a page view never waits for them: they are computed in a background thread,
kept in the store with the time they were computed (every serving process, and one that has
just started, answers the newest at once), and computed again by one process once older than
:data:`OVERVIEW_TTL` seconds. The page says when they were computed. The CRLs' status is
one row per CA and is read for each view (:func:`crl_statuses`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, and_, case, func, or_, select

from iotsec.app.console.cache import Held, held_or_refreshing, value_now
from iotsec.app.runtime import Runtime
from iotsec.store import models as m
from iotsec.store.db import reading
from iotsec.timeutil import from_ts, ts

__all__ = ["EXPIRY_WEEKS", "OVERVIEW_TTL", "AuditSummary", "BrokerSync", "CrlStatus", "Overview",
           "OverviewCodec", "crl_statuses", "overview", "overview_now"]

OVERVIEW_TTL = 30.0
EXPIRY_WEEKS = 26
_WEEK = 7 * 86400


@dataclass(frozen=True, slots=True)
class CrlStatus:
    authority_id: int
    role: str
    number: int
    this_update: datetime
    next_update: datetime
    stale: bool


@dataclass(frozen=True, slots=True)
class BrokerSync:
    at: datetime
    outcome: str
    generation: int | None


@dataclass(frozen=True, slots=True)
class AuditSummary:
    """The newest fleet audit's findings by severity (from its ``audit.run`` event)."""

    at: datetime
    by_severity: dict[str, int]


@dataclass(frozen=True, slots=True)
class Overview:
    computed_at: datetime
    devices: dict[str, int]
    certificates: dict[str, int]
    #: Unrevoked certificates expiring in each of the next :data:`EXPIRY_WEEKS` weeks.
    expiring_per_week: list[int]
    crls: list[CrlStatus]
    broker: BrokerSync | None
    alerts: dict[str, int]
    audit: AuditSummary | None = None


def _crl_statuses(conn: Connection) -> list[CrlStatus]:
    au = m.authorities.c
    return [CrlStatus(r.authority_id, r.role, int(r.number), from_ts(r.this_update),
                      from_ts(r.next_update), bool(r.stale)) for r in conn.execute(
        select(m.crls.c.authority_id, m.crls.c.number, m.crls.c.this_update,
               m.crls.c.next_update, m.crls.c.stale, au.role)
        .join(m.authorities, au.id == m.crls.c.authority_id)
        .order_by(m.crls.c.authority_id))]


def crl_statuses(rt: Runtime) -> list[CrlStatus]:
    """Each CA's published CRL: number, this and next update, whether it is to rebuild."""
    with reading(rt.engine) as conn:
        return _crl_statuses(conn)


def _compute(rt: Runtime) -> Overview:
    moment = rt.now().replace(microsecond=0)
    now = ts(moment)
    d, c, a = m.devices.c, m.certificates.c, m.alerts.c
    live = or_(c.revoked_at.is_(None), c.revoked_at > now)
    with reading(rt.engine) as conn:
        devices = {r.state: int(r.n) for r in conn.execute(
            select(d.state, func.count().label("n")).group_by(d.state))}
        kind = case((c.revoked_at <= now, "revoked"), (c.not_after <= now, "expired"),
                    else_="valid")
        certificates = {r.k: int(r.n) for r in conn.execute(
            select(kind.label("k"), func.count().label("n")).where(c.kind == "device")
            .group_by(kind))}
        week = (c.not_after - now) // _WEEK
        horizon = now + EXPIRY_WEEKS * _WEEK
        weeks = [0] * EXPIRY_WEEKS
        for r in conn.execute(select(week.label("w"), func.count().label("n"))
                              .where(and_(c.not_after > now, c.not_after <= horizon, live))
                              .group_by(week)):
            index = int(r.w)
            if 0 <= index < EXPIRY_WEEKS:
                weeks[index] += int(r.n)
        crls = _crl_statuses(conn)
        e = m.events.c
        sync = conn.execute(select(e.at, e.outcome, e.detail).where(e.kind == "broker.sync")
                            .order_by(e.at.desc()).limit(1)).first()
        audited = conn.execute(select(e.at, e.detail).where(e.kind == "audit.run")
                               .order_by(e.at.desc()).limit(1)).first()
        alerts = {r.severity: int(r.n) for r in conn.execute(
            select(a.severity, func.count().label("n")).where(a.state != "resolved")
            .group_by(a.severity))}
    broker = None
    if sync is not None:
        generation = json.loads(sync.detail or "{}").get("generation")
        broker = BrokerSync(from_ts(sync.at), sync.outcome,
                            generation if isinstance(generation, int) else None)
    audit = None
    if audited is not None:
        counts = json.loads(audited.detail or "{}").get("by_severity")
        audit = AuditSummary(from_ts(audited.at), {
            str(k): int(v) for k, v in counts.items() if isinstance(v, int)}
            if isinstance(counts, dict) else {})
    return Overview(moment, devices, certificates, weeks, crls, broker, alerts, audit)


class OverviewCodec:
    """The overview as it is kept in the store: JSON, times as Unix seconds."""

    def encode(self, value: Overview) -> str:
        return json.dumps({
            "computed_at": ts(value.computed_at), "devices": value.devices,
            "certificates": value.certificates, "expiring_per_week": value.expiring_per_week,
            "crls": [[c.authority_id, c.role, c.number, ts(c.this_update), ts(c.next_update),
                      c.stale] for c in value.crls],
            "broker": None if value.broker is None else [
                ts(value.broker.at), value.broker.outcome, value.broker.generation],
            "alerts": value.alerts,
            "audit": None if value.audit is None else [ts(value.audit.at),
                                                       value.audit.by_severity],
        }, separators=(",", ":"))

    def decode(self, text: str) -> Overview:
        doc = json.loads(text)
        if not isinstance(doc, dict):
            raise ValueError("not an overview")

        def counts(value: object) -> dict[str, int]:
            if not isinstance(value, dict):
                raise ValueError("counts must be an object")
            return {str(k): int(v) for k, v in value.items()}

        weeks = [int(n) for n in doc["expiring_per_week"]]
        crls = [CrlStatus(int(a), str(role), int(n), from_ts(int(t)), from_ts(int(u)), bool(st))
                for a, role, n, t, u, st in doc["crls"]]
        broker = doc["broker"]
        audit = doc["audit"]
        return Overview(
            from_ts(int(doc["computed_at"])), counts(doc["devices"]),
            counts(doc["certificates"]), weeks, crls,
            None if broker is None else BrokerSync(
                from_ts(int(broker[0])), str(broker[1]),
                broker[2] if isinstance(broker[2], int) else None),
            counts(doc["alerts"]),
            None if audit is None else AuditSummary(from_ts(int(audit[0])), counts(audit[1])))


_CODEC = OverviewCodec()


def overview(rt: Runtime, *, fresh: bool = False) -> Held[Overview] | None:
    """The newest overview held or stored, with its age (``None`` while a first one is
    computed); one older than :data:`OVERVIEW_TTL` seconds, or ``fresh`` (at most every few
    seconds), has a newer one computed in the background. Never waits for the aggregates."""
    return held_or_refreshing(rt, "overview", OVERVIEW_TTL, lambda: _compute(rt),
                              fresh=fresh, stored=_CODEC)


def overview_now(rt: Runtime, *, fresh: bool = False) -> Overview:
    """The overview, waiting for it if none is held yet (or, ``fresh``, for a newer one)."""
    return value_now(rt, "overview", OVERVIEW_TTL, lambda: _compute(rt), fresh=fresh,
                     stored=_CODEC)
