"""The decision engine: default deny, deny beats allow, role inheritance, variables,
wildcard injection, '$' topics, invalid input and explanations."""

from __future__ import annotations

import dataclasses

import pytest

from iotsec.access.engine import CompiledPolicy, Decision
from iotsec.access.policy import Identity, Role, Rule, default_device_role, parse_rule_spec
from iotsec.access.topics import TopicError
from iotsec.errors import PolicyError


class Bound:
    """The engine as the service layer uses it: each identity is given its device's own
    roles (read with its registry entry) before it is decided for."""

    def __init__(self, roles: list[Role], device_roles: dict[str, list[str]] | None = None,
                 group_roles: dict[str, list[str]] | None = None) -> None:
        self.policy = CompiledPolicy(roles, group_roles=group_roles)
        self.device_roles = {k: tuple(v) for k, v in (device_roles or {}).items()}
        self._rule_sets = self.policy._rule_sets

    def _bound(self, identity: Identity) -> Identity:
        return dataclasses.replace(identity,
                                   roles=self.device_roles.get(identity.device_id, ()))

    def decide(self, identity: Identity, action: str, resource: str) -> Decision:
        return self.policy.decide(self._bound(identity), action, resource)

    def roles_for(self, identity: Identity) -> tuple[str, ...]:
        return self.policy.roles_for(self._bound(identity))


def role(name: str, *specs: str) -> Role:
    """``role("r", "allow publish:a/#", "deny subscribe:b")``"""
    rules = []
    for spec in specs:
        effect, _, rest = spec.partition(" ")
        rules.append(parse_rule_spec(effect, rest))
    return Role.build(name, rules)


def single(r: Role, device: str = "d1") -> Bound:
    return Bound([r], device_roles={device: [r.name]})


D1 = Identity("d1")
D2 = Identity("d2")


# --- the default device role ---------------------------------------------------------------

@pytest.fixture
def default_policy() -> Bound:
    return Bound([default_device_role()],
                          device_roles={"d1": ["device"], "d2": ["device"]})


@pytest.mark.parametrize(("action", "resource"), [
    ("publish", "devices/d1"),
    ("publish", "devices/d1/telemetry"),
    ("publish", "devices/d1/a/b/c"),
    ("publish", "devices/d1/"),
    ("receive", "devices/d1/x"),
    ("receive", "commands/d1/reboot"),
    ("subscribe", "devices/d1/#"),
    ("subscribe", "devices/d1/+/x"),
    ("subscribe", "devices/d1/+"),
    ("subscribe", "devices/d1"),
    ("subscribe", "devices/d1/config"),
    ("subscribe", "commands/d1/#"),
    ("subscribe", "commands/d1/+/+"),
])
def test_default_role_allows_own_topics(default_policy: Bound, action: str,
                                        resource: str) -> None:
    decision = default_policy.decide(D1, action, resource)
    assert decision.allowed, decision.explanation
    assert decision.role == "device"


@pytest.mark.parametrize(("action", "resource"), [
    ("publish", "devices/d2/telemetry"),
    ("publish", "devices/d1x/telemetry"),
    ("publish", "devices"),
    ("publish", "commands/d1/reboot"),  # commands are received, not published
    ("publish", "d1/devices"),
    ("publish", "/devices/d1"),
    ("publish", "$SYS/devices/d1"),
    ("receive", "commands/d2/reboot"),
    ("subscribe", "devices/#"),
    ("subscribe", "devices/+/telemetry"),
    ("subscribe", "devices/+"),
    ("subscribe", "devices/+/#"),
    ("subscribe", "#"),
    ("subscribe", "+/d1/#"),
    ("subscribe", "+/+/+"),
    ("subscribe", "devices/d2/#"),
    ("subscribe", "commands/#"),
    ("connect", "d1"),
    ("firmware:download", "devices/d1/fw"),
])
def test_default_role_denies_everything_else(default_policy: Bound, action: str,
                                             resource: str) -> None:
    decision = default_policy.decide(D1, action, resource)
    assert not decision.allowed
    assert decision.rule is None
    assert decision.explanation == "no rule allows it (default deny)" \
        or "default deny" in decision.explanation


