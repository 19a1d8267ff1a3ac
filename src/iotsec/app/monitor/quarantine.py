"""Quarantine and release: incident response on one device or a fleet selection.

``quarantine_devices`` puts every selected active or pending device into the state
``quarantined`` in one transaction: the decision engine and the broker then give it only
the quarantine role's rules (its remediation topic, see :mod:`iotsec.access.quarantine`),
it gets no new certificate, and, with ``revoke``, its certificates are revoked
(keyCompromise). The same transaction opens one incident (``incidents``), remembers each
device's state (``quarantines``), raises one alert and appends the events (one
``incident.quarantine`` and a ``device.state`` per device, with the actor) to the chain.
Then the broker directory (``IOTSEC_BROKER_DIR``) is synced, which drops the devices' live
sessions: they come back under the quarantine rules only.

Guards against misuse by an insider: an empty selection and a query that restricts nothing
are refused (:mod:`iotsec.app.monitor.selection`); a selection of more than
``IOTSEC_QUARANTINE_MAX_DEVICES`` devices needs its exact count confirmed; iotsec's own
broker identities (probe, canary, admin) are not devices and cannot be selected; and a
dry run shows what would happen and changes nothing. ``release_devices`` returns each
device to the state it had.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import delete, insert, select, update

from iotsec.app.broker.device_state import broker_layout, sync_after
from iotsec.app.events import Event
from iotsec.app.identity.bindings import policy_changed
from iotsec.app.identity.devices import set_state
from iotsec.app.monitor.alerts import raise_alert
from iotsec.app.monitor.incident_records import open_incident, parse_incident_id
from iotsec.app.monitor.selection import Selected, Selector, select_devices
from iotsec.app.pki.revocation import revoke_device_certificates
from iotsec.app.runtime import Runtime
from iotsec.errors import ConflictError, InvalidInputError
from iotsec.eventlog.alerts import NewAlert
from iotsec.findings.model import Severity
from iotsec.identity.registry import DeviceState, parse_device_id
from iotsec.pki.crl import RevocationReason
from iotsec.store import models as m
from iotsec.store.db import transaction
from iotsec.timeutil import ts

__all__ = [
    "MAX_REASON", "QuarantineResult", "ReleaseResult", "quarantine_devices", "release_devices"
]

MAX_REASON = 512
#: States a device can be quarantined from.
_FROM = (DeviceState.ACTIVE, DeviceState.PENDING)


@dataclass(frozen=True)
class QuarantineResult:
    incident: str | None  # None on a dry run, or when nothing was quarantined
    dry_run: bool
    quarantined: tuple[str, ...]
    #: (device id, why it was left alone): already quarantined, disabled, not registered...
    skipped: tuple[tuple[str, str], ...]
    revoked: tuple[str, ...]  # serials
    alert_id: int | None
    #: Devices whose live session the broker dropped (a broker directory was synced).
    kicked: tuple[str, ...]
    broker_generation: int | None


@dataclass(frozen=True)
class ReleaseResult:
    released: tuple[tuple[str, str], ...]  # (device id, state it returned to)
    closed_incidents: tuple[str, ...]
    kicked: tuple[str, ...]
    broker_generation: int | None


def _reason(text: str) -> str:
    if len(text) > MAX_REASON or any(c < " " and c != "\t" for c in text):
        raise InvalidInputError(f"a reason has at most {MAX_REASON} printable characters")
    return text.strip() or "(none given)"


def _plan(rt: Runtime, selector: Selector, confirm_count: int | None
          ) -> tuple[list[Selected], list[tuple[str, str]]]:
    found, missing = select_devices(rt, selector)
    skipped = [(d, "not registered") for d in missing]
    chosen = []
    for s in found:
        if s.state in _FROM:
            chosen.append(s)
        else:
            skipped.append((s.id, f"is {s.state.value}"))
    limit = rt.settings.quarantine_max_devices
    if confirm_count is not None and confirm_count != len(chosen):
        raise ConflictError(f"--confirm-count {confirm_count} does not match the "
                            f"{len(chosen)} devices the selection would quarantine",
                            hint="run it with --dry-run to see the selection")
    if len(chosen) > limit and confirm_count is None:
        raise ConflictError(
            f"the selection would quarantine {len(chosen)} devices, more than "
            f"IOTSEC_QUARANTINE_MAX_DEVICES ({limit})",
            hint=f"check it with --dry-run, then confirm with --confirm-count {len(chosen)}")
    return chosen, skipped


def quarantine_devices(rt: Runtime, selector: Selector, *, revoke: bool = False,
                       reason: str = "", actor: str, dry_run: bool = False,
                       confirm_count: int | None = None, broker_dir: Path | None = None,
                       source: str | None = None) -> QuarantineResult:
    """Quarantine the active or pending devices ``selector`` matches (see the module
    documentation); devices in other states are reported in ``skipped``. Refused, changing
    nothing, when no device would be quarantined. ``source`` names what asked (a
    detection rule, for mitigation actions)."""
    why = _reason(reason)
    layout = broker_layout(rt, broker_dir)
    chosen, skipped = _plan(rt, selector, confirm_count)
    if dry_run:
        return QuarantineResult(None, True, tuple(s.id for s in chosen), tuple(skipped), (),
                                None, (), None)
    if not chosen:
        raise ConflictError("no device of the selection can be quarantined: "
                            + "; ".join(f"{d} {r}" for d, r in skipped[:5]),
                            hint="only active or pending devices can be quarantined")
    incident = secrets.token_hex(8)
    moment = rt.now().replace(microsecond=0)
    now = ts(moment)
    ids = [s.id for s in chosen]
    revoked: list[str] = []
    with transaction(rt.engine) as conn:
        previous: dict[str, DeviceState] = {}
        for device_id in ids:
            # Locked and checked again: another operator may have changed it meanwhile.
            previous[device_id] = set_state(conn, device_id, DeviceState.QUARANTINED, now)
            if revoke:
                revoked += revoke_device_certificates(conn, device_id, moment,
                                                      RevocationReason.keyCompromise, now)
        subject = ids[0] if len(ids) == 1 else f"incident:{incident}"
        alert_id, _ = raise_alert(rt, conn, NewAlert(
            rule="incident.quarantine", severity=Severity.HIGH, subject=subject,
            summary=f"{len(ids)} device(s) quarantined by {actor}: {why}"[:500],
            suggested=f"investigate (iotsec incident timeline DEVICE), then release with "
            f"'iotsec incident release --incident {incident}' or retire the devices",
            evidence={"incident": incident, "devices": ids[:100], "revoked": len(revoked)}),
            source=source)
        open_incident(conn, incident=incident, actor=actor, reason=why,
                      selector=selector.as_json(), devices=len(ids), revoked=len(revoked),
                      alert_id=alert_id, now=now)
        conn.execute(insert(m.quarantines), [
            {"device_id": d, "incident_id": incident, "previous_state": previous[d].value,
             "since": now} for d in ids])
        for device_id in ids:
            rt.events.record_in(conn, Event(moment, "device.state", "success", actor=actor,
                                            source=source, subject=device_id, detail={
                                                "from": previous[device_id].value,
                                                "to": DeviceState.QUARANTINED.value,
                                                "incident": incident}))
        rt.events.record_in(conn, Event(moment, "incident.quarantine", "success", actor=actor,
                                        source=source, subject=f"incident:{incident}", detail={
                                            "devices": ids[:100], "count": len(ids),
                                            "selector": selector.as_json(), "reason": why,
                                            "revoke": revoke, "revoked": revoked[:100],
                                            "alert": alert_id}))
    policy_changed(rt)
    synced = sync_after(rt, layout, f"incident {incident}")
    return QuarantineResult(incident, False, tuple(ids), tuple(skipped), tuple(revoked),
                            alert_id, synced.kicked if synced else (),
                            synced.generation if synced else None)


def release_devices(rt: Runtime, device_ids: list[str] | tuple[str, ...] = (), *,
                    incident: str | None = None, actor: str, reason: str = "",
                    broker_dir: Path | None = None) -> ReleaseResult:
    """Return quarantined devices (named, or all of ``incident``) to the state each had.
    A device that left quarantine otherwise (disabled, retired) keeps that state; its
    quarantine record is closed. An incident whose devices are all released is closed."""
    why = _reason(reason)
    ids = list(dict.fromkeys(parse_device_id(d) for d in device_ids))
    incident = parse_incident_id(incident) if incident is not None else None
    if not ids and incident is None:
        raise InvalidInputError("name the devices to release, or --incident ID")
    layout = broker_layout(rt, broker_dir)
    moment = rt.now().replace(microsecond=0)
    now = ts(moment)
    q = m.quarantines.c
    released: list[tuple[str, str]] = []
    closed: list[str] = []
    with transaction(rt.engine) as conn:
        query = select(q.device_id, q.incident_id, q.previous_state, m.devices.c.state).join(
            m.devices, m.devices.c.id == q.device_id)
        if incident is not None:
            query = query.where(q.incident_id == incident)
        if ids:
            query = query.where(q.device_id.in_(ids))
        rows = conn.execute(query.order_by(q.device_id).with_for_update()).all()
        held = {r.device_id for r in rows}
        missing = [d for d in ids if d not in held]
        if missing or not rows:
            raise ConflictError(
                f"{(missing or [incident or ''])[0]!r} is not held in quarantine"
                + (f" by incident {incident}" if incident else ""),
                hint="list what is held with 'iotsec incident list'")
        incidents = sorted({r.incident_id for r in rows})
        for r in rows:
            target = DeviceState(r.previous_state)
            if DeviceState(r.state) is DeviceState.QUARANTINED:
                # The one way out of quarantine back to service (no state transition allows
                # it: 'device enable' cannot bypass the incident).
                conn.execute(update(m.devices).where(
                    m.devices.c.id == r.device_id,
                    m.devices.c.state == DeviceState.QUARANTINED.value).values(
                        state=target.value, updated_at=now))
                released.append((r.device_id, target.value))
            else:
                released.append((r.device_id, str(r.state)))
            rt.events.record_in(conn, Event(moment, "device.state", "success", actor=actor,
                                            subject=r.device_id, detail={
                                                "from": str(r.state), "to": released[-1][1],
                                                "incident": r.incident_id}))
        conn.execute(delete(m.quarantines).where(q.device_id.in_([r.device_id for r in rows])))
        for inc in incidents:
            left = conn.execute(select(q.device_id).where(q.incident_id == inc).limit(1)).first()
            if left is None:
                conn.execute(update(m.incidents).where(m.incidents.c.id == inc).values(
                    state="closed", closed_at=now, closed_by=actor[:160]))
                closed.append(inc)
        rt.events.record_in(conn, Event(moment, "incident.release", "success", actor=actor,
                                        subject=f"incident:{incidents[0]}", detail={
                                            "incidents": incidents, "reason": why,
                                            "released": [d for d, _ in released][:100],
                                            "closed": closed}))
    policy_changed(rt)
    synced = sync_after(rt, layout, "the release")
    return ReleaseResult(tuple(released), tuple(closed), synced.kicked if synced else (),
                         synced.generation if synced else None)
