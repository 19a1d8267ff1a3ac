"""Audit reports (JSON against its published schema, SARIF 2.1.0 against the OASIS schema,
one-file HTML), the ``iotsec audit`` command and ``GET /v1/audit``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from fastapi.testclient import TestClient

from iotsec.api.app import create_app
from iotsec.app.access.api_tokens import Scope, issue_token
from iotsec.app.audit import run_audit
from iotsec.app.events import list_events
from iotsec.app.runtime import Runtime
from iotsec.app.setup import InitResult
from iotsec.audit import report
from iotsec.audit.model import AuditResult
from iotsec.cli.main import main
from iotsec.config import Settings
from tests.api.support import assert_problem
from tests.audit.conftest import Fleet, add, insert_certificate
from tests.helpers import make_key

SARIF_SCHEMA = Path(__file__).parent.parent / "scan" / "sarif-schema-2.1.0.json"


def errors(validator: Any, document: Any) -> list[str]:
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(document)]


def json_validator() -> jsonschema.Draft202012Validator:
    schema = report.audit_report_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def sarif_validator() -> jsonschema.Draft4Validator:
    schema = json.loads(SARIF_SCHEMA.read_text())
    jsonschema.Draft4Validator.check_schema(schema)
    return jsonschema.Draft4Validator(schema)


@pytest.fixture
def messy(fleet: Fleet) -> AuditResult:
    """A fleet with findings of several rules and severities."""
    from datetime import timedelta

    rt = fleet.rt
    issue_token(rt, "eternal", Scope.ADMIN, None)
    add(rt, "dev-short", days=5)
    now = rt.now()
    from iotsec.app.identity.devices import NewDevice, add_device

    add_device(rt, NewDevice.parse("dev-weak"))
    insert_certificate(rt, "dev-weak", make_key("rsa1024"), serial=0xABCDEF,
                       not_before=now - timedelta(days=1), not_after=now + timedelta(days=90))
    return run_audit(rt, record=False)


def test_json_report_matches_its_schema(messy: AuditResult):
    document = json.loads(report.audit_json_bytes(messy))
    assert errors(json_validator(), document) == []
    assert document["format"] == "iotsec-audit-report" and document["format_version"] == 1
    assert document["summary"]["findings"] == len(messy.findings) == 3
    assert {f["rule"] for f in document["findings"]} == {
        "audit/token-no-expiry", "audit/device-cert-expiring", "audit/device-weak-key"}
    statuses = {c["rule"]: c["status"] for c in document["checks"]}
    assert statuses["audit/device-weak-key"] == "fail"
    assert statuses["audit/ca-expiring"] == "pass"
    assert statuses["audit/broker-anonymous"] == "skipped"
    assert document["summary"]["skipped"] == 5  # four broker checks, firmware
    assert errors(json_validator(), {"format": "iotsec-audit-report"})
    assert errors(json_validator(), {**document, "checks": [{"rule": "x", "status": "maybe"}]})


def test_sarif_report_is_valid_sarif(messy: AuditResult):
    log = json.loads(report.audit_sarif_bytes(messy))
    assert errors(sarif_validator(), log) == []
    run = log["runs"][0]
    assert len(run["results"]) == 3
    assert {r["id"] for r in run["tool"]["driver"]["rules"]} >= {
        "audit/revoked-cert-connecting", "audit/broker-crl-stale"}
    notes = [n["message"]["text"] for n in run["invocations"][0]["toolExecutionNotifications"]]
    assert any(n.startswith("audit/broker-anonymous skipped") for n in notes)


def test_html_report_is_one_self_contained_file(messy: AuditResult):
    page = report.audit_html(messy)
    assert page.startswith("<!DOCTYPE html>") and "<script" not in page
    assert "http://" not in page and "https://" not in page and "src=" not in page
    assert "dev-weak" in page and "audit/device-weak-key" in page and "Checks" in page


# --------------------------------------------------------------------------- CLI


@pytest.fixture
def cli_home(settings: Settings, initialised: InitResult, rt: Runtime,
             monkeypatch: pytest.MonkeyPatch) -> Settings:
    # An admin token made without an expiry: a high finding for the exit-code tests.
    issue_token(rt, "forever", Scope.ADMIN, None)
    for name in ("IOTSEC_BROKER_DIR", "IOTSEC_DATABASE_URL", "IOTSEC_CA_PASSPHRASE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("IOTSEC_HOME", str(settings.home))
    if settings.database_url:
        monkeypatch.setenv("IOTSEC_DATABASE_URL", settings.database_url)
    return settings


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["audit", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_exit_codes_follow_fail_on(cli_home: Settings, capsys):
    code, out, _ = cli(capsys)
    # The 'forever' admin token never expires: a high finding.
    assert code == 1 and "audit/token-no-expiry" in out and "checks ran" in out
    assert cli(capsys, "--fail-on", "critical")[0] == 0
    assert cli(capsys, "--fail-on", "never")[0] == 0
    assert cli(capsys, "--fail-on", "info")[0] == 1


def test_cli_writes_every_report(cli_home: Settings, capsys, tmp_path: Path):
    code, out, _ = cli(capsys, "--json", "-", "--fail-on", "never")
    assert code == 0
    document = json.loads(out)
    assert errors(json_validator(), document) == []
    sarif, page, js = tmp_path / "a.sarif", tmp_path / "a.html", tmp_path / "a.json"
    code, out, _ = cli(capsys, "--sarif", str(sarif), "--html", str(page), "--json", str(js))
    assert code == 1 and "Findings" in out
    assert errors(sarif_validator(), json.loads(sarif.read_text())) == []
    assert page.read_text().startswith("<!DOCTYPE html>")
    assert json.loads(js.read_text())["summary"]["findings"] == 2
    code, out, _ = cli(capsys, "--json-schema")
    assert code == 0 and json.loads(out)["$id"] == report.AUDIT_SCHEMA_ID


@pytest.mark.parametrize(("args", "message"), [
    (["--ca-days", "0"], "--ca-days must be"),
    (["--cert-days", "99999"], "--cert-days must be"),
    (["--max-cert-age", "-3"], "--max-cert-age must be"),
    (["--window", "forever"], "is not a duration"),
    (["--window", "0m"], "--window must be"),
    (["--crl-hours", "0"], "--crl-hours must be"),
    (["--broker-dir", "/nonexistent/broker"], "not a rendered broker directory"),
    (["--fail-on", "sometimes"], "must be one of"),
    (["--json", "-", "--html", "-"], "only one report"),
    (["--ca-days", "many"], "--ca-days"),
])
def test_cli_bad_options_exit_2_without_a_traceback(cli_home: Settings, capsys, args, message):
    code, out, err = cli(capsys, *args)
    assert code == 2, (out, err)
    assert message in err and "Traceback" not in err + out


def test_cli_without_a_home_cannot_run(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.delenv("IOTSEC_DATABASE_URL", raising=False)
    monkeypatch.setenv("IOTSEC_HOME", str(tmp_path / "nowhere"))
    code, _, err = cli(capsys)
    assert code == 2 and "iotsec: error:" in err


def test_cli_records_an_audit_event(cli_home: Settings, capsys, rt: Runtime):
    cli(capsys, "--fail-on", "never")
    (event,) = list_events(rt.engine, kind="audit.run")
    assert event.actor == "cli" and event.detail and event.detail["findings"] == 2


# --------------------------------------------------------------------------- API


@pytest.fixture
def client(rt: Runtime, initialised: InitResult) -> Iterator[TestClient]:
    assert initialised.admin_token is not None
    with TestClient(create_app(rt)) as c:
        yield c


def test_api_returns_the_report_to_auditors(client: TestClient, rt: Runtime):
    _, auditor = issue_token(rt, "reader", Scope.AUDITOR, None)
    resp = client.get("/v1/audit", headers={"Authorization": f"Bearer {auditor}"},
                      params={"ca_days": 30, "window": "7d"})
    assert resp.status_code == 200, resp.text
    document = resp.json()
    assert errors(json_validator(), document) == []
    assert document["audit"]["options"]["ca_days"] == 30
    assert document["audit"]["options"]["window_seconds"] == 7 * 86400
    # reader never expires (init's admin token does, after 90 days).
    assert {f["target"] for f in document["findings"]
            if f["rule"] == "audit/token-no-expiry"} == {"token:reader"}
    (event,) = list_events(rt.engine, kind="audit.run")
    assert event.actor == "reader"


def test_api_needs_a_token_and_valid_thresholds(client: TestClient, rt: Runtime):
    assert_problem(client.get("/v1/audit"), 401)
    _, auditor = issue_token(rt, "reader", Scope.AUDITOR, None)
    auth = {"Authorization": f"Bearer {auditor}"}
    body = assert_problem(client.get("/v1/audit", headers=auth, params={"ca_days": 0}), 400)
    assert "--ca-days" in body["detail"] or "ca-days" in body["detail"]
    assert_problem(client.get("/v1/audit", headers=auth, params={"window": "soon"}), 422)
    assert_problem(client.get("/v1/audit", headers=auth, params={"cert_days": "x"}), 422)
    spec = client.get("/openapi.json").json()
    assert spec["paths"]["/v1/audit"]["get"]["x-required-scope"] == "auditor"


def test_cli_table_is_limited_but_reports_hold_everything(cli_home: Settings, capsys,
                                                          rt: Runtime):
    issue_token(rt, "second", Scope.OPERATOR, None)
    code, out, _ = cli(capsys, "--limit", "1", "--fail-on", "never")
    assert code == 0 and "and 2 more findings" in out and "3 findings" in out
    code, out, _ = cli(capsys, "--limit", "1", "--json", "-", "--fail-on", "never")
    assert len(json.loads(out)["findings"]) == 3
