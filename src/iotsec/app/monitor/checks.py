"""Scheduled checks that raise alerts from iotsec's own state, and resolve them when the
condition is gone: device certificates expiring soon, a CA expiring, a CRL near or past its
nextUpdate, an update campaign paused (and, every ``IOTSEC_ALERT_AUDIT_HOURS``, the fleet
audit: :mod:`iotsec.app.monitor.audit_alerts`). ``iotsec serve`` runs them every
``IOTSEC_ALERT_TICK_SECONDS`` together with the alert deliveries; ``iotsec alerts check``
runs them once."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import Connection, func, or_, select, update

from iotsec.app.events import Event
from iotsec.app.monitor.alerts import raise_alert
from iotsec.app.monitor.audit_alerts import audit_alerts_due, run_audit_alerts
from iotsec.app.monitor.delivery import deliver_due
from iotsec.app.runtime import Runtime
from iotsec.eventlog.alerts import AlertState, NewAlert, fingerprint
from iotsec.findings.model import Severity
from iotsec.firmware.campaign import CampaignState
from iotsec.store import models as m
from iotsec.store.db import transaction
from iotsec.timeutil import from_ts, ts

__all__ = ["CHECK_RULES", "CheckResult", "alert_loop", "run_checks"]

log = logging.getLogger("iotsec.alerts")
#: The rules the scheduled checks own (they resolve their alerts when the condition ends).
CHECK_RULES = ("cert.expiring", "ca.expiring", "crl.stale", "campaign.paused")
_CRL_MARGIN = 6 * 3600
_OFFLINE_CRL_MARGIN = 14 * 86400


@dataclass(frozen=True, slots=True)
class CheckResult:
    raised: list[int]  # new alerts
    repeated: list[int]  # alerts that were open already
    resolved: list[int]  # alerts whose condition is over


def _certificates(rt: Runtime, conn: Connection, now: int) -> list[NewAlert]:
    c = m.certificates.c
    within = rt.settings.alert_expiry_days * 86400
    due = (c.device_id.is_not(None), c.not_after > now, c.not_after <= now + within,
           or_(c.revoked_at.is_(None), c.revoked_at > now), c.replaced_by.is_(None))
    count = int(conn.execute(select(func.count()).where(*due)).scalar_one())
    if not count:
        return []
    first = conn.execute(select(c.serial, c.device_id, c.not_after).where(*due)
                         .order_by(c.not_after).limit(50)).all()
    soonest = first[0].not_after
    days = (soonest - now) / 86400
    return [NewAlert(
        rule="cert.expiring", severity=Severity.HIGH if days <= 7 else Severity.MEDIUM,
        subject="fleet",
        summary=f"{count} device certificate(s) expire within "
        f"{rt.settings.alert_expiry_days} days; the first in {days:.1f} days",
        suggested="devices running 'iotsec device-agent' renew by themselves: check those "
        "that did not ('iotsec cert list --expiring-within 30d'), renew them ('iotsec cert "
        "renew') or find why they are offline",
        evidence={"count": count, "soonest": from_ts(soonest).isoformat(),
                  "first": [{"serial": r.serial, "device": r.device_id,
                             "not_after": from_ts(r.not_after).isoformat()} for r in first]})]


def _authorities(rt: Runtime, conn: Connection, now: int) -> list[NewAlert]:
    a = m.authorities.c
    within = 3 * rt.settings.alert_expiry_days * 86400
    out = []
    for r in conn.execute(select(a.id, a.role, a.subject, a.not_after).where(
            a.active.is_(True), a.not_after <= now + within)):
        days = (r.not_after - now) / 86400
        out.append(NewAlert(
            rule="ca.expiring", severity=Severity.CRITICAL if days <= 30 else Severity.HIGH,
            subject=r.subject,
            summary=f"the {r.role} CA {r.subject} expires in {days:.0f} days",
            suggested="rotate it before then: certificates cannot outlive their CA",
            evidence={"authority": r.id, "role": r.role,
                      "not_after": from_ts(r.not_after).isoformat()}))
    return out


def _crls(conn: Connection, now: int) -> list[NewAlert]:
    """CRLs near or past nextUpdate. A CA whose key is online (the issuing CAs) has its CRL
    renewed by serve, so 6 hours' warning is enough; an offline root's is signed in a
    ceremony on another machine, so it is warned of 14 days ahead."""
    a, crl = m.authorities.c, m.crls.c
    out = []
    for r in conn.execute(select(a.subject, a.role, a.key_offline, crl.next_update, crl.number)
                          .join(m.authorities, a.id == crl.authority_id)
                          .where(a.not_after > now, crl.der.is_not(None),
                                 crl.next_update <= now + _OFFLINE_CRL_MARGIN)):
        offline = bool(r.key_offline)
        if not offline and r.next_update > now + _CRL_MARGIN:
            continue
        past = r.next_update <= now
        within = "14 days" if offline else "6 hours"
        suggested = ("sign the next one on the offline machine ('iotsec ca sign-crl --root-key "
                     "FILE --root-cert FILE -o root.crl') and publish it here ('iotsec ca "
                     "import-crl root.crl')" if offline else
                     "publish a new one ('iotsec crl --ca ...'); 'iotsec serve' with "
                     "IOTSEC_BROKER_DIR refreshes the broker's: check that it runs")
        out.append(NewAlert(
            rule="crl.stale", severity=Severity.CRITICAL if past else Severity.HIGH,
            subject=r.subject,
            summary=(f"the CRL of {r.subject} is past its nextUpdate" if past else
                     f"the CRL of {r.subject} reaches its nextUpdate within {within}"),
            suggested=suggested,
            evidence={"number": r.number, "next_update": from_ts(r.next_update).isoformat(),
                      "key_offline": offline}))
    return out


def _campaigns(conn: Connection) -> list[NewAlert]:
    c = m.ota_campaigns.c
    return [NewAlert(
        rule="campaign.paused", severity=Severity.MEDIUM, subject=f"campaign {r.id}",
        summary=f"update campaign {r.id} ({r.name}) is paused",
        suggested=f"look at its failures ('iotsec ota campaign status {r.id}'), then "
        "resume or abort it",
        evidence={"campaign": r.id}) for r in conn.execute(
            select(c.id, c.name).where(c.state == CampaignState.PAUSED.value))]


def _resolve_gone(rt: Runtime, conn: Connection, current: Iterable[NewAlert], now: int
                  ) -> list[int]:
    keep = {fingerprint(n.rule, n.subject) for n in current}
    a = m.alerts.c
    gone = [r.id for r in conn.execute(select(a.id, a.fingerprint).where(
        a.rule.in_(CHECK_RULES), a.state != AlertState.RESOLVED.value).with_for_update())
        if r.fingerprint not in keep]
    if gone:
        conn.execute(update(m.alerts).where(a.id.in_(gone)).values(
            state=AlertState.RESOLVED.value, resolved_by="iotsec", updated_at=now))
        for alert_id in gone:
            rt.events.record_in(conn, Event(from_ts(now), "alert.resolved", "success",
                                            actor="iotsec", subject=str(alert_id),
                                            detail={"reason": "the condition is over"}))
    return gone


def run_checks(rt: Runtime) -> CheckResult:
    """Run every scheduled check once, in one transaction."""
    now = ts(rt.now())
    raised: list[int] = []
    repeated: list[int] = []
    with transaction(rt.engine) as conn:
        found = (_certificates(rt, conn, now) + _authorities(rt, conn, now) + _crls(conn, now)
                 + _campaigns(conn))
        for new in found:
            alert_id, fresh = raise_alert(rt, conn, new, source="scheduled-check")
            (raised if fresh else repeated).append(alert_id)
        resolved = _resolve_gone(rt, conn, found, now)
    return CheckResult(raised, repeated, resolved)


def alert_loop(rt: Runtime, stop: threading.Event) -> None:
    """For ``iotsec serve``: the checks and the due deliveries every
    ``alert_tick_seconds`` (deliveries also between checks, every few seconds)."""
    interval = rt.settings.alert_tick_seconds
    if interval <= 0:
        return
    step = min(interval, 5.0)
    waited = interval  # check at once
    while True:
        try:
            if waited >= interval:
                run_checks(rt)
                waited = 0.0
                if audit_alerts_due(rt):
                    run_audit_alerts(rt)
            deliver_due(rt)
        except Exception:  # keep going; the failure is in the log
            log.exception("scheduled alert checks or deliveries failed")
        if stop.wait(step):
            return
        waited += step
