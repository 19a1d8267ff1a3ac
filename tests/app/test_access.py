"""Access-control use cases and policy as code, on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from sqlalchemy import select

from iotsec.access.document import parse_document
from iotsec.access.policy import Role, Rule, default_device_role
from iotsec.app.access import decisions as access
from iotsec.app.access import roles
from iotsec.app.access.policy import apply_policy, export_policy, lint_policy
from iotsec.app.events import list_events
from iotsec.app.identity import devices
from iotsec.app.identity.lifecycle import change_state
from iotsec.app.runtime import Runtime, open_runtime
from iotsec.config import Settings
from iotsec.errors import ConflictError, IotsecError, NotFoundError, PolicyError
from iotsec.findings.model import Severity
from iotsec.identity.registry import DeviceState
from iotsec.store import models as m
from iotsec.store.db import reading

FW = Role.build("fw", [
    Rule.parse("allow", "firmware:download", "firmware/${device.group}/#"),
    Rule.parse("deny", "firmware:download", "firmware/${device.group}/beta/#"),
], description="firmware for the device's group")
TELEMETRY = Role.build("telemetry-reader", [
    Rule.parse("allow", "subscribe", "devices/+/telemetry"),
])


def version(rt: Runtime) -> int:
    with reading(rt.engine) as conn:
        return int(conn.execute(select(m.policy_version.c.version)).scalar_one())


def snapshot(rt: Runtime) -> tuple[Any, ...]:
    """Everything the access policy consists of, to compare before and after."""
    with reading(rt.engine) as conn:
        tables = tuple(sorted(tuple(r) for r in conn.execute(select(t)))
                       for t in (m.roles, m.role_rules, m.device_roles, m.group_roles,
                                 m.groups, m.devices))
    return (version(rt), export_policy(rt), tables)


def roles_of(rt: Runtime, device_id: str) -> list[str]:
    with reading(rt.engine) as conn:
        return sorted(conn.execute(select(m.device_roles.c.role_name).where(
            m.device_roles.c.device_id == device_id)).scalars())


def add(rt: Runtime, device_id: str, groups: tuple[str, ...] = (),
        roles: list[str] | None = None) -> None:
    devices.add_device(rt, devices.NewDevice.parse(device_id, groups, roles=roles))


# --- roles and bindings --------------------------------------------------------------------


def test_init_creates_the_default_role_and_new_devices_hold_it(rt: Runtime) -> None:
    info = roles.get_role(rt, "device")
    assert info.role.rules == default_device_role().rules
    assert [i.role.name for i in roles.list_roles(rt)] == ["device"]
    add(rt, "sensor-0001", ("plant-a",))
    assert roles_of(rt, "sensor-0001") == ["device"]
    assert roles.get_role(rt, "device").devices == 1
    allowed = access.check(rt, "sensor-0001", "publish", "devices/sensor-0001/temp")
    assert allowed.allowed
    assert allowed.role == "device"
    denied = access.check(rt, "sensor-0001", "subscribe", "devices/#")
    assert not denied.allowed
    assert "default deny" in denied.explanation


def test_a_device_with_no_roles_holds_none(rt: Runtime) -> None:
    add(rt, "bare", roles=[])
    assert roles_of(rt, "bare") == []
    assert not access.check(rt, "bare", "publish", "devices/bare/temp").allowed


def test_a_device_with_explicit_roles_gets_only_those(rt: Runtime) -> None:
    roles.add_role(rt, FW)
    add(rt, "d1", roles=["fw"])
    assert roles_of(rt, "d1") == ["fw"]


def test_unknown_role_at_registration_registers_nothing(rt: Runtime) -> None:
    before = snapshot(rt)
    with pytest.raises(NotFoundError, match="'ghost'"):
        add(rt, "d1", ("new-group",), roles=["ghost"])
    assert snapshot(rt) == before
    with pytest.raises(NotFoundError):
        devices.get_device(rt, "d1")


def test_add_role_refuses_a_duplicate(rt: Runtime) -> None:
    roles.add_role(rt, FW)
    before = snapshot(rt)
    with pytest.raises(ConflictError, match="already exists"):
        roles.add_role(rt, Role.build("fw", [], description="other"))
    with pytest.raises(ConflictError):
        roles.add_role(rt, default_device_role())
    assert snapshot(rt) == before
    assert roles.get_role(rt, "fw").role == FW


def test_get_role_of_an_unknown_role(rt: Runtime) -> None:
    with pytest.raises(NotFoundError, match="'nope'"):
        roles.get_role(rt, "nope")
    with pytest.raises(PolicyError):
        roles.get_role(rt, "not a name")


def test_assign_device(rt: Runtime) -> None:
    roles.add_role(rt, FW)
    add(rt, "d1")
    assert roles.assign_device(rt, "d1", ["fw"]) == ["device", "fw"]
    # Assigning again keeps one binding.
    assert roles.assign_device(rt, "d1", ["fw", "device"]) == ["device", "fw"]
    assert roles.get_role(rt, "fw").devices == 1


def test_assign_device_refusals_write_nothing(rt: Runtime) -> None:
    roles.add_role(rt, FW)
    add(rt, "d1")
    before = snapshot(rt)
    with pytest.raises(NotFoundError, match="'ghost'"):
        roles.assign_device(rt, "ghost", ["fw"])
    with pytest.raises(NotFoundError, match="'nope'"):
        roles.assign_device(rt, "d1", ["fw", "nope"])
    with pytest.raises(PolicyError):
        roles.assign_device(rt, "d1", ["bad name"])
    assert snapshot(rt) == before
    assert roles_of(rt, "d1") == ["device"]


def test_add_group(rt: Runtime) -> None:
    roles.add_role(rt, FW)
    assert roles.add_group(rt, "plant-a", ["fw"]) == ["fw"]
    info = roles.get_role(rt, "fw")
    assert info.groups == ("plant-a",)
    before = snapshot(rt)
    with pytest.raises(ConflictError, match="already exists"):
        roles.add_group(rt, "plant-a", ["fw"])
    assert snapshot(rt) == before
    # Another role on the same group adds to it.
    assert roles.add_group(rt, "plant-a", ["device"]) == ["device", "fw"]


def test_add_group_with_an_unknown_role_creates_nothing(rt: Runtime) -> None:
    before = snapshot(rt)
    with pytest.raises(NotFoundError, match="'ghost'"):
        roles.add_group(rt, "plant-z", ["ghost"])
    assert snapshot(rt) == before


def test_check_uses_group_roles(rt: Runtime) -> None:
    roles.add_role(rt, FW)
    add(rt, "d1", ("plant-a",))
    add(rt, "d2", ("plant-b",))
    assert not access.check(rt, "d1", "firmware:download", "firmware/plant-a/v2.bin").allowed
    roles.add_group(rt, "plant-a", ["fw"])
    decision = access.check(rt, "d1", "firmware:download", "firmware/plant-a/v2.bin")
    assert decision.allowed
    assert (decision.role, decision.rule_index) == ("fw", 0)
    assert "'fw' rule 0" in decision.explanation
    # ${device.group} is the device's own group; the deny beats the allow.
    assert not access.check(rt, "d1", "firmware:download", "firmware/plant-b/v2.bin").allowed
    beta = access.check(rt, "d1", "firmware:download", "firmware/plant-a/beta/v3.bin")
    assert not beta.allowed
    assert (beta.role, beta.rule_index) == ("fw", 1)
    # Not a member: no inheritance.
    assert not access.check(rt, "d2", "firmware:download", "firmware/plant-b/v2.bin").allowed


def test_check_with_a_certificate_serial(rt: Runtime) -> None:
    roles.add_role(rt, Role.build("by-cert", [
        Rule.parse("allow", "publish", "certs/${cert.serial}")]))
    add(rt, "d1", roles=["by-cert"])
    assert access.check(rt, "d1", "publish", "certs/0A1B", cert_serial="0a1b").allowed
    assert not access.check(rt, "d1", "publish", "certs/0A1B").allowed


def test_check_of_an_unknown_device(rt: Runtime) -> None:
    with pytest.raises(NotFoundError):
        access.check(rt, "ghost", "publish", "devices/ghost/x")


@pytest.mark.parametrize("state", [DeviceState.DISABLED, DeviceState.RETIRED])
def test_an_inactive_device_is_denied_whatever_its_roles(rt: Runtime,
                                                         state: DeviceState) -> None:
    roles.add_role(rt, Role.build("everything", [Rule.parse("allow", "publish", "#")]))
    add(rt, "d1", roles=["everything", "device"])
    assert access.check(rt, "d1", "publish", "devices/d1/x").allowed
    change_state(rt, "d1", state)
    decision = access.check(rt, "d1", "publish", "devices/d1/x")
    assert not decision.allowed
    assert state.value in decision.explanation
    assert "denied whatever its roles" in decision.explanation


def test_current_policy_is_cached_until_the_version_moves(rt: Runtime) -> None:
    first = access.current_policy(rt)
    assert access.current_policy(rt) is first
    v = version(rt)
    # A new device's own roles are read with its entry, not compiled into the policy.
    add(rt, "d1", ("plant-a",))
    assert version(rt) == v
    assert access.current_policy(rt) is first
    assert access.check(rt, "d1", "publish", "devices/d1/temp").role == "device"
    roles.add_role(rt, FW)
    assert version(rt) > v
    second = access.current_policy(rt)
    assert second is not first
    assert access.current_policy(rt) is second
    assert "fw" in second.role_names
    # Binding a role to a registered device moves the version too.
    v = version(rt)
    roles.assign_device(rt, "d1", ["fw"])
    assert version(rt) > v
    third = access.current_policy(rt)
    assert third is not second
    roles.add_group(rt, "plant-a", ["fw"])
    assert access.current_policy(rt) is not third
    assert access.check(rt, "d1", "firmware:download", "firmware/plant-a/x").allowed


def test_another_runtime_sees_changes(rt: Runtime, settings: Settings, clock: Any) -> None:
    # Another process re-reads the policy version after hot_cache_seconds; 0 means at once.
    other = open_runtime(settings.model_copy(update={"hot_cache_seconds": 0}), clock=clock)
    try:
        add(rt, "d1", roles=[])
        assert not access.check(other, "d1", "publish", "devices/d1/x").allowed
        roles.assign_device(rt, "d1", ["device"])
        assert access.check(other, "d1", "publish", "devices/d1/x").allowed
    finally:
        other.close()


def test_refused_changes_do_not_move_the_version(rt: Runtime) -> None:
    policy = access.current_policy(rt)
    with pytest.raises(ConflictError):
        roles.add_role(rt, default_device_role())
    with pytest.raises(NotFoundError):
        roles.assign_device(rt, "ghost", ["device"])
    assert access.current_policy(rt) is policy


# --- policy as code ------------------------------------------------------------------------

DOC = """\
version: 1
roles:
  - name: device
    description: "least privilege: a device's own topics only"
    rules:
      - {effect: allow, action: publish, resource: "devices/${device.id}/#"}
      - {effect: allow, action: receive, resource: "devices/${device.id}/#"}
      - {effect: allow, action: subscribe, resource: "devices/${device.id}/#"}
      - {effect: allow, action: subscribe, resource: "commands/${device.id}/#"}
      - {effect: allow, action: receive, resource: "commands/${device.id}/#"}
  - name: fw
    description: firmware
    rules:
      - {effect: allow, action: "firmware:download", resource: "firmware/${device.group}/#"}
