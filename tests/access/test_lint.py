"""Policy lint: each finding code, when it fires and when it does not."""

from __future__ import annotations

import pytest

from iotsec.access.lint import lint
from iotsec.access.policy import Role, Rule, default_device_role
from iotsec.findings.model import Finding, Severity


def role(name: str, *rules: str) -> Role:
    """``role("r", "allow publish a/b", ...)``."""
    return Role.build(name, [Rule.parse(*text.split(" ", 2)) for text in rules])


def codes(findings: list[Finding]) -> list[tuple[str, str, int | None]]:
    return [(f.rule.code, f.location.name, f.location.index) for f in findings]


def test_the_default_device_role_lints_clean() -> None:
    assert lint([default_device_role()]) == []
    held = lint([default_device_role()], device_counts={"device": 3}, group_roles={})
    assert held == []


def test_an_empty_policy_lints_clean() -> None:
    assert lint([]) == []
    assert lint([], device_counts={}, group_roles={}) == []


# (rules of one role, expected (code, rule index) findings)
POSITIVE = [
    # wildcard-all: an allow on every topic for an MQTT data action.
    (["allow subscribe #"], [("wildcard-all", 0)]),
    (["allow publish +/#"], [("wildcard-all", 0)]),
    (["allow receive #"], [("wildcard-all", 0)]),
    # unscoped-shared-prefix: a wildcard under a shared prefix, no per-device scope.
    (["allow subscribe devices/+/telemetry"], [("unscoped-shared-prefix", 0)]),
    (["allow receive devices/#"], [("unscoped-shared-prefix", 0)]),
    (["allow publish +/x"], [("unscoped-shared-prefix", 0)]),
    # connect-any: connect with a wildcard client id.
    (["allow connect +"], [("connect-any", 0)]),
    (["allow connect #"], [("connect-any", 0)]),
    # deny-shadows-nothing: a deny that overlaps no allow of its action (a typo, here).
    (["allow publish devices/${device.id}/#", "deny publish devicez/x"],
     [("deny-shadows-nothing", 1)]),
    (["allow publish a/b", "deny subscribe a/b"], [("deny-shadows-nothing", 1)]),
    # unreachable-rule: fully covered by a deny, or by an earlier allow, in the same role.
    (["allow publish a/b", "deny publish a/#"], [("unreachable-rule", 0)]),
    (["allow publish t/${device.id}/+", "allow publish t/${device.id}/x"],
     [("unreachable-rule", 1)]),
]

NEGATIVE = [
    # Scoped to the device (or its certificate): not wildcard-all, not shared.
    ["allow subscribe devices/${device.id}/#"],
    ["allow receive ${device.id}/#"],
    ["allow subscribe certs/${cert.serial}/#", "allow publish who/${cert.cn}/+"],
    # Wildcards for API actions are not MQTT topics.
    ["allow firmware:download firmware/#"],
    # No wildcard at all.
    ["allow publish status/all", "allow subscribe alerts/global"],
    # connect on the device's own id, or a literal id.
    ["allow connect ${device.id}"],
    ["allow connect sensor-1"],
    # A deny that overlaps an allow changes decisions.
    ["allow publish devices/${device.id}/#", "deny publish devices/${device.id}/secret"],
    ["allow subscribe devices/${device.id}/#", "deny subscribe +/+/admin"],
    # A partial deny leaves the allow reachable; a later, narrower allow is the redundant one.
    ["allow publish a/${device.id}/#", "deny publish a/${device.id}/b"],
    ["allow publish t/${device.id}/x", "allow publish t/${device.id}/y"],
    ["allow publish t/${device.id}/x", "allow publish t/${device.id}/+"],
]


@pytest.mark.parametrize(("rules", "expected"), POSITIVE,
                         ids=[f"{e[0][0]}-{i}" for i, (_, e) in enumerate(POSITIVE)])
