"""Judge a framework's provisions from the evidence: pure, deterministic, no I/O.

For each provision the checks it names become evidence items (``pass``, ``fail`` or
``unknown``), and the items give the *automatic* status:

- no item could be decided: the provision is ``manual`` (a person decides);
- an item failed at ``high`` or worse: ``fail``; a lesser failure: ``partial``;
- nothing failed but some item could not be decided: ``partial``; else ``pass``.

Then the latest attestation, by this precedence rule:

1. A provision iotsec cannot decide (no checks, or no check could run) takes the attested
   status; its note is the justification.
2. On a provision decided from evidence, an attestation can only make the result worse
   (``fail`` beats ``partial`` beats ``pass``), or mark it ``not_applicable`` when no check
   fails. An attestation that claims better than the evidence, or ``not_applicable`` over a
   failing check, does not change the status; the report shows both as a conflict.
3. ``manual`` and ``not_applicable`` results, and recommendations not met (``fail`` or
   ``partial`` at level R), need a recorded justification (an attestation's note). One that
   lacks it is a finding of its own, and makes ETSI EN 303 645 provision 4-1 fail.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from iotsec.compliance.catalog import Framework, Level, Provision, Status
from iotsec.compliance.evidence import Attestation, Evidence, ScanItem, scan_matches
from iotsec.findings.model import Severity, worst

__all__ = ["ComplianceResult", "EvidenceItem", "ProvisionResult", "evaluate",
           "result_severity"]

MAX_OBJECTS = 50
_RANK = {Status.PASS: 0, Status.PARTIAL: 1, Status.FAIL: 2}


@dataclass(frozen=True, slots=True)
class EvidenceItem:
    """One piece of evidence for a provision: an audit check, a fact, scan findings."""

    source: str  # audit | fact | scan | report
    ref: str  # the audit rule id, fact name or scanner rule id
    outcome: str  # pass | fail | unknown
    detail: str
    objects: tuple[str, ...] = ()  # device:ID, cert:SERIAL, policy:ROLE, tcp://host:port...
    severity: Severity | None = None

    def to_dict(self) -> dict[str, object]:
        return {"source": self.source, "ref": self.ref, "outcome": self.outcome,
                "detail": self.detail, "objects": list(self.objects),
                "severity": self.severity.value if self.severity else None}


@dataclass(frozen=True, slots=True)
class ProvisionResult:
    provision: Provision
    status: Status
    justification: str
    evidence: tuple[EvidenceItem, ...]
    #: The status from evidence alone (``None``: nothing could be decided automatically).
    automatic: Status | None
    attestation: Attestation | None
    #: A recorded justification is needed (and ``justified`` says whether there is one).
    needs_justification: bool
    justified: bool
    conflict: str | None
    severity: Severity | None

    @property
    def unjustified(self) -> bool:
        return self.needs_justification and not self.justified


@dataclass(frozen=True, slots=True)
class ComplianceResult:
    framework: Framework
    generated_at: datetime
    results: tuple[ProvisionResult, ...]
    evidence: Evidence

    def by_status(self, results: Iterable[ProvisionResult] | None = None) -> dict[str, int]:
        counts = Counter(r.status for r in (self.results if results is None else results))
        return {s.value: counts.get(s, 0) for s in Status}

    def score(self, results: Sequence[ProvisionResult] | None = None) -> float | None:
        """Percent: pass 1, partial 0.5, fail and manual 0; not_applicable left out."""
        pool = [r for r in (self.results if results is None else results)
                if r.status is not Status.NOT_APPLICABLE]
        if not pool:
            return None
        points = sum(1.0 if r.status is Status.PASS else 0.5 if r.status is Status.PARTIAL
                     else 0.0 for r in pool)
        return round(100 * points / len(pool), 1)

    def in_category(self, category_id: str) -> list[ProvisionResult]:
        return [r for r in self.results if r.provision.category == category_id]

    def at_or_above(self, severity: Severity) -> list[ProvisionResult]:
        return [r for r in self.results if r.severity is not None and r.severity >= severity]

    @property
    def worst(self) -> Severity | None:
        found = [r.severity for r in self.results if r.severity is not None]
        return max(found, key=lambda s: s.rank) if found else None

    def get(self, provision_id: str) -> ProvisionResult:
        for r in self.results:
            if r.provision.id == provision_id:
                return r
        raise KeyError(provision_id)


def _lower(severity: Severity) -> Severity:
    order = (Severity.INFO, Severity.LOW, Severity.MEDIUM, Severity.HIGH, Severity.CRITICAL)
    return order[max(0, order.index(severity) - 1)]


def result_severity(level: Level | None, status: Status, unjustified: bool) -> Severity | None:
    """How a result counts for ``--fail-on``: a failed mandatory provision (or one without
    a level) is high, a failed recommendation medium; ``partial`` one step lower; a missing
    justification medium (mandatory) or low (recommendation)."""
    base = Severity.MEDIUM if level is Level.RECOMMENDED else Severity.HIGH
    found: Severity | None = None
    if status is Status.FAIL:
        found = base
    elif status is Status.PARTIAL:
        found = _lower(base)
    if unjustified:
        missing = _lower(base)
        found = missing if found is None or missing > found else found
    return found


# --------------------------------------------------------------------------- evidence items


def _audit_items(p: Provision, ev: Evidence) -> list[EvidenceItem]:
    items = []
    for rule_id in p.checks.audit:
        if ev.audit is None:
            items.append(EvidenceItem("audit", rule_id, "unknown",
                                      ev.audit_missing or "the fleet audit did not run"))
            continue
        outcome = ev.audit.outcomes.get(rule_id)
        passed = ev.audit.passed(rule_id)
        if passed is None:
            reason = outcome.skipped if outcome is not None and outcome.skipped else \
                "the audit has no such check"
            items.append(EvidenceItem("audit", rule_id, "unknown", f"not checked: {reason}"))
        elif passed:
            checked = outcome.checked if outcome is not None else 0
            if checked == 0:
                # Nothing to examine proves nothing either way (see AuditResult).
                items.append(EvidenceItem("audit", rule_id, "unknown",
                                          "nothing to examine yet"))
            else:
                items.append(EvidenceItem("audit", rule_id, "pass",
                                          f"checked {checked} objects, no finding"))
        else:
            found = ev.audit.findings_of(rule_id)
            objects = tuple(dict.fromkeys(f.location.uri for f in found))[:MAX_OBJECTS]
            first = found[0].message if found else ""
            more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
            items.append(EvidenceItem("audit", rule_id, "fail",
                                      f"{len(found)} findings: {first}{more}", objects,
                                      worst(found)))
    return items


def _fact_items(p: Provision, ev: Evidence) -> list[EvidenceItem]:
    items = []
    for name in p.checks.facts:
        fact = ev.facts.get(name)
        if fact is None:
            items.append(EvidenceItem("fact", name, "unknown", "not established"))
        elif fact.ok is None:
            items.append(EvidenceItem("fact", name, "unknown", fact.detail, fact.refs))
        else:
            items.append(EvidenceItem("fact", name, "pass" if fact.ok else "fail", fact.detail,
                                      fact.refs[:MAX_OBJECTS],
                                      None if fact.ok else fact.severity))
    return items


def _scan_items(fw: Framework, p: Provision, ev: Evidence) -> list[EvidenceItem]:
    if ev.scan is None or not (p.checks.scan or p.checks.scan_rules):
        return []
    tag = f"{fw.scan_tag}{p.number}" if fw.scan_tag else None
    matched = [f for f in ev.scan.findings if scan_matches(f, tag, p.checks.scan_rules)]
    if not matched:
        return [EvidenceItem("scan", "scan", "pass",
                             f"the scan of {', '.join(ev.scan.targets) or 'no target'} "
                             f"({ev.scan.services} services) found nothing bearing on it")]
    by_rule: dict[str, list[ScanItem]] = {}
    for f in matched:
        by_rule.setdefault(f.rule, []).append(f)
    items = []
    for rule, hits in sorted(by_rule.items()):
        targets = tuple(dict.fromkeys(f.target for f in hits))[:MAX_OBJECTS]
        items.append(EvidenceItem(
            "scan", rule, "fail", f"{len(hits)} findings: {hits[0].message}", targets,
            max((f.severity for f in hits), key=lambda s: s.rank)))
    return items


def _automatic(items: Sequence[EvidenceItem]) -> tuple[Status | None, str]:
    known = [i for i in items if i.outcome != "unknown"]
    unknown = [i for i in items if i.outcome == "unknown"]
    fails = [i for i in known if i.outcome == "fail"]
    parts = []
    if fails:
        parts.append("failed: " + "; ".join(f"{i.ref} ({i.detail})" for i in fails))
    passed = [i.ref for i in known if i.outcome == "pass"]
    if passed:
        parts.append("passed: " + ", ".join(passed))
    if unknown:
        parts.append("not decided: " + "; ".join(f"{i.ref} ({i.detail})" for i in unknown))
    text = ". ".join(parts)
    if not known:
        return None, text
    if any(i.severity is not None and i.severity >= Severity.HIGH for i in fails):
        return Status.FAIL, text
    if fails or unknown:
        return Status.PARTIAL, text
    return Status.PASS, text


# --------------------------------------------------------------------------- precedence


def _apply(p: Provision, auto: Status | None, text: str, att: Attestation | None
           ) -> tuple[Status, str, str | None]:
    """The final status, the justification and any conflict (the module's rule)."""
    if auto is None:
        if att is None:
            reason = f" ({text})" if text else ""
            return Status.MANUAL, ("iotsec cannot decide this provision from its own "
                                   f"evidence{reason}; record an attestation"), None
        return att.status, f"attested by {att.actor}: {att.note}", None
    if att is None:
        return auto, text, None
    said = f"attested {att.status.value} by {att.actor}: {att.note}"
    if att.status is Status.NOT_APPLICABLE:
        if auto is Status.FAIL:
            return auto, f"{text}. {said}", (
                "attested not_applicable, but checks fail: the evidence wins; fix the "
                "findings or correct the attestation")
        return Status.NOT_APPLICABLE, f"{said} (evidence alone: {auto.value}; {text})", None
    if att.status is Status.MANUAL:
        return auto, f"{text}. {said}", None
    if _RANK[att.status] >= _RANK[auto]:
        return att.status, f"{text}. {said}", None
    return auto, f"{text}. {said}", (
        f"attested {att.status.value}, but the evidence says {auto.value}: the evidence wins")


def _result(fw: Framework, p: Provision, ev: Evidence) -> ProvisionResult:
    items = _audit_items(p, ev) + _fact_items(p, ev) + _scan_items(fw, p, ev)
    auto, text = _automatic(items) if items else (None, "")
    if not items and (p.checks.scan or p.checks.scan_rules):
        text = "no scan report was given (--scan FILE)"
    att = ev.attestations.get(p.id)
    status, justification, conflict = _apply(p, auto, text, att)
    return _finish(p, status, justification, tuple(items), auto, att, conflict)


def _finish(p: Provision, status: Status, justification: str, items: tuple[EvidenceItem, ...],
            auto: Status | None, att: Attestation | None, conflict: str | None
            ) -> ProvisionResult:
    needs = status in (Status.MANUAL, Status.NOT_APPLICABLE) or (
        p.level is Level.RECOMMENDED and status in (Status.FAIL, Status.PARTIAL))
    justified = att is not None and bool(att.note.strip())
    return ProvisionResult(
        provision=p, status=status, justification=justification, evidence=items,
        automatic=auto, attestation=att, needs_justification=needs, justified=justified,
        conflict=conflict,
        severity=result_severity(p.level, status, needs and not justified))


def _justifications(p: Provision, others: Sequence[ProvisionResult], ev: Evidence
                    ) -> ProvisionResult:
    """ETSI 4-1: every provision not met or not applicable has a recorded justification."""
    missing = [r for r in others if r.unjustified]
    if missing:
        item = EvidenceItem("report", "justifications", "fail",
                            f"{len(missing)} provisions lack a recorded justification: "
                            + ", ".join(r.provision.id for r in missing),
                            tuple(f"provision:{r.provision.id}" for r in missing),
                            Severity.HIGH)
    else:
        item = EvidenceItem("report", "justifications", "pass",
                            "every provision not met, not decided or not applicable has a "
                            "recorded justification")
    auto, text = _automatic([item])
    att = ev.attestations.get(p.id)
    status, justification, conflict = _apply(p, auto, text, att)
    return _finish(p, status, justification, (item,), auto, att, conflict)


def evaluate(framework: Framework, evidence: Evidence) -> ComplianceResult:
    """Every provision of ``framework`` judged from ``evidence``, in the framework's order."""
    plain = {p.id: _result(framework, p, evidence) for p in framework.provisions
             if p.checks.special is None}
    results = []
    for p in framework.provisions:
        if p.checks.special == "justifications":
            results.append(_justifications(p, list(plain.values()), evidence))
        elif p.checks.special is not None:
            raise ValueError(f"unknown special check {p.checks.special!r}")
        else:
            results.append(plain[p.id])
    return ComplianceResult(framework=framework, generated_at=evidence.now,
                            results=tuple(results), evidence=evidence)