def test_a_device_without_roles_gets_nothing(default_policy: Bound) -> None:
    stranger = Identity("d3")
    for action, resource in [("publish", "devices/d3/x"), ("subscribe", "devices/d3/#")]:
        assert not default_policy.decide(stranger, action, resource).allowed


def test_empty_policy_denies() -> None:
    policy = Bound([])
    assert not policy.decide(D1, "publish", "a").allowed
    assert not policy.decide(D1, "subscribe", "#").allowed


# --- deny beats allow, inheritance ---------------------------------------------------------

def test_deny_in_group_role_beats_allow_in_device_role() -> None:
    policy = Bound(
        [default_device_role(), role("quarantine", "deny publish:#", "deny subscribe:#")],
        device_roles={"d1": ["device"]}, group_roles={"quarantined": ["quarantine"]})
    free, caught = Identity("d1"), Identity("d1", groups=("quarantined",))
    assert policy.decide(free, "publish", "devices/d1/x").allowed
    d = policy.decide(caught, "publish", "devices/d1/x")
    assert not d.allowed
    assert (d.role, d.rule_index) == ("quarantine", 0)
    assert "quarantine" in d.explanation and "deny publish:#" in d.explanation
    d = policy.decide(caught, "subscribe", "devices/d1/x")
    assert not d.allowed
    assert (d.role, d.rule_index) == ("quarantine", 1)
    # A deny that only overlaps the requested filter still denies the subscription.
    assert not policy.decide(caught, "subscribe", "devices/d1/#").allowed


def test_deny_order_does_not_matter_within_and_across_roles() -> None:
    allow_first = role("r", "allow publish:a/#", "deny publish:a/secret")
    deny_first = role("r", "deny publish:a/secret", "allow publish:a/#")
    for r in (allow_first, deny_first):
        policy = single(r)
        assert policy.decide(D1, "publish", "a/open").allowed
        assert not policy.decide(D1, "publish", "a/secret").allowed
    two = Bound([role("allow", "allow publish:a/#"), role("deny", "deny publish:a/+")],
                         device_roles={"d1": ["allow", "deny"]})
    assert not two.decide(D1, "publish", "a/x").allowed
    assert two.decide(D1, "publish", "a/x/y").allowed
    assert two.decide(D1, "publish", "a").allowed


def test_deny_overlap_blocks_a_wider_subscription() -> None:
    policy = single(role("r", "allow subscribe:devices/d1/#",
                         "deny subscribe:devices/d1/secret/+"))
    assert policy.decide(D1, "subscribe", "devices/d1/telemetry").allowed
    assert policy.decide(D1, "subscribe", "devices/d1/secret").allowed  # the parent only
    assert not policy.decide(D1, "subscribe", "devices/d1/#").allowed
    assert not policy.decide(D1, "subscribe", "devices/d1/+/+").allowed
    assert not policy.decide(D1, "subscribe", "devices/d1/secret/k").allowed
    assert policy.decide(D1, "subscribe", "devices/d1/secret/k/deeper").allowed


def test_group_inheritance() -> None:
    policy = Bound(
        [role("sensor", "allow publish:sensors/+/reading"),
         role("gateway", "allow subscribe:sensors/#")],
        group_roles={"sensors": ["sensor"], "gateways": ["gateway"], "unused": ["missing"]})
    sensor = Identity("s1", groups=("sensors",))
    gateway = Identity("g1", groups=("gateways",))
    both = Identity("x", groups=("unused", "gateways", "sensors"))
    assert policy.decide(sensor, "publish", "sensors/s1/reading").allowed
    assert not policy.decide(sensor, "subscribe", "sensors/#").allowed
    assert policy.decide(gateway, "subscribe", "sensors/#").allowed
    assert not policy.decide(gateway, "publish", "sensors/g1/reading").allowed
    assert not policy.decide(Identity("s1"), "publish", "sensors/s1/reading").allowed
    assert policy.decide(both, "publish", "sensors/x/reading").allowed
    assert policy.decide(both, "subscribe", "sensors/+/reading").allowed
    # Bindings to undefined roles are listed but grant nothing.
    assert policy.roles_for(both) == ("missing", "gateway", "sensor")
    assert policy.roles_for(sensor) == ("sensor",)


