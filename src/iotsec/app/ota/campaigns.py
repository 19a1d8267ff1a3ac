"""Rollout campaigns, the operator's side: create one for a release and a set of devices,
list and look at them, pause, resume or abort them, and list their devices.

The campaign rules live in :mod:`iotsec.firmware.campaign` and are applied under the
campaign's row lock by :mod:`.evaluation`; devices ask and report through
:mod:`.device_updates`, and :mod:`.tick` evaluates every running campaign at once.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, insert, select, update

from iotsec.app.events import Event
from iotsec.app.ota.evaluation import (
    evaluate_campaign,
    lock_campaign,
    plan_of,
    record_changes,
    save_campaign,
    state_of,
    wave_counts,
)
from iotsec.app.ota.releases import ReleaseInfo, find_release, release_by_id
from iotsec.app.runtime import Runtime
from iotsec.errors import CampaignError, ConflictError, InvalidInputError, NotFoundError
from iotsec.firmware import campaign as core
from iotsec.firmware.campaign import CampaignState, DeviceStatus, Plan, WaveCounts
from iotsec.firmware.image import ImageVersion
from iotsec.firmware.releases import parse_name
from iotsec.identity.registry import DeviceState, parse_device_id, parse_group_name
from iotsec.store import models as m
from iotsec.store.db import reading, transaction
from iotsec.timeutil import from_ts, ts

__all__ = [
    "MAX_DETAIL", "MAX_LIST", "CampaignDevice", "CampaignInfo", "abort_campaign",
    "campaign_devices", "create_campaign", "get_campaign", "list_campaigns", "pause_campaign",
    "resume_campaign"
]

MAX_DETAIL = 1000
MAX_LIST = 10_000


@dataclass(frozen=True)
class CampaignInfo:
    id: int
    name: str
    state: CampaignState
    release: ReleaseInfo
    selector: str
    plan: Plan
    current_wave: int
    wave_started_at: datetime
    reason: str | None
    created_by: str | None
    created_at: datetime
    updated_at: datetime
    waves: tuple[WaveCounts, ...]

    @property
    def totals(self) -> WaveCounts:
        merged: dict[DeviceStatus, int] = {}
        for wave in self.waves:
            for status, count in wave.counts.items():
                merged[status] = merged.get(status, 0) + count
        return WaveCounts(merged)


@dataclass(frozen=True)
class CampaignDevice:
    device_id: str
    wave: int
    status: DeviceStatus
    version: str | None
    detail: str | None
    updated_at: datetime | None


def _select_devices(conn: Connection, group: str | None,
                    devices: Sequence[str] | None) -> list[str]:
    if (group is None) == (devices is None or not devices):
        raise CampaignError("target a group or a list of devices (one of the two)",
                            hint="give --group NAME or --device ID (repeatable)")
    dv = m.devices.c
    usable = [DeviceState.PENDING.value, DeviceState.ACTIVE.value]
    if group is not None:
        name = parse_group_name(group)
        ids = list(conn.execute(
            select(dv.id).join(m.device_groups, m.device_groups.c.device_id == dv.id)
            .where(m.device_groups.c.group_name == name, dv.state.in_(usable))
            .order_by(dv.id)).scalars())
        if not ids:
            raise CampaignError(f"group {name!r} has no active or pending devices")
        return ids
    wanted = sorted({parse_device_id(d) for d in devices or ()})
    if len(wanted) > core.MAX_DEVICES:
        raise CampaignError(f"a campaign targets at most {core.MAX_DEVICES} devices")
    found: dict[str, str] = {}
    for start in range(0, len(wanted), 5000):
        chunk = wanted[start:start + 5000]
        found.update((r.id, r.state) for r in
                     conn.execute(select(dv.id, dv.state).where(dv.id.in_(chunk))))
    missing = [d for d in wanted if d not in found]
    if missing:
        raise NotFoundError(f"{len(missing)} device(s) are not registered, e.g. {missing[0]!r}")
    unusable = [d for d in wanted if found[d] not in usable]
    if unusable:
        raise CampaignError(f"{len(unusable)} device(s) are disabled or retired, e.g. "
                            f"{unusable[0]!r}")
    return wanted


def _check_hardware(conn: Connection, ids: list[str], release: ReleaseInfo) -> None:
    """Devices whose ``hardware`` attribute names another revision cannot take the image."""
    wrong: list[str] = []
    for start in range(0, len(ids), 5000):
        for device_id, attrs in conn.execute(select(m.devices.c.id, m.devices.c.attributes)
                                             .where(m.devices.c.id.in_(ids[start:start + 5000]))):
            hardware = json.loads(attrs).get("hardware")
            if hardware is not None and hardware not in release.hardware:
                wrong.append(device_id)
    if wrong:
        raise CampaignError(f"{len(wrong)} device(s) run hardware the release is not built "
                            f"for (e.g. {wrong[0]!r}); it supports "
                            f"{', '.join(release.hardware)}",
                            hint="target only compatible devices, or publish an image for "
                            "their hardware")


def create_campaign(rt: Runtime, *, name: str, product: str, plan: Plan,
                    version: ImageVersion | None = None, channel: str | None = None,
                    group: str | None = None, devices: Sequence[str] | None = None,
                    actor: str | None = None) -> CampaignInfo:
    """Create and start a campaign: the first wave's devices may update at once."""
    if not 1 <= len(name) <= 128 or not name.isprintable():
        raise InvalidInputError("a campaign name has 1 to 128 printable characters")
    product = parse_name(product, "product")
    channel = parse_name(channel, "channel") if channel is not None else None
    now = rt.now()
    with transaction(rt.engine) as conn:
        release = find_release(conn, product, version, channel)
        ids = _select_devices(conn, group, devices)
        _check_hardware(conn, ids, release)
        d, c = m.ota_campaign_devices.c, m.ota_campaigns.c
        busy = conn.execute(select(d.device_id).join(m.ota_campaigns, c.id == d.campaign_id)
                            .where(c.state.in_([CampaignState.ACTIVE.value,
                                                CampaignState.PAUSED.value]),
                                   d.device_id.in_(ids[:50_000])).limit(1)).first()
        if busy is not None:
            raise ConflictError(f"device {busy.device_id!r} is already in an active or paused "
                                "campaign", hint="finish or abort that campaign first")
        campaign_id = conn.execute(insert(m.ota_campaigns).values(
            name=name, release_id=release.id,
            selector=f"group:{group}" if group is not None else f"devices:{len(ids)}",
            state=CampaignState.ACTIVE.value, waves=json.dumps(list(plan.waves)),
            current_wave=0, wave_started_at=ts(now),
            failure_threshold_bp=round(plan.failure_threshold * 10_000),
            device_timeout=int(plan.device_timeout.total_seconds()),
            soak=int(plan.soak.total_seconds()), acknowledged_failures=0, reason=None,
            created_by=actor, created_at=ts(now), updated_at=ts(now),
        ).returning(c.id)).scalar_one()
        waves = core.assign_waves(str(campaign_id), ids, plan)
        rows = [{"campaign_id": campaign_id, "device_id": dev, "wave": wave,
                 "status": (DeviceStatus.PENDING if wave == 0 else DeviceStatus.WAITING).value,
                 "version": None, "detail": None, "updated_at": None}
                for dev, wave in waves.items()]
        for start in range(0, len(rows), 5000):
            conn.execute(insert(m.ota_campaign_devices), rows[start:start + 5000])
    rt.events.record(Event(rt.now(), "ota.campaign", "success", actor=actor,
                           subject=str(campaign_id),
                           detail={"change": "created", "release": release.target,
                                   "devices": len(ids), "waves": list(plan.waves)}))
    return get_campaign(rt, campaign_id, evaluate=False)


