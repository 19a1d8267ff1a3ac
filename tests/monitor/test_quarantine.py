"""Quarantine and release as services, on SQLite and PostgreSQL: the state, the decisions,
the certificates, the incident, the alert and the events, and the refusals that guard
against quarantining by mistake or as an insider's denial of service."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from iotsec.access.policy import Role, Rule
from iotsec.app.access.decisions import check
from iotsec.app.access.roles import add_role
from iotsec.app.events import list_events
from iotsec.app.identity import devices
from iotsec.app.identity.lifecycle import change_state
from iotsec.app.monitor.alerts import get_alert
from iotsec.app.monitor.incident_records import get_incident, list_incidents
from iotsec.app.monitor.quarantine import quarantine_devices, release_devices
from iotsec.app.monitor.selection import Selector
from iotsec.app.pki.issuance import issue_from_csr
from iotsec.errors import ConflictError, DeviceStateError, InvalidInputError
from iotsec.identity.registry import DeviceState
from iotsec.store import models as m
from iotsec.store.db import reading
from tests.helpers import make_csr


def _add(rt, device_id, groups=(), attrs=()):
    devices.add_device(rt, devices.NewDevice.parse(device_id, list(groups), list(attrs)))


def _counts(rt):
    with reading(rt.engine) as conn:
        return {t.name: conn.execute(select(func.count()).select_from(t)).scalar_one()
                for t in (m.incidents, m.quarantines, m.alerts, m.events)}


def test_quarantine_gives_only_the_remediation_topic_and_release_restores(rt):
    _add(rt, "cam-1")
    issued = issue_from_csr(rt, "cam-1", make_csr())
    assert check(rt, "cam-1", "publish", "devices/cam-1/telemetry").allowed
    result = quarantine_devices(rt, Selector.parse(["cam-1"]), reason="beaconing to C2",
                                actor="alice")
    assert result.quarantined == ("cam-1",) and result.revoked == ()
    assert devices.get_device(rt, "cam-1").state is DeviceState.QUARANTINED
    denied = check(rt, "cam-1", "publish", "devices/cam-1/telemetry")
    assert not denied.allowed and "quarantined" in denied.explanation
    assert check(rt, "cam-1", "publish", "quarantine/cam-1/report").allowed
    assert check(rt, "cam-1", "subscribe", "quarantine/cam-1/#").allowed
    assert not check(rt, "cam-1", "publish", "quarantine/cam-2/report").allowed
    # No new certificate while quarantined.
    with pytest.raises(DeviceStateError):
        issue_from_csr(rt, "cam-1", make_csr())
    incident = get_incident(rt, result.incident)
    assert (incident.state, incident.actor, incident.reason, incident.held) == (
        "open", "alice", "beaconing to C2", ("cam-1",))
    alert = get_alert(rt, result.alert_id)
    assert alert.rule == "incident.quarantine" and alert.subject == "cam-1"
    opened = list_events(rt.engine, kind="incident.quarantine")
    assert opened[0].actor == "alice" and opened[0].detail["devices"] == ["cam-1"]
    state = list_events(rt.engine, kind="device.state")[0]
    assert state.subject == "cam-1" and state.detail["to"] == "quarantined"

    # 'device enable' cannot bypass the incident.
    with pytest.raises(DeviceStateError, match="cannot become active") as refused:
        change_state(rt, "cam-1", DeviceState.ACTIVE)
    assert "incident release" in (refused.value.hint or "")
    released = release_devices(rt, ["cam-1"], actor="bob", reason="reimaged")
    assert released.released == (("cam-1", "active"),)
    assert released.closed_incidents == (result.incident,)
    assert devices.get_device(rt, "cam-1").state is DeviceState.ACTIVE
    assert check(rt, "cam-1", "publish", "devices/cam-1/telemetry").allowed
    assert get_incident(rt, result.incident).closed_by == "bob"
    assert list_events(rt.engine, kind="incident.release")[0].actor == "bob"
    assert issued.serial  # the certificate was kept (no --revoke)


def test_revoke_and_a_group_selection(rt):
    for d in ("a-1", "a-2", "b-1"):
        _add(rt, d, groups=["site-a" if d.startswith("a") else "site-b"])
    serials = {d: issue_from_csr(rt, d, make_csr()).serial for d in ("a-1", "a-2")}
    change_state(rt, "a-2", DeviceState.DISABLED)
    result = quarantine_devices(rt, Selector.parse(group="site-a"), revoke=True,
                                reason="stolen", actor="alice")
    assert result.quarantined == ("a-1",)
    assert result.skipped == (("a-2", "is disabled"),)
    assert result.revoked == (serials["a-1"],)
    with reading(rt.engine) as conn:
        reason = conn.execute(select(m.certificates.c.revocation_reason).where(
            m.certificates.c.serial == serials["a-1"])).scalar_one()
        kept = conn.execute(select(m.certificates.c.revoked_at).where(
            m.certificates.c.serial == serials["a-2"])).scalar_one()
    assert reason == 1 and kept is None  # keyCompromise; the disabled one untouched
    assert devices.get_device(rt, "b-1").state is DeviceState.PENDING


def test_query_selection_and_dry_run_change_nothing(rt):
    _add(rt, "th-1", attrs=["model=x1"])
    _add(rt, "th-2", attrs=["model=x2"])
    _add(rt, "cam-9", attrs=["model=x1"])
    before = _counts(rt)
    plan = quarantine_devices(rt, Selector.parse(query=["id=th-*", "attr.model=x1"]),
                              actor="alice", dry_run=True)
    assert plan.dry_run and plan.quarantined == ("th-1",) and plan.incident is None
    assert _counts(rt) == before
    assert devices.get_device(rt, "th-1").state is DeviceState.PENDING


@pytest.mark.parametrize(("kwargs", "message"), [
    ({}, "no devices selected"),
    ({"query": ["id=*"]}, "restricts nothing"),
    ({"query": ["colour=red"]}, "unknown query field"),
    ({"query": ["state=asleep"]}, "unknown state"),
    ({"devices": ["_iotsec_probe"]}, "not allowed"),
    ({"devices": ["a"], "group": "g"}, "not both"),
])
def test_bad_selections_are_refused(kwargs, message):
    with pytest.raises(InvalidInputError, match=message):
        Selector.parse(**kwargs)


def test_large_selections_need_the_exact_count(rt):
    rt.settings.quarantine_max_devices = 2
    for i in range(3):
        _add(rt, f"d-{i}", groups=["all"])
    before = _counts(rt)
    with pytest.raises(ConflictError, match="more than") as refused:
        quarantine_devices(rt, Selector.parse(group="all"), actor="mallory")
    assert "--confirm-count 3" in (refused.value.hint or "")
    with pytest.raises(ConflictError, match="does not match"):
        quarantine_devices(rt, Selector.parse(group="all"), actor="mallory", confirm_count=2)
    assert _counts(rt) == before
    done = quarantine_devices(rt, Selector.parse(group="all"), actor="alice", confirm_count=3)
    assert len(done.quarantined) == 3
    assert get_alert(rt, done.alert_id).subject == f"incident:{done.incident}"
    assert list_incidents(rt, state="open")[0].devices == 3
    # Released one by one: the incident closes with the last.
    assert release_devices(rt, ["d-0"], actor="bob").closed_incidents == ()
    assert release_devices(rt, incident=done.incident, actor="bob").closed_incidents == (
        done.incident,)


def test_a_quarantined_device_disabled_meanwhile_stays_disabled_on_release(rt):
    _add(rt, "cam-3")
    done = quarantine_devices(rt, Selector.parse(["cam-3"]), actor="alice")
    change_state(rt, "cam-3", DeviceState.DISABLED)
    released = release_devices(rt, incident=done.incident, actor="bob")
    assert released.released == (("cam-3", "disabled"),)
    assert released.closed_incidents == (done.incident,)
    assert devices.get_device(rt, "cam-3").state is DeviceState.DISABLED


def test_refusals_change_nothing(rt):
    _add(rt, "gone")
    change_state(rt, "gone", DeviceState.RETIRED)
    before = _counts(rt)
    with pytest.raises(ConflictError, match="can be quarantined"):
        quarantine_devices(rt, Selector.parse(["gone", "ghost"]), actor="alice")
    with pytest.raises(ConflictError, match="not held in quarantine"):
        release_devices(rt, ["gone"], actor="alice")
    with pytest.raises(InvalidInputError):
        quarantine_devices(rt, Selector.parse(["gone"]), actor="alice", reason="x" * 600)
    assert _counts(rt) == before


def test_a_store_role_named_quarantine_replaces_the_built_in_one(rt):
    add_role(rt, Role.build("quarantine", [
        Rule.parse("allow", "publish", "remediate/${device.id}")]))
    _add(rt, "cam-2")
    quarantine_devices(rt, Selector.parse(["cam-2"]), actor="alice")
    assert check(rt, "cam-2", "publish", "remediate/cam-2").allowed
    assert not check(rt, "cam-2", "publish", "quarantine/cam-2/x").allowed