def test_groups_change_decisions_for_the_same_device() -> None:
    """The engine caches per (device, groups, action); a device moved between groups must
    see the new group's roles."""
    policy = Bound([role("g", "allow publish:x")], group_roles={"g": ["g"]})
    assert not policy.decide(Identity("d1"), "publish", "x").allowed
    assert policy.decide(Identity("d1", groups=("g",)), "publish", "x").allowed
    assert not policy.decide(Identity("d1", groups=("h",)), "publish", "x").allowed
    assert not policy.decide(Identity("d1"), "publish", "x").allowed


def test_attributes_are_read_per_request_not_cached() -> None:
    policy = single(role("r", "allow publish:sites/${device.attr.site}/#"))
    s1 = Identity("d1", attributes={"site": "s1"})
    s2 = Identity("d1", attributes={"site": "s2"})
    assert policy.decide(s1, "publish", "sites/s1/x").allowed
    assert not policy.decide(s2, "publish", "sites/s1/x").allowed
    assert policy.decide(s2, "publish", "sites/s2/x").allowed
    assert not policy.decide(Identity("d1"), "publish", "sites/s2/x").allowed



def test_certificate_changes_are_seen_for_the_same_device() -> None:
    """Per-identity state is reused only for an equal identity: a new certificate serial
    for the same device changes what ``${cert.serial}`` allows."""
    policy = single(role("r", "allow publish:certs/${cert.serial}/#"))
    old = Identity("d1", cert_serial="0A")
    new = Identity("d1", cert_serial="0B")
    assert policy.decide(old, "publish", "certs/0A/x").allowed
    assert not policy.decide(new, "publish", "certs/0A/x").allowed
    assert policy.decide(new, "publish", "certs/0B/x").allowed
    assert policy.decide(Identity("d1", cert_serial="0A"), "publish", "certs/0A/x").allowed


def test_valid_actions_without_rules_are_denied_and_not_remembered() -> None:
    policy = single(role("r", "allow publish:x"))
    for _ in range(2):
        decision = policy.decide(D1, "firmware:download", "x")
        assert not decision.allowed and decision.rule is None
    assert all("firmware:download" not in rules for rules in policy._rule_sets.values())


def test_first_level_literals_and_variables_mix() -> None:
    """Rules whose first level is a variable or wildcard are still checked against every
    first level; literal first levels only against their own."""
    policy = single(role("r", "allow publish:${device.id}/up", "allow subscribe:${device.id}/#",
                         "deny subscribe:+/secret", "allow subscribe:pub/#",
                         "allow publish:pub/+/x"))
    assert policy.decide(D1, "publish", "d1/up").allowed
    assert not policy.decide(D1, "publish", "d2/up").allowed
    assert policy.decide(D1, "publish", "pub/a/x").allowed
    assert not policy.decide(D1, "publish", "pubs/a/x").allowed
    assert not policy.decide(D1, "subscribe", "d1/#").allowed  # overlaps d1/secret
    assert policy.decide(D1, "subscribe", "d1/up/#").allowed
    assert not policy.decide(D1, "subscribe", "d1/secret").allowed
    assert not policy.decide(D1, "subscribe", "pub/#").allowed  # overlaps pub/secret
    assert policy.decide(D1, "subscribe", "pub/a/#").allowed
    assert not policy.decide(D1, "subscribe", "+/a").allowed
    assert not policy.decide(D1, "subscribe", "#").allowed

