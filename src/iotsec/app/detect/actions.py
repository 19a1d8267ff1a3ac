"""Mitigation actions of detection rules: notify (the alert itself), disable, revoke and
quarantine the device, each recorded on the event chain as ``detect.action`` with the
actor ``detector:<rule>`` (and the change itself by the service that makes it, under the
same actor).

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
from iotsec.app.monitor.alerts import raise_alert
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

__all__ = ["ACTIONS", "CAP_RULE", "ActionOutcome", "disable", "mitigate", "notify",
           "quarantine", "revoke"]

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
    action = rule.action
    if not action.automatic:
        return ActionOutcome(action, "none", "alert raised")
    actor = f"detector:{rule.name}"
    moment = rt.now()
    device = raised.device
    outcome, detail = "failure", "the rule's subject is not a device"
    if device is not None:
        if rule.dry_run:
            outcome, detail = "dry-run", f"would {action.value} the device"
        elif _recent_actions(rt, ts(moment)) >= rules.max_automatic_actions:
            outcome = "refused"
            detail = (f"{rules.max_automatic_actions} automatic actions ran within the last "
                      "hour: the cap is reached")
        else:
            try:
                detail = ACTIONS[action](rt, device, actor)
                outcome = "success"
            except IotsecError as exc:
                outcome, detail = "failure", str(exc)[:200]
    with transaction(rt.engine) as conn:
        rt.events.record_in(conn, Event(moment, "detect.action", outcome, actor=actor,
                                        subject=device or raised.subject, detail={
                                            "action": action.value, "alert": raised.alert_id,
                                            "rule": rule.name, "detail": detail}))
        if outcome == "refused":
            raise_alert(rt, conn, NewAlert(
                rule=CAP_RULE, severity=Severity.HIGH, subject="fleet",
                summary="detection asked for more automatic actions than the hourly cap "
                "allows; the rest only alert",
                suggested="look at the open detection alerts: many at once may be an "
                "attack on the detector itself; raise max_automatic_actions only if they "
                "are genuine",
                evidence={"rule": rule.name, "device": device, "alert": raised.alert_id,
                          "cap": rules.max_automatic_actions}), source="detector")
    return ActionOutcome(action, outcome, detail)
