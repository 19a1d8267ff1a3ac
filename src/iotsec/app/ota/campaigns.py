"""OTA use cases over the store: releases, rollout campaigns, device assignments and reports,
and the server-side anti-rollback record of every device.

The campaign rules live in :mod:`iotsec.firmware.campaign`; here they are applied inside one
transaction per use case, with the campaign row locked: timeouts are marked, the per-wave
counts are read, the core decides, and the result is written. There is no background
worker: a campaign is evaluated whenever a device asks for its assignment or reports, when
an operator looks at it, and by ``iotsec ota campaign tick`` (run it from cron so that
timeouts are noticed in a fleet that has gone quiet).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Row, func, insert, select, update

from iotsec.app.events import Event
from iotsec.app.runtime import Runtime
from iotsec.errors import (
    CampaignError,
    ConflictError,
    DeviceRollbackError,
    InvalidInputError,
    NotFoundError,
    OtaReportError,
)
from iotsec.firmware import campaign as core
from iotsec.firmware.campaign import CampaignState, DeviceStatus, Plan, WaveCounts
from iotsec.firmware.image import ImageVersion
from iotsec.firmware.releases import parse_name
from iotsec.identity.registry import DeviceState, parse_device_id, parse_group_name
from iotsec.store import models as m
from iotsec.store.db import reading, transaction
from iotsec.timeutil import from_ts, ts

__all__ = [
    "MAX_DETAIL",
    "MAX_LIST",
    "Assignment",
    "CampaignDevice",
    "CampaignInfo",
    "FirmwareRecord",
    "ReleaseInfo",
    "abort_campaign",
    "assignment",
    "campaign_devices",
    "create_campaign",
    "firmware_record",
    "get_campaign",
    "list_campaigns",
    "list_releases",
    "pause_campaign",
    "report",
    "resume_campaign",
    "tick",
    "tick_loop",
]

log = logging.getLogger("iotsec.ota")

MAX_DETAIL = 1000
MAX_LIST = 10_000
_ZERO = "0.0.0+0"


@dataclass(frozen=True)
class ReleaseInfo:
    id: int
    product: str
    channel: str
    version: ImageVersion
    security_counter: int | None
    target: str
    sha256: str
    length: int
    hardware: tuple[str, ...]
    published_at: datetime


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


@dataclass(frozen=True)
class Assignment:
    campaign_id: int
    release: ReleaseInfo


@dataclass(frozen=True)
class FirmwareRecord:
    device_id: str
    product: str | None
    version: str
    security_counter: int
    min_version: str
    updated_at: datetime


# --------------------------------------------------------------------------- releases


def _release(r: Row[Any]) -> ReleaseInfo:
    return ReleaseInfo(id=r.id, product=r.product, channel=r.channel,
                       version=ImageVersion.parse(r.version),
                       security_counter=r.security_counter, target=r.target_path,
                       sha256=r.sha256, length=r.length, hardware=tuple(json.loads(r.hardware)),
                       published_at=from_ts(r.published_at))


def list_releases(rt: Runtime, product: str | None = None) -> list[ReleaseInfo]:
    query = select(m.ota_releases).order_by(m.ota_releases.c.id)
    if product is not None:
        query = query.where(m.ota_releases.c.product == parse_name(product, "product"))
    with reading(rt.engine) as conn:
        return [_release(r) for r in conn.execute(query)]


def _find_release(conn: Connection, product: str, version: ImageVersion | None,
                  channel: str | None) -> ReleaseInfo:
    query = select(m.ota_releases).where(m.ota_releases.c.product == product)
    if channel is not None:
        query = query.where(m.ota_releases.c.channel == channel)
    found = [_release(r) for r in conn.execute(query.order_by(m.ota_releases.c.id))]
    if version is not None:
        found = [r for r in found if r.version == version]
    if not found:
        what = f"{product} {version or ''} {f'on {channel}' if channel else ''}".strip()
        raise NotFoundError(f"no published release {what}",
                            hint="publish it with 'iotsec firmware publish' first")
    # The newest publication: with a channel and no version, what the channel serves now.
    return found[-1]


# --------------------------------------------------------------------------- campaigns


def _plan(row: Row[Any]) -> Plan:
    return Plan(waves=tuple(json.loads(row.waves)),
                failure_threshold=row.failure_threshold_bp / 10_000,
                device_timeout=timedelta(seconds=row.device_timeout),
                soak=timedelta(seconds=row.soak))


def _core(row: Row[Any]) -> core.Campaign:
    return core.Campaign(state=CampaignState(row.state), plan=_plan(row),
                         current_wave=row.current_wave,
                         wave_started_at=from_ts(row.wave_started_at),
                         acknowledged_failures=row.acknowledged_failures, reason=row.reason)


def _counts(conn: Connection, campaign_id: int) -> dict[int, WaveCounts]:
    d = m.ota_campaign_devices.c
    rows = conn.execute(select(d.wave, d.status, func.count()).where(d.campaign_id == campaign_id)
                        .group_by(d.wave, d.status)).all()
    waves: dict[int, dict[DeviceStatus, int]] = {}
    for wave, status, count in rows:
        waves.setdefault(int(wave), {})[DeviceStatus(status)] = int(count)
    return {w: WaveCounts(c) for w, c in waves.items()}


def _lock(conn: Connection, campaign_id: int) -> Row[Any]:
    row = conn.execute(select(m.ota_campaigns).where(m.ota_campaigns.c.id == campaign_id)
                       .with_for_update()).first()
    if row is None:
        raise NotFoundError(f"no campaign {campaign_id}", hint="see 'iotsec ota campaign list'")
    return row


def _save(conn: Connection, campaign_id: int, state: core.Campaign, now: int) -> None:
    conn.execute(update(m.ota_campaigns).where(m.ota_campaigns.c.id == campaign_id).values(
        state=state.state.value, current_wave=state.current_wave,
        wave_started_at=ts(state.wave_started_at),
        acknowledged_failures=state.acknowledged_failures, reason=state.reason,
        updated_at=now))


def _evaluate(conn: Connection, row: Row[Any], now: datetime) -> list[str]:
    """Mark timeouts and apply the campaign rules (caller holds the campaign row lock)."""
    state = _core(row)
    if state.state.final:
        return []
    d = m.ota_campaign_devices.c
    changes: list[str] = []
    running = conn.execute(select(d.device_id, d.status, d.updated_at).where(
        d.campaign_id == row.id, d.wave == state.current_wave,
        d.status.in_([s.value for s in core.IN_PROGRESS]))).all()
    late = core.timed_out(((r.device_id, DeviceStatus(r.status),
                            from_ts(r.updated_at) if r.updated_at is not None else None)
                           for r in running), state, now)
    if late:
        conn.execute(update(m.ota_campaign_devices).where(
            d.campaign_id == row.id, d.device_id.in_(late)).values(
            status=DeviceStatus.TIMED_OUT.value, detail="no report within the device timeout"))
        changes.append(f"{len(late)} device(s) timed out")
    result = core.evaluate(state, _counts(conn, row.id), now)
    for wave in result.started_waves:
        conn.execute(update(m.ota_campaign_devices).where(
            d.campaign_id == row.id, d.wave == wave,
            d.status == DeviceStatus.WAITING.value).values(status=DeviceStatus.PENDING.value))
    changes.extend(result.changes)
    if result.campaign != state or late:
        _save(conn, row.id, result.campaign, ts(now))
    return changes


def _record(rt: Runtime, campaign_id: int, changes: Sequence[str], actor: str | None) -> None:
    for change in changes:
        rt.events.record(Event(rt.now(), "ota.campaign", "success", actor=actor,
                               subject=str(campaign_id), detail={"change": change}))


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
        release = _find_release(conn, product, version, channel)
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
    release = _release(conn.execute(select(m.ota_releases).where(
        m.ota_releases.c.id == row.release_id)).one())
    counts = _counts(conn, row.id)
    plan = _plan(row)
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
        row = _lock(conn, campaign_id)
        if evaluate:
            changes = _evaluate(conn, row, rt.now())
            row = _lock(conn, campaign_id)
        info = _info(conn, row)
    _record(rt, campaign_id, changes, None)
    return info


def list_campaigns(rt: Runtime, state: CampaignState | None = None) -> list[CampaignInfo]:
    query = select(m.ota_campaigns).order_by(m.ota_campaigns.c.id.desc()).limit(1000)
    if state is not None:
        query = query.where(m.ota_campaigns.c.state == state.value)
    with reading(rt.engine) as conn:
        return [_info(conn, r) for r in conn.execute(query).all()]


def tick(rt: Runtime) -> dict[int, list[str]]:
    """Evaluate every active or paused campaign (timeouts, waves, thresholds)."""
    with reading(rt.engine) as conn:
        ids = list(conn.execute(select(m.ota_campaigns.c.id).where(m.ota_campaigns.c.state.in_(
            [CampaignState.ACTIVE.value, CampaignState.PAUSED.value]))).scalars())
    done: dict[int, list[str]] = {}
    for campaign_id in ids:
        with transaction(rt.engine) as conn:
            done[campaign_id] = _evaluate(conn, _lock(conn, campaign_id), rt.now())
        _record(rt, campaign_id, done[campaign_id], None)
    return done


def tick_loop(rt: Runtime, stop: threading.Event) -> None:
    """For a long-running server: :func:`tick` every ``campaign_tick_seconds``, so that
    devices that never report time out and waves advance without an outside scheduler.
    Errors are logged; the loop goes on until ``stop`` is set."""
    interval = rt.settings.campaign_tick_seconds
    while interval > 0 and not stop.wait(interval):
        try:
            tick(rt)
        except Exception:  # keep ticking; the failure is in the log
            log.exception("update campaign evaluation failed")


def _control(rt: Runtime, campaign_id: int, action: str, actor: str | None,
             reason: str | None) -> CampaignInfo:
    if reason is not None and len(reason) > MAX_DETAIL:
        raise InvalidInputError(f"a reason has at most {MAX_DETAIL} characters")
    now = rt.now()
    with transaction(rt.engine) as conn:
        row = _lock(conn, campaign_id)
        changes = _evaluate(conn, row, now)
        row = _lock(conn, campaign_id)
        state = _core(row)
        text = reason or f"{action}d by {actor or 'an operator'}"
        if action == "pause":
            new = core.pause(state, text)
        elif action == "resume":
            new = core.resume(state, _counts(conn, campaign_id).get(state.current_wave,
                                                                    WaveCounts()))
        else:
            new = core.abort(state, text)
            d = m.ota_campaign_devices.c
            conn.execute(update(m.ota_campaign_devices).where(
                d.campaign_id == campaign_id,
                d.status.in_([DeviceStatus.WAITING.value, DeviceStatus.PENDING.value])
            ).values(status=DeviceStatus.CANCELLED.value, detail="campaign aborted"))
        _save(conn, campaign_id, new, ts(now))
        changes.append(f"{action}d" + (f": {reason}" if reason else ""))
        if action == "resume":
            changes.extend(_evaluate(conn, _lock(conn, campaign_id), now))
        info = _info(conn, _lock(conn, campaign_id))
    _record(rt, campaign_id, changes, actor)
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


# --------------------------------------------------------------------------- devices


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
            row = _lock(conn, campaign_id)
            changes = _evaluate(conn, row, now)
            row = _lock(conn, campaign_id)
            d = m.ota_campaign_devices.c
            status = conn.execute(select(d.status).where(
                d.campaign_id == campaign_id, d.device_id == device_id)).scalar_one()
            if (row.state == CampaignState.ACTIVE.value
                    and DeviceStatus(status) in core.IN_PROGRESS):
                found = Assignment(campaign_id, _release(conn.execute(
                    select(m.ota_releases).where(m.ota_releases.c.id == row.release_id)).one()))
    if campaign_id is not None:
        _record(rt, campaign_id, changes, None)
    rt.events.record(Event(rt.now(), "ota.assignment", "success", actor=device_id,
                           detail={"campaign": found.campaign_id if found else None,
                                   "target": found.release.target if found else None}))
    return found


def _product_releases(conn: Connection, product: str | None) -> list[ReleaseInfo]:
    if product is None:
        return []
    return [_release(r) for r in conn.execute(select(m.ota_releases).where(
        m.ota_releases.c.product == product))]


def _counter_of(known: list[ReleaseInfo], version: ImageVersion) -> int | None:
    counters = [r.security_counter or 0 for r in known if r.version == version]
    return max(counters) if counters else None


def _update_record(conn: Connection, device_id: str, product: str, version: ImageVersion,
                   confirmed: bool, now: int) -> None:
    """Check the reported running version against the device's record, then record it
    (raising the counter only for a confirmed install)."""
    known = _product_releases(conn, product)
    claimed = _counter_of(known, version)
    f = m.ota_device_firmware.c
    record = conn.execute(select(m.ota_device_firmware).where(f.device_id == device_id)
                          .with_for_update()).first()
    if record is not None:
        core.check_running(record.security_counter, ImageVersion.parse(record.min_version),
                           version, claimed)
    counter = record.security_counter if record is not None else 0
    min_version = record.min_version if record is not None else _ZERO
    if confirmed and claimed is not None and claimed > counter:
        counter = claimed
        allowed = [r.version for r in known if (r.security_counter or 0) >= counter]
        min_version = str(min(allowed)) if allowed else str(version)
    values = {"product": product, "version": str(version), "security_counter": counter,
              "min_version": min_version, "updated_at": now}
    if record is None:
        conn.execute(insert(m.ota_device_firmware).values(device_id=device_id, **values))
    else:
        conn.execute(update(m.ota_device_firmware).where(f.device_id == device_id)
                     .values(**values))


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
            row = _lock(conn, campaign_id)
            entry = conn.execute(select(m.ota_campaign_devices).where(
                d.campaign_id == campaign_id, d.device_id == device_id).with_for_update()).first()
            if entry is None:
                raise OtaReportError(f"device {device_id!r} is not part of campaign "
                                     f"{campaign_id}")
            changes = _evaluate(conn, row, now)
            current = DeviceStatus(conn.execute(select(d.status).where(
                d.campaign_id == campaign_id, d.device_id == device_id)).scalar_one())
            new = core.after_report(current, reported)
            release = _release(conn.execute(select(m.ota_releases).where(
                m.ota_releases.c.id == row.release_id)).one())
            if new is DeviceStatus.INSTALLED and running != release.version:
                raise OtaReportError(f"the device reports installed but runs {running}; the "
                                     f"campaign installs {release.version}",
                                     hint="report failed or rolled_back with the version "
                                     "that runs")
            _update_record(conn, device_id, release.product, running,
                           new is DeviceStatus.INSTALLED, ts(now))
            conn.execute(update(m.ota_campaign_devices).where(
                d.campaign_id == campaign_id, d.device_id == device_id).values(
                status=new.value, version=str(running), detail=detail, updated_at=ts(now)))
            changes.extend(_evaluate(conn, _lock(conn, campaign_id), now))
    except (OtaReportError, DeviceRollbackError) as exc:
        rt.events.record(Event(rt.now(), "ota.report", "failure", actor=device_id,
                               subject=str(campaign_id),
                               detail={"status": reported.value, "version": str(running),
                                       "reason": exc.code}))
        raise
    rt.events.record(Event(rt.now(), "ota.report", "success", actor=device_id,
                           subject=str(campaign_id),
                           detail={"status": new.value, "version": str(running)}))
    _record(rt, campaign_id, changes, None)
    return CampaignDevice(device_id, entry.wave, new, str(running), detail, now)


def firmware_record(rt: Runtime, device_id: str) -> FirmwareRecord:
    device_id = parse_device_id(device_id)
    with reading(rt.engine) as conn:
        r = conn.execute(select(m.ota_device_firmware).where(
            m.ota_device_firmware.c.device_id == device_id)).first()
    if r is None:
        raise NotFoundError(f"no firmware reported by device {device_id!r} yet")
    return FirmwareRecord(r.device_id, r.product, r.version, r.security_counter,
                          r.min_version, from_ts(r.updated_at))
