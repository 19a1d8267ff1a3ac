"""The broker reads only the devices its ACL depends on (``load_acl_fleet``), and the ACL
written from them is the one written from the whole fleet (``load_fleet``), on SQLite and
PostgreSQL, whatever the mix of states, roles, groups, certificates and rules."""

from __future__ import annotations

import hashlib

import pytest
from sqlalchemy import insert, update

from iotsec.access.policy import Role, Rule
from iotsec.access.quarantine import quarantine_role_of
from iotsec.app.access.roles import add_role
from iotsec.app.broker.build import ACL_HEADER
from iotsec.app.broker.fleet import load_acl_fleet, load_fleet, new_device_roles
from iotsec.app.identity import devices
from iotsec.app.identity.bindings import assign_roles
from iotsec.app.runtime import Runtime
from iotsec.broker.acl import compile_acl
from iotsec.store import models as m
from iotsec.store.db import transaction
from iotsec.timeutil import ts


def _acl(rt: Runtime, loader: object) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    roles, fleet = loader(rt)  # type: ignore[operator]
    acl = compile_acl(roles, fleet, header=ACL_HEADER, new_device_roles=new_device_roles(roles),
                      quarantine_role=quarantine_role_of(roles, rt.settings.quarantine_topic))
    return acl.text, acl.blocked, acl.quarantined


def _certify(rt: Runtime, ids: list[str], *, revoked: bool = False,
             expired: bool = False) -> None:
    now = ts(rt.now())
    rows = []
    for device_id in ids:
        serial = hashlib.sha256(f"{device_id}{revoked}{expired}".encode()).hexdigest()[:32]
        rows.append({
            "serial": serial.upper(), "authority_id": rt.issuing_id(), "device_id": device_id,
            "kind": "device", "profile": "device", "subject": device_id,
            "not_before": now - 86400, "not_after": now - 60 if expired else now + 86400,
            "sha256": hashlib.sha256(serial.encode()).hexdigest(), "der": b"\x00",
            "created_at": now, "revoked_at": now - 10 if revoked else None,
            "revocation_reason": 1 if revoked else None, "crl_entry": None,
            "replaced_by": None})
    with transaction(rt.engine) as conn:
        conn.execute(insert(m.certificates), rows)


def _state(rt: Runtime, ids: list[str], state: str) -> None:
    with transaction(rt.engine) as conn:
        conn.execute(update(m.devices).where(m.devices.c.id.in_(ids)).values(state=state))


def _same(rt: Runtime) -> str:
    reduced = _acl(rt, load_acl_fleet)
    assert reduced == _acl(rt, load_fleet)
    return reduced[0]


@pytest.fixture
def fleet(rt: Runtime) -> Runtime:
    devices.import_devices(rt, [devices.NewDevice.parse(
        f"d-{i:02d}", ["even" if i % 2 == 0 else "odd"], {"site": f"s{i % 3}"})
        for i in range(30)])
    _certify(rt, [f"d-{i:02d}" for i in range(0, 30, 2)])
    _certify(rt, ["d-01"], revoked=True)
    _certify(rt, ["d-03"], expired=True)
    return rt


def test_default_role_only(fleet):
    text = _same(fleet)
    assert "user d-" not in text  # everything is pattern lines
    # Read: the first enabled device only (it fixes the order of the shared roles).
    assert [d.id for d in load_acl_fleet(fleet)[1]] == ["d-00"]


def test_states_and_extra_roles(fleet):
    rt = fleet
    _state(rt, ["d-04", "d-05"], "disabled")
    _state(rt, ["d-06"], "retired")
    _state(rt, ["d-08", "d-09"], "quarantined")
    _state(rt, ["d-11"], "awaiting-approval")
    add_role(rt, Role.build("gateway", [
        Rule.parse("allow", "subscribe", "devices/+/telemetry"),
        Rule.parse("allow", "receive", "devices/+/telemetry")]))
    with transaction(rt.engine) as conn:
        assign_roles(conn, ["d-10", "d-12", "d-13"], ["gateway"])
    text = _same(rt)
    assert "user d-10" in text and "user d-04" in text and "user d-08" in text
    assert "user d-13" not in text  # no valid certificate: no block
    # Read: the devices not enabled, the gateways with a certificate, the first device.
    assert [d.id for d in load_acl_fleet(rt)[1]] == [
        "d-00", "d-04", "d-05", "d-06", "d-08", "d-09", "d-10", "d-11", "d-12"]


def test_group_roles_and_a_role_every_device_but_one_holds(fleet):
    rt = fleet
    add_role(rt, Role.build("lamp", [Rule.parse("allow", "publish", "lamps/${device.id}")]))
    add_role(rt, Role.build("meter", [Rule.parse("allow", "publish", "meters/${device.id}")]))
    with transaction(rt.engine) as conn:
        conn.execute(insert(m.group_roles), [{"group_name": "even", "role_name": "lamp"},
                                             {"group_name": "odd", "role_name": "lamp"}])
        assign_roles(conn, [f"d-{i:02d}" for i in range(1, 30)], ["meter"])
    # 'lamp' reaches every device through its group; 'meter' every device but d-00.
    _same(rt)
    _state(rt, ["d-00"], "disabled")  # now every enabled device holds 'meter'
    _same(rt)


def test_without_the_default_role(fleet):
    rt = fleet
    add_role(rt, Role.build("gateway", [Rule.parse("allow", "publish", "gw/${device.id}")]))
    with transaction(rt.engine) as conn:
        assign_roles(conn, ["d-00", "d-02"], ["gateway"])
        conn.execute(m.device_roles.delete().where(m.device_roles.c.role_name == "device"))
        conn.execute(m.role_rules.delete().where(m.role_rules.c.role_name == "device"))
        conn.execute(m.roles.delete().where(m.roles.c.name == "device"))
    _same(rt)


def test_rules_that_need_each_device_and_connect_denials(fleet):
    rt = fleet
    add_role(rt, Role.build("site", [
        Rule.parse("allow", "publish", "sites/${device.attr.site}/${device.id}")]))
    with transaction(rt.engine) as conn:
        assign_roles(conn, ["d-02", "d-04"], ["site"])
    _same(rt)
    add_role(rt, Role.build("grouped", [
        Rule.parse("allow", "publish", "groups/${device.group}/${device.id}")]))
    with transaction(rt.engine) as conn:
        assign_roles(conn, [f"d-{i:02d}" for i in range(30)], ["grouped"])
    assert "user d-00" in _same(rt)  # a shared rule expanded per device
    add_role(rt, Role.build("nope", [Rule.parse("deny", "connect", "d-02")]))
    with transaction(rt.engine) as conn:
        assign_roles(conn, ["d-02"], ["nope"])
    _same(rt)


def test_an_empty_fleet(rt):
    _same(rt)
