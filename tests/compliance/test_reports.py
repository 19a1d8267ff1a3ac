"""Report formats: JSON valid against its published schema, SARIF 2.1.0 valid against the
OASIS schema, one self-contained HTML file naming every provision."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest

from iotsec.compliance.catalog import Status
from iotsec.compliance.evaluate import evaluate
from iotsec.compliance.frameworks import FRAMEWORKS
from iotsec.compliance.report import (
    compliance_html,
    compliance_json,
    compliance_report_schema,
    compliance_sarif,
)
from tests.compliance.support import attestation, audit, evidence

SARIF_SCHEMA = Path(__file__).parents[1] / "scan" / "sarif-schema-2.1.0.json"


def _result(framework_id: str):
    ev = evidence(audit_result=audit({"audit/ca-expiring": ["ca:issuing"],
                                      "audit/policy-permissive": ["policy:device"]}),
                  attestations=[attestation("5.2-1", Status.PASS, "policy <b>published</b>"),
                                attestation("5.5-8", Status.PASS, "all good")])
    return evaluate(FRAMEWORKS[framework_id], ev)


@pytest.fixture(scope="module")
def sarif_validator() -> jsonschema.Draft4Validator:
    schema = json.loads(SARIF_SCHEMA.read_text())
    return jsonschema.Draft4Validator(schema)


@pytest.mark.parametrize("framework_id", list(FRAMEWORKS))
def test_json_matches_the_schema(framework_id: str):
    schema = compliance_report_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    doc = compliance_json(_result(framework_id))
    jsonschema.Draft202012Validator(schema).validate(doc)
    assert [p["id"] for p in doc["provisions"]] == FRAMEWORKS[framework_id].ids
    assert doc["summary"]["provisions"] == len(FRAMEWORKS[framework_id].provisions)
    # It round-trips through json as written by the CLI.
    assert json.loads(json.dumps(doc)) == doc


def test_the_schema_is_not_a_rubber_stamp():
    validator = jsonschema.Draft202012Validator(compliance_report_schema())
    doc = compliance_json(_result("etsi-en-303-645"))
    doc["provisions"][0]["status"] = "ok"
    assert list(validator.iter_errors(doc))
    doc = compliance_json(_result("etsi-en-303-645"))
    del doc["summary"]["score"]
    assert list(validator.iter_errors(doc))


def test_json_shows_the_conflict_and_the_evidence_objects():
    doc = compliance_json(_result("etsi-en-303-645"))
    p = next(x for x in doc["provisions"] if x["id"] == "5.5-8")
    assert p["status"] == "fail" and p["attestation"]["status"] == "pass"
    assert "evidence wins" in p["conflict"]
    assert any("ca:issuing" in e["objects"] for e in p["evidence"])


@pytest.mark.parametrize("framework_id", list(FRAMEWORKS))
def test_sarif_is_valid_and_has_a_result_per_provision_counted(framework_id: str,
                                                                sarif_validator):
    result = _result(framework_id)
    log = compliance_sarif(result)
    errors = [f"{list(e.absolute_path)}: {e.message}"
              for e in sarif_validator.iter_errors(log)]
    assert errors == []
    run = log["runs"][0]
    assert len(run["tool"]["driver"]["rules"]) == len(FRAMEWORKS[framework_id].provisions)
    counted = {f"{framework_id}/{r.provision.id}" for r in result.results if r.severity}
    assert {r["ruleId"] for r in run["results"]} == counted
    for r in run["results"]:
        rule = run["tool"]["driver"]["rules"][r["ruleIndex"]]
        assert rule["id"] == r["ruleId"]


def test_sarif_levels_follow_severity():
    log = compliance_sarif(_result("etsi-en-303-645"))
    levels = {r["ruleId"]: r["level"] for r in log["runs"][0]["results"]}
    assert levels["etsi-en-303-645/5.5-8"] == "error"  # mandatory fail: high
    assert levels["etsi-en-303-645/5.6-7"] == "warning"  # recommendation fail: medium


def test_html_is_one_self_contained_file_with_every_provision():
    result = _result("etsi-en-303-645")
    page = compliance_html(result)
    assert page.startswith("<!DOCTYPE html>")
    for p in result.framework.provisions:
        assert f'id="p-{p.id}"' in page
    assert "<svg" in page and "</svg>" in page
    assert not re.search(r"<script|<link|src=|https?://(?!example)", page)
    # Attested text is escaped.
    assert "policy &lt;b&gt;published&lt;/b&gt;" in page
    assert "evidence wins" in page
    for category in result.framework.categories:
        assert category.title.replace("&", "&amp;") in page
