"""The policy compiled into Mosquitto's acl_file: unit tests and a property test against
the policy engine through a model of Mosquitto's checks."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iotsec.access.engine import CompiledPolicy
from iotsec.access.policy import Identity, Role, Rule, default_device_role
from iotsec.broker.acl import FleetDevice, compile_acl
from iotsec.broker.acl_grants import intersect
from iotsec.broker.mosquitto import check_acl
from tests.broker.mosquitto_model import MosquittoAcl


def dev(i: str, *roles: str, enabled: bool = True, serials: tuple[str, ...] = ("0A",),
        groups: tuple[str, ...] = (), attrs: dict[str, str] | None = None) -> FleetDevice:
    return FleetDevice(i, enabled, roles, groups, attrs or {}, serials)


def role(name: str, *rules: tuple[str, str, str]) -> Role:
    return Role.build(name, [Rule.parse(*r) for r in rules])


def test_default_policy_is_two_pattern_lines_for_any_fleet_size() -> None:
    devices = [dev(f"d{i}", "device") for i in range(2000)]
    acl = compile_acl([default_device_role()], devices)
    assert acl.text.splitlines()[:2] == ["pattern readwrite devices/%u/#",
                                         "pattern read commands/%u/#"]
    # iotsec's own two accounts, which are denied everything, and the CoAP gateway's bridge
    assert acl.user_blocks == 3
    assert acl.warnings == ()
    check_acl(acl.text, required_users=("_iotsec_admin", "_iotsec_probe"))


def test_disabled_devices_with_a_valid_certificate_are_denied_everything() -> None:
    acl = compile_acl([default_device_role()], [
        dev("on", "device"), dev("off", "device", enabled=False),
        dev("gone", "device", enabled=False, serials=())])
    model = MosquittoAcl(acl.text)
    assert acl.blocked == ("off", "gone")
    assert "user gone" not in acl.text  # no valid certificate: TLS refuses it already
    assert not model.allows("off", "devices/off/x", "write")
    assert not model.allows("off", "devices/off/x", "read")
    assert model.allows("on", "devices/on/x", "write")


def test_extra_roles_get_a_user_block_with_every_deny_repeated() -> None:
    base = role("device", ("allow", "publish", "devices/${device.id}/#"),
                ("deny", "publish", "devices/${device.id}/config"))
    gateway = role("gateway", ("allow", "publish", "devices/+/config"))
    acl = compile_acl([base, gateway], [dev("a", "device"), dev("gw", "device", "gateway")])
    model = MosquittoAcl(acl.text)
    # The gateway's own grant must not beat the universal deny (user blocks come first).
    assert not model.allows("gw", "devices/gw/config", "write")
    assert model.allows("gw", "devices/a/config", "write")
    assert not model.allows("a", "devices/a/config", "write")
    assert model.allows("a", "devices/a/temp", "write")
    assert not model.allows("a", "devices/gw/config", "write")


def test_read_needs_receive_and_subscribe() -> None:
    r = role("r", ("allow", "receive", "fleet/#"), ("allow", "subscribe", "fleet/+/status"),
             ("allow", "subscribe", "other/#"))
    acl = compile_acl([r], [dev("a", "r")])
    model = MosquittoAcl(acl.text)
    assert model.allows("a", "fleet/x/status", "read")
    assert not model.allows("a", "fleet/x/other", "read")
    assert not model.allows("a", "other/x", "read")


def test_group_and_attribute_variables_expand_per_device_and_unsafe_values_fail_closed() -> None:
    r = role("r", ("allow", "publish", "groups/${device.group}/#"),
             ("allow", "publish", "sites/${device.attr.site}/#"),
             ("deny", "publish", "sites/${device.attr.site}/locked"))
    devices = [dev("a", "r", groups=("g1", "g2"), attrs={"site": "north"}),
               dev("evil", "r", attrs={"site": "x\ntopic readwrite #"})]
    acl = compile_acl([r], devices)
    model = MosquittoAcl(acl.text)
    assert model.allows("a", "groups/g2/x", "write")
    assert not model.allows("a", "groups/g3/x", "write")
    assert not model.allows("a", "sites/north/locked", "write")
    # A newline in an attribute value never reaches the file: the allow is dropped and the
    # deny is widened to '+'. The one 'topic readwrite #' line is the CoAP gateway's grant.
    lines = acl.text.split("\n")
    assert lines.count("topic readwrite #") == 1
    assert lines[lines.index("topic readwrite #") - 1] == "user _iotsec_gateway"
    assert not model.allows("evil", "sites/south/locked", "write")
    assert not model.allows("evil", "anything", "write")
    check_acl(acl.text)


def test_literal_percent_levels_are_never_pattern_lines() -> None:
    r = role("r", ("allow", "publish", "x/%u/${device.id}"))
    acl = compile_acl([r], [dev("a", "r")])
    assert "pattern" not in acl.text
    model = MosquittoAcl(acl.text)
    assert model.allows("a", "x/%u/a", "write")
    assert not model.allows("a", "x/a/a", "write")


def test_roles_of_new_devices_limit_the_pattern_lines() -> None:
    base = role("base", ("allow", "publish", "devices/${device.id}/#"))
    device = role("device", ("allow", "receive", "devices/${device.id}/#"),
                  ("allow", "subscribe", "devices/${device.id}/#"))
    fleet = [dev("a", "base", "device")]
    # A device registered after the sync gets only 'device': 'base' may not be a pattern.
    acl = compile_acl([base, device], fleet, new_device_roles=("device",))
    model = MosquittoAcl(acl.text)
    assert not model.allows("newcomer", "devices/newcomer/x", "write")
    assert model.allows("newcomer", "devices/newcomer/x", "read")
    assert model.allows("a", "devices/a/x", "write")
    # An empty fleet still gets the default role's patterns.
    empty = compile_acl([base, device], [], new_device_roles=("device",))
    assert empty.pattern_lines == 1


def test_deny_connect_blocks_the_device() -> None:
    r = role("r", ("allow", "publish", "devices/${device.id}/#"),
             ("deny", "connect", "${device.group}"))
    acl = compile_acl([r], [dev("a", "r", groups=("a",)), dev("b", "r", groups=("x",))])
    assert acl.blocked == ("a",)


def test_deny_publish_that_also_blocks_receiving_is_reported() -> None:
    r = role("r", ("allow", "receive", "devices/${device.id}/#"),
             ("allow", "subscribe", "devices/${device.id}/#"),
             ("allow", "publish", "devices/${device.id}/#"),
             ("deny", "publish", "devices/${device.id}/config"))
    acl = compile_acl([r], [dev("a", "r")])
    assert any("also blocks receiving" in w for w in acl.warnings)


@pytest.mark.parametrize(("a", "b", "expected"), [
    (("a", "#"), ("a", "b"), ("a", "b")),
    (("a", "#"), ("a",), ("a",)),
    (("#",), ("+", "x"), ("+", "x")),
    (("a", "+"), ("a", "#"), ("a", "+")),
    (("a", "b"), ("a", "c"), None),
    (("+", "x"), ("$SYS", "x"), None),
    (("a",), ("a", "b"), None),
])
def test_intersect(a: tuple[str, ...], b: tuple[str, ...],
                   expected: tuple[str, ...] | None) -> None:
    assert intersect(a, b) == expected
    assert intersect(b, a) == expected


# --- property: the broker never allows more than the policy -------------------------------

LEVELS = ["devices", "a", "b", "%u", "+", "#", "${device.id}", "${device.group}",
          "${device.attr.loc}", "${cert.serial}"]
NAMES = ["devices", "a", "b", "%u", "d1", "d2", "g1", "x\ny", "0A", "$SYS"]
ACTIONS = ["publish", "receive", "subscribe", "connect"]


@st.composite
def rules(draw: st.DrawFn) -> Rule | None:
    n = draw(st.integers(1, 3))
    levels = [draw(st.sampled_from(LEVELS)) for _ in range(n)]
    if "#" in levels:
        levels = levels[:levels.index("#") + 1]
    try:
        return Rule.parse(draw(st.sampled_from(["allow", "allow", "deny"])),
                          draw(st.sampled_from(ACTIONS)), "/".join(levels))
    except Exception:
        return None


@st.composite
def fleets(draw: st.DrawFn) -> tuple[list[Role], list[FleetDevice]]:
    roles = []
    for name in ("r1", "r2"):
        found = [r for r in draw(st.lists(rules(), max_size=5)) if r is not None]
        roles.append(Role.build(name, found))
    devices = []
    for device_id in ("d1", "d2", "a"):
        held = tuple(draw(st.lists(st.sampled_from(["r1", "r2"]), unique=True, max_size=2)))
        devices.append(FleetDevice(
            device_id, draw(st.booleans()) or device_id == "d1", held,
            tuple(draw(st.lists(st.sampled_from(["g1", "a"]), unique=True, max_size=2))),
            {"loc": draw(st.sampled_from(["a", "b", "x\ny"]))}, ("0A",)))
    return roles, devices


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fleets(), st.lists(st.lists(st.sampled_from(NAMES), min_size=1, max_size=3),
                          min_size=1, max_size=12),
       st.sampled_from([None, ("r1",), ("r1", "r2")]))
def test_broker_never_allows_what_the_policy_denies(
        fleet: tuple[list[Role], list[FleetDevice]], topics: list[list[str]],
        new_roles: tuple[str, ...] | None) -> None:
    roles, devices = fleet
    acl = compile_acl(roles, devices, new_device_roles=new_roles)
    if new_roles is not None:
        # A device registered after the sync, not in the ACL yet: only the patterns apply,
        # and they never give it more than its (default) roles.
        devices = [*devices, FleetDevice("b", True, new_roles, (), {"loc": "a"}, ("0A",))]
    check_acl(acl.text, required_users=("_iotsec_admin", "_iotsec_probe"))
    model = MosquittoAcl(acl.text)
    policy = CompiledPolicy(roles)
    has_deny = any(r.effect.value == "deny" for role_ in roles for r in role_.rules)
    for d in devices:
        identity = Identity(d.id, d.groups, d.attributes, cert_cn=d.id, cert_serial="0A",
                            roles=d.roles)
        for levels in topics:
            topic = "/".join(levels)
            write = model.allows(d.id, topic, "write")
            read = model.allows(d.id, topic, "read")
            if d.id in acl.blocked:
                assert not write and not read
                continue
            may_publish = policy.decide(identity, "publish", topic).allowed
            may_read = (policy.decide(identity, "receive", topic).allowed
                        and policy.decide(identity, "subscribe", topic).allowed)
            assert not write or may_publish, (topic, acl.text)
            assert not read or may_read, (topic, acl.text)
            # Without deny rules and unsafe values, the broker allows exactly the policy.
            if (not has_deny and "\n" not in topic and d.attributes.get("loc") != "x\ny"
                    and d.id != "b"):
                assert write == may_publish, (topic, acl.text)
                assert read == may_read, (topic, acl.text)


def test_a_new_devices_other_roles_denies_keep_patterns_from_allowing_it():
    """A device registered after the sync gets the patterns only: a deny of one of its
    default roles that the enabled devices lack must not be undone by a pattern."""
    roles = [Role.build("r1", [Rule.parse("deny", "publish", "devices")]),
             Role.build("r2", [Rule.parse("allow", "publish", "devices")])]
    devices = [FleetDevice("d1", True, ("r2",), (), {}, ("0A",))]
    acl = compile_acl(roles, devices, new_device_roles=("r1", "r2"))
    model = MosquittoAcl(acl.text)
    assert not model.allows("b", "devices", "write")  # the new device: denied by r1
    assert model.allows("d1", "devices", "write")  # d1 holds r2 only: allowed


@pytest.mark.parametrize("denied", ["${cert.serial}", "${device.group}", "${device.attr.loc}"])
def test_a_deny_no_pattern_can_say_leaves_a_new_device_no_patterns(denied: str) -> None:
    """A deny whose topic names what a pattern cannot (the certificate's serial, a group,
    an attribute) of the roles every device holds: a device registered after the sync,
    which the patterns alone serve, must not be allowed what it denies."""
    roles = [Role.build("r1", [Rule.parse("allow", "publish", "+"),
                               Rule.parse("deny", "publish", denied)])]
    devices = [FleetDevice("d1", True, ("r1",), ("g1",), {"loc": "x"}, ("0A",))]
    acl = compile_acl(roles, devices, new_device_roles=("r1",))
    model = MosquittoAcl(acl.text)
    for topic in ("0A", "g1", "x", "other"):
        assert not model.allows("b", topic, "write"), (topic, acl.text)
    # d1 gets its own block: the deny expanded to its own value, the rest allowed.
    value = {"${cert.serial}": "0A", "${device.group}": "g1", "${device.attr.loc}": "x"}
    assert not model.allows("d1", value[denied], "write")
    assert model.allows("d1", "other", "write")

