"""A campaign's row evaluated under its lock: timeouts are marked, the per-wave counts are
read, the rules of :mod:`iotsec.firmware.campaign` decide, and the result is written.

There is no background worker: a campaign is evaluated whenever a device asks for its
assignment or reports, when an operator looks at it, and by :mod:`.tick`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Row, func, select, update

from iotsec.app.events import Event
from iotsec.app.runtime import Runtime
from iotsec.errors import NotFoundError
from iotsec.firmware import campaign as core
from iotsec.firmware.campaign import CampaignState, DeviceStatus, Plan, WaveCounts
from iotsec.store import models as m
from iotsec.timeutil import from_ts, ts

__all__ = [
    "evaluate_campaign", "lock_campaign", "plan_of", "record_changes", "save_campaign", "state_of",
    "wave_counts"
]


def plan_of(row: Row[Any]) -> Plan:
    """The rollout plan an ``ota_campaigns`` row records."""
    return Plan(waves=tuple(json.loads(row.waves)),
                failure_threshold=row.failure_threshold_bp / 10_000,
                device_timeout=timedelta(seconds=row.device_timeout),
                soak=timedelta(seconds=row.soak))


def state_of(row: Row[Any]) -> core.Campaign:
    """The core's view of an ``ota_campaigns`` row."""
    return core.Campaign(state=CampaignState(row.state), plan=plan_of(row),
                         current_wave=row.current_wave,
                         wave_started_at=from_ts(row.wave_started_at),
                         acknowledged_failures=row.acknowledged_failures, reason=row.reason)


def wave_counts(conn: Connection, campaign_id: int) -> dict[int, WaveCounts]:
    """How many devices of each wave are in each status."""
    d = m.ota_campaign_devices.c
    rows = conn.execute(select(d.wave, d.status, func.count()).where(d.campaign_id == campaign_id)
                        .group_by(d.wave, d.status)).all()
    waves: dict[int, dict[DeviceStatus, int]] = {}
    for wave, status, count in rows:
        waves.setdefault(int(wave), {})[DeviceStatus(status)] = int(count)
    return {w: WaveCounts(c) for w, c in waves.items()}


def lock_campaign(conn: Connection, campaign_id: int) -> Row[Any]:
    """The campaign's row, locked for the rest of the transaction, or NotFoundError."""
    row = conn.execute(select(m.ota_campaigns).where(m.ota_campaigns.c.id == campaign_id)
                       .with_for_update()).first()
    if row is None:
        raise NotFoundError(f"no campaign {campaign_id}", hint="see 'iotsec ota campaign list'")
    return row


def save_campaign(conn: Connection, campaign_id: int, state: core.Campaign, now: int) -> None:
    """Write the core's new view of a campaign to its (locked) row."""
    conn.execute(update(m.ota_campaigns).where(m.ota_campaigns.c.id == campaign_id).values(
        state=state.state.value, current_wave=state.current_wave,
        wave_started_at=ts(state.wave_started_at),
        acknowledged_failures=state.acknowledged_failures, reason=state.reason,
        updated_at=now))


def evaluate_campaign(conn: Connection, row: Row[Any], now: datetime) -> list[str]:
    """Mark timeouts and apply the campaign rules (caller holds the campaign row lock);
    returns what changed, in words."""
    state = state_of(row)
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
    result = core.evaluate(state, wave_counts(conn, row.id), now)
    for wave in result.started_waves:
        conn.execute(update(m.ota_campaign_devices).where(
            d.campaign_id == row.id, d.wave == wave,
            d.status == DeviceStatus.WAITING.value).values(status=DeviceStatus.PENDING.value))
    changes.extend(result.changes)
    if result.campaign != state or late:
        save_campaign(conn, row.id, result.campaign, ts(now))
    return changes


def record_changes(rt: Runtime, campaign_id: int, changes: Sequence[str],
                   actor: str | None) -> None:
    """One ``ota.campaign`` event per change (after the transaction committed)."""
    for change in changes:
        rt.events.record(Event(rt.now(), "ota.campaign", "success", actor=actor,
                               subject=str(campaign_id), detail={"change": change}))
