"""``GET /metrics`` (Prometheus text format, auditor scope), ``GET /v1/events/verify``,
``POST /v1/events/checkpoint`` and the time filters of ``GET /v1/events``."""

from __future__ import annotations

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from iotsec.app.counters import COUNTERS
from iotsec.app.monitor.alerts import raise_alert
from iotsec.app.runtime import Runtime
from iotsec.eventlog.alerts import NewAlert
from iotsec.findings.model import Severity
from iotsec.pki.crl import RevocationReason
from iotsec.store.db import transaction
from tests.api.support import add_device, issue
from tests.helpers import make_csr


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = tuple(sorted((k, v) for k, v in s.labels.items() if k != "worker"))
            out[(s.name, labels)] = s.value
    return out


def test_metrics_need_a_token_and_count(api: TestClient, anon: TestClient, rt: Runtime) -> None:
    assert anon.get("/metrics").status_code == 401
    COUNTERS.clear()
    add_device(api, "m-1")
    add_device(api, "m-2")
    cert = issue(api, "m-1", make_csr())
    issue(api, "m-2", make_csr())
    api.post(f"/v1/certificates/{cert['serial']}/revoke",
             json={"reason": RevocationReason.keyCompromise.name})
    api.post("/v1/devices/m-2/disable")
    for resource in ("t/1", "t/2"):
        api.post("/v1/authz/check", json={"device": "m-1", "action": "publish",
                                           "resource": resource})
    anon.get("/v1/devices")  # a refused authentication
    with transaction(rt.engine) as conn:
        raise_alert(rt, conn, NewAlert(rule="test.rule", severity=Severity.HIGH,
                                       subject="m-1", summary="s", suggested="r", evidence={}))
    resp = api.get("/metrics")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain; version=0.0.4")
    s = _samples(resp.text)
    assert s[("iotsec_certificates", (("state", "revoked"),))] == 1
    assert s[("iotsec_certificates", (("state", "valid"),))] >= 1
    assert s[("iotsec_devices", (("state", "disabled"),))] == 1
    assert s[("iotsec_certificates_expiring", (("within_days", "365"),))] >= 1
    assert s[("iotsec_decisions_total", (("result", "deny"),))] == 2  # m-1: no rule for t/*
    assert s[("iotsec_authentications_total", (("result", "failure"),))] >= 1
    assert s[("iotsec_authentications_total", (("result", "success"),))] >= 6
    assert s[("iotsec_event_chain_length", ())] >= 5
    assert s[("iotsec_alerts", (("severity", "high"), ("state", "open")))] == 1
    buckets = [v for (name, labels), v in s.items()
               if name == "iotsec_http_request_duration_seconds_bucket"
               and ("le", "+Inf") in labels]
    assert buckets and buckets[0] >= 8
    ages = [v for (name, _), v in s.items() if name == "iotsec_crl_age_seconds"]
    assert ages and all(a >= 0 for a in ages)


def test_verify_and_checkpoint_over_the_api(api: TestClient, rt: Runtime) -> None:
    add_device(api, "v-1")
    made = api.post("/v1/events/checkpoint")
    assert made.status_code == 200 and made.json()["made"] is True
    report = api.get("/v1/events/verify").json()
    assert report["ok"] is True and report["checkpointed_seq"] == made.json()["seq"]
    assert api.get("/v1/events", params={"since": "1h"}).json()
    assert api.get("/v1/events", params={"until": "2000-01-01"}).json() == []
    bad = api.get("/v1/events", params={"since": "999999w"})
    assert bad.status_code == 422


def test_alerts_over_the_api(api: TestClient, anon: TestClient, rt: Runtime) -> None:
    from iotsec.app.monitor.checks import run_checks

    add_device(api, "a-1")
    issue(api, "a-1", make_csr(), days=2)
    (alert_id,) = run_checks(rt).raised
    assert anon.get("/v1/alerts").status_code == 401
    listed = api.get("/v1/alerts", params={"state": "open"}).json()
    assert [a["id"] for a in listed] == [alert_id]
    assert api.get(f"/v1/alerts/{alert_id}").json()["rule"] == "cert.expiring"
    assert api.get("/v1/alerts/99999").status_code == 404
    assert api.get("/v1/alerts", params={"state": "closed"}).status_code == 422
    acked = api.post(f"/v1/alerts/{alert_id}/ack").json()
    assert acked["state"] == "acknowledged" and acked["acknowledged_by"]
    assert api.post(f"/v1/alerts/{alert_id}/resolve").json()["state"] == "resolved"
    assert api.post(f"/v1/alerts/{alert_id}/resolve").status_code == 409
