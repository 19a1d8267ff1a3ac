"""The console's audit view: the fleet audit's findings with the fix for each, computed in
a background thread and held for :data:`AUDIT_TTL` seconds (the audit reads every device
and certificate: tens of seconds at a million), so a page never waits for it."""

from __future__ import annotations

from dataclasses import dataclass

from iotsec.app.audit import run_audit
from iotsec.app.console.cache import Held, held_or_refreshing, value_now
from iotsec.app.runtime import Runtime
from iotsec.audit.model import AuditResult
from iotsec.findings.model import Finding, count_by_severity, sort_findings

__all__ = ["AUDIT_TTL", "AuditView", "audit_now", "audit_result"]

AUDIT_TTL = 300.0


@dataclass(frozen=True, slots=True)
class AuditView:
    """An audit as the page shows it, sorted and counted once when it is computed (a fleet
    of a million devices can have hundreds of thousands of findings: a page must not sort
    them)."""

    result: AuditResult
    #: Findings by severity name.
    counts: dict[str, int]
    #: Every finding, worst first.
    ordered: tuple[Finding, ...]
    #: The same, per severity name.
    by_severity: dict[str, tuple[Finding, ...]]

    @classmethod
    def of(cls, result: AuditResult) -> AuditView:
        ordered = tuple(sort_findings(result.findings))
        by_severity: dict[str, list[Finding]] = {}
        for finding in ordered:
            by_severity.setdefault(finding.severity.value, []).append(finding)
        return cls(result, count_by_severity(ordered), ordered,
                   {k: tuple(v) for k, v in by_severity.items()})


def _run(rt: Runtime, actor: str) -> AuditView:
    return AuditView.of(run_audit(rt, broker_dir=rt.settings.broker_dir, actor=actor))


def audit_result(rt: Runtime, *, actor: str, fresh: bool = False) -> Held[AuditView] | None:
    """The newest audit held, with its age (``None`` while a first one runs); older than
    :data:`AUDIT_TTL` seconds, or ``fresh`` (at most every few seconds), a newer one runs in
    the background."""
    return held_or_refreshing(rt, "audit", AUDIT_TTL, lambda: _run(rt, actor), fresh=fresh)


def audit_now(rt: Runtime, *, actor: str) -> AuditResult:
    """The newest audit, waiting for it if none is held (a download)."""
    return value_now(rt, "audit", AUDIT_TTL, lambda: _run(rt, actor)).result
