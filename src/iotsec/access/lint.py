"""Policy lint: what a fleet audit flags as overly permissive or misconfigured.

Checks (in the spirit of AWS IoT Device Defender's policy audit):
- ``wildcard-all``: allow publish/subscribe/receive on ``#`` (or a root wildcard) for a
  whole role;
- ``unscoped-shared-prefix``: an allow with a wildcard under a shared prefix and no
  ``${device.id}`` / ``${cert.*}`` scope, so every holder reaches every device's topics;
- ``connect-any``: allow connect with a wildcard client id (a device can take another's id);
- ``deny-shadows-nothing``: a deny that overlaps no allow for that action anywhere in the
  policy, so it never changes a decision (often a typo in the resource);
- ``unreachable-rule``: an allow that a deny in the same role fully covers, or that an
  earlier allow in the same role already covers;
- ``unused-role``: a role no device or group holds.

Findings are the shared :class:`~iotsec.findings.model.Finding`: each code is a rule
``policy/<code>`` (:data:`LINT_RULES`), and a finding's location is the role and the rule's
index in it (:meth:`~iotsec.findings.model.Location.policy_rule`; no index for a whole role).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from iotsec.access.policy import Effect, Role, Rule
from iotsec.access.topics import TopicFilter
from iotsec.findings.model import Finding, Location, Severity
from iotsec.findings.model import Rule as LintRule

__all__ = ["LINT_RULES", "lint", "lint_json"]

_SCOPED = ("${device.id}", "${cert.cn}", "${cert.serial}")
_MQTT_DATA = ("publish", "subscribe", "receive")

WILDCARD_ALL = LintRule(
    "policy/wildcard-all", "Allow on every topic", Severity.HIGH,
    "An allow rule for publish, subscribe or receive on '#' (or a root wildcard) with no "
    "per-device scope: every holder of the role reaches every topic of the fleet.",
    "scope the rule to the device: e.g. devices/${device.id}/#")
UNSCOPED_SHARED_PREFIX = LintRule(
    "policy/unscoped-shared-prefix", "Wildcard under a shared prefix", Severity.MEDIUM,
    "An allow rule with a wildcard under a prefix every device shares and no ${device.id} "
    "or ${cert.*} level: every holder reaches every device's topics there.",
    "add a ${device.id} level, or narrow the filter")
CONNECT_ANY = LintRule(
    "policy/connect-any", "Connect with any client id", Severity.MEDIUM,
    "An allow on connect with a wildcard client id: a device can connect as another "
    "device and take over its session.",
    "allow connect on ${device.id} only")
DENY_SHADOWS_NOTHING = LintRule(
    "policy/deny-shadows-nothing", "Deny that overlaps no allow", Severity.LOW,
    "A deny rule that overlaps no allow rule of its action anywhere in the policy, so it "
    "never changes a decision: often a typo in the resource.",
    "check the resource for a typo, or remove the rule")
UNREACHABLE_RULE = LintRule(
    "policy/unreachable-rule", "Allow that can never apply", Severity.LOW,
    "An allow rule that a deny rule of the same role fully covers, or that an earlier allow "
    "rule of the same role already covers.",
    "remove the narrower rule")
UNUSED_ROLE = LintRule(
    "policy/unused-role", "Role held by nobody", Severity.INFO,
    "A role that no device and no group holds.",
    "assign it or remove it")
LINT_RULES = (WILDCARD_ALL, UNSCOPED_SHARED_PREFIX, CONNECT_ANY, DENY_SHADOWS_NOTHING,
              UNREACHABLE_RULE, UNUSED_ROLE)


def lint_json(finding: Finding) -> dict[str, Any]:
    """A lint finding as ``iotsec policy lint --json`` and ``GET /v1/policy/lint`` show
    it: severity, code (the rule's name without ``policy/``), role, rule index, message,
    fix."""
    return {"severity": finding.severity.value, "code": finding.rule.code,
            "role": finding.location.name, "rule_index": finding.location.index,
            "message": finding.message, "fix": finding.fix}


def _filter(rule: Rule) -> TopicFilter:
    # Variable levels are compared as opaque literals: '+' and '#' cover them, another
    # literal does not, and the same variable equals itself.
    return TopicFilter(text=rule.resource, levels=rule.levels)


def lint(roles: Sequence[Role], *, device_counts: Mapping[str, int] | None = None,
         group_roles: Mapping[str, Sequence[str]] | None = None) -> list[Finding]:
    """Every finding on ``roles``, worst first, then by role and rule index. ``unused-role``
    is checked only when both ``device_counts`` (devices per role) and ``group_roles``
    (roles per group) are given."""
    findings: list[Finding] = []
    all_allows = [(role, i, r) for role in roles for i, r in enumerate(role.rules)
                  if r.effect is Effect.ALLOW]
    for role in roles:
        for i, rule in enumerate(role.rules):
            f = _filter(rule)
            where = Location.policy_rule(role.name, i)
            scoped = any(level in _SCOPED for level in rule.levels)
            if rule.effect is Effect.ALLOW:
                if rule.action in _MQTT_DATA and f.levels[0] in ("#", "+") and not scoped \
                        and (f.levels[0] == "#" or f.levels[-1] == "#"):
                    findings.append(WILDCARD_ALL.at(
                        where, f"{rule.as_text()} lets every holder {rule.action} on all "
                        "topics"))
                elif rule.action in _MQTT_DATA and f.is_wildcard and not scoped:
                    findings.append(UNSCOPED_SHARED_PREFIX.at(
                        where, f"{rule.as_text()} reaches every device's topics under a "
                        "shared prefix"))
                elif rule.action == "connect" and f.is_wildcard and not scoped:
                    findings.append(CONNECT_ANY.at(
                        where, f"{rule.as_text()} lets a device connect with any client id"))
                for j, other in enumerate(role.rules):
                    if other.action != rule.action:
                        continue
                    if other.effect is Effect.DENY and _filter(other).covers(f):
                        findings.append(UNREACHABLE_RULE.at(
                            where, f"{rule.as_text()} can never allow anything: rule {j} "
                            f"({other.as_text()}) denies all of it",
                            fix="remove one of the two"))
                        break
                    if other.effect is Effect.ALLOW and j < i and _filter(other).covers(f):
                        findings.append(UNREACHABLE_RULE.at(
                            where, f"{rule.as_text()} is redundant: rule {j} "
                            f"({other.as_text()}) already allows all of it"))
                        break
            else:
                hits = any(a.action == rule.action and _filter(a).overlaps(f)
                           for _, _, a in all_allows)
                if not hits:
                    findings.append(DENY_SHADOWS_NOTHING.at(
                        where, f"{rule.as_text()} overlaps no allow rule, so it never "
                        "changes a decision"))
    if device_counts is not None and group_roles is not None:
        held = {r for rs in group_roles.values() for r in rs}
        for role in roles:
            if device_counts.get(role.name, 0) == 0 and role.name not in held:
                findings.append(UNUSED_ROLE.at(
                    Location.policy_rule(role.name, None),
                    f"role {role.name!r} is held by no device or group"))
    return sorted(findings, key=lambda x: (-x.severity.rank, x.location.name or "",
                                           x.location.index or 0))
