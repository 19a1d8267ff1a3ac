"""A device's side of a campaign: what it should install now (its assignment), and its
progress reports, checked against the campaign and the device's anti-rollback record."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Row, select, update

from iotsec.app.events import Event
from iotsec.app.ota.anti_rollback import check_and_record
from iotsec.app.ota.campaigns import MAX_DETAIL, CampaignDevice
from iotsec.app.ota.evaluation import evaluate_campaign, lock_campaign, record_changes
from iotsec.app.ota.releases import ReleaseInfo, release_by_id
from iotsec.app.runtime import Runtime
from iotsec.errors import DeviceRollbackError, InvalidInputError, OtaReportError
from iotsec.firmware import campaign as core
from iotsec.firmware.campaign import CampaignState, DeviceStatus
from iotsec.firmware.image import ImageVersion
from iotsec.identity.registry import parse_device_id
from iotsec.store import models as m
from iotsec.store.db import transaction
from iotsec.timeutil import ts

__all__ = ["Assignment", "assignment", "report"]


@dataclass(frozen=True)
class Assignment:
    campaign_id: int
    release: ReleaseInfo


def _current_entry(conn: Connection, device_id: str) -> Row[Any] | None:
    d, c = m.ota_campaign_devices.c, m.ota_campaigns.c
    return conn.execute(select(d.campaign_id).join(m.ota_campaigns, c.id == d.campaign_id)
                        .where(d.device_id == device_id,
                               c.state.in_([CampaignState.ACTIVE.value,
                                            CampaignState.PAUSED.value]))
                        .order_by(d.campaign_id.desc()).limit(1)).first()


def assignment(rt: Runtime, device_id: str) -> Assignment | None:
    """What the device should install now: its campaign's release, once its wave started
    (and while the campaign is active and the device has not finished)."""
    device_id = parse_device_id(device_id)
    now = rt.now()
    found: Assignment | None = None
    changes: list[str] = []
    campaign_id: int | None = None
    with transaction(rt.engine) as conn:
        entry = _current_entry(conn, device_id)
        if entry is not None:
            campaign_id = int(entry.campaign_id)
            row = lock_campaign(conn, campaign_id)
            changes = evaluate_campaign(conn, row, now)
            row = lock_campaign(conn, campaign_id)
            d = m.ota_campaign_devices.c
            status = conn.execute(select(d.status).where(
                d.campaign_id == campaign_id, d.device_id == device_id)).scalar_one()
            if (row.state == CampaignState.ACTIVE.value
                    and DeviceStatus(status) in core.IN_PROGRESS):
                found = Assignment(campaign_id, release_by_id(conn, row.release_id))
    if campaign_id is not None:
        record_changes(rt, campaign_id, changes, None)
    rt.events.record(Event(rt.now(), "ota.assignment", "success", actor=device_id,
                           detail={"campaign": found.campaign_id if found else None,
                                   "target": found.release.target if found else None}))
    return found


def report(rt: Runtime, device_id: str, *, campaign_id: int, status: str, version: str,
           detail: str | None = None) -> CampaignDevice:
    """Record a device's progress report (``version`` = the version it runs now). Refused
    when it does not fit the campaign, or claims a version below the device's recorded
    security counter (the server-side anti-rollback record)."""
    device_id = parse_device_id(device_id)
    reported = DeviceStatus.reported(status)
    running = ImageVersion.parse(version)
    if detail is not None and (len(detail) > MAX_DETAIL or not detail.isprintable()):
        raise InvalidInputError(f"a detail has at most {MAX_DETAIL} printable characters")
    now = rt.now()
    d = m.ota_campaign_devices.c
    changes: list[str] = []
    try:
        with transaction(rt.engine) as conn:
            row = lock_campaign(conn, campaign_id)
            entry = conn.execute(select(m.ota_campaign_devices).where(
                d.campaign_id == campaign_id, d.device_id == device_id).with_for_update()).first()
            if entry is None:
                raise OtaReportError(f"device {device_id!r} is not part of campaign "
                                     f"{campaign_id}")
            changes = evaluate_campaign(conn, row, now)
            current = DeviceStatus(conn.execute(select(d.status).where(
                d.campaign_id == campaign_id, d.device_id == device_id)).scalar_one())
            new = core.after_report(current, reported)
            release = release_by_id(conn, row.release_id)
            if new is DeviceStatus.INSTALLED and running != release.version:
                raise OtaReportError(f"the device reports installed but runs {running}; the "
                                     f"campaign installs {release.version}",
                                     hint="report failed or rolled_back with the version "
                                     "that runs")
            check_and_record(conn, device_id, release.product, running,
                             new is DeviceStatus.INSTALLED, ts(now))
            conn.execute(update(m.ota_campaign_devices).where(
                d.campaign_id == campaign_id, d.device_id == device_id).values(
                status=new.value, version=str(running), detail=detail, updated_at=ts(now)))
            changes.extend(evaluate_campaign(conn, lock_campaign(conn, campaign_id), now))
    except (OtaReportError, DeviceRollbackError) as exc:
        rt.events.record(Event(rt.now(), "ota.report", "failure", actor=device_id,
                               subject=str(campaign_id),
                               detail={"status": reported.value, "version": str(running),
                                       "reason": exc.code}))
        raise
    rt.events.record(Event(rt.now(), "ota.report", "success", actor=device_id,
                           subject=str(campaign_id),
                           detail={"status": new.value, "version": str(running)}))
    record_changes(rt, campaign_id, changes, None)
    return CampaignDevice(device_id, entry.wave, new, str(running), detail, now)
