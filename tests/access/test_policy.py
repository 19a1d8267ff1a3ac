"""Rules and roles: what parses, what is refused, and why."""

from __future__ import annotations

import pytest

from iotsec.access.policy import (
    MAX_RESOURCE,
    MAX_RULES_PER_ROLE,
    MQTT_ACTIONS,
    Effect,
    Role,
    Rule,
    check_identity_value,
    default_device_role,
    parse_action,
    parse_role_name,
    parse_rule_spec,
)
from iotsec.errors import InvalidInputError, PolicyError

DEFAULT_RESOURCES = ["devices/${device.id}/#", "commands/${device.id}/#"]


def test_policy_error_is_an_input_error() -> None:
    assert issubclass(PolicyError, InvalidInputError)


@pytest.mark.parametrize("resource", DEFAULT_RESOURCES)
@pytest.mark.parametrize("action", MQTT_ACTIONS)
@pytest.mark.parametrize("effect", ["allow", "deny"])
def test_default_role_resources_parse(effect: str, action: str, resource: str) -> None:
    rule = Rule.parse(effect, action, resource)
    assert rule.effect is Effect(effect)
    assert rule.action == action
    assert rule.resource == resource
    assert rule.levels == tuple(resource.split("/"))
    assert rule.variables == (1,)
    assert rule.as_text() == f"{effect} {action}:{resource}"


def test_default_device_role() -> None:
    role = default_device_role()
    assert role.name == "device"
    assert all(r.effect is Effect.ALLOW for r in role.rules)
    assert {(r.action, r.resource) for r in role.rules} == {
        ("publish", "devices/${device.id}/#"),
        ("receive", "devices/${device.id}/#"),
        ("subscribe", "devices/${device.id}/#"),
        ("subscribe", "commands/${device.id}/#"),
        ("receive", "commands/${device.id}/#"),
    }


@pytest.mark.parametrize(("resource", "variables"), [
    ("#", ()),
    ("+", ()),
    ("$SYS/#", ()),
    ("a//b", ()),
    ("/", ()),
    ("${device.id}", (0,)),
    ("${device.id}/#", (0,)),
    ("groups/${device.group}/+/x", (1,)),
    ("sites/${device.attr.site}/#", (1,)),
    ("sites/${device.attr.Floor_2.b-c}", (1,)),
    ("certs/${cert.cn}/${cert.serial}", (1, 2)),
    ("${device.id}/${device.id}", (0, 1)),
    ("a" * MAX_RESOURCE, ()),
    ("a/{device.id}/$device.id/$/}", ()),  # no '${': plain literal levels
])
def test_resources_that_parse(resource: str, variables: tuple[int, ...]) -> None:
    assert Rule.parse("allow", "subscribe", resource).variables == variables


@pytest.mark.parametrize("effect", ["permit", "Allow", "DENY", "", "allow ", "reject"])
def test_unknown_effects_are_refused(effect: str) -> None:
    with pytest.raises(PolicyError, match="unknown effect"):
        Rule.parse(effect, "publish", "a/b")


@pytest.mark.parametrize("action", [
    "pub", "PUBLISH", "Subscribe", "", "firmware", "firmware:", ":download",
    "Firmware:download", "firmware:Download", "a:b:c", "1fw:download", "fw:dl ",
    "fw_x:dl", "a" * 33 + ":b", "fw:" + "d" * 33,
])
def test_unknown_actions_are_refused(action: str) -> None:
    with pytest.raises(PolicyError, match="unknown action"):
        Rule.parse("allow", action, "a/b")
    with pytest.raises(PolicyError):
        parse_action(action)


@pytest.mark.parametrize("action", [*MQTT_ACTIONS, "firmware:download", "devices:read",
                                    "a:b", "a" * 31 + ":" + "b" * 32, "x-1:y-2"])
def test_known_actions_parse(action: str) -> None:
    assert parse_action(action) == action
    assert Rule.parse("deny", action, "a/#").action == action


@pytest.mark.parametrize("resource", [
    "devices/dev-${device.id}",
    "devices/${device.id}x",
    "devices/x${device.id}",
    "${device.id}${device.id}",
    "${device.id}/${device.id}-${device.group}",
    "$${device.id}",
    "${device.id}}",
    "devices/${device.id",
    "${device.id",
    "a/${",
    "${}x",
])
def test_variables_must_be_whole_levels(resource: str) -> None:
    with pytest.raises(PolicyError, match="whole level"):
        Rule.parse("allow", "publish", resource)


@pytest.mark.parametrize("resource", [
    "devices/${device.name}",
    "${env.HOME}",
    "${}",
    "${device.attr.}",
    "${device.attr.1x}",
    "${device.ID}",
    "${cert.subject}",
    "${ device.id }",
    "${device.attr.a b}",
])
def test_unknown_variables_are_refused(resource: str) -> None:
    with pytest.raises(PolicyError, match="unknown variable"):
        Rule.parse("allow", "publish", resource)


