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
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from iotsec.access.policy import Effect, Role, Rule
from iotsec.access.topics import TopicFilter

_SCOPED = ("${device.id}", "${cert.cn}", "${cert.serial}")
_MQTT_DATA = ("publish", "subscribe", "receive")


class Severity(enum.StrEnum):
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"
    INFO = "info"


@dataclass(frozen=True, slots=True)
class Finding:
    severity: Severity
    code: str
    role: str
    rule_index: int | None
    message: str
    fix: str


def _filter(rule: Rule) -> TopicFilter:
    # Variable levels are compared as opaque literals: '+' and '#' cover them, another
    # literal does not, and the same variable equals itself.
    return TopicFilter(text=rule.resource, levels=rule.levels)


def lint(roles: Sequence[Role], *, device_counts: Mapping[str, int] | None = None,
         group_roles: Mapping[str, Sequence[str]] | None = None) -> list[Finding]:
    findings: list[Finding] = []
    all_allows = [(role, i, r) for role in roles for i, r in enumerate(role.rules)
                  if r.effect is Effect.ALLOW]
    for role in roles:
        for i, rule in enumerate(role.rules):
            f = _filter(rule)
            scoped = any(level in _SCOPED for level in rule.levels)
            if rule.effect is Effect.ALLOW:
                if rule.action in _MQTT_DATA and f.levels[0] in ("#", "+") and not scoped \
                        and (f.levels[0] == "#" or f.levels[-1] == "#"):
                    findings.append(Finding(
                        Severity.HIGH, "wildcard-all", role.name, i,
                        f"{rule.as_text()} lets every holder {rule.action} on all topics",
                        "scope the rule to the device: e.g. devices/${device.id}/#"))
                elif rule.action in _MQTT_DATA and f.is_wildcard and not scoped:
                    findings.append(Finding(
                        Severity.MEDIUM, "unscoped-shared-prefix", role.name, i,
                        f"{rule.as_text()} reaches every device's topics under a shared "
                        "prefix", "add a ${device.id} level, or narrow the filter"))
                elif rule.action == "connect" and f.is_wildcard and not scoped:
                    findings.append(Finding(
                        Severity.MEDIUM, "connect-any", role.name, i,
                        f"{rule.as_text()} lets a device connect with any client id",
                        "allow connect on ${device.id} only"))
                for j, other in enumerate(role.rules):
                    if other.action != rule.action:
                        continue
                    if other.effect is Effect.DENY and _filter(other).covers(f):
                        findings.append(Finding(
                            Severity.LOW, "unreachable-rule", role.name, i,
                            f"{rule.as_text()} can never allow anything: rule {j} "
                            f"({other.as_text()}) denies all of it", "remove one of the two"))
                        break
                    if other.effect is Effect.ALLOW and j < i and _filter(other).covers(f):
                        findings.append(Finding(
                            Severity.LOW, "unreachable-rule", role.name, i,
                            f"{rule.as_text()} is redundant: rule {j} ({other.as_text()}) "
                            "already allows all of it", "remove the narrower rule"))
                        break
            else:
                hits = any(a.action == rule.action and _filter(a).overlaps(f)
                           for _, _, a in all_allows)
                if not hits:
                    findings.append(Finding(
                        Severity.LOW, "deny-shadows-nothing", role.name, i,
                        f"{rule.as_text()} overlaps no allow rule, so it never changes a "
                        "decision", "check the resource for a typo, or remove the rule"))
    if device_counts is not None and group_roles is not None:
        held = {r for rs in group_roles.values() for r in rs}
        for role in roles:
            if device_counts.get(role.name, 0) == 0 and role.name not in held:
                findings.append(Finding(Severity.INFO, "unused-role", role.name, None,
                                        f"role {role.name!r} is held by no device or group",
                                        "assign it or remove it"))
    order = list(Severity)
    return sorted(findings, key=lambda x: (order.index(x.severity), x.role, x.rule_index or 0))