def test_findings(rules: list[str], expected: list[tuple[str, int]]) -> None:
    found = [(f.rule.code, f.location.index) for f in lint([role("r", *rules)])]
    assert found == expected


@pytest.mark.parametrize("rules", NEGATIVE, ids=[r[0] for r in NEGATIVE])
def test_no_findings(rules: list[str]) -> None:
    assert lint([role("r", *rules)]) == []


def test_a_deny_in_one_role_counts_allows_in_every_role() -> None:
    allows = role("reader", "allow subscribe devices/${device.id}/#")
    denies = role("guard", "deny subscribe devices/+/admin")
    assert lint([allows, denies]) == []
    assert codes(lint([denies])) == [("deny-shadows-nothing", "guard", 0)]


def test_an_allow_covered_by_a_deny_in_another_role_is_not_unreachable() -> None:
    # Only the same role's rules make an allow unreachable: other roles may not be held.
    findings = lint([role("a", "allow publish x/${device.id}"),
                     role("b", "allow publish y/${device.id}", "deny publish x/+")])
    assert "unreachable-rule" not in [f.rule.code for f in findings]


@pytest.mark.parametrize(("rules", "code", "severity"), [
    (["allow subscribe #"], "wildcard-all", Severity.HIGH),
    (["allow subscribe devices/+/telemetry"], "unscoped-shared-prefix", Severity.MEDIUM),
    (["allow connect +"], "connect-any", Severity.MEDIUM),
    (["allow publish a/${device.id}", "deny publish b/${device.id}"],
     "deny-shadows-nothing", Severity.LOW),
    (["allow publish a/${device.id}", "deny publish a/+"], "unreachable-rule", Severity.LOW),
])
def test_severities(rules: list[str], code: str, severity: Severity) -> None:
    findings = [f for f in lint([role("r", *rules)]) if f.rule.code == code]
    assert len(findings) == 1
    finding = findings[0]
    assert finding.severity is severity
    assert finding.location.name == "r"
    assert finding.message
    assert finding.fix


def test_unused_role_needs_counts_and_groups() -> None:
    roles = [role("direct", "allow publish d/${device.id}"),
             role("grouped", "allow publish g/${device.id}"),
             role("idle", "allow publish i/${device.id}")]
    assert lint(roles) == []
    assert lint(roles, device_counts={}) == []
    assert lint(roles, group_roles={}) == []
    findings = lint(roles, device_counts={"direct": 2, "idle": 0},
                    group_roles={"plant-a": ["grouped"], "empty": []})
    assert codes(findings) == [("unused-role", "idle", None)]
    assert findings[0].severity is Severity.INFO
    assert "idle" in findings[0].message


def test_unused_role_when_nothing_holds_anything() -> None:
    findings = lint([default_device_role()], device_counts={}, group_roles={})
    assert codes(findings) == [("unused-role", "device", None)]


def test_findings_are_ordered_by_severity_then_role() -> None:
    roles = [role("z-low", "allow publish a/${device.id}", "deny publish b/${device.id}"),
             role("m-medium", "allow connect +"),
             role("b-medium", "allow subscribe devices/+/x"),
             role("a-high", "allow subscribe #"),
             role("unused")]
    findings = lint(roles, device_counts={}, group_roles={
        "g": ["z-low", "m-medium", "b-medium", "a-high"]})
    assert [(f.severity, f.location.name) for f in findings] == [
        (Severity.HIGH, "a-high"), (Severity.MEDIUM, "b-medium"), (Severity.MEDIUM, "m-medium"),
        (Severity.LOW, "z-low"), (Severity.INFO, "unused")]


def test_one_finding_per_rule_for_permissiveness() -> None:
    # '#' is reported as wildcard-all only, not also as an unscoped shared prefix.
    findings = lint([role("r", "allow subscribe #", "allow publish #")])
    assert codes(findings) == [("wildcard-all", "r", 0), ("wildcard-all", "r", 1)]