@pytest.mark.parametrize("resource", [
    "devices/#/x", "a+", "#/a", "a/#b", "+x/y", "devices/${device.id}/#/x",
    "${device.id}+", "a/\x00", "\ud800",
])
def test_malformed_filters_inside_rules_are_refused(resource: str) -> None:
    with pytest.raises(PolicyError) as info:
        Rule.parse("allow", "subscribe", resource)
    assert repr(resource) in str(info.value) or "whole level" in str(info.value)


@pytest.mark.parametrize("resource", ["", "a" * (MAX_RESOURCE + 1),
                                      "a/" * 512 + "#"])
def test_empty_and_overlong_resources_are_refused(resource: str) -> None:
    with pytest.raises(PolicyError, match=f"1 to {MAX_RESOURCE} characters"):
        Rule.parse("allow", "publish", resource)


@pytest.mark.parametrize("resource", [None, 3, b"a/b"])
def test_non_string_resources_are_refused(resource: object) -> None:
    with pytest.raises(PolicyError):
        Rule.parse("allow", "publish", resource)  # type: ignore[arg-type]


@pytest.mark.parametrize(("spec", "action", "resource"), [
    ("publish:devices/${device.id}/#", "publish", "devices/${device.id}/#"),
    ("subscribe:#", "subscribe", "#"),
    ("receive:commands/${device.id}/+", "receive", "commands/${device.id}/+"),
    ("connect:${device.id}", "connect", "${device.id}"),
    ("publish:a:b", "publish", "a:b"),  # a colon in an MQTT topic is a plain character
    ("firmware:download:firmware/x/#", "firmware:download", "firmware/x/#"),
    ("firmware:download:firmware/${device.group}/+", "firmware:download",
     "firmware/${device.group}/+"),
    ("devices:read:a:b", "devices:read", "a:b"),
])
@pytest.mark.parametrize("effect", ["allow", "deny"])
def test_parse_rule_spec(effect: str, spec: str, action: str, resource: str) -> None:
    rule = parse_rule_spec(effect, spec)
    assert (rule.effect, rule.action, rule.resource) == (Effect(effect), action, resource)
    assert rule == Rule.parse(effect, action, resource)


@pytest.mark.parametrize(("spec", "fragment"), [
    ("publish", "ACTION:RESOURCE"),
    ("", "ACTION:RESOURCE"),
    ("devices/${device.id}/#", "ACTION:RESOURCE"),
    ("publish:", "1 to 1024"),
    ("firmware:download", "unknown action"),  # the resource is missing
    ("firmware:download:", "1 to 1024"),
    ("bogus:a/b", "unknown action"),
    ("publish:devices/#/x", "'#'"),
    ("publish:devices/dev-${device.id}", "whole level"),
])
def test_parse_rule_spec_refusals(spec: str, fragment: str) -> None:
    with pytest.raises(PolicyError) as info:
        parse_rule_spec("allow", spec)
    assert fragment in str(info.value)


@pytest.mark.parametrize("name", ["device", "ops:read", "A.b_c-d", "x" * 64, "0", "Role-1"])
def test_good_role_names(name: str) -> None:
    assert Role.build(name, []).name == name
    assert parse_role_name(name) == name


@pytest.mark.parametrize("name", ["", "-x", ".a", "_a", ":a", "a b", "x" * 65, "é", "a/b",
                                  "a\n", "a\x00", "role$"])
def test_bad_role_names_are_refused(name: str) -> None:
    with pytest.raises(PolicyError, match="role name"):
        Role.build(name, [])


def test_role_rule_limit() -> None:
    rule = Rule.parse("allow", "publish", "a")
    assert len(Role.build("r", [rule] * MAX_RULES_PER_ROLE).rules) == MAX_RULES_PER_ROLE
    with pytest.raises(PolicyError, match=f"at most {MAX_RULES_PER_ROLE}"):
        Role.build("r", [rule] * (MAX_RULES_PER_ROLE + 1))


def test_role_keeps_rules_in_order() -> None:
    rules = [Rule.parse("allow", "publish", "a"), Rule.parse("deny", "publish", "b")]
    role = Role.build("r", rules, description="two")
    assert role.rules == tuple(rules)
    assert role.description == "two"


@pytest.mark.parametrize(("value", "ok"), [
    ("d1", True), ("$x", True), ("é", True), ("a b", True),
    ("", False), (None, False), ("+", False), ("#", False), ("a/b", False), ("a+", False),
    ("x#", False), ("/", False), ("a\x00", False),
])
def test_check_identity_value(value: str | None, ok: bool) -> None:
    assert check_identity_value(value) == (value if ok else None)
