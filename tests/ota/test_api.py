"""The OTA API: operator routes under /v1/ota with scopes, and the device-facing routes
(assignment, reports, the TUF repository) authenticated with the device's own token."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from iotsec.api.app import create_app
from iotsec.app.access.api_tokens import Scope, issue_token
from iotsec.app.events import list_events
from iotsec.app.identity import device_tokens, devices
from iotsec.app.runtime import Runtime
from iotsec.app.setup import InitResult
from tests.api.support import assert_problem
from tests.ota.conftest import make_repo, publish
from tests.tokens.support import claims_for, p256, public_pem, sign


def ota_app(rt: Runtime) -> FastAPI:
    """The app as served (the OTA routers are part of it)."""
    return create_app(rt)


def device_token_source(rt: Runtime, device_id: str) -> Callable[[], str]:
    key = p256()
    kid = device_tokens.register_key(rt, device_id, public_pem(key))
    return lambda: sign(key, kid, claims_for(device_id, int(rt.now().timestamp())))


@pytest.fixture
def token(initialised: InitResult) -> str:
    assert initialised.admin_token is not None
    return initialised.admin_token


@pytest.fixture
def client(rt: Runtime, token: str, keys, tmp_path: Path) -> Iterator[TestClient]:
    make_repo(rt, keys)
    publish(rt, keys, tmp_path, "1.0.0", 1)
    for i in range(4):
        devices.add_device(rt, devices.NewDevice.parse(f"d{i}", ["lab"]))
    with TestClient(ota_app(rt), headers={"Authorization": f"Bearer {token}"}) as c:
        yield c


def test_operators_run_campaigns_over_the_api(client: TestClient, rt: Runtime):
    releases = client.get("/v1/ota/releases").json()
    assert [r["version"] for r in releases] == ["1.0.0+0"]
    body = {"name": "api", "product": "thermo", "channel": "stable", "group": "lab",
            "waves": [25, 100], "failure_threshold": 10, "device_timeout": "2h"}
    resp = client.post("/v1/ota/campaigns", json=body)
    assert resp.status_code == 201, resp.text
    c = resp.json()
    assert c["state"] == "active" and c["devices"] == 4 and c["per_wave"][0] == {"pending": 1}
    cid = c["id"]
    assert client.post(f"/v1/ota/campaigns/{cid}/pause", json={"reason": "lunch"}
                       ).json()["state"] == "paused"
    assert_problem(client.post(f"/v1/ota/campaigns/{cid}/pause", json={}), 409)
    assert client.post(f"/v1/ota/campaigns/{cid}/resume").json()["state"] == "active"
    assert client.get(f"/v1/ota/campaigns/{cid}").json()["reason"] is None
    assert len(client.get(f"/v1/ota/campaigns/{cid}/devices").json()) == 4
    assert client.get("/v1/ota/campaigns", params={"state": "active"}).json()[0]["id"] == cid
    assert client.post(f"/v1/ota/campaigns/{cid}/abort", json={}).json()["state"] == "aborted"
    assert client.get("/v1/ota/repository").json()["roles"][0]["threshold"] == 2
    assert_problem(client.post("/v1/ota/campaigns", json={**body, "waves": [50]}), 422)
    assert_problem(client.post("/v1/ota/campaigns", json={**body, "product": "ghost"}), 404)
    assert_problem(client.get("/v1/ota/campaigns/999"), 404)


def test_operator_routes_need_their_scope(client: TestClient, rt: Runtime):
    _, auditor = issue_token(rt, "watcher", Scope.AUDITOR, None)
    with TestClient(ota_app(rt), headers={"Authorization": f"Bearer {auditor}"}) as c:
        assert c.get("/v1/ota/campaigns").status_code == 200
        assert_problem(c.post("/v1/ota/campaigns", json={}), 403)
        assert_problem(c.post("/v1/ota/campaigns/1/abort", json={}), 403)
    with TestClient(ota_app(rt)) as anon:
        assert_problem(anon.get("/v1/ota/releases"), 401)
    spec = client.get("/openapi.json").json()["paths"]
    assert spec["/v1/ota/campaigns"]["post"]["x-required-scope"] == "operator"
    assert spec["/v1/ota/campaigns"]["get"]["x-required-scope"] == "auditor"
    assert spec["/v1/ota/device/report"]["post"]["x-required-scope"] == "device"


def test_devices_get_their_assignment_report_and_fetch_metadata(client: TestClient,
                                                                 rt: Runtime):
    cid = client.post("/v1/ota/campaigns", json={
        "name": "d", "product": "thermo", "channel": "stable", "devices": ["d0"]}).json()["id"]
    token = device_token_source(rt, "d0")
    other = device_token_source(rt, "d1")

    def dev(tok: Callable[[], str]) -> dict[str, str]:
        return {"Authorization": f"Bearer {tok()}"}

    got = client.get("/v1/ota/device/assignment", headers=dev(token)).json()["update"]
    assert got["campaign_id"] == cid and got["target"] == "thermo/1.0.0-0.bin"
    assert client.get("/v1/ota/device/assignment", headers=dev(other)).json() == {"update": None}
    for status in ("downloading", "installing"):
        resp = client.post("/v1/ota/device/report", headers=dev(token),
                           json={"campaign_id": cid, "status": status, "version": "0.9.0"})
        assert resp.json()["status"] == status, resp.text
    body = assert_problem(client.post("/v1/ota/device/report", headers=dev(token),
                                      json={"campaign_id": cid, "status": "pending",
                                            "version": "0.9.0"}), 409)
    assert body["type"].endswith(":ota-report")
    resp = client.post("/v1/ota/device/report", headers=dev(token),
                       json={"campaign_id": cid, "status": "installed", "version": "1.0.0"})
    assert resp.status_code == 200, resp.text
    assert client.get(f"/v1/ota/campaigns/{cid}").json()["state"] == "completed"
    assert client.get("/v1/ota/devices/d0/firmware").json()["security_counter"] == 1
    # The TUF repository, for devices only.
    meta = client.get("/v1/ota/tuf/metadata/timestamp.json", headers=dev(token))
    assert meta.status_code == 200 and meta.json()["signed"]["_type"] == "timestamp"
    assert client.get("/v1/ota/tuf/metadata/1.root.json", headers=dev(token)).status_code == 200
    for bad in ("2.root.json", "..%2Fconfig.json", "config.json", "root.json.bak"):
        assert_problem(client.get(f"/v1/ota/tuf/metadata/{bad}", headers=dev(token)), 404)
    sha = got["sha256"]
    target = client.get(f"/v1/ota/tuf/targets/thermo/{sha}.1.0.0-0.bin", headers=dev(token))
    assert target.status_code == 200 and len(target.content) == got["length"]
    for bad in (f"thermo/{sha}.1.0.0-0.bin.x", "../config.json", f"thermo/{'0' * 64}.x.bin",
                f"..%2F..%2Fthermo/{sha}.1.0.0-0.bin"):
        assert client.get(f"/v1/ota/tuf/targets/{bad}", headers=dev(token)).status_code == 404
    downloads = list_events(rt.engine, kind="ota.download")
    assert downloads and downloads[0].actor == "d0"


def test_device_routes_refuse_missing_replayed_and_operator_tokens(client: TestClient,
                                                                   rt: Runtime, token: str):
    source = device_token_source(rt, "d0")
    jwt = source()
    assert client.get("/v1/ota/device/assignment",
                      headers={"Authorization": f"Bearer {jwt}"}).status_code == 200
    replay = client.get("/v1/ota/device/assignment", headers={"Authorization": f"Bearer {jwt}"})
    assert assert_problem(replay, 401)["type"].endswith(":device-token-replayed")
    assert_problem(client.get("/v1/ota/tuf/metadata/root.json"), 401)  # admin token only
    with TestClient(ota_app(rt)) as anon:
        assert_problem(anon.get("/v1/ota/device/assignment"), 401)
        assert_problem(anon.post("/v1/ota/device/report", json={}), 401)
    failures = [e for e in list_events(rt.engine, kind="device-token") if e.outcome == "failure"]
    assert failures
