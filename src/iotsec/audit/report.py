"""Audit reports: versioned JSON (with a published JSON Schema), SARIF 2.1.0 and one-file
HTML, written with the shared writers (:func:`iotsec.findings.sarif.sarif_log`,
:func:`iotsec.findings.html.html_page`) so every iotsec report reads alike."""

from __future__ import annotations

from typing import Any

from iotsec import __version__
from iotsec.audit.model import AuditResult
from iotsec.audit.rules import ALL_RULES
from iotsec.findings.html import escape as _e
from iotsec.findings.html import html_page
from iotsec.findings.report import ReportFormat, iso_time, json_bytes, severity_summary
from iotsec.findings.sarif import sarif_log

__all__ = ["AUDIT_FORMAT", "AUDIT_FORMAT_VERSION", "AUDIT_REPORT", "AUDIT_SCHEMA_ID",
           "audit_html", "audit_json", "audit_json_bytes", "audit_report_schema", "audit_sarif",
           "audit_sarif_bytes", "check_rows"]

AUDIT_FORMAT = "iotsec-audit-report"
AUDIT_FORMAT_VERSION = 1
AUDIT_SCHEMA_ID = "urn:iotsec:schema:audit-report:1"
AUDIT_REPORT = ReportFormat(AUDIT_FORMAT, AUDIT_FORMAT_VERSION, AUDIT_SCHEMA_ID, "iotsec.audit",
                            "schemas/audit-report.schema.json")


def audit_report_schema() -> dict[str, Any]:
    """The JSON Schema of the audit report (shipped as ``audit-report.schema.json``)."""
    return AUDIT_REPORT.schema()


def check_rows(result: AuditResult) -> list[dict[str, Any]]:
    """One row per check: its status (pass, fail, skipped), objects examined, findings."""
    counts: dict[str, int] = {}
    for f in result.findings:
        counts[f.rule.id] = counts.get(f.rule.id, 0) + 1
    titles = {r.id: r.title for r in ALL_RULES}
    rows = []
    for rule_id, outcome in result.outcomes.items():
        found = counts.get(rule_id, 0)
        status = "skipped" if not outcome.ran else "fail" if found else "pass"
        rows.append({"rule": rule_id, "title": titles.get(rule_id, rule_id), "status": status,
                     "checked": outcome.checked, "skipped": outcome.skipped,
                     "findings": found})
    return rows


def audit_json(result: AuditResult) -> dict[str, Any]:
    """The audit report as a JSON-ready dict (format ``iotsec-audit-report``, version 1)."""
    rows = check_rows(result)
    facts = dict(result.facts)
    options = facts.get("options") or {}
    return {
        **AUDIT_REPORT.header(__version__),
        "audit": {
            "started_at": iso_time(result.started_at),
            "finished_at": iso_time(result.finished_at),
            "duration_seconds": round(float(facts.get("seconds", 0.0)), 3),
            "options": options, "broker_dir": facts.get("broker_dir"),
        },
        "summary": {
            **severity_summary(result.findings),
            "checks": len(rows), "passed": sum(r["status"] == "pass" for r in rows),
            "failed": sum(r["status"] == "fail" for r in rows),
            "skipped": sum(r["status"] == "skipped" for r in rows),
        },
        "checks": rows,
        "findings": [f.to_dict() for f in result.findings],
        "rules": [r.to_dict() for r in ALL_RULES],
        "facts": {k: v for k, v in facts.items() if k not in ("options",)},
    }


def audit_json_bytes(result: AuditResult) -> bytes:
    """:func:`audit_json` as the bytes of a report file."""
    return json_bytes(audit_json(result))


def audit_sarif(result: AuditResult) -> dict[str, Any]:
    """The audit as a SARIF 2.1.0 log (skipped checks are tool notifications)."""
    skipped = [f"{rule_id} skipped: {o.skipped}" for rule_id, o in result.outcomes.items()
               if o.skipped]
    return sarif_log(
        version=__version__, rules=ALL_RULES, findings=result.findings,
        started=result.started_at, finished=result.finished_at,
        automation_id=f"iotsec-audit/{iso_time(result.started_at)}", notes=skipped,
        properties={"checks": check_rows(result),
                    "options": dict(result.facts).get("options", {})})


def audit_sarif_bytes(result: AuditResult) -> bytes:
    """:func:`audit_sarif` as the bytes of a report file."""
    return json_bytes(audit_sarif(result))


def audit_html(result: AuditResult) -> str:
    """The audit as one self-contained HTML page (findings, then every check's status)."""
    facts = dict(result.facts)
    rows = "".join(
        f"<tr><td class=\"mono\">{_e(r['rule'])}</td><td>{_e(r['title'])}</td>"
        f"<td><b>{_e(r['status'])}</b></td><td>{r['checked']}</td><td>{r['findings']}</td>"
        f"<td class=\"muted\">{_e(r['skipped'] or '')}</td></tr>" for r in check_rows(result))
    checks = ("<table><thead><tr><th>rule</th><th>check</th><th>status</th><th>checked</th>"
              "<th>findings</th><th>why skipped</th></tr></thead><tbody>" + rows
              + "</tbody></table>")
    shown = [("started", iso_time(result.started_at)),
             ("duration", f"{float(facts.get('seconds', 0.0)):.2f} s")]
    for key in ("devices", "active_devices", "valid_certificates", "authorities",
                "policy_roles", "api_tokens", "events_in_window", "broker_dir"):
        if key in facts:
            shown.append((key.replace("_", " "), str(facts[key] if facts[key] is not None
                                                     else "none")))
    return html_page(title="iotsec fleet audit",
                     subtitle=f"{len(result.findings)} findings - {iso_time(result.started_at)}",
                     findings=result.findings, version=__version__,
                     sections=[("Checks", checks)], facts=shown)
