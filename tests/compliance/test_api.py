"""The compliance API: the report for auditors, attestations read by auditors and recorded
by admins, RFC 9457 problems for bad input (both backends)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import jsonschema
import pytest
from fastapi.testclient import TestClient

from iotsec.api.app import create_app
from iotsec.app.access.api_tokens import Scope, issue_token
from iotsec.app.runtime import Runtime
from iotsec.app.setup import InitResult
from iotsec.compliance.report import compliance_report_schema
from tests.api.support import assert_problem

BASE = "/v1/compliance"


@pytest.fixture
def admin(rt: Runtime, initialised: InitResult) -> Iterator[TestClient]:
    with TestClient(create_app(rt),
                    headers={"Authorization": f"Bearer {initialised.admin_token}"}) as c:
        yield c


@pytest.fixture
def auditor(rt: Runtime) -> Iterator[TestClient]:
    _, token = issue_token(rt, "auditor", Scope.AUDITOR, timedelta(days=1))
    with TestClient(create_app(rt), headers={"Authorization": f"Bearer {token}"}) as c:
        yield c


def test_auditors_read_the_report(auditor: TestClient):
    resp = auditor.get(f"{BASE}/etsi-en-303-645")
    assert resp.status_code == 200, resp.text
    doc = resp.json()
    jsonschema.validate(doc, compliance_report_schema())
    assert len(doc["provisions"]) == 68


def test_admins_attest_and_auditors_read_the_history(admin: TestClient, auditor: TestClient):
    url = f"{BASE}/owasp-iot-top10/attestations"
    first = admin.post(url, json={"provision": "I6", "status": "manual", "note": "DPIA due"})
    assert first.status_code == 201, first.text
    second = admin.post(url, json={"provision": "i6", "status": "not_applicable",
                                   "note": "the devices hold no personal data"})
    assert second.status_code == 201 and second.json()["version"] == 2
    assert second.json()["actor"] == "token:admin"
    latest = auditor.get(url).json()
    assert [(a["provision"], a["version"]) for a in latest] == [("I6", 2)]
    history = auditor.get(url, params={"history": "true"}).json()
    assert [a["status"] for a in history] == ["manual", "not_applicable"]
    report = auditor.get(f"{BASE}/owasp-iot-top10").json()
    i6 = next(p for p in report["provisions"] if p["id"] == "I6")
    assert i6["status"] == "not_applicable" and i6["attestation"]["version"] == 2


def test_auditors_cannot_attest(auditor: TestClient):
    resp = auditor.post(f"{BASE}/etsi-en-303-645/attestations",
                        json={"provision": "5.2-1", "status": "pass", "note": "x"})
    assert_problem(resp, 403)


@pytest.mark.parametrize(("path", "body", "status", "code"), [
    ("iso-27001/attestations", {"provision": "A.5", "status": "pass", "note": "x"}, 404,
     "unknown-framework"),
    ("etsi-en-303-645/attestations", {"provision": "5.99-1", "status": "pass", "note": "x"},
     404, "unknown-provision"),
    ("etsi-en-303-645/attestations", {"provision": "5.2-1", "status": "done", "note": "x"},
     422, "attestation"),
    ("etsi-en-303-645/attestations", {"provision": "5.2-1", "status": "pass", "note": ""},
     422, "invalid-request"),
    ("etsi-en-303-645/attestations", {"provision": "5.2-1", "status": "pass",
                                      "note": "x" * 4001}, 422, "invalid-request"),
    ("etsi-en-303-645/attestations", {"provision": "5.2-1", "status": "pass", "note": "x",
                                      "extra": 1}, 422, "invalid-request"),
])
def test_bad_attestations_are_problems_and_write_nothing(admin: TestClient, path, body,
                                                         status, code):
    problem = assert_problem(admin.post(f"{BASE}/{path}", json=body), status)
    assert problem["type"] == f"urn:iotsec:problem:{code}"
    assert admin.get(f"{BASE}/etsi-en-303-645/attestations").json() == []


def test_unknown_framework_report_is_404(auditor: TestClient):
    assert_problem(auditor.get(f"{BASE}/iso-27001"), 404)


def test_scopes_are_declared(rt: Runtime):
    spec = create_app(rt).openapi()
    ops = spec["paths"]
    assert ops[f"{BASE}/{{framework}}"]["get"]["x-required-scope"] == "auditor"
    assert ops[f"{BASE}/{{framework}}/attestations"]["get"]["x-required-scope"] == "auditor"
    assert ops[f"{BASE}/{{framework}}/attestations"]["post"]["x-required-scope"] == "admin"