def _info(conn: Connection, row: Row[Any]) -> CampaignInfo:
    release = release_by_id(conn, row.release_id)
    counts = wave_counts(conn, row.id)
    plan = plan_of(row)
    return CampaignInfo(id=row.id, name=row.name, state=CampaignState(row.state),
                        release=release, selector=row.selector, plan=plan,
                        current_wave=row.current_wave,
                        wave_started_at=from_ts(row.wave_started_at), reason=row.reason,
                        created_by=row.created_by, created_at=from_ts(row.created_at),
                        updated_at=from_ts(row.updated_at),
                        waves=tuple(counts.get(w, WaveCounts()) for w in range(len(plan.waves))))


def get_campaign(rt: Runtime, campaign_id: int, *, evaluate: bool = True) -> CampaignInfo:
    """A campaign and its per-wave counts; evaluated first (timeouts, waves) by default."""
    changes: list[str] = []
    with transaction(rt.engine) as conn:
        row = lock_campaign(conn, campaign_id)
        if evaluate:
            changes = evaluate_campaign(conn, row, rt.now())
            row = lock_campaign(conn, campaign_id)
        info = _info(conn, row)
    record_changes(rt, campaign_id, changes, None)
    return info


def list_campaigns(rt: Runtime, state: CampaignState | None = None) -> list[CampaignInfo]:
    query = select(m.ota_campaigns).order_by(m.ota_campaigns.c.id.desc()).limit(1000)
    if state is not None:
        query = query.where(m.ota_campaigns.c.state == state.value)
    with reading(rt.engine) as conn:
        return [_info(conn, r) for r in conn.execute(query).all()]


