"""The console's compliance page (SQLite and PostgreSQL): a framework's report with its
score and provisions, the same report downloaded as JSON, SARIF and HTML, and unknown
frameworks or formats refused."""

from __future__ import annotations

import json
import time

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


def settled(client: TestClient, path: str) -> str:
    """The page at ``path`` once what it computes in the background is there: the page
    first says it is computing and asks again (htmx), as the browser does."""
    page = client.get(path)
    assert page.status_code == 200
    text = page.text
    deadline = time.monotonic() + 60
    while 'hx-trigger="load delay:1s"' in text:
        assert time.monotonic() < deadline, "the report was never computed"
        time.sleep(0.05)
        fragment = client.get(path, headers={"hx-request": "true"})
        assert fragment.status_code == 200
        assert "<html" not in fragment.text  # only the fragment comes back
        text = fragment.text
    return text


def test_a_frameworks_report_and_its_downloads(signed_in: TestClient, rt: Runtime):
    assert "No report made yet" in settled(signed_in, "/ui/overview")
    first = signed_in.get("/ui/compliance?framework=owasp-iot-top10")
    assert first.status_code == 200
    assert "Computing the report" in first.text  # the page did not wait for the audit
    page = settled(signed_in, "/ui/compliance?framework=owasp-iot-top10")
    expected = compliance_json(report(rt, "owasp-iot-top10"))
    score = expected["summary"]["score"]
    assert f"score {score if score is not None else '-'} %" in page
    for provision in expected["provisions"][:3]:
        assert provision["number"] in page
    # The overview shows the score of the newest report (from its event; nothing computed).
    overview = settled(signed_in, "/ui/overview")
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
