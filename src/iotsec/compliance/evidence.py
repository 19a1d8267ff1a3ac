"""What a compliance report is judged from: facts iotsec knows about itself, the fleet
audit, an optional scan report, and the attestations people recorded.

:func:`parse_scan_report` reads the JSON that ``iotsec scan --json-file FILE`` writes
(format ``iotsec-scan-report``, version 1). It is the one parser of untrusted input here: it
refuses more than :data:`MAX_SCAN_REPORT` bytes, anything that is not that format, and
findings that do not have the shape the format promises.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from iotsec.audit.model import AuditResult
from iotsec.compliance.catalog import Status
from iotsec.errors import ScanReportError
from iotsec.findings.model import Severity, clean_text
from iotsec.scan.rules import ALL_RULES

__all__ = [
    "MAX_NOTE", "MAX_SCAN_REPORT", "Attestation", "Evidence", "Fact", "ScanEvidence", "ScanItem",
    "parse_scan_report"
]

#: Largest scan report accepted as evidence (a scan of a /16 with findings fits easily).
MAX_SCAN_REPORT = 16 * 1024 * 1024
MAX_SCAN_FINDINGS = 100_000
#: Longest attestation note, in characters.
MAX_NOTE = 4000

SCAN_FORMAT = "iotsec-scan-report"
SCAN_FORMAT_VERSION = 1
_RULE_ID = re.compile(r"^[a-z0-9-]+/[a-z0-9/-]+$")
_KNOWN_TAGS = {r.id: r.tags for r in ALL_RULES}


@dataclass(frozen=True, slots=True)
class Fact:
    """Something iotsec established about its own configuration or state.

    ``ok`` is ``None`` when it could not be established (the feature is not set up);
    ``severity`` is how bad a ``False`` is; ``refs`` name the objects it rests on.
    """

    name: str
    ok: bool | None
    detail: str
    severity: Severity = Severity.HIGH
    refs: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ScanItem:
    """One finding of a scan report."""

    rule: str
    severity: Severity
    target: str
    message: str
    tags: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ScanEvidence:
    started_at: str
    targets: tuple[str, ...]
    services: int
    findings: tuple[ScanItem, ...]


@dataclass(frozen=True, slots=True)
class Attestation:
    """A person's statement about one provision: one version of it (the latest counts)."""

    framework: str
    provision: str
    version: int
    status: Status
    note: str
    actor: str
    at: datetime


@dataclass(frozen=True, slots=True)
class Evidence:
    """Everything one report is judged from."""

    now: datetime
    audit: AuditResult | None = None
    #: Why there is no audit result, when there is none.
    audit_missing: str | None = None
    scan: ScanEvidence | None = None
    facts: Mapping[str, Fact] = field(default_factory=dict)
    #: The latest attestation per provision id.
    attestations: Mapping[str, Attestation] = field(default_factory=dict)


def _bad(message: str) -> ScanReportError:
    return ScanReportError(f"the scan report is not usable: {message}")


def _str(obj: Mapping[str, Any], key: str, where: str, limit: int = 2048) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise _bad(f"{where}.{key} must be a string")
    return clean_text(value, limit)


def _list(obj: Mapping[str, Any], key: str, where: str) -> list[Any]:
    value = obj.get(key)
    if not isinstance(value, list):
        raise _bad(f"{where}.{key} must be a list")
    return value


def _object(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise _bad(f"{where} must be an object")
    return value


def _tags(report: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    """Rule tags from the report's own rule list, for rules this version does not know."""
    tags: dict[str, tuple[str, ...]] = {}
    for i, raw in enumerate(_list(report, "rules", "report")[:1000]):
        rule = _object(raw, f"rules[{i}]")
        rule_id = _str(rule, "id", f"rules[{i}]", 128)
        values = _list(rule, "tags", f"rules[{i}]")
        if not all(isinstance(t, str) and len(t) <= 64 for t in values):
            raise _bad(f"rules[{i}].tags must be short strings")
        tags[rule_id] = tuple(values[:64])
    return tags


def parse_scan_report(data: bytes) -> ScanEvidence:
    """A scan report (``iotsec scan --json-file``) as evidence. Raises
    :class:`ScanReportError` for anything else."""
    if len(data) > MAX_SCAN_REPORT:
        raise ScanReportError(f"the scan report is larger than {MAX_SCAN_REPORT} bytes",
                              hint="scan fewer targets per report")
    try:
        report = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise _bad("it is not UTF-8 text") from None
    except (json.JSONDecodeError, RecursionError):
        raise _bad("it is not JSON") from None
    report = _object(report, "the report")
    if report.get("format") != SCAN_FORMAT:
        raise _bad(f"'format' is not {SCAN_FORMAT!r}")
    version = report.get("format_version")
    if version != SCAN_FORMAT_VERSION or isinstance(version, bool):
        raise _bad(f"format_version {version!r} is not supported (this version reads "
                   f"{SCAN_FORMAT_VERSION})")
    scan = _object(report.get("scan"), "scan")
    started = _str(scan, "started_at", "scan", 64)
    targets = _list(scan, "targets", "scan")
    if not all(isinstance(t, str) for t in targets):
        raise _bad("scan.targets must be strings")
    hosts = _list(report, "hosts", "report")
    services = 0
    for i, host in enumerate(hosts):
        services += len(_list(_object(host, f"hosts[{i}]"), "services", f"hosts[{i}]"))
    report_tags = _tags(report)
    raw_findings = _list(report, "findings", "report")
    if len(raw_findings) > MAX_SCAN_FINDINGS:
        raise _bad(f"more than {MAX_SCAN_FINDINGS} findings")
    items = []
    for i, raw in enumerate(raw_findings):
        where = f"findings[{i}]"
        f = _object(raw, where)
        rule = _str(f, "rule", where, 128)
        if not _RULE_ID.match(rule):
            raise _bad(f"{where}.rule {rule!r} is not a rule id")
        try:
            severity = Severity(_str(f, "severity", where, 16))
        except ValueError:
            raise _bad(f"{where}.severity is not a severity") from None
        tags = _KNOWN_TAGS.get(rule) or report_tags.get(rule, ())
        items.append(ScanItem(rule=rule, severity=severity,
                              target=_str(f, "target", where, 512),
                              message=_str(f, "message", where), tags=tuple(tags)))
    shown = tuple(clean_text(t, 256) for t in targets[:1000])
    return ScanEvidence(started_at=started, targets=shown, services=services,
                        findings=tuple(items))


def scan_matches(item: ScanItem, tag: str | None, rules: Sequence[str]) -> bool:
    """Does a scan finding bear on a provision (by its standard tag or by rule id)?"""
    if tag is not None and tag in item.tags:
        return True
    return any(item.rule == r or (r.endswith("/") and item.rule.startswith(r)) for r in rules)
