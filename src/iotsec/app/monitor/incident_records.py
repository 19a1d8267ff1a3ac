"""Incident records: opened by a quarantine, closed when its last device is released."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, insert, select

from iotsec.app.runtime import Runtime
from iotsec.errors import InvalidInputError, NotFoundError
from iotsec.store import models as m
from iotsec.store.db import reading
from iotsec.timeutil import from_ts

__all__ = ["Incident", "get_incident", "list_incidents", "open_incident", "parse_incident_id"]

_ID = re.compile(r"[0-9a-f]{16}")


@dataclass(frozen=True, slots=True)
class Incident:
    id: str
    kind: str
    state: str  # open | closed
    actor: str
    reason: str
    selector: dict[str, Any]
    devices: int
    revoked: int
    alert_id: int | None
    opened_at: datetime
    closed_at: datetime | None
    closed_by: str | None
    #: Devices still held in quarantine by it (``get_incident`` only).
    held: tuple[str, ...] = ()


def parse_incident_id(text: str) -> str:
    if not isinstance(text, str) or not _ID.fullmatch(text):
        raise InvalidInputError(f"{text[:40]!r} is not an incident id",
                                hint="incident ids are 16 hex digits (see 'iotsec incident "
                                "list')")
    return text


def open_incident(conn: Connection, *, incident: str, actor: str, reason: str,
                  selector: dict[str, Any], devices: int, revoked: int, alert_id: int | None,
                  now: int) -> None:
    """Within the caller's transaction: record an open quarantine incident."""
    conn.execute(insert(m.incidents).values(
        id=incident, kind="quarantine", state="open", actor=actor[:160], reason=reason,
        selector=json.dumps(selector, sort_keys=True), devices=devices, revoked=revoked,
        alert_id=alert_id, opened_at=now))


def _incident(row: Row[Any], held: tuple[str, ...] = ()) -> Incident:
    return Incident(id=row.id, kind=row.kind, state=row.state, actor=row.actor,
                    reason=row.reason, selector=json.loads(row.selector), devices=row.devices,
                    revoked=row.revoked, alert_id=row.alert_id,
                    opened_at=from_ts(row.opened_at),
                    closed_at=from_ts(row.closed_at) if row.closed_at is not None else None,
                    closed_by=row.closed_by, held=held)


def list_incidents(rt: Runtime, *, state: str | None = None, limit: int = 100
                   ) -> list[Incident]:
    """Incidents, the most recently opened first."""
    if state is not None and state not in ("open", "closed"):
        raise InvalidInputError(f"unknown incident state {state[:20]!r}",
                                hint="choose open or closed")
    if not 1 <= limit <= 10_000:
        raise InvalidInputError("limit must be between 1 and 10000")
    i = m.incidents.c
    query = select(m.incidents).order_by(i.opened_at.desc(), i.id).limit(limit)
    if state is not None:
        query = query.where(i.state == state)
    with reading(rt.engine) as conn:
        return [_incident(r) for r in conn.execute(query)]


def get_incident(rt: Runtime, incident_id: str) -> Incident:
    key = parse_incident_id(incident_id)
    with reading(rt.engine) as conn:
        row = conn.execute(select(m.incidents).where(m.incidents.c.id == key)).first()
        if row is None:
            raise NotFoundError(f"no incident {key}", hint="see 'iotsec incident list'")
        held = tuple(conn.execute(select(m.quarantines.c.device_id).where(
            m.quarantines.c.incident_id == key).order_by(m.quarantines.c.device_id)).scalars())
    return _incident(row, held)
