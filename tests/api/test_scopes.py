"""Operator tokens and scopes: every route declares one, and the OpenAPI document proves
that nothing is reachable without a token and nothing that changes state with 'auditor'."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from iotsec.api.app import create_app
from iotsec.app.events import list_events

PUBLIC = {("get", "/crl"), ("get", "/crl/delta"), ("get", "/crl/p/{partition}"),
          ("get", "/healthz")}
# POST routes that only read: asking for a decision changes nothing.
READ_ONLY_POSTS = {("post", "/v1/authz/check")}


def _fill(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x1", path)


def _routes(client: TestClient) -> list[tuple[str, str, dict]]:
    spec = client.get("/openapi.json").json()
    return [(method, path, op) for path, ops in spec["paths"].items()
            for method, op in ops.items()]


def _token(api: TestClient, scope: str) -> str:
    resp = api.post("/v1/tokens", json={"name": f"{scope}-bot", "scope": scope,
                                        "expires_in": "30d"})
    assert resp.status_code == 201, resp.text
    return resp.json()["token"]


def test_every_route_declares_a_scope_and_needs_a_token(anon: TestClient):
    routes = _routes(anon)
    assert len(routes) > 20
    for method, path, op in routes:
        if (method, path) in PUBLIC:
            continue
        # Device-facing routes take the device's own token (scope "device"); the EMQX
        # hooks take a "broker" token (tests/emqx shows it opens nothing else).
        assert op.get("x-required-scope") in {"admin", "operator", "auditor", "device",
                                              "broker"}, (
            method, path)
        resp = anon.request(method.upper(), _fill(path), json={})
        assert resp.status_code == 401, (method, path, resp.status_code)
        assert resp.headers["content-type"] == "application/problem+json"


def test_auditor_cannot_change_anything(api: TestClient, rt):
    auditor = _token(api, "auditor")
    client = TestClient(create_app(rt), headers={"Authorization": f"Bearer {auditor}"})
    for method, path, op in _routes(client):
        if (method, path) in PUBLIC or op.get("x-required-scope") in ("device", "broker"):
            continue
        resp = client.request(method.upper(), _fill(path), json={})
        if method == "get" or (method, path) in READ_ONLY_POSTS:
            assert op["x-required-scope"] in {"auditor", "admin"}
            assert resp.status_code != 401, (method, path)
        else:
            assert op["x-required-scope"] in {"operator", "admin"}, (method, path)
            assert resp.status_code == 403, (method, path, resp.status_code)
    assert client.get("/v1/devices").status_code == 200


def test_operator_manages_devices_but_not_policy_or_tokens(api: TestClient, rt):
    operator = _token(api, "operator")
    client = TestClient(create_app(rt), headers={"Authorization": f"Bearer {operator}"})
    assert client.post("/v1/devices", json={"id": "op-made"}).status_code == 201
    assert client.get("/v1/tokens").status_code == 403
    assert client.post("/v1/roles", json={"name": "r", "rules": []}).status_code == 403
    assert client.put("/v1/policy", content=b"roles: []").status_code == 403


def test_tokens_expire_are_revoked_and_record_last_use(api: TestClient, rt, clock):
    from datetime import timedelta

    resp = api.post("/v1/tokens", json={"name": "short", "scope": "auditor",
                                        "expires_in": "1h"})
    token_id, token = resp.json()["id"], resp.json()["token"]
    client = TestClient(create_app(rt), headers={"Authorization": f"Bearer {token}"})
    assert client.get("/v1/devices").status_code == 200
    listed = {t["id"]: t for t in api.get("/v1/tokens").json()}
    assert listed[token_id]["last_used_at"] is not None
    assert all(t["token"] is None for t in listed.values())  # never shown again
    clock.advance(timedelta(hours=1, seconds=1))
    assert client.get("/v1/devices").status_code == 401
    second = _token(api, "auditor")
    second_id = second.split("_")[1]
    c2 = TestClient(create_app(rt), headers={"Authorization": f"Bearer {second}"})
    assert c2.get("/v1/devices").status_code == 200
    assert api.delete(f"/v1/tokens/{second_id}").status_code == 200
    assert c2.get("/v1/devices").status_code == 401
    assert api.delete(f"/v1/tokens/{second_id}").status_code == 409


def test_bad_scope_and_name(api: TestClient):
    assert api.post("/v1/tokens", json={"name": "x", "scope": "root"}).status_code == 422
    assert api.post("/v1/tokens", json={"name": "a b", "scope": "auditor"}).status_code == 422


def test_failures_are_throttled_per_source(rt, token):
    rt.settings.auth_failure_limit = 3
    client = TestClient(create_app(rt))
    bad = {"Authorization": "Bearer iotsec_0123456789abcdef_" + "A" * 43}
    assert [client.get("/v1/devices", headers=bad).status_code for _ in range(3)] == [401] * 3
    throttled = client.get("/v1/devices", headers=bad)
    assert throttled.status_code == 429
    assert int(throttled.headers["Retry-After"]) > 0
    # Even the right token is refused from that source while it is throttled.
    good = client.get("/v1/devices", headers={"Authorization": f"Bearer {token}"})
    assert good.status_code == 429


def test_every_decision_is_an_event(api: TestClient, rt, anon: TestClient):
    auditor = _token(api, "auditor")
    api.get("/v1/devices")
    anon.get("/v1/devices", headers={"Authorization": "Bearer nonsense"})
    TestClient(create_app(rt), headers={"Authorization": f"Bearer {auditor}"}).post(
        "/v1/devices", json={"id": "x"})
    rt.events.flush()
    outcomes = {(e.outcome, (e.detail or {}).get("reason")) for e in
                list_events(rt.engine, kind="auth")}
    assert ("success", None) in outcomes
    assert ("failure", "malformed") in outcomes
    assert ("denied", None) in outcomes
    listed = api.get("/v1/events", params={"kind": "auth"}).json()
    assert {e["outcome"] for e in listed} >= {"success", "failure", "denied"}
    assert all("nonsense" not in str(e) for e in listed)  # no token material in events


@pytest.mark.parametrize("body", [b"roles: [", b"roles:\n- name: x\n  bogus: 1\n"])
def test_policy_put_errors_name_the_line(api: TestClient, body: bytes):
    resp = api.put("/v1/policy", content=body)
    assert resp.status_code == 422
    assert "line" in resp.json()["detail"]


def test_events_filter_by_device(api: TestClient, rt):
    from iotsec.app.events import Event

    rt.events.record(Event(rt.now(), "broker.connect", "success", actor="dev-7"))
    rt.events.record(Event(rt.now(), "broker.connect", "success", actor="dev-8"))
    listed = api.get("/v1/events", params={"device": "dev-7"}).json()
    assert [e["actor"] for e in listed] == ["dev-7"]


def test_policy_lint_lists_each_finding_with_its_role_and_rule_index(api: TestClient):
    assert api.get("/v1/policy/lint").json() == [
        {"severity": "info", "code": "unused-role", "role": "device", "rule_index": None,
         "message": "role 'device' is held by no device or group",
         "fix": "assign it or remove it"}]
    document = (b"version: 1\nroles:\n- name: snoop\n  description: reads everything\n"
                b"  rules:\n  - {effect: allow, action: subscribe, resource: '#'}\n"
                b"groups: {}\n")
    assert api.put("/v1/policy", content=document).status_code == 200
    assert [(f["severity"], f["code"], f["role"], f["rule_index"], f["fix"])
            for f in api.get("/v1/policy/lint").json()] == [
        ("high", "wildcard-all", "snoop", 0,
         "scope the rule to the device: e.g. devices/${device.id}/#"),
        ("info", "unused-role", "device", None, "assign it or remove it"),
        ("info", "unused-role", "snoop", None, "assign it or remove it")]