groups:
  plant-a: [fw]
"""


def test_apply_reports_what_it_did(rt: Runtime) -> None:
    add(rt, "d1", ("plant-a",))
    result = apply_policy(rt, DOC.encode())
    assert (result.created, result.updated, result.unchanged, result.removed,
            result.groups_changed) == (["fw"], [], ["device"], [], ["plant-a"])
    assert result.changed
    assert roles.get_role(rt, "fw").groups == ("plant-a",)
    assert access.check(rt, "d1", "firmware:download", "firmware/plant-a/x").allowed

    edited = DOC.replace("description: firmware", "description: firmware v2") \
        .replace("plant-a: [fw]", "plant-a: [fw, device]\n  plant-b: [fw]")
    result = apply_policy(rt, edited.encode())
    assert (result.created, result.updated, result.unchanged, result.removed,
            result.groups_changed) == ([], ["fw"], ["device"], [], ["plant-a", "plant-b"])
    assert roles.get_role(rt, "fw").role.description == "firmware v2"
    assert roles.get_role(rt, "device").groups == ("plant-a",)

    # Applying the same document again changes nothing.
    v = version(rt)
    result = apply_policy(rt, edited.encode())
    assert not result.changed
    assert sorted(result.unchanged) == ["device", "fw"]
    assert version(rt) == v
    # Each change is an event on the chain, with who applied it; a dry run and a document
    # that changes nothing are not.
    apply_policy(rt, DOC.encode(), dry_run=True, actor="alice")
    applied = list_events(rt.engine, kind="policy.applied")
    assert [(e.actor, e.detail["updated"], e.detail["groups"]) for e in applied] == [
        ("cli", ["fw"], ["plant-a", "plant-b"]), ("cli", [], ["plant-a"])]
    assert applied[0].detail["sha256"] == hashlib.sha256(edited.encode()).hexdigest()


def test_apply_replaces_rules(rt: Runtime) -> None:
    roles.add_role(rt, FW)
    doc = DOC.replace("firmware/${device.group}/#", "firmware/stable/#")
    assert apply_policy(rt, doc.encode()).updated == ["fw"]
    assert [r.resource for r in roles.get_role(rt, "fw").role.rules] == ["firmware/stable/#"]


def test_a_group_emptied_by_the_document_loses_its_roles(rt: Runtime) -> None:
    roles.add_role(rt, FW)
    roles.add_group(rt, "plant-a", ["fw", "device"])
    result = apply_policy(rt, b"groups:\n  plant-a: []\n")
    assert result.groups_changed == ["plant-a"]
    assert roles.get_role(rt, "fw").groups == ()
    # Groups not named in the document are left alone.
    roles.add_group(rt, "plant-b", ["fw"])
    assert not apply_policy(rt, b"groups:\n  plant-a: []\n").changed
    assert roles.get_role(rt, "fw").groups == ("plant-b",)


def test_applying_an_export_changes_nothing(rt: Runtime) -> None:
    roles.add_role(rt, FW)
    roles.add_role(rt, TELEMETRY)
    roles.add_group(rt, "plant-a", ["fw", "device"])
    add(rt, "d1", ("plant-a",), roles=["telemetry-reader"])
    before = snapshot(rt)
    exported = export_policy(rt)
    result = apply_policy(rt, exported.encode())
    assert not result.changed
    assert sorted(result.unchanged) == ["device", "fw", "telemetry-reader"]
    assert snapshot(rt) == before
    assert apply_policy(rt, exported.encode(), prune=True).removed == []


def test_export_of_a_fresh_home(rt: Runtime) -> None:
    doc = parse_document(export_policy(rt).encode())
    assert doc.roles == (default_device_role(),)
    assert dict(doc.groups) == {}


def test_dry_run_changes_nothing(rt: Runtime) -> None:
    roles.add_role(rt, TELEMETRY)
    before = snapshot(rt)
    policy = access.current_policy(rt)
    result = apply_policy(rt, DOC.replace("description: firmware", "description: x").encode(),
                          prune=True, dry_run=True)
    assert (result.created, result.removed, result.groups_changed) == \
        (["fw"], ["telemetry-reader"], ["plant-a"])
    assert snapshot(rt) == before
    assert access.current_policy(rt) is policy


def test_prune_removes_roles_nobody_holds(rt: Runtime) -> None:
    roles.add_role(rt, TELEMETRY)
    roles.add_role(rt, FW)
    result = apply_policy(rt, DOC.encode(), prune=True)
    assert result.removed == ["telemetry-reader"]
    assert [i.role.name for i in roles.list_roles(rt)] == ["device", "fw"]
    with pytest.raises(NotFoundError):
        roles.get_role(rt, "telemetry-reader")


@pytest.mark.parametrize("held_by", ["device", "group"])
def test_prune_refuses_while_a_role_is_held(rt: Runtime, held_by: str) -> None:
    roles.add_role(rt, TELEMETRY)
    if held_by == "device":
        add(rt, "d1", roles=["telemetry-reader"])
    else:
        roles.add_group(rt, "plant-z", ["telemetry-reader"])
    before = snapshot(rt)
    with pytest.raises(ConflictError, match=r"'telemetry-reader'.*still held"):
        apply_policy(rt, DOC.encode(), prune=True)
    assert snapshot(rt) == before
    # Without --prune the same document applies, and the held role stays.
    assert apply_policy(rt, DOC.encode()).created == ["fw"]
    assert roles.get_role(rt, "telemetry-reader").role == TELEMETRY


def test_binding_an_undefined_role_writes_nothing(rt: Runtime) -> None:
    before = snapshot(rt)
    doc = DOC.replace("plant-a: [fw]", "plant-a: [fw]\n  plant-b: [ghost]")
    with pytest.raises(ConflictError, match="'ghost'"):
        apply_policy(rt, doc.encode())
    assert snapshot(rt) == before


def test_a_group_may_bind_a_role_defined_only_in_the_store(rt: Runtime) -> None:
    roles.add_role(rt, TELEMETRY)
    result = apply_policy(rt, b"groups:\n  plant-a: [telemetry-reader]\n")
    assert result.groups_changed == ["plant-a"]
    assert roles.get_role(rt, "telemetry-reader").groups == ("plant-a",)


def test_a_bad_rule_names_its_line_and_writes_nothing(rt: Runtime) -> None:
    before = snapshot(rt)
    doc = DOC.replace('"firmware/${device.group}/#"', '"firmware-${device.group}/#"')
    with pytest.raises(PolicyError, match=r"^line 14: .*whole level"):
        apply_policy(rt, doc.encode())
    assert snapshot(rt) == before


def test_a_late_error_writes_nothing(rt: Runtime) -> None:
    # The first role is valid and would be created; the pruning refusal comes after it.
    add(rt, "d1", roles=[])
    roles.add_role(rt, TELEMETRY)
    roles.assign_device(rt, "d1", ["telemetry-reader"])
    before = snapshot(rt)
    with pytest.raises(ConflictError):
        apply_policy(rt, DOC.encode(), prune=True)
    assert snapshot(rt) == before


def test_the_longest_api_action_is_stored_and_round_trips(rt: Runtime) -> None:
    longest = "a" * 31 + ":" + "b" * 32
    role = Role.build("api", [Rule.parse("allow", longest, "x")])
    try:
        roles.add_role(rt, role)
        assert not apply_policy(rt, export_policy(rt).encode()).changed
    except IotsecError as exc:
        pytest.fail(f"{type(exc).__name__}: {exc}")


def test_lint_policy(rt: Runtime) -> None:
    add(rt, "d1")
    assert lint_policy(rt) == []
    roles.add_role(rt, Role.build("everything", [Rule.parse("allow", "subscribe", "#")]))
    findings = lint_policy(rt)
    assert [(f.severity, f.rule.code, f.location.name) for f in findings] == [
        (Severity.HIGH, "wildcard-all", "everything"),
        (Severity.INFO, "unused-role", "everything")]
    roles.add_group(rt, "ops", ["everything"])
    assert [f.rule.code for f in lint_policy(rt)] == ["wildcard-all"]


def test_lint_policy_of_a_fresh_home_only_notes_the_unused_default_role(rt: Runtime) -> None:
    assert [(f.severity, f.rule.code, f.location.name) for f in lint_policy(rt)] == [
        (Severity.INFO, "unused-role", "device")]
