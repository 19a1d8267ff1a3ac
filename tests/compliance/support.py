"""Hand-made evidence for the pure evaluator tests."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

from iotsec.audit.model import AuditResult, CheckOutcome
from iotsec.compliance.catalog import AUDIT_RULE_IDS, FACT_NAMES, Status
from iotsec.compliance.evidence import Attestation, Evidence, Fact, ScanEvidence
from iotsec.findings.model import Location, Rule, Severity

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def audit_rule(rule_id: str, severity: Severity = Severity.HIGH) -> Rule:
    return Rule(rule_id, rule_id, severity, "test rule", "fix it")


def audit(failing: Mapping[str, Iterable[str]] | None = None, *, skipped: Iterable[str] = (),
          severity: Severity = Severity.HIGH, checked: int = 3) -> AuditResult:
    """Every audit rule ran over ``checked`` objects; ``failing`` maps rule ids to the
    location URIs of their findings; ``skipped`` rules did not run."""
    failing = failing or {}
    findings = [audit_rule(rule_id, severity).at(Location(uri=uri, kind="test"), f"bad {uri}")
                for rule_id, uris in failing.items() for uri in uris]
    skip = set(skipped)
    outcomes = {r: CheckOutcome(r, 0 if r in skip else checked,
                                "no broker directory" if r in skip else None)
                for r in AUDIT_RULE_IDS}
    return AuditResult(started_at=NOW, finished_at=NOW, findings=findings, outcomes=outcomes)


def facts(overrides: Mapping[str, bool | None] | None = None,
          severity: Severity = Severity.HIGH) -> dict[str, Fact]:
    """Every fact holds, except the ``overrides``."""
    overrides = overrides or {}
    return {name: Fact(name, overrides.get(name, True), f"{name} detail", severity,
                       (f"ref:{name}",)) for name in FACT_NAMES}


def attestation(provision: str, status: Status, note: str = "because", version: int = 1,
                framework: str = "etsi-en-303-645") -> Attestation:
    return Attestation(framework=framework, provision=provision, version=version,
                       status=status, note=note, actor="tester", at=NOW)


def evidence(*, audit_result: AuditResult | None = None, fact_map: Mapping[str, Fact] | None
             = None, scan: ScanEvidence | None = None,
             attestations: Iterable[Attestation] = ()) -> Evidence:
    return Evidence(now=NOW, audit=audit_result if audit_result is not None else audit(),
                    scan=scan, facts=fact_map if fact_map is not None else facts(),
                    attestations={a.provision: a for a in attestations})