# --- variables ----------------------------------------------------------------------------

def test_device_group_variable_with_several_groups() -> None:
    policy = single(role("r", "allow publish:groups/${device.group}/#",
                         "allow subscribe:groups/${device.group}/+/status"))
    me = Identity("d1", groups=("a", "b"))
    assert policy.decide(me, "publish", "groups/a/x").allowed
    assert policy.decide(me, "publish", "groups/b/x/y").allowed
    assert policy.decide(me, "publish", "groups/b").allowed
    assert not policy.decide(me, "publish", "groups/c/x").allowed
    assert not policy.decide(me, "publish", "groups/ab/x").allowed
    assert policy.decide(me, "subscribe", "groups/a/+/status").allowed
    assert policy.decide(me, "subscribe", "groups/b/k/status").allowed
    assert not policy.decide(me, "subscribe", "groups/+/k/status").allowed  # reaches c
    assert not policy.decide(me, "subscribe", "groups/a/#").allowed
    assert not policy.decide(Identity("d1"), "publish", "groups/a/x").allowed


def test_deny_with_group_variable() -> None:
    policy = single(role("r", "allow publish:#", "allow subscribe:#",
                         "deny publish:banned/${device.group}",
                         "deny subscribe:banned/${device.group}"))
    me = Identity("d1", groups=("a", "b"))
    assert not policy.decide(me, "publish", "banned/b").allowed
    assert policy.decide(me, "publish", "banned/c").allowed
    assert not policy.decide(me, "subscribe", "banned/+").allowed
    assert not policy.decide(me, "subscribe", "banned/a").allowed
    assert policy.decide(me, "subscribe", "banned/c").allowed


def test_device_attribute_variable() -> None:
    policy = single(role("r", "allow subscribe:sites/${device.attr.site}/#",
                         "allow publish:sites/${device.attr.site}/${device.id}/#"))
    me = Identity("d1", attributes={"site": "berlin", "floor": "2"})
    assert policy.decide(me, "subscribe", "sites/berlin/#").allowed
    assert policy.decide(me, "subscribe", "sites/berlin/+/temp").allowed
    assert not policy.decide(me, "subscribe", "sites/#").allowed
    assert not policy.decide(me, "subscribe", "sites/+/d1/temp").allowed
    assert not policy.decide(me, "subscribe", "sites/paris/#").allowed
    assert policy.decide(me, "publish", "sites/berlin/d1/temp").allowed
    assert not policy.decide(me, "publish", "sites/berlin/d2/temp").allowed
    assert not policy.decide(me, "publish", "sites/2/d1/temp").allowed


def test_cert_variables() -> None:
    policy = single(role("r", "allow publish:cn/${cert.cn}/#",
                         "allow subscribe:serial/${cert.serial}/+"))
    me = Identity("d1", cert_cn="sensor-7", cert_serial="0a1b")
    assert policy.decide(me, "publish", "cn/sensor-7/x").allowed
    assert not policy.decide(me, "publish", "cn/d1/x").allowed
    assert policy.decide(me, "subscribe", "serial/0a1b/+").allowed
    assert not policy.decide(me, "subscribe", "serial/+/+").allowed
    nocert = Identity("d1")
    assert not policy.decide(nocert, "publish", "cn/sensor-7/x").allowed
    assert not policy.decide(nocert, "subscribe", "serial/0a1b/x").allowed


def test_connect_and_api_actions_match_names() -> None:
    policy = single(role("r", "allow connect:${device.id}",
                         "allow firmware:download:firmware/${device.group}/#",
                         "deny firmware:download:firmware/+/beta"))
    me = Identity("d1", groups=("cams",))
    assert policy.decide(me, "connect", "d1").allowed
    assert not policy.decide(me, "connect", "d2").allowed
    assert policy.decide(me, "firmware:download", "firmware/cams/v1.2.bin").allowed
    assert not policy.decide(me, "firmware:download", "firmware/cams/beta").allowed
    assert not policy.decide(me, "firmware:download", "firmware/doors/v1.bin").allowed
    assert not policy.decide(me, "firmware:upload", "firmware/cams/v1.bin").allowed
    with pytest.raises(TopicError):
        policy.decide(me, "firmware:download", "firmware/cams/#")


