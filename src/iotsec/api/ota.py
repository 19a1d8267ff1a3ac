"""OTA routes: releases, the update repository and rollout campaigns for operators
(``router``), and the device-facing endpoints the SDK updater uses (``device_router``):
the TUF repository, the device's current assignment, and progress reports.

Device routes authenticate the device itself: ``Authorization: Bearer <device JWT>``,
signed with the device's registered key or the key of its certificate (kid = serial).
Tokens are single-use, so the SDK signs a fresh one per request. Their scope is published
as ``x-required-scope: device``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field

from iotsec.api.deps import AuditorDep, OperatorDep, RuntimeDep
from iotsec.api.schemas import MAX_INT32
from iotsec.app.access.api_tokens import Principal
from iotsec.app.identity import device_tokens
from iotsec.app.ota import anti_rollback, device_updates
from iotsec.app.ota import campaigns as campaign_service
from iotsec.app.ota import releases as release_service
from iotsec.app.ota import repo as ota_repo
from iotsec.app.ota import tick as campaign_tick
from iotsec.app.wire.ota import (
    AssignmentEnvelope,
    AssignmentOut,
    CampaignDeviceOut,
    CampaignOut,
    FirmwareOut,
    ReleaseOut,
    RepoStatusOut,
    WrittenOut,
)
from iotsec.firmware.campaign import CampaignState, DeviceStatus, Plan
from iotsec.firmware.image import ImageVersion
from iotsec.identity.device_tokens import VerifiedToken
from iotsec.timeutil import parse_duration

__all__ = [
    "CampaignIdPath", "CampaignIn", "ControlIn", "DeviceDep", "ReportIn", "abort",
    "authenticate_device", "campaign", "campaign_devices", "campaigns", "create_campaign",
    "device_assignment", "device_firmware", "device_report", "device_router", "pause", "refresh",
    "releases", "repository", "resume", "router", "tick", "tuf_metadata", "tuf_target"
]

router = APIRouter(prefix="/v1/ota")
device_router = APIRouter(prefix="/v1/ota")
_DEVICE_SCOPE: dict[str, Any] = {"x-required-scope": "device"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def authenticate_device(request: Request, rt: RuntimeDep) -> VerifiedToken:
    """The device behind a request: its bearer JWT, verified (and used up), under the
    failed-authentication throttle (429 for a source with too many refused tokens)."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip() if scheme.lower() == "bearer" else ""
    return device_tokens.authenticate(
        rt, token, source=request.client.host if request.client else None,
        action=f"{request.method} {request.url.path}")


DeviceDep = Annotated[VerifiedToken, Depends(authenticate_device)]
CampaignIdPath = Annotated[int, Path(ge=1, le=MAX_INT32, description="the campaign's id")]


# --------------------------------------------------------------------------- bodies


class CampaignIn(_Strict):
    name: str = Field(min_length=1, max_length=128)
    product: str = Field(max_length=64)
    version: str | None = Field(default=None, max_length=32)
    channel: str | None = Field(default=None, max_length=64)
    group: str | None = Field(default=None, max_length=128)
    devices: list[str] | None = Field(default=None, max_length=10_000)
    waves: list[float] = Field(default=[100.0], min_length=1, max_length=10)
    failure_threshold: float = Field(default=5.0, ge=0, lt=100,
                                     description="percent of a wave's devices")
    device_timeout: str = Field(default="24h", max_length=16, description="e.g. 2h")
    soak: str = Field(default="0s", max_length=16, description="wait after a finished wave")


class ControlIn(_Strict):
    reason: str | None = Field(default=None, max_length=1000)


class ReportIn(_Strict):
    campaign_id: int = Field(ge=1, le=MAX_INT32)
    status: str = Field(max_length=16,
                        description="downloading, installing, installed, failed, rolled_back")
    version: str = Field(max_length=32, description="the version the device runs now")
    detail: str | None = Field(default=None, max_length=1000)


# --------------------------------------------------------------------------- operators


@router.get("/releases")
def releases(rt: RuntimeDep, _: AuditorDep,
             product: Annotated[str | None, Query(max_length=64)] = None) -> list[ReleaseOut]:
    return [ReleaseOut.from_domain(r) for r in release_service.list_releases(rt, product)]


@router.get("/repository")
def repository(rt: RuntimeDep, _: AuditorDep) -> RepoStatusOut:
    return RepoStatusOut.from_domain(ota_repo.status(rt))


@router.post("/repository/refresh")
def refresh(rt: RuntimeDep, _: OperatorDep) -> WrittenOut:
    return WrittenOut(written=ota_repo.refresh(rt))


