"""The console's audit page (SQLite and PostgreSQL): the fleet audit's findings with their
fix, filtered by severity, run in the background, and the report downloaded as JSON, SARIF
and HTML."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from iotsec.app.access.api_tokens import Scope, issue_token
from iotsec.app.events import list_events
from iotsec.app.identity.devices import NewDevice, import_devices
from iotsec.app.pki.issuance import issue_from_csr
from iotsec.app.runtime import Runtime
from tests.console.conftest import ORIGIN
from tests.console.test_compliance_page import settled
from tests.console.test_read_models import _csr


@pytest.fixture
def signed_in(web: TestClient, admin_token: str) -> TestClient:
    r = web.post("/ui/signin", data={"token": admin_token}, headers={"origin": ORIGIN})
    assert r.status_code == 303
    return web


def test_the_audits_findings_with_their_fix_and_downloads(signed_in: TestClient, rt: Runtime):
    # A token that never expires and a certificate about to expire are findings.
    issue_token(rt, "forever", Scope.AUDITOR, None)
    import_devices(rt, [NewDevice.parse("soon-1")])
    issue_from_csr(rt, "soon-1", _csr("soon-1"), days=2)
    first = signed_in.get("/ui/audit")
    assert first.status_code == 200
    assert "Running the fleet audit" in first.text  # the page did not wait for the audit
    page = settled(signed_in, "/ui/audit")
    downloaded = signed_in.get("/ui/audit/report.json")
    assert downloaded.status_code == 200
    assert "attachment" in downloaded.headers["content-disposition"]
    report = json.loads(downloaded.content)
    findings = report["findings"]
    assert {"audit/token-no-expiry", "audit/device-cert-expiring"} <= \
        {f["rule"] for f in findings}
    for finding in findings[:5]:
        assert finding["rule"] in page
        if finding.get("fix"):
            assert finding["fix"].split()[0] in page
    assert 'href="/ui/devices/soon-1"' in page
    # Filtered by severity: only that severity's findings.
    severity = findings[0]["severity"]
    filtered = settled(signed_in, f"/ui/audit?severity={severity}")
    others = {f["rule"] for f in findings if f["severity"] != severity} - \
        {f["rule"] for f in findings if f["severity"] == severity}
    for rule_id in others:
        assert f">{rule_id}<" not in filtered
    sarif = json.loads(signed_in.get("/ui/audit/report.sarif").content)
    assert sarif["version"] == "2.1.0"
    html = signed_in.get("/ui/audit/report.html")
    assert html.headers["content-type"].startswith("text/html") and b"<html" in html.content
    # One audit for all of it, made by the signed-in user.
    actors = [e.actor for e in list_events(rt.engine, kind="audit.run")]
    assert actors.count("console:admin") == 1


@pytest.mark.parametrize("path", ["/ui/audit?severity=urgent", "/ui/audit/report.pdf",
                                  "/ui/audit/report.JSON"])
def test_unknown_severities_and_formats_are_refused(signed_in: TestClient, path: str):
    r = signed_in.get(path)
    assert 400 <= r.status_code < 500 and 'role="alert"' in r.text