# --- wildcard injection through identity values -------------------------------------------

INJECTED = ["+", "#", "a/b", "", "x+", "#x", "/", "a\x00"]


@pytest.mark.parametrize("value", INJECTED)
def test_attribute_values_cannot_inject_wildcards(value: str) -> None:
    policy = single(role("r", "allow subscribe:sites/${device.attr.site}",
                         "allow subscribe:sites/${device.attr.site}/#",
                         "allow publish:sites/${device.attr.site}/#"))
    me = Identity("d1", attributes={"site": value})
    for requested in ["sites/#", "sites/+", "sites/+/#", "sites/a/b", "sites/a/#", "sites/a",
                      "sites/x+", "sites/", "sites//#", "#"]:
        try:
            allowed = policy.decide(me, "subscribe", requested).allowed
        except TopicError:
            continue  # 'sites/x+' is not a filter at all
        assert not allowed, requested
    for name in ["sites/a/b", "sites/a", "sites/", "sites//x", "sites/a/b/c"]:
        assert not policy.decide(me, "publish", name).allowed, name


@pytest.mark.parametrize("value", INJECTED)
def test_group_names_cannot_inject_wildcards(value: str) -> None:
    policy = Bound([role("r", "allow subscribe:groups/${device.group}/#",
                                  "allow publish:groups/${device.group}/+")],
                            group_roles={value: ["r"], "ok": ["r"]})
    me = Identity("d1", groups=(value, "ok"))
    assert policy.roles_for(me) == ("r",)
    for requested in ["groups/#", "groups/+/#", "groups/+", "groups/a/#", "groups/a/b/#",
                      "groups//#"]:
        assert not policy.decide(me, "subscribe", requested).allowed, requested
    assert not policy.decide(me, "publish", "groups/a/b/c").allowed
    # The group with a valid name still works.
    assert policy.decide(me, "subscribe", "groups/ok/#").allowed
    assert policy.decide(me, "publish", "groups/ok/x").allowed


@pytest.mark.parametrize("value", INJECTED)
def test_device_ids_and_cert_values_cannot_inject_wildcards(value: str) -> None:
    policy = Bound([default_device_role(),
                             role("cert", "allow subscribe:cn/${cert.cn}/#",
                                  "allow subscribe:sn/${cert.serial}/#")],
                            device_roles={value: ["device", "cert"]})
    me = Identity(value, cert_cn=value, cert_serial=value)
    for requested in ["devices/#", "devices/+/#", "devices/a/b/#", "commands/#", "cn/#",
                      "sn/+/#", "devices//#", "devices/+"]:
        assert not policy.decide(me, "subscribe", requested).allowed, requested
    for name in ["devices/a/b", "devices/x", "devices/", "commands/a/b"]:
        assert not policy.decide(me, "publish", name).allowed, name


def test_invalid_value_in_a_deny_rule_only_disables_that_rule() -> None:
    """Documented semantics: a variable without a valid value makes its rule match
    nothing, for deny rules too."""
    policy = single(role("r", "allow publish:#", "deny publish:sites/${device.attr.site}/#"))
    assert not policy.decide(Identity("d1", attributes={"site": "s"}), "publish", "sites/s/x"
                             ).allowed
    assert policy.decide(Identity("d1", attributes={"site": "#"}), "publish", "sites/s/x"
                         ).allowed


# --- '$' topics ---------------------------------------------------------------------------

