"""Wire models of access control: decisions, roles, group and device bindings, the policy
document, API tokens and security events."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from iotsec.app.wire.base import Wire
from iotsec.app.wire.decision import decision_fields

if TYPE_CHECKING:
    # Named for type checking only: a command that prints a decision or a role does not
    # import the token, policy and event services (start-up time).
    from iotsec.access.engine import Decision
    from iotsec.app.access.api_tokens import TokenInfo
    from iotsec.app.access.policy import ApplyResult
    from iotsec.app.access.roles import RoleInfo
    from iotsec.app.events import Event

__all__ = [
    "DecisionOut", "EventOut", "NamesOut", "PolicyAppliedOut", "RoleOut", "RuleOut", "TokenOut"
]


class DecisionOut(Wire):
    """A policy decision and the rule that made it."""

    allowed: bool
    decision: str
    role: str | None
    rule_index: int | None
    rule: str | None
    explanation: str

    @classmethod
    def from_domain(cls, d: Decision) -> DecisionOut:
        return cls(**decision_fields(d))


class RuleOut(Wire):
    """One rule of a role."""

    effect: str
    action: str
    resource: str


class RoleOut(Wire):
    """A role, its rules, and who holds it (devices directly, groups by name)."""

    name: str
    description: str
    rules: list[RuleOut]
    devices: int
    groups: list[str]

    @classmethod
    def from_domain(cls, info: RoleInfo) -> RoleOut:
        return cls(name=info.role.name, description=info.role.description,
                   rules=[RuleOut(effect=r.effect.value, action=r.action, resource=r.resource)
                          for r in info.role.rules],
                   devices=info.devices, groups=list(info.groups))


class NamesOut(Wire):
    """The roles now bound to a group or a device (``name``)."""

    name: str
    roles: list[str]


class PolicyAppliedOut(Wire):
    """What applying a policy document changed (or would, in a dry run)."""

    created: list[str]
    updated: list[str]
    unchanged: list[str]
    removed: list[str]
    groups_changed: list[str]
    dry_run: bool

    @classmethod
    def from_domain(cls, result: ApplyResult, *, dry_run: bool) -> PolicyAppliedOut:
        return cls(created=result.created, updated=result.updated,
                   unchanged=result.unchanged, removed=result.removed,
                   groups_changed=result.groups_changed, dry_run=dry_run)


class TokenOut(Wire):
    """An API token; ``token`` (the secret) only when it was just created."""

    id: str
    name: str
    scope: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked: bool
    token: str | None = None

    @classmethod
    def from_domain(cls, t: TokenInfo, token: str | None = None) -> TokenOut:
        return cls(id=t.id, name=t.name, scope=t.scope.value, created_at=t.created_at,
                   expires_at=t.expires_at, last_used_at=t.last_used_at, revoked=t.revoked,
                   token=token)


class EventOut(Wire):
    """A security event."""

    id: int | None
    at: datetime
    kind: str
    outcome: str
    actor: str | None
    source: str | None
    subject: str | None
    detail: dict[str, Any]
    #: Position in the event chain and the entry's hash (``iotsec events verify``).
    seq: int | None = None
    hash: str | None = None

    @classmethod
    def from_domain(cls, e: Event) -> EventOut:
        return cls(id=e.id, at=e.at, kind=e.kind, outcome=e.outcome, actor=e.actor,
                   source=e.source, subject=e.subject, detail=dict(e.detail or {}),
                   seq=e.seq, hash=e.hash)
