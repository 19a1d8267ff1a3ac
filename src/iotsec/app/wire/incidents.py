"""Wire models of incident response: quarantine, release and incidents (CLI ``--json``
and the API)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from iotsec.app.monitor.incident_records import Incident
from iotsec.app.monitor.quarantine import QuarantineResult, ReleaseResult
from iotsec.app.wire.base import Wire

__all__ = ["IncidentOut", "QuarantineOut", "ReleaseOut", "ReleasedOut", "SkippedOut"]


class SkippedOut(Wire):
    device: str
    reason: str


class QuarantineOut(Wire):
    """What a quarantine did (or, on a dry run, would do)."""

    incident: str | None
    dry_run: bool
    quarantined: list[str]
    skipped: list[SkippedOut]
    revoked: list[str]
    alert_id: int | None
    kicked: list[str]
    broker_generation: int | None

    @classmethod
    def from_domain(cls, r: QuarantineResult) -> QuarantineOut:
        return cls(incident=r.incident, dry_run=r.dry_run, quarantined=list(r.quarantined),
                   skipped=[SkippedOut(device=d, reason=why) for d, why in r.skipped],
                   revoked=list(r.revoked), alert_id=r.alert_id, kicked=list(r.kicked),
                   broker_generation=r.broker_generation)


class ReleasedOut(Wire):
    device: str
    state: str


class ReleaseOut(Wire):
    """The devices released (with the state each returned to) and the incidents closed."""

    released: list[ReleasedOut]
    closed_incidents: list[str]
    kicked: list[str]
    broker_generation: int | None

    @classmethod
    def from_domain(cls, r: ReleaseResult) -> ReleaseOut:
        return cls(released=[ReleasedOut(device=d, state=s) for d, s in r.released],
                   closed_incidents=list(r.closed_incidents), kicked=list(r.kicked),
                   broker_generation=r.broker_generation)


class IncidentOut(Wire):
    """An incident: who opened it, why, on what selection, and what it still holds."""

    id: str
    kind: str
    state: str
    actor: str
    reason: str
    selector: dict[str, Any]
    devices: int
    revoked: int
    alert_id: int | None
    opened_at: datetime
    closed_at: datetime | None
    closed_by: str | None
    held: list[str]

    @classmethod
    def from_domain(cls, i: Incident) -> IncidentOut:
        return cls(id=i.id, kind=i.kind, state=i.state, actor=i.actor, reason=i.reason,
                   selector=i.selector, devices=i.devices, revoked=i.revoked,
                   alert_id=i.alert_id, opened_at=i.opened_at, closed_at=i.closed_at,
                   closed_by=i.closed_by, held=list(i.held))