def test_wildcard_roles_do_not_reach_dollar_topics() -> None:
    policy = single(role("admin", "allow publish:#", "allow subscribe:#",
                         "allow receive:+/#", "allow publish:+/monitor/+"))
    for name in ["$SYS/x", "$SYS", "$x/monitor/y", "$"]:
        assert not policy.decide(D1, "publish", name).allowed, name
        assert not policy.decide(D1, "receive", name).allowed, name
    for requested in ["$SYS/#", "$SYS/x", "$SYS/+", "$"]:
        assert not policy.decide(D1, "subscribe", requested).allowed, requested
    assert policy.decide(D1, "publish", "SYS/x").allowed
    assert policy.decide(D1, "publish", "a/$SYS").allowed
    assert policy.decide(D1, "subscribe", "+/#").allowed


def test_explicit_dollar_rules_allow_dollar_topics() -> None:
    policy = single(role("sys", "allow publish:$SYS/#", "allow subscribe:$SYS/+/load"))
    assert policy.decide(D1, "publish", "$SYS/x").allowed
    assert policy.decide(D1, "publish", "$SYS").allowed
    assert policy.decide(D1, "subscribe", "$SYS/broker/load").allowed
    assert policy.decide(D1, "subscribe", "$SYS/+/load").allowed
    assert not policy.decide(D1, "subscribe", "$SYS/#").allowed
    assert not policy.decide(D1, "publish", "x/$SYS").allowed


def test_a_deny_on_hash_does_not_touch_dollar_topics() -> None:
    policy = single(role("r", "allow publish:$SYS/#", "deny publish:#",
                         "allow subscribe:$SYS/#", "deny subscribe:+/#"))
    assert policy.decide(D1, "publish", "$SYS/x").allowed
    assert not policy.decide(D1, "publish", "SYS/x").allowed
    assert policy.decide(D1, "subscribe", "$SYS/#").allowed


# --- invalid input raises -----------------------------------------------------------------

@pytest.mark.parametrize("action", ["pub", "PUBLISH", "", "firmware", "a:b:c"])
@pytest.mark.parametrize("device", ["d1", "nobody"])
def test_unknown_action_raises(action: str, device: str) -> None:
    policy = single(default_device_role())
    for _ in range(2):  # and keeps raising (nothing cached)
        with pytest.raises(PolicyError, match="unknown action"):
            policy.decide(Identity(device), action, "devices/d1/x")


@pytest.mark.parametrize(("action", "resource"), [
    ("publish", "devices/d1/+"),
    ("publish", "devices/d1/#"),
    ("publish", ""),
    ("publish", "devices/d1/\x00"),
    ("receive", "devices/d1/#"),
    ("connect", "+"),
    ("subscribe", "devices/d1/#/x"),
    ("subscribe", "devices/d1+"),
    ("subscribe", ""),
    ("subscribe", "devices/\ud800"),
    ("subscribe", "devices/" + "x" * 70_000),
    ("firmware:download", "fw/#"),
])
@pytest.mark.parametrize("device", ["d1", "nobody"])
def test_malformed_resource_raises_rather_than_denying(action: str, resource: str,
                                                       device: str) -> None:
    policy = single(role("r", "allow publish:#", "allow subscribe:#", "allow receive:#",
                         "allow connect:#", "allow firmware:download:#"))
    with pytest.raises(TopicError):
        policy.decide(Identity(device), action, resource)


# --- explanations -------------------------------------------------------------------------

