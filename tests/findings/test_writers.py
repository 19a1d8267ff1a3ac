"""The shared report writers: SARIF scaffolding and the HTML page, as every report uses
them."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import jsonschema

from iotsec.findings.html import html_document, html_page, html_sections
from iotsec.findings.model import Location, Rule, Severity
from iotsec.findings.report import (
    ReportFormat,
    iso_time,
    json_bytes,
    severity_summary,
    tool_dict,
)
from iotsec.findings.sarif import sarif_document, sarif_log, sarif_run

SARIF_SCHEMA = Path(__file__).parents[1] / "scan" / "sarif-schema-2.1.0.json"
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
RULE = Rule("policy/wildcard-all", "Allow on every topic", Severity.HIGH, "d", "scope it")


def sarif_errors(document: object) -> list[str]:
    validator = jsonschema.Draft4Validator(json.loads(SARIF_SCHEMA.read_text()))
    return [e.message for e in validator.iter_errors(document)]


def test_time_and_json_as_every_report_writes_them() -> None:
    assert iso_time(NOW) == "2026-06-01T12:00:00Z"
    assert json_bytes({"a": "é"}) == '{\n  "a": "é"\n}\n'.encode()
    assert tool_dict("1.2.3") == {"name": "iotsec", "version": "1.2.3"}


def test_a_report_format_opens_its_documents_and_ships_its_schema() -> None:
    fmt = ReportFormat("iotsec-audit-report", 1, "urn:iotsec:schema:audit-report:1",
                       "iotsec.audit", "schemas/audit-report.schema.json")
    assert fmt.header("1.2.3") == {
        "$schema": "urn:iotsec:schema:audit-report:1", "format": "iotsec-audit-report",
        "format_version": 1, "tool": {"name": "iotsec", "version": "1.2.3"}}
    assert fmt.schema()["$id"] == fmt.schema_id
    assert fmt.schema() is fmt.schema()  # read once per process


def test_severity_summary() -> None:
    findings = [RULE.at(Location.policy_rule("r", 0), "m"),
                RULE.at(Location.policy_rule("r", 1), "m", severity=Severity.LOW)]
    summary = severity_summary(findings)
    assert (summary["findings"], summary["worst"]) == (2, "high")
    assert summary["by_severity"] == {"critical": 0, "high": 1, "medium": 0, "low": 1,
                                      "info": 0}
    assert severity_summary([])["worst"] is None


def test_a_sarif_log_of_lint_findings_is_valid_sarif() -> None:
    finding = RULE.at(Location.policy_rule("snoop", 0), "allow subscribe # lets every holder "
                      "subscribe on all topics")
    document = sarif_log(version="9.9", rules=[], findings=[finding], started=NOW,
                         finished=NOW, automation_id="iotsec-lint/1", notes=["n"])
    assert sarif_errors(document) == []
    run = document["runs"][0]
    assert run["tool"]["driver"]["version"] == "9.9"
    assert [r["id"] for r in run["tool"]["driver"]["rules"]] == ["policy/wildcard-all"]
    result = run["results"][0]
    assert (result["ruleIndex"], result["level"]) == (0, "error")
    assert result["properties"]["target"]["index"] == 0
    assert run["invocations"][0]["toolExecutionNotifications"] == [
        {"level": "note", "message": {"text": "n"}}]


def test_a_run_without_notes_has_no_notification_member() -> None:
    run = sarif_run(version="1", rules=[], results=[], automation_id="x", started=NOW,
                    finished=NOW)
    assert "toolExecutionNotifications" not in run["invocations"][0]
    assert "properties" not in run
    silent = sarif_run(version="1", rules=[], results=[], automation_id="x", started=NOW,
                       finished=NOW, notes=())
    assert silent["invocations"][0]["toolExecutionNotifications"] == []
    assert sarif_errors(sarif_document(run)) == []


def test_html_escapes_what_it_is_given_and_nothing_the_caller_escaped() -> None:
    page = html_document(title="<t>", subtitle="a & b", body="<p>kept</p>", version="<v>")
    assert page.startswith("<!DOCTYPE html>") and page.endswith("</html>\n")
    assert "<h1>&lt;t&gt;</h1><p>a &amp; b</p>" in page
    assert "<main><p>kept</p></main>" in page and "iotsec &lt;v&gt;" in page
    assert html_sections([("<h>", "<b>x</b>")]) == \
        "<section><h2>&lt;h&gt;</h2><b>x</b></section>"
    finding = RULE.at(Location.policy_rule("r", 0), "<script>")
    report = html_page(title="t", subtitle="s", findings=[finding], version="1")
    assert "<script>" not in report and "&lt;script&gt;" in report
    assert report.count("<details>") == 1
