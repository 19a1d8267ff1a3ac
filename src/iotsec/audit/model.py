"""What a fleet audit produces, and what the compliance reports consume.

An :class:`AuditResult` holds the findings (the shared
:class:`~iotsec.findings.model.Finding` model, rule ids ``audit/<name>``) and, per rule, how
many objects the check examined: a rule with no finding that examined objects *passed*; a
rule that could not examine anything (``checked`` 0 or absent, with a reason in ``skipped``)
says nothing either way. Compliance evaluators rely on that distinction, so every check
reports it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from iotsec.findings.model import Finding, Severity

__all__ = ["AuditResult", "CheckOutcome"]


@dataclass(frozen=True, slots=True)
class CheckOutcome:
    """What one check did: how many objects it examined, or why it could not run."""

    rule_id: str
    checked: int
    skipped: str | None = None

    @property
    def ran(self) -> bool:
        return self.skipped is None


@dataclass(frozen=True, slots=True)
class AuditResult:
    started_at: datetime
    finished_at: datetime
    findings: Sequence[Finding]
    #: One entry per check, by rule id (``audit/ca-expiring`` ...).
    outcomes: Mapping[str, CheckOutcome]
    #: Fleet facts shown in reports: device, certificate and policy counts...
    facts: Mapping[str, Any] = field(default_factory=dict)

    def findings_of(self, rule_id: str) -> list[Finding]:
        return [f for f in self.findings if f.rule.id == rule_id]

    def passed(self, rule_id: str) -> bool | None:
        """True: the check ran and found nothing; False: it found something; None: it did not
        run (unknown rule, or skipped)."""
        outcome = self.outcomes.get(rule_id)
        if outcome is None or not outcome.ran:
            return None
        return not any(f.rule.id == rule_id for f in self.findings)

    def at_or_above(self, severity: Severity) -> list[Finding]:
        return [f for f in self.findings if f.severity >= severity]
