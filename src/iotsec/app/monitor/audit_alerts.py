"""Audit findings as alerts: the fleet audit (``iotsec audit``) run on a schedule by the
process that runs the scheduled checks, every ``IOTSEC_ALERT_AUDIT_HOURS``, each finding at
or above ``IOTSEC_ALERT_AUDIT_SEVERITY`` raised as an alert (rule: the audit rule, subject:
where it was found), and the alerts of findings that are gone resolved.

Whether a run is due is read from the store (the newest ``audit.run`` event of this
scheduler), so several serving processes, restarts and lease take-overs agree on it."""

from __future__ import annotations

from sqlalchemy import Connection, func, select, update

from iotsec.app.audit import run_audit
from iotsec.app.events import Event
from iotsec.app.monitor.alerts import raise_alert
from iotsec.app.runtime import Runtime
from iotsec.eventlog.alerts import AlertState, NewAlert, fingerprint
from iotsec.findings.model import Finding, Severity
from iotsec.store import models as m
from iotsec.store.db import reading, transaction
from iotsec.timeutil import from_ts, ts

__all__ = ["AUDIT_ACTOR", "AuditAlerts", "audit_alerts_due", "run_audit_alerts"]

#: The actor of the scheduled audit's ``audit.run`` events and of the alerts it resolves.
AUDIT_ACTOR = "alert-scheduler"
_PREFIX = "audit/"


class AuditAlerts:
    """What one scheduled audit did: findings raised as alerts (new or again), resolved."""

    def __init__(self, raised: list[int], repeated: list[int], resolved: list[int]) -> None:
        self.raised, self.repeated, self.resolved = raised, repeated, resolved


def audit_alerts_due(rt: Runtime) -> bool:
    hours = rt.settings.alert_audit_hours
    if hours <= 0:
        return False
    e = m.events.c
    with reading(rt.engine) as conn:
        last = conn.execute(select(func.max(e.at)).where(
            e.kind == "audit.run", e.actor == AUDIT_ACTOR)).scalar_one()
    return last is None or ts(rt.now()) - int(last) >= hours * 3600


def _alert(finding: Finding) -> NewAlert:
    evidence: dict[str, object] = {"finding": finding.fingerprint}
    evidence.update((k, v) for k, v in finding.evidence[:20])
    return NewAlert(
        rule=finding.rule_id[:64], severity=finding.severity,
        subject=finding.location.uri[:256], summary=finding.message[:2000],
        suggested=finding.fix or f"see 'iotsec audit' for {finding.rule_id}",
        evidence=evidence)


def _resolve_gone(rt: Runtime, conn: Connection, found: list[NewAlert], now: int
                  ) -> list[int]:
    keep = {fingerprint(n.rule, n.subject) for n in found}
    a = m.alerts.c
    gone = [r.id for r in conn.execute(select(a.id, a.fingerprint).where(
        a.rule.like(f"{_PREFIX}%"), a.state != AlertState.RESOLVED.value).with_for_update())
        if r.fingerprint not in keep]
    if gone:
        conn.execute(update(m.alerts).where(a.id.in_(gone)).values(
            state=AlertState.RESOLVED.value, resolved_by=AUDIT_ACTOR, updated_at=now))
        for alert_id in gone:
            rt.events.record_in(conn, Event(from_ts(now), "alert.resolved", "success",
                                            actor=AUDIT_ACTOR, subject=str(alert_id),
                                            detail={"reason": "the audit no longer finds it"}))
    return gone


def run_audit_alerts(rt: Runtime) -> AuditAlerts:
    """Audit the fleet now; raise its findings at or above the configured severity."""
    result = run_audit(rt, broker_dir=rt.settings.broker_dir, actor=AUDIT_ACTOR)
    floor = Severity(rt.settings.alert_audit_severity)
    found = [_alert(f) for f in result.findings if f.severity >= floor]
    raised: list[int] = []
    repeated: list[int] = []
    with transaction(rt.engine) as conn:
        for new in found:
            alert_id, fresh = raise_alert(rt, conn, new, source="scheduled-audit")
            (raised if fresh else repeated).append(alert_id)
        resolved = _resolve_gone(rt, conn, found, ts(rt.now()))
    return AuditAlerts(raised, repeated, resolved)