def test_explanations_name_role_and_rule() -> None:
    policy = Bound(
        [default_device_role(), role("lockdown", "allow publish:x", "deny publish:devices/+/fw")],
        device_roles={"d1": ["device", "lockdown"]})
    allowed = policy.decide(D1, "publish", "devices/d1/telemetry")
    assert allowed == Decision(True, "publish", "devices/d1/telemetry", "device", 0,
                               Rule.parse("allow", "publish", "devices/${device.id}/#"))
    assert "allowed" in allowed.explanation
    assert "'device'" in allowed.explanation
    assert "rule 0" in allowed.explanation
    assert "allow publish:devices/${device.id}/#" in allowed.explanation
    denied = policy.decide(D1, "publish", "devices/d1/fw")
    assert (denied.allowed, denied.role, denied.rule_index) == (False, "lockdown", 1)
    assert "denied" in denied.explanation
    assert "'lockdown'" in denied.explanation
    assert "rule 1" in denied.explanation
    assert "deny publish:devices/+/fw" in denied.explanation
    nothing = policy.decide(D1, "publish", "elsewhere")
    assert (nothing.allowed, nothing.role, nothing.rule_index, nothing.rule) == (
        False, None, None, None)
    assert "default deny" in nothing.explanation
    sub = policy.decide(D1, "subscribe", "commands/d1/#")
    assert sub.allowed and sub.rule_index == 3 and "rule 3" in sub.explanation


# --- known defects ------------------------------------------------------------------------

GROUPS_9 = tuple(f"g{i}" for i in range(9))  # 81 combinations of two group variables
GROUPS_70 = tuple(f"g{i}" for i in range(70))


@pytest.mark.parametrize(("resource", "groups", "requested"), [
    ("g/${device.group}/${device.group}", GROUPS_9, "g/g8/g8"),
    ("g/${device.group}/#", GROUPS_70, "g/g69/x"),
])
def test_subscribe_deny_applies_to_every_variable_combination(
        resource: str, groups: tuple[str, ...], requested: str) -> None:
    policy = single(role("r", "allow publish:#", "allow subscribe:#",
                         f"deny publish:{resource}", f"deny subscribe:{resource}"))
    me = Identity("d1", groups=groups)
    assert not policy.decide(me, "publish", requested).allowed  # publish is right
    assert not policy.decide(me, "subscribe", requested).allowed


@pytest.mark.parametrize(("resource", "groups", "requested"), [
    ("g/${device.group}/${device.group}", GROUPS_9, "g/g8/g8"),
    ("g/${device.group}/#", GROUPS_70, "g/g69/x"),
])
def test_subscribe_allow_applies_to_every_variable_combination(
        resource: str, groups: tuple[str, ...], requested: str) -> None:
    policy = single(role("r", f"allow publish:{resource}", f"allow subscribe:{resource}"))
    me = Identity("d1", groups=groups)
    assert policy.decide(me, "publish", requested).allowed
    assert policy.decide(me, "subscribe", requested).allowed


def test_subscribe_hash_allowed_by_plus_hash() -> None:
    policy = single(role("r", "allow subscribe:+/#"))
    assert policy.decide(D1, "subscribe", "#").allowed


# --- a device's own roles come with its identity -------------------------------------------

def test_own_roles_come_with_the_identity_and_groups_add_theirs() -> None:
    policy = CompiledPolicy([default_device_role(), role("g", "allow publish:x")],
                            group_roles={"g": ["g"]})
    me = Identity("d1", groups=("g",), roles=("device",))
    assert policy.roles_for(me) == ("device", "g")
    assert policy.decide(me, "publish", "devices/d1/t").allowed
    assert policy.decide(me, "publish", "x").allowed
    # A role held both ways counts once, in the order first held.
    assert policy.roles_for(Identity("d1", groups=("g",), roles=("g", "g"))) == ("g",)


def test_a_decision_follows_a_change_of_the_devices_roles() -> None:
    policy = CompiledPolicy([default_device_role(), role("lockdown", "deny publish:#")])
    held = Identity("d1", roles=("device",))
    assert policy.decide(held, "publish", "devices/d1/t").allowed
    # The same device with other roles (its entry read again): no view of the old ones.
    locked = Identity("d1", roles=("device", "lockdown"))
    d = policy.decide(locked, "publish", "devices/d1/t")
    assert not d.allowed and d.role == "lockdown"
    assert not policy.decide(Identity("d1"), "publish", "devices/d1/t").allowed
    assert policy.decide(held, "publish", "devices/d1/t").allowed


