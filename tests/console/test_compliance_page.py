"""The console's compliance page (SQLite and PostgreSQL): a framework's report with its
score and provisions, the same report downloaded as JSON, SARIF and HTML, and unknown
frameworks or formats refused."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from iotsec.app.compliance.reports import report
from iotsec.app.events import list_events
from iotsec.app.runtime import Runtime
from iotsec.compliance.report import compliance_json
from tests.console.conftest import ORIGIN


@pytest.fixture
def signed_in(web: TestClient, admin_token: str) -> TestClient:
    r = web.post("/ui/signin", data={"token": admin_token}, headers={"origin": ORIGIN})
    assert r.status_code == 303
    return web


def test_a_frameworks_report_and_its_downloads(signed_in: TestClient, rt: Runtime):
    assert "No report computed yet" in signed_in.get("/ui/overview").text
    page = signed_in.get("/ui/compliance?framework=owasp-iot-top10")
    assert page.status_code == 200
    expected = compliance_json(report(rt, "owasp-iot-top10"))
    score = expected["summary"]["score"]
    assert f"score {score if score is not None else '-'} %" in page.text
    for provision in expected["provisions"][:3]:
        assert provision["number"] in page.text
    # The overview shows the score the compliance page computed (and computes nothing).
    overview = signed_in.get("/ui/overview").text
    assert "owasp-iot-top10" in overview
    assert f"{score if score is not None else '-'} %" in overview
    downloaded = signed_in.get("/ui/compliance/owasp-iot-top10.json")
    assert downloaded.status_code == 200
    assert "attachment" in downloaded.headers["content-disposition"]
    body = json.loads(downloaded.content)
    assert [p["status"] for p in body["provisions"]] == \
        [p["status"] for p in expected["provisions"]]
    sarif = json.loads(signed_in.get("/ui/compliance/owasp-iot-top10.sarif").content)
    assert sarif["version"] == "2.1.0"
    html = signed_in.get("/ui/compliance/owasp-iot-top10.html")
    assert html.headers["content-type"].startswith("text/html") and b"<html" in html.content
    # The console's views reuse one computed report: one report event for the console.
    actors = [e.actor for e in list_events(rt.engine, kind="compliance.report")]
    assert actors.count("console:admin") == 1


@pytest.mark.parametrize("path", ["/ui/compliance?framework=iso-27001",
                                  "/ui/compliance/owasp-iot-top10.pdf",
                                  "/ui/compliance/nothing.json", "/ui/compliance/json"])
def test_unknown_frameworks_and_formats_are_refused(signed_in: TestClient, path: str):
    r = signed_in.get(path)
    assert 400 <= r.status_code < 500 and 'role="alert"' in r.text
