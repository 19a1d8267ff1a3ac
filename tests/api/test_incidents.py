"""Incident response over the API: quarantine (operator), release, the incidents
(auditor), and the refusals, which change nothing and never answer 5xx."""

from __future__ import annotations

from fastapi.testclient import TestClient

from iotsec.api.app import create_app
from iotsec.app.identity.devices import get_device
from iotsec.identity.registry import DeviceState


def test_quarantine_release_and_incidents(api: TestClient, rt) -> None:
    for d in ("gw-1", "gw-2"):
        assert api.post("/v1/devices", json={"id": d, "groups": ["gateways"]}
                        ).status_code == 201
    plan = api.post("/v1/incidents/quarantine", json={"group": "gateways", "dry_run": True})
    assert plan.status_code == 200 and plan.json()["quarantined"] == ["gw-1", "gw-2"]
    assert get_device(rt, "gw-1").state is DeviceState.PENDING
    done = api.post("/v1/incidents/quarantine",
                    json={"devices": ["gw-1"], "reason": "brute force"}).json()
    assert done["quarantined"] == ["gw-1"] and done["incident"]
    assert get_device(rt, "gw-1").state is DeviceState.QUARANTINED
    listed = api.get("/v1/incidents", params={"state": "open"}).json()
    assert [(i["id"], i["reason"], i["held"]) for i in listed] == [
        (done["incident"], "brute force", [])]
    shown = api.get(f"/v1/incidents/{done['incident']}").json()
    assert shown["held"] == ["gw-1"] and shown["actor"]
    released = api.post("/v1/incidents/release", json={"incident": done["incident"]}).json()
    assert released["released"] == [{"device": "gw-1", "state": "pending"}]
    assert api.get(f"/v1/incidents/{done['incident']}").json()["state"] == "closed"


def test_refusals(api: TestClient, rt) -> None:
    assert api.post("/v1/devices", json={"id": "gw-9"}).status_code == 201
    for body, status in [({}, 400), ({"query": ["id=*"]}, 400),
                         ({"devices": ["gw-9"], "confirm_count": 5}, 409),
                         ({"devices": ["ghost"]}, 409), ({"devices": ["a/b"]}, 400),
                         ({"devices": ["gw-9"], "bogus": 1}, 422)]:
        resp = api.post("/v1/incidents/quarantine", json=body)
        assert resp.status_code in (status, 422), (body, resp.status_code, resp.text)
        assert resp.headers["content-type"] == "application/problem+json"
    assert api.post("/v1/incidents/release", json={"devices": ["gw-9"]}).status_code == 409
    assert api.get("/v1/incidents/nothex").status_code in (400, 422)
    assert api.get("/v1/incidents/0123456789abcdef").status_code == 404
    assert get_device(rt, "gw-9").state is DeviceState.PENDING
    assert api.get("/v1/incidents").json() == []


def test_an_auditor_cannot_quarantine(api: TestClient, rt) -> None:
    token = api.post("/v1/tokens", json={"name": "aud", "scope": "auditor",
                                         "expires_in": "1d"}).json()["token"]
    assert api.post("/v1/devices", json={"id": "gw-3"}).status_code == 201
    auditor = TestClient(create_app(rt), headers={"Authorization": f"Bearer {token}"})
    assert auditor.post("/v1/incidents/quarantine",
                        json={"devices": ["gw-3"]}).status_code == 403
    assert auditor.get("/v1/incidents").status_code == 200
    assert get_device(rt, "gw-3").state is DeviceState.PENDING