@router.post("/campaigns", status_code=201)
def create_campaign(body: CampaignIn, rt: RuntimeDep, who: OperatorDep) -> CampaignOut:
    plan = Plan(waves=tuple(body.waves), failure_threshold=body.failure_threshold / 100,
                device_timeout=parse_duration(body.device_timeout),
                soak=parse_duration(body.soak))
    info = campaign_service.create_campaign(
        rt, name=body.name, product=body.product, plan=plan,
        version=ImageVersion.parse(body.version) if body.version else None,
        channel=body.channel, group=body.group, devices=body.devices, actor=who.name)
    return CampaignOut.from_domain(info)


@router.get("/campaigns")
def campaigns(rt: RuntimeDep, _: AuditorDep,
              state: Annotated[str | None, Query(pattern="^(active|paused|aborted|completed)$")
                               ] = None) -> list[CampaignOut]:
    return [CampaignOut.from_domain(c) for c in
            campaign_service.list_campaigns(rt, CampaignState(state) if state else None)]


@router.post("/campaigns/tick")
def tick(rt: RuntimeDep, _: OperatorDep) -> dict[str, list[str]]:
    return {str(k): v for k, v in campaign_tick.tick(rt).items()}


@router.get("/campaigns/{campaign_id}")
def campaign(campaign_id: CampaignIdPath, rt: RuntimeDep, _: AuditorDep) -> CampaignOut:
    return CampaignOut.from_domain(campaign_service.get_campaign(rt, campaign_id))


@router.get("/campaigns/{campaign_id}/devices")
def campaign_devices(campaign_id: CampaignIdPath, rt: RuntimeDep, _: AuditorDep,
                     status: Annotated[str | None, Query(max_length=16)] = None,
                     limit: Annotated[int, Query(ge=1, le=10_000)] = 1000
                     ) -> list[CampaignDeviceOut]:
    wanted = DeviceStatus(status) if status in {s.value for s in DeviceStatus} else None
    return [CampaignDeviceOut.from_domain(d) for d in
            campaign_service.campaign_devices(rt, campaign_id, status=wanted, limit=limit)]


def _actor(who: Principal) -> str:
    return who.name


@router.post("/campaigns/{campaign_id}/pause")
def pause(campaign_id: CampaignIdPath, body: ControlIn, rt: RuntimeDep, who: OperatorDep
          ) -> CampaignOut:
    return CampaignOut.from_domain(campaign_service.pause_campaign(
        rt, campaign_id, actor=_actor(who), reason=body.reason))


@router.post("/campaigns/{campaign_id}/resume")
def resume(campaign_id: CampaignIdPath, rt: RuntimeDep, who: OperatorDep) -> CampaignOut:
    return CampaignOut.from_domain(campaign_service.resume_campaign(
        rt, campaign_id, actor=_actor(who)))


@router.post("/campaigns/{campaign_id}/abort")
def abort(campaign_id: CampaignIdPath, body: ControlIn, rt: RuntimeDep, who: OperatorDep
          ) -> CampaignOut:
    return CampaignOut.from_domain(campaign_service.abort_campaign(
        rt, campaign_id, actor=_actor(who), reason=body.reason))


@router.get("/devices/{device_id}/firmware")
def device_firmware(device_id: str, rt: RuntimeDep, _: AuditorDep) -> FirmwareOut:
    return FirmwareOut.from_domain(anti_rollback.firmware_record(rt, device_id))


# --------------------------------------------------------------------------- devices


@device_router.get("/device/assignment", openapi_extra=_DEVICE_SCOPE)
def device_assignment(rt: RuntimeDep, device: DeviceDep) -> AssignmentEnvelope:
    found = device_updates.assignment(rt, device.device_id)
    return AssignmentEnvelope(update=AssignmentOut.from_domain(found)
                              if found is not None else None)


@device_router.post("/device/report", openapi_extra=_DEVICE_SCOPE)
def device_report(body: ReportIn, rt: RuntimeDep, device: DeviceDep) -> CampaignDeviceOut:
    reported = device_updates.report(rt, device.device_id, campaign_id=body.campaign_id,
                                     status=body.status, version=body.version,
                                     detail=body.detail)
    return CampaignDeviceOut.from_domain(reported)


@device_router.get("/tuf/metadata/{name}", openapi_extra=_DEVICE_SCOPE,
                   response_class=FileResponse)
def tuf_metadata(name: str, rt: RuntimeDep, _: DeviceDep) -> FileResponse:
    return FileResponse(ota_repo.metadata_file(rt, name), media_type="application/json",
                        headers={"Cache-Control": "no-store"})


@device_router.get("/tuf/targets/{path:path}", openapi_extra=_DEVICE_SCOPE,
                   response_class=FileResponse)
def tuf_target(path: str, rt: RuntimeDep, device: DeviceDep) -> FileResponse:
    found = ota_repo.download_target(rt, path, device.device_id)
    return FileResponse(found, media_type="application/octet-stream")
