"""Incident response over the API: quarantine and release (operator scope), and the
incidents (auditor scope). The same services as ``iotsec incident``."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query
from pydantic import Field

from iotsec.api.deps import AuditorDep, OperatorDep, RuntimeDep
from iotsec.api.schemas import Strict
from iotsec.app.monitor.incident_records import get_incident, list_incidents
from iotsec.app.monitor.quarantine import MAX_REASON, quarantine_devices, release_devices
from iotsec.app.monitor.selection import MAX_SELECTED, MAX_TERMS, Selector
from iotsec.app.wire.incidents import IncidentOut, QuarantineOut, ReleaseOut

__all__ = ["QuarantineIn", "ReleaseIn", "incident", "incidents", "quarantine", "release",
           "router"]

router = APIRouter()


class QuarantineIn(Strict):
    """Which devices to quarantine (ids, or a group and/or query terms) and how."""

    devices: list[str] = Field(default_factory=list, max_length=MAX_SELECTED)
    group: str | None = Field(default=None, max_length=128)
    query: list[str] = Field(default_factory=list, max_length=MAX_TERMS)
    revoke: bool = False
    reason: str = Field(default="", max_length=MAX_REASON)
    dry_run: bool = False
    confirm_count: int | None = Field(default=None, ge=0, le=MAX_SELECTED)


class ReleaseIn(Strict):
    """The devices to release, or every device an incident holds."""

    devices: list[str] = Field(default_factory=list, max_length=MAX_SELECTED)
    incident: str | None = Field(default=None, max_length=16)
    reason: str = Field(default="", max_length=MAX_REASON)


@router.post("/v1/incidents/quarantine")
def quarantine(body: QuarantineIn, rt: RuntimeDep, caller: OperatorDep) -> QuarantineOut:
    """Quarantine devices (as ``iotsec incident quarantine``): refused when the selection is
    empty, restricts nothing, or is larger than ``IOTSEC_QUARANTINE_MAX_DEVICES`` without
    ``confirm_count``; ``dry_run`` changes nothing."""
    selector = Selector.parse(body.devices, body.group, body.query)
    return QuarantineOut.from_domain(quarantine_devices(
        rt, selector, revoke=body.revoke, reason=body.reason, actor=caller.name,
        dry_run=body.dry_run, confirm_count=body.confirm_count))


@router.post("/v1/incidents/release")
def release(body: ReleaseIn, rt: RuntimeDep, caller: OperatorDep) -> ReleaseOut:
    """Return quarantined devices to the state each had (as ``iotsec incident release``)."""
    return ReleaseOut.from_domain(release_devices(rt, body.devices, incident=body.incident,
                                                  actor=caller.name, reason=body.reason))


@router.get("/v1/incidents")
def incidents(rt: RuntimeDep, _: AuditorDep,
              state: Annotated[Literal["open", "closed"] | None, Query()] = None,
              limit: Annotated[int, Query(ge=1, le=10_000)] = 100) -> list[IncidentOut]:
    """Incidents, the most recently opened first."""
    return [IncidentOut.from_domain(i) for i in list_incidents(rt, state=state, limit=limit)]


@router.get("/v1/incidents/{incident_id}")
def incident(incident_id: Annotated[str, Path(max_length=16)], rt: RuntimeDep,
             _: AuditorDep) -> IncidentOut:
    """One incident, with the devices it still holds."""
    return IncidentOut.from_domain(get_incident(rt, incident_id))
