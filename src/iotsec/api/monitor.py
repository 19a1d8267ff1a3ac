"""``GET /metrics`` (Prometheus, auditor scope), ``GET /v1/events/verify`` (auditor),
``POST /v1/events/checkpoint`` (admin), and the alerts (``GET /v1/alerts``, auditor;
acknowledging and resolving, operator)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from iotsec.api.deps import AdminDep, AuditorDep, OperatorDep, RuntimeDep
from iotsec.app.monitor.alerts import get_alert, list_alerts, set_state
from iotsec.app.monitor.chain import checkpoint, verify
from iotsec.app.monitor.incidents import MAX_TIMELINE, timeline
from iotsec.app.monitor.metrics import CONTENT_TYPE, render
from iotsec.app.wire.monitor import AlertOut, ChainReportOut, CheckpointOut, TimelineEntryOut
from iotsec.eventlog.alerts import AlertState
from iotsec.timeutil import parse_moment

__all__ = [
    "acknowledge_alert", "alert", "alerts", "device_timeline", "metrics", "resolve_alert",
    "router", "sign_checkpoint", "verify_events"
]
AlertId = Annotated[int, Path(ge=1, le=2**31 - 1)]

router = APIRouter()


@router.get("/metrics", response_class=Response, responses={200: {
    "content": {CONTENT_TYPE.split(";")[0]: {}},
    "description": "Prometheus text exposition format 0.0.4"}})
def metrics(rt: RuntimeDep, _: AuditorDep) -> Response:
    """Counters of this process and the state of the store, for Prometheus (send an auditor
    token as a bearer token: ``authorization`` in the scrape configuration)."""
    return Response(render(rt), media_type=CONTENT_TYPE)


@router.get("/v1/events/verify")
def verify_events(rt: RuntimeDep, _: AuditorDep) -> ChainReportOut:
    """Verify the event chain and its signed checkpoints (as ``iotsec events verify``)."""
    return ChainReportOut.from_domain(verify(rt))


@router.post("/v1/events/checkpoint")
def sign_checkpoint(rt: RuntimeDep, _: AdminDep) -> CheckpointOut:
    """Sign a checkpoint of the event chain now (as ``iotsec events checkpoint``)."""
    result = checkpoint(rt)
    return CheckpointOut(seq=result.seq, hash=result.hash, made=result.made)


@router.get("/v1/alerts")
def alerts(rt: RuntimeDep, _: AuditorDep,
           state: Annotated[AlertState | None, Query()] = None,
           limit: Annotated[int, Query(ge=1, le=10_000)] = 100) -> list[AlertOut]:
    """Alerts, the most recently updated first."""
    return [AlertOut.from_domain(a) for a in list_alerts(rt, state=state, limit=limit)]


@router.get("/v1/alerts/{alert_id}")
def alert(alert_id: AlertId, rt: RuntimeDep, _: AuditorDep) -> AlertOut:
    return AlertOut.from_domain(get_alert(rt, alert_id))


@router.post("/v1/alerts/{alert_id}/ack")
def acknowledge_alert(alert_id: AlertId, rt: RuntimeDep, caller: OperatorDep) -> AlertOut:
    return AlertOut.from_domain(set_state(rt, alert_id, AlertState.ACKNOWLEDGED,
                                          actor=caller.name))


@router.post("/v1/alerts/{alert_id}/resolve")
def resolve_alert(alert_id: AlertId, rt: RuntimeDep, caller: OperatorDep) -> AlertOut:
    return AlertOut.from_domain(set_state(rt, alert_id, AlertState.RESOLVED,
                                          actor=caller.name))


@router.get("/v1/devices/{device_id}/timeline")
def device_timeline(device_id: Annotated[str, Path(max_length=128)], rt: RuntimeDep,
                    _: AuditorDep,
                    since: Annotated[str | None, Query(max_length=40)] = None,
                    until: Annotated[str | None, Query(max_length=40)] = None,
                    limit: Annotated[int, Query(ge=1, le=MAX_TIMELINE)] = 10_000
                    ) -> list[TimelineEntryOut]:
    """The device's events and alerts, oldest first (as ``iotsec incident timeline``)."""
    rt.events.flush()
    now = rt.now()
    found = timeline(rt, device_id, since=parse_moment(since, now) if since else None,
                     until=parse_moment(until, now) if until else None, limit=limit)
    return [TimelineEntryOut.from_domain(e) for e in found]
