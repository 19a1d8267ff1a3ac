"""Wire models of detection: the rules in force and the detector's status."""

from __future__ import annotations

from datetime import datetime

from iotsec.app.detect.rules import AppliedRules
from iotsec.app.detect.status import DetectStatus
from iotsec.app.wire.base import Wire
from iotsec.detect.rules import AuditAction, Rule

__all__ = ["DetectAuditActionOut", "DetectRuleOut", "DetectRulesOut", "DetectSourceOut",
           "DetectStatusOut"]


class DetectRuleOut(Wire):
    name: str
    kind: str
    per: str
    window: int
    threshold: float | None
    baseline: dict[str, float] | None
    learn: int
    severity: str
    action: str
    dry_run: bool
    enabled: bool

    @classmethod
    def from_domain(cls, r: Rule) -> DetectRuleOut:
        base = r.baseline
        return cls(name=r.name, kind=r.kind.value, per=r.per.value, window=r.window,
                   threshold=r.threshold,
                   baseline={"deviations": base.deviations, "warmup": float(base.warmup),
                             "floor": base.floor} if base is not None else None,
                   learn=r.learn, severity=r.severity.value, action=r.action.value,
                   dry_run=r.dry_run, enabled=r.enabled)


class DetectAuditActionOut(Wire):
    finding: str
    action: str
    dry_run: bool

    @classmethod
    def from_domain(cls, a: AuditAction) -> DetectAuditActionOut:
        return cls(finding=a.finding, action=a.action.value, dry_run=a.dry_run)


class DetectRulesOut(Wire):
    """The rule document in force (``version`` null: the built-in set)."""

    version: int | None
    digest: str
    applied_at: datetime | None
    applied_by: str | None
    max_automatic_actions: int
    rules: list[DetectRuleOut]
    audit: list[DetectAuditActionOut]
    document: str

    @classmethod
    def from_domain(cls, a: AppliedRules) -> DetectRulesOut:
        return cls(version=a.version, digest=a.digest, applied_at=a.applied_at,
                   applied_by=a.applied_by,
                   max_automatic_actions=a.rules.max_automatic_actions,
                   rules=[DetectRuleOut.from_domain(r) for r in a.rules.rules],
                   audit=[DetectAuditActionOut.from_domain(b) for b in a.rules.audit],
                   document=a.rules.source)


class DetectSourceOut(Wire):
    source: str
    position: int
    lines: int
    lag: int
    lines_per_second: float
    last_line_at: datetime | None
    updated_at: datetime


class DetectStatusOut(Wire):
    """Who holds the detector lease, and how far each followed source is read."""

    holder: str | None
    live: bool
    token: int | None
    renewed_at: datetime | None
    expires_at: datetime | None
    sources: list[DetectSourceOut]
    rules_version: int | None
    rules_digest: str
    rules: int

    @classmethod
    def from_domain(cls, s: DetectStatus) -> DetectStatusOut:
        lease = s.lease
        return cls(holder=lease.holder if lease else None, live=s.live,
                   token=lease.token if lease else None,
                   renewed_at=lease.renewed_at if lease else None,
                   expires_at=lease.expires_at if lease else None,
                   sources=[DetectSourceOut(
                       source=x.source, position=x.position, lines=x.lines, lag=x.lag,
                       lines_per_second=round(x.rate, 1), last_line_at=x.last_line_at,
                       updated_at=x.updated_at) for x in s.sources],
                   rules_version=s.rules.version, rules_digest=s.rules.digest,
                   rules=len(s.rules.rules.enabled()))
