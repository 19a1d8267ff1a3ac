"""Incident response on one device: its timeline (events and alerts in order)."""

from __future__ import annotations

import json
from datetime import datetime

from sqlalchemy import or_, select

from iotsec.app.runtime import Runtime
from iotsec.errors import InvalidInputError, NotFoundError
from iotsec.eventlog.timeline import TimelineEntry
from iotsec.identity.registry import parse_device_id
from iotsec.store import models as m
from iotsec.store.db import reading
from iotsec.timeutil import ts

__all__ = ["MAX_TIMELINE", "timeline"]

MAX_TIMELINE = 100_000


def timeline(rt: Runtime, device_id: str, *, since: datetime | None = None,
             until: datetime | None = None, limit: int = 10_000) -> list[TimelineEntry]:
    """The device's events (as actor or subject, and those about its certificates) and its
    alerts, oldest first, at most ``limit`` (the newest are kept)."""
    key = parse_device_id(device_id)
    if not 1 <= limit <= MAX_TIMELINE:
        raise InvalidInputError(f"limit must be between 1 and {MAX_TIMELINE}")
    e, a, c = m.events.c, m.alerts.c, m.certificates.c
    with reading(rt.engine) as conn:
        if conn.execute(select(m.devices.c.id).where(m.devices.c.id == key)).first() is None:
            raise NotFoundError(f"device {key!r} is not registered",
                                hint="check the id with 'iotsec device list'")
        # The serials are read first and given as a list: an IN over a subquery inside the
        # OR would keep PostgreSQL from combining the actor and subject indexes.
        serials = list(conn.execute(select(c.serial).where(c.device_id == key)).scalars())
        events = select(m.events).where(or_(e.actor == key, e.subject.in_([key, *serials])))
        alerts = select(m.alerts).where(a.subject == key)
        if since is not None:
            events = events.where(e.at >= ts(since))
            alerts = alerts.where(a.updated_at >= ts(since))
        if until is not None:
            events = events.where(e.at <= ts(until))
            alerts = alerts.where(a.created_at <= ts(until))
        found = [TimelineEntry(at=r.at, source="event", kind=r.kind, outcome=r.outcome,
                               actor=r.actor, subject=r.subject,
                               summary=f"{r.kind} {r.outcome}",
                               detail=json.loads(r.detail), seq=r.seq, id=r.id)
                 for r in conn.execute(events.order_by(e.at.desc(), e.id.desc())
                                       .limit(limit))]
        found += [TimelineEntry(at=r.created_at, source="alert", kind=f"alert.{r.rule}",
                                outcome=r.severity, actor=None, subject=r.subject,
                                summary=f"{r.summary} ({r.state}, seen {r._mapping['count']} "
                                "time(s))", detail=json.loads(r.evidence), seq=None, id=r.id)
                  for r in conn.execute(alerts.order_by(a.created_at.desc()).limit(limit))]
    found.sort(key=lambda x: (x.at, x.seq or 0))
    return found[-limit:]
