"""The console's policy view: the roles with their rules and bindings, and the policy lint
findings. Both count the bindings of every role, so a serving process recomputes them in
the background once they are older than :data:`POLICY_TTL` seconds."""

from __future__ import annotations

from dataclasses import dataclass

from iotsec.app.access.policy import lint_policy
from iotsec.app.access.roles import RoleInfo, list_roles
from iotsec.app.console.cache import value_now
from iotsec.app.runtime import Runtime
from iotsec.findings.model import Finding

__all__ = ["POLICY_TTL", "PolicyView", "policy_view"]

POLICY_TTL = 30.0


@dataclass(frozen=True, slots=True)
class PolicyView:
    roles: list[RoleInfo]
    findings: list[Finding]


def policy_view(rt: Runtime, *, fresh: bool = False) -> PolicyView:
    """The roles and the lint findings, at most :data:`POLICY_TTL` seconds old."""
    def load() -> PolicyView:
        findings = sorted(lint_policy(rt), key=lambda f: f.rule_id)
        return PolicyView(list_roles(rt), sorted(findings, key=lambda f: f.severity,
                                                 reverse=True))
    return value_now(rt, "policy", POLICY_TTL, load, fresh=fresh)
