"""Alerts: raised by detections and scheduled checks, listed, acknowledged and resolved by
operators, and delivered to the configured sinks (:mod:`iotsec.app.monitor.delivery`).

An alert is one per rule and subject while it is not resolved: raising it again counts
(``count``) and refreshes its evidence instead of opening another, so a condition that
persists is one alert, not one per check. Every change is an event of the same
transaction (``alert.raised``, ``alert.acknowledged``, ``alert.resolved``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, insert, select, text, update

from iotsec.app.events import Event
from iotsec.app.runtime import Runtime
from iotsec.errors import InvalidInputError, NotFoundError
from iotsec.eventlog.alerts import AlertState, NewAlert, fingerprint
from iotsec.findings.model import Severity
from iotsec.store import models as m
from iotsec.store.db import reading, transaction
from iotsec.timeutil import from_ts, ts

__all__ = ["Alert", "get_alert", "list_alerts", "raise_alert", "set_state", "sinks"]

_MAX_EVIDENCE = 16_384


@dataclass(frozen=True, slots=True)
class Alert:
    id: int
    rule: str
    severity: Severity
    subject: str
    state: AlertState
    summary: str
    suggested: str
    evidence: dict[str, Any]
    count: int
    created_at: datetime
    updated_at: datetime
    acknowledged_by: str | None
    resolved_by: str | None
    deliveries: dict[str, str]  # sink -> pending | delivered | dead


def sinks(rt: Runtime) -> list[str]:
    """The sinks alerts are delivered to, as the settings configure them."""
    settings = rt.settings
    return [name for name, on in (("webhook", settings.alert_webhook_url),
                                  ("syslog", settings.alert_syslog),
                                  ("email", settings.alert_smtp_url)) if on]


def _evidence(evidence: dict[str, Any]) -> str:
    text = json.dumps(evidence, sort_keys=True, default=str)
    if len(text) > _MAX_EVIDENCE:
        text = json.dumps({"truncated": True, "keys": sorted(evidence)[:50]})
    return text


def raise_alert(rt: Runtime, conn: Connection, new: NewAlert, *, source: str | None = None
                ) -> tuple[int, bool]:
    """Within ``conn``'s transaction: open the alert, or count it again when one with the
    same rule and subject is not resolved. Returns its id and whether it is new; a new one
    is queued for every sink."""
    moment = rt.now()
    now = ts(moment)
    key = fingerprint(new.rule, new.subject)
    a = m.alerts.c
    if conn.dialect.name == "postgresql":
        # Two servers raising the same alert at once: one opens it, the other counts it.
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": int(key[:15], 16)})
    held = conn.execute(select(a.id, a.count).where(
        a.fingerprint == key, a.state != AlertState.RESOLVED.value).with_for_update()).first()
    if held is not None:
        conn.execute(update(m.alerts).where(a.id == held.id).values(
            count=int(held[1]) + 1, updated_at=now, summary=new.summary,
            evidence=_evidence(new.evidence), severity=new.severity.value))
        return int(held.id), False
    alert_id = int(conn.execute(insert(m.alerts).values(
        rule=new.rule[:64], severity=new.severity.value, subject=new.subject[:256],
        fingerprint=key, state=AlertState.OPEN.value, summary=new.summary,
        suggested=new.suggested, evidence=_evidence(new.evidence), count=1, created_at=now,
        updated_at=now).returning(a.id)).scalar_one())
    queued = sinks(rt)
    if queued:
        conn.execute(insert(m.alert_deliveries), [
            {"alert_id": alert_id, "sink": sink, "state": "pending", "attempts": 0,
             "next_attempt_at": now, "updated_at": now} for sink in queued])
    rt.events.record_in(conn, Event(moment, "alert.raised", "success", source=source,
                                    subject=new.subject, detail={
                                        "alert": alert_id, "rule": new.rule,
                                        "severity": new.severity.value}))
    return alert_id, True


def _alert(row: Row[Any], deliveries: dict[str, str]) -> Alert:
    return Alert(id=row.id, rule=row.rule, severity=Severity(row.severity),
                 subject=row.subject, state=AlertState(row.state), summary=row.summary,
                 suggested=row.suggested, evidence=json.loads(row.evidence),
                 count=int(row._mapping["count"]),
                 created_at=from_ts(row.created_at), updated_at=from_ts(row.updated_at),
                 acknowledged_by=row.acknowledged_by, resolved_by=row.resolved_by,
                 deliveries=deliveries)


def _deliveries(conn: Connection, ids: list[int]) -> dict[int, dict[str, str]]:
    out: dict[int, dict[str, str]] = {}
    d = m.alert_deliveries.c
    for i in range(0, len(ids), 500):
        for r in conn.execute(select(d.alert_id, d.sink, d.state)
                              .where(d.alert_id.in_(ids[i:i + 500]))):
            out.setdefault(r.alert_id, {})[r.sink] = r.state
    return out


def list_alerts(rt: Runtime, *, state: AlertState | None = None, limit: int = 100
                ) -> list[Alert]:
    """Newest first (by last update); ``state`` keeps one state."""
    if not 1 <= limit <= 10_000:
        raise InvalidInputError("limit must be between 1 and 10000")
    a = m.alerts.c
    query = select(m.alerts).order_by(a.updated_at.desc(), a.id.desc()).limit(limit)
    if state is not None:
        query = query.where(a.state == state.value)
    with reading(rt.engine) as conn:
        rows = conn.execute(query).all()
        deliveries = _deliveries(conn, [r.id for r in rows])
    return [_alert(r, deliveries.get(r.id, {})) for r in rows]


def get_alert(rt: Runtime, alert_id: int) -> Alert:
    with reading(rt.engine) as conn:
        row = conn.execute(select(m.alerts).where(m.alerts.c.id == alert_id)).first()
        if row is None:
            raise NotFoundError(f"alert {alert_id} does not exist",
                                hint="see 'iotsec alerts list'")
        return _alert(row, _deliveries(conn, [alert_id]).get(alert_id, {}))


def set_state(rt: Runtime, alert_id: int, target: AlertState, *, actor: str | None = None
              ) -> Alert:
    """Acknowledge (someone is on it) or resolve (it is over; final) an alert."""
    if target is AlertState.OPEN:
        raise InvalidInputError("an alert cannot be reopened",
                                hint="a new detection opens a new alert")
    moment = rt.now()
    a = m.alerts.c
    with transaction(rt.engine) as conn:
        row = conn.execute(select(a.state).where(a.id == alert_id).with_for_update()).first()
        if row is None:
            raise NotFoundError(f"alert {alert_id} does not exist",
                                hint="see 'iotsec alerts list'")
        AlertState(row.state).check_transition(target, alert_id)
        values: dict[str, Any] = {"state": target.value, "updated_at": ts(moment)}
        values["acknowledged_by" if target is AlertState.ACKNOWLEDGED
               else "resolved_by"] = actor
        conn.execute(update(m.alerts).where(a.id == alert_id).values(values))
        rt.events.record_in(conn, Event(moment, f"alert.{target.value}", "success",
                                        actor=actor, subject=str(alert_id)))
    return get_alert(rt, alert_id)