def test_every_identity_roles_replace_the_devices_own() -> None:
    quarantine = role("quarantine", "allow publish:q/${device.id}")
    policy = CompiledPolicy([default_device_role(), quarantine],
                            every_identity=("quarantine",))
    me = Identity("d1", groups=("g",), roles=("device",))
    assert policy.roles_for(me) == ("quarantine",)
    assert not policy.decide(me, "publish", "devices/d1/t").allowed
    assert policy.decide(me, "publish", "q/d1").allowed


def test_role_sets_are_worked_out_once_per_own_roles_and_groups() -> None:
    """Identities with the same own roles and groups share one role set (and its rules),
    each keeping its own variables; other groups or own roles get their own."""
    policy = CompiledPolicy(
        [role("own", "allow publish:devices/${device.id}/#"),
         role("g", "allow publish:groups/${device.group}/#", "deny publish:devices/+/admin")],
        group_roles={"a": ["g"]})
    first = Identity(device_id="d1", groups=("a",), roles=("own",))
    second = Identity(device_id="d2", groups=("a",), roles=("own",))
    lone = Identity(device_id="d3", roles=("own",))
    assert policy.decide(first, "publish", "devices/d1/t").allowed
    assert not policy.decide(second, "publish", "devices/d1/t").allowed
    assert policy.decide(second, "publish", "devices/d2/t").allowed
    assert not policy.decide(second, "publish", "devices/d2/admin").allowed
    assert policy.decide(lone, "publish", "devices/d3/admin").allowed
    assert not policy.decide(lone, "publish", "groups/a/x").allowed
    assert policy.decide(first, "publish", "groups/a/x").allowed
    assert policy._views["d1"].rules is policy._views["d2"].rules
    assert policy._views["d3"].rules is not policy._views["d1"].rules
    assert set(policy._by_bindings) == {(("own",), ("a",)), (("own",), ())}


def test_views_past_the_bound_drop_the_oldest_and_never_serve_a_stale_identity(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """At its bound the per-device view cache drops the views made first (a few at a time)
    rather than emptying itself: the size stays within the bound, the devices decided for
    most recently keep their views, and a device whose identity changed (other groups or
    own roles) is decided by its new identity, whether its view was kept or dropped. (A
    policy change compiles a new policy, with no views at all.)"""
    import iotsec.access.engine as engine

    monkeypatch.setattr(engine, "_CACHE_LIMIT", 8)
    monkeypatch.setattr(engine, "_VIEWS_DROPPED", 2)
    policy = CompiledPolicy(
        [role("own", "allow publish:devices/${device.id}/#"),
         role("g", "allow publish:groups/${device.group}/#", "deny publish:devices/+/admin")],
        group_roles={"a": ["g"]})
    for n in range(20):
        me = Identity(device_id=f"d{n}", roles=("own",))
        assert policy.decide(me, "publish", f"devices/d{n}/t").allowed
        assert len(policy._views) <= 8
    # One view made room for d8 together with two more (d0-d2 dropped), and so on.
    assert len(policy._views) >= 8 - 2
    assert list(policy._views)[-1] == "d19"
    assert "d0" not in policy._views
    assert set(policy._views) <= {f"d{n}" for n in range(11, 20)}
    # A kept view: the same device with other bindings is decided by the new ones.
    kept = Identity(device_id="d19", groups=("a",), roles=("own",))
    assert not policy.decide(kept, "publish", "devices/d19/admin").allowed
    assert policy.decide(kept, "publish", "groups/a/x").allowed
    # A dropped view: made again from the identity given, not from what it was.
    dropped = Identity(device_id="d0", groups=("a",))
    assert not policy.decide(dropped, "publish", "devices/d0/t").allowed
    assert policy.decide(dropped, "publish", "groups/a/x").allowed
    assert len(policy._views) <= 8
