"""``GET /metrics`` (Prometheus, auditor scope), ``GET /v1/events/verify`` (auditor) and
``POST /v1/events/checkpoint`` (admin): monitoring and the tamper-evident event log."""

from __future__ import annotations

from fastapi import APIRouter, Response

from iotsec.api.deps import AdminDep, AuditorDep, RuntimeDep
from iotsec.app.monitor.chain import checkpoint, verify
from iotsec.app.monitor.metrics import CONTENT_TYPE, render
from iotsec.app.wire.monitor import ChainReportOut, CheckpointOut

__all__ = ["metrics", "router", "sign_checkpoint", "verify_events"]

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