def _control(rt: Runtime, campaign_id: int, action: str, actor: str | None,
             reason: str | None) -> CampaignInfo:
    if reason is not None and len(reason) > MAX_DETAIL:
        raise InvalidInputError(f"a reason has at most {MAX_DETAIL} characters")
    now = rt.now()
    with transaction(rt.engine) as conn:
        row = lock_campaign(conn, campaign_id)
        changes = evaluate_campaign(conn, row, now)
        row = lock_campaign(conn, campaign_id)
        state = state_of(row)
        text = reason or f"{action}d by {actor or 'an operator'}"
        if action == "pause":
            new = core.pause(state, text)
        elif action == "resume":
            new = core.resume(state, wave_counts(conn, campaign_id).get(state.current_wave,
                                                                        WaveCounts()))
        else:
            new = core.abort(state, text)
            d = m.ota_campaign_devices.c
            conn.execute(update(m.ota_campaign_devices).where(
                d.campaign_id == campaign_id,
                d.status.in_([DeviceStatus.WAITING.value, DeviceStatus.PENDING.value])
            ).values(status=DeviceStatus.CANCELLED.value, detail="campaign aborted"))
        save_campaign(conn, campaign_id, new, ts(now))
        changes.append(f"{action}d" + (f": {reason}" if reason else ""))
        if action == "resume":
            changes.extend(evaluate_campaign(conn, lock_campaign(conn, campaign_id), now))
        info = _info(conn, lock_campaign(conn, campaign_id))
    record_changes(rt, campaign_id, changes, actor)
    return info


def pause_campaign(rt: Runtime, campaign_id: int, *, actor: str | None = None,
                   reason: str | None = None) -> CampaignInfo:
    return _control(rt, campaign_id, "pause", actor, reason)


def resume_campaign(rt: Runtime, campaign_id: int, *, actor: str | None = None) -> CampaignInfo:
    """Resume a paused campaign; the current wave's failures so far are acknowledged."""
    return _control(rt, campaign_id, "resume", actor, None)


def abort_campaign(rt: Runtime, campaign_id: int, *, actor: str | None = None,
                   reason: str | None = None) -> CampaignInfo:
    """Stop a campaign for good: devices that have not started are cancelled."""
    return _control(rt, campaign_id, "abort", actor, reason)


def campaign_devices(rt: Runtime, campaign_id: int, *, status: DeviceStatus | None = None,
                     limit: int = 1000) -> list[CampaignDevice]:
    if not 1 <= limit <= MAX_LIST:
        raise InvalidInputError(f"limit must be between 1 and {MAX_LIST}")
    d = m.ota_campaign_devices.c
    query = (select(m.ota_campaign_devices).where(d.campaign_id == campaign_id)
             .order_by(d.wave, d.device_id).limit(limit))
    if status is not None:
        query = query.where(d.status == status.value)
    with reading(rt.engine) as conn:
        if conn.execute(select(m.ota_campaigns.c.id).where(
                m.ota_campaigns.c.id == campaign_id)).first() is None:
            raise NotFoundError(f"no campaign {campaign_id}")
        return [CampaignDevice(r.device_id, r.wave, DeviceStatus(r.status), r.version,
                               r.detail, from_ts(r.updated_at) if r.updated_at else None)
                for r in conn.execute(query)]
