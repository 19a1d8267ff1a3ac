"""Mitigation actions of detection rules, and of audit findings the rule file binds in its
``audit`` section (run when the scheduled audit raises them): notify (the alert itself),
disable, revoke and quarantine the device, each recorded on the event chain as
``detect.action`` with the actor ``detector:<rule>`` (``detector:audit/<finding>`` for a
finding; the change itself is recorded by the service that makes it, under the same actor).

Two guards keep an attacker from using detection to switch security off:

- rules whose evidence can be produced in a device's name by someone else (failed
  authentications, client-id take-overs, disconnects, silence) may only notify: the rule
  parser refuses anything else (:mod:`iotsec.detect.rules`);
- at most ``max_automatic_actions`` automatic actions run per hour across the fleet;
  beyond it an action is recorded as refused and a ``detector-cap`` alert is raised, so
  that a flood of detections cannot disable the fleet one device at a time.

A rule with ``dry_run: true`` records what it would have done (outcome ``dry-run``)
without doing it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import func, select

from iotsec.app.detect.follow import Raised
from iotsec.app.events import Event
from iotsec.app.identity.lifecycle import change_state
from iotsec.app.monitor.alerts import get_alert, raise_alert
from iotsec.app.monitor.quarantine import quarantine_devices
from iotsec.app.monitor.selection import Selector
from iotsec.app.pki.revocation import revoke_device
from iotsec.app.runtime import Runtime
from iotsec.detect.rules import Action, RuleSet
from iotsec.errors import IotsecError
from iotsec.eventlog.alerts import NewAlert
from iotsec.findings.model import Severity
from iotsec.identity.registry import DeviceState
from iotsec.pki.crl import RevocationReason
from iotsec.store import models as m
from iotsec.store.db import reading, transaction
from iotsec.timeutil import ts

__all__ = ["ACTIONS", "CAP_RULE", "ActionOutcome", "disable", "mitigate", "mitigate_findings",
           "notify", "quarantine", "revoke"]

CAP_RULE = "detector-cap"
_WINDOW = 3600


@dataclass(frozen=True, slots=True)
class ActionOutcome:
    action: Action
    outcome: str  # success | failure | dry-run | refused | none
    detail: str


def notify(rt: Runtime, device: str, actor: str) -> str:
    """The alert is the notification (delivered to the configured sinks)."""
    return "alert raised"


def disable(rt: Runtime, device: str, actor: str) -> str:
    change_state(rt, device, DeviceState.DISABLED, actor=actor)
    return "device disabled"


def revoke(rt: Runtime, device: str, actor: str) -> str:
    serials = revoke_device(rt, device, RevocationReason.keyCompromise, actor=actor)
    return f"{len(serials)} certificate(s) revoked"


def quarantine(rt: Runtime, device: str, actor: str) -> str:
    """Quarantine the device as ``iotsec incident quarantine`` does: one incident, the
    broker synced and its live session dropped where ``IOTSEC_BROKER_DIR`` is set."""
    result = quarantine_devices(rt, Selector.parse([device]), actor=actor, source=actor,
                                reason=f"automatic mitigation by {actor}")
    return f"device quarantined (incident {result.incident})"


ACTIONS: dict[Action, Callable[[Runtime, str, str], str]] = {
    Action.NOTIFY: notify, Action.DISABLE: disable, Action.REVOKE: revoke,
    Action.QUARANTINE: quarantine,
}


def _recent_actions(rt: Runtime, now: int) -> int:
    e = m.events.c
    with reading(rt.engine) as conn:
        return int(conn.execute(select(func.count()).where(
            e.kind == "detect.action", e.outcome == "success",
            e.at >= now - _WINDOW)).scalar_one())


def mitigate(rt: Runtime, raised: Raised, rules: RuleSet) -> ActionOutcome:
    """Run the action of a new alert's rule on its device (see the module docstring)."""
    rule = raised.rule
    return _act(rt, name=rule.name, action=rule.action, dry_run=rule.dry_run,
                alert_id=raised.alert_id, device=raised.device, subject=raised.subject,
                cap=rules.max_automatic_actions)


def _finding_device(subject: str) -> str | None:
    # An audit finding's location: device:<id>, or device:<id>#key:<kid> for a device key.
    if not subject.startswith("device:"):
        return None
    return subject.removeprefix("device:").split("#", 1)[0] or None


def mitigate_findings(rt: Runtime, alert_ids: list[int], rules: RuleSet
                      ) -> list[ActionOutcome]:
    """Run the actions bound to audit findings (the rule file's ``audit`` section) for the
    new alerts of a scheduled audit, on the device each finding names."""
    done = []
    for alert_id in alert_ids:
        alert = get_alert(rt, alert_id)
        bound = rules.for_finding(alert.rule)
        if bound is None or not bound.action.automatic:
            continue
        done.append(_act(rt, name=bound.finding, action=bound.action, dry_run=bound.dry_run,
                         alert_id=alert_id, device=_finding_device(alert.subject),
                         subject=alert.subject, cap=rules.max_automatic_actions))
    return done


def _act(rt: Runtime, *, name: str, action: Action, dry_run: bool, alert_id: int,
         device: str | None, subject: str, cap: int) -> ActionOutcome:
    if not action.automatic:
        return ActionOutcome(action, "none", "alert raised")
    actor = f"detector:{name}"
    moment = rt.now()
    outcome, detail = "failure", "the rule's subject is not a device"
    if device is not None:
        if dry_run:
            outcome, detail = "dry-run", f"would {action.value} the device"
        elif _recent_actions(rt, ts(moment)) >= cap:
            outcome = "refused"
            detail = (f"{cap} automatic actions ran within the last "
                      "hour: the cap is reached")
        else:
            try:
                detail = ACTIONS[action](rt, device, actor)
                outcome = "success"
            except IotsecError as exc:
                outcome, detail = "failure", str(exc)[:200]
    with transaction(rt.engine) as conn:
        rt.events.record_in(conn, Event(moment, "detect.action", outcome, actor=actor,
                                        subject=device or subject, detail={
                                            "action": action.value, "alert": alert_id,
                                            "rule": name, "detail": detail}))
        if outcome == "refused":
            raise_alert(rt, conn, NewAlert(
                rule=CAP_RULE, severity=Severity.HIGH, subject="fleet",
                summary="detection asked for more automatic actions than the hourly cap "
                "allows; the rest only alert",
                suggested="look at the open detection alerts: many at once may be an "
                "attack on the detector itself; raise max_automatic_actions only if they "
                "are genuine",
                evidence={"rule": name, "device": device, "alert": alert_id,
                          "cap": cap}), source="detector")
    return ActionOutcome(action, outcome, detail)
