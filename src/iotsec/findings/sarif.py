"""SARIF 2.1.0 logs (OASIS), the format code-scanning services read.

:func:`sarif_log` writes a run from findings and rules (the scanner and the fleet audit);
:func:`sarif_run` and :func:`sarif_document` are the scaffolding around results that a
caller builds itself (the compliance report, whose rules are a framework's provisions).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from iotsec.findings.model import Finding, Rule
from iotsec.findings.report import TOOL_NAME, iso_time

__all__ = ["INFORMATION_URI", "SARIF_SCHEMA_URI", "rule_descriptor", "sarif_document",
           "sarif_log", "sarif_run"]

SARIF_SCHEMA_URI = ("https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/"
                    "sarif-schema-2.1.0.json")
INFORMATION_URI = "urn:iotsec"


def rule_descriptor(rule: Rule) -> dict[str, Any]:
    """The ``reportingDescriptor`` of ``rule``, with the ``security-severity`` property
    code-scanning services rank results by."""
    return {
        "id": rule.id,
        "name": "".join(part.capitalize() for part in rule.id.replace("/", "-").split("-")),
        "shortDescription": {"text": rule.title},
        "fullDescription": {"text": rule.description},
        "help": {"text": f"Fix: {rule.fix}", "markdown": f"**Fix:** {rule.fix}"},
        "defaultConfiguration": {"level": rule.severity.sarif_level},
        "properties": {"tags": ["security", *rule.tags],
                       "security-severity": rule.severity.security_severity,
                       "severity": rule.severity.value, "precision": "high"},
    }


def _result(finding: Finding, index: int) -> dict[str, Any]:
    loc = finding.location
    return {
        "ruleId": finding.rule.id,
        "ruleIndex": index,
        "kind": "fail",
        "level": finding.severity.sarif_level,
        "message": {"text": f"{finding.message}. Fix: {finding.fix}"},
        "locations": [{
            "physicalLocation": {"artifactLocation": {"uri": loc.uri}},
            "logicalLocations": [{"name": loc.uri, "fullyQualifiedName": loc.uri,
                                  "kind": "resource"}],
        }],
        "partialFingerprints": {"iotsecFinding/v1": finding.fingerprint},
        "properties": {"severity": finding.severity.value,
                       "security-severity": finding.severity.security_severity,
                       "target": loc.to_dict(), "evidence": finding.evidence_dict(),
                       "fix": finding.fix},
    }


def sarif_run(*, version: str, rules: Sequence[Mapping[str, Any]],
              results: Sequence[Mapping[str, Any]], automation_id: str, started: datetime,
              finished: datetime, notes: Sequence[str] | None = None, successful: bool = True,
              properties: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One ``run`` of iotsec (``version``: ``iotsec.__version__``) with the given rule
    descriptors and results. ``notes`` become the invocation's tool notifications; ``None``
    leaves the member out (a run that has nothing to notify by design)."""
    invocation: dict[str, Any] = {
        "executionSuccessful": successful,
        "startTimeUtc": iso_time(started), "endTimeUtc": iso_time(finished),
    }
    if notes is not None:
        invocation["toolExecutionNotifications"] = [
            {"level": "note", "message": {"text": n}} for n in notes]
    run: dict[str, Any] = {
        "tool": {"driver": {
            "name": TOOL_NAME, "version": version, "semanticVersion": version,
            "informationUri": INFORMATION_URI, "rules": [dict(r) for r in rules],
        }},
        "automationDetails": {"id": automation_id},
        "invocations": [invocation],
        "results": [dict(r) for r in results],
    }
    if properties:
        run["properties"] = dict(properties)
    return run


def sarif_document(run: Mapping[str, Any]) -> dict[str, Any]:
    """A SARIF 2.1.0 log holding ``run``."""
    return {"$schema": SARIF_SCHEMA_URI, "version": "2.1.0", "runs": [dict(run)]}


def sarif_log(*, version: str, rules: Sequence[Rule], findings: Iterable[Finding],
              started: datetime, finished: datetime, automation_id: str,
              notes: Sequence[str] = (), successful: bool = True,
              properties: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A SARIF 2.1.0 log with one run of iotsec over ``findings``. Every finding's rule
    should be in ``rules``; findings of other rules add their rule to the list."""
    rule_list = list(rules)
    index = {r.id: i for i, r in enumerate(rule_list)}
    results = []
    for f in findings:
        if f.rule.id not in index:
            index[f.rule.id] = len(rule_list)
            rule_list.append(f.rule)
        results.append(_result(f, index[f.rule.id]))
    return sarif_document(sarif_run(
        version=version, rules=[rule_descriptor(r) for r in rule_list], results=results,
        automation_id=automation_id, started=started, finished=finished, notes=notes,
        successful=successful, properties=properties))
