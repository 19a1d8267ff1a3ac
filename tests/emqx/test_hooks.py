"""EMQX hooks through the real app, on SQLite and PostgreSQL: what a device may do, what
an attacker device tries, and who may call the hooks at all."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives import serialization
from fastapi.testclient import TestClient

from iotsec.access.policy import Role, Rule
from iotsec.api.app import create_app
from iotsec.app.access.api_tokens import Scope, issue_token
from iotsec.app.access.roles import add_role
from iotsec.app.broker.emqx import SETTINGS, EmqxSettings
from iotsec.app.events import list_events
from iotsec.app.identity.lifecycle import change_state
from iotsec.app.monitor.quarantine import quarantine_devices, release_devices
from iotsec.app.monitor.selection import Selector
from iotsec.app.pki.cert_records import get_certificate
from iotsec.app.pki.revocation import revoke
from iotsec.app.runtime import Runtime
from iotsec.identity.registry import DeviceState
from tests.emqx.conftest import authz
from tests.emqx.emqx_model import evaluate
from tests.helpers import make_key, self_signed


def _authn(client: TestClient, body: dict[str, str]) -> dict[str, object]:
    resp = client.post("/v1/emqx/authn", json=body)
    assert resp.status_code == 200, resp.text
    data: dict[str, object] = resp.json()
    assert data["result"] in ("allow", "deny")
    return data


def test_own_topics_allowed_others_denied(emqx: TestClient, enroll) -> None:  # type: ignore[no-untyped-def]
    enroll("dev-1")
    enroll("dev-2")
    assert authz(emqx, "dev-1", "publish", "devices/dev-1/telemetry") == "allow"
    assert authz(emqx, "dev-1", "subscribe", "commands/dev-1/#") == "allow"
    assert authz(emqx, "dev-1", "publish", "devices/dev-2/telemetry") == "deny"
    assert authz(emqx, "dev-1", "subscribe", "devices/dev-2/#") == "deny"
    assert authz(emqx, "dev-1", "subscribe", "#") == "deny"
    assert authz(emqx, "dev-1", "subscribe", "devices/+/telemetry") == "deny"
    assert authz(emqx, "dev-1", "subscribe", "$SYS/#") == "deny"
    assert authz(emqx, "dev-1", "publish", "$SYS/brokers") == "deny"


def test_acl_from_authn_gives_the_same_answers(emqx: TestClient, enroll) -> None:  # type: ignore[no-untyped-def]
    dev = enroll("dev-1")
    acl = _authn(emqx, dev.authn_body())["acl"]
    assert isinstance(acl, list)
    for action, topic in [("publish", "devices/dev-1/telemetry"),
                          ("subscribe", "commands/dev-1/#"),
                          ("publish", "devices/dev-2/telemetry"), ("subscribe", "#"),
                          ("subscribe", "devices/+/telemetry")]:
        expected = authz(emqx, "dev-1", action, topic) == "allow"
        assert evaluate(acl, action, topic) is expected, (action, topic)
    # '$' topics escape the final deny-all '#': they reach the HTTP authorizer (deny).
    assert evaluate(acl, "subscribe", "$SYS/#") is None


def test_unknown_device_and_malformed_requests_are_denied(emqx: TestClient) -> None:
    assert authz(emqx, "ghost", "publish", "devices/ghost/t") == "deny"
    assert authz(emqx, "bad/id", "publish", "devices/x/t") == "deny"
    for body in ({}, {"username": "x"}, {"username": "x", "action": "retain", "topic": "t"},
                 {"username": "x", "action": "publish", "topic": "a/#"}):
        resp = emqx.post("/v1/emqx/authz", json=body)
        assert (resp.status_code, resp.json()) == (200, {"result": "deny"})
    for raw in (b"not json", b"[1]", b"\xff\xfe"):
        resp = emqx.post("/v1/emqx/authz", content=raw)
        assert (resp.status_code, resp.json()) == (200, {"result": "deny"})
        resp = emqx.post("/v1/emqx/authn", content=raw)
        assert (resp.status_code, resp.json()["result"]) == (200, "deny")
    big = emqx.post("/v1/emqx/authz", content=b'{"username": "' + b"x" * 40_000 + b'"}')
    assert (big.status_code, big.json()) == (200, {"result": "deny"})


def test_authn_needs_the_presented_certificate_to_be_current(
        rt: Runtime, emqx: TestClient, enroll) -> None:  # type: ignore[no-untyped-def]
    old = enroll("dev-1")
    new = enroll("dev-1")
    assert _authn(emqx, old.authn_body())["result"] == "allow"
    revoke(rt, old.serial)
    assert _authn(emqx, old.authn_body())["result"] == "deny"
    assert _authn(emqx, new.authn_body())["result"] == "allow"
    # Another device's certificate, or one iotsec never issued, is refused.
    other = enroll("dev-2")
    assert _authn(emqx, other.authn_body(username="dev-1", clientid="dev-1",
                                         cert_common_name="dev-1"))["result"] == "deny"
    forged = self_signed(make_key(), "dev-1", not_before=datetime.now(UTC) - timedelta(days=1),
                         not_after=datetime.now(UTC) + timedelta(days=1), serial=7)
    pem = base64.b64encode(forged.public_bytes(serialization.Encoding.DER)).decode()
    assert _authn(emqx, new.authn_body(cert_pem=pem))["result"] == "deny"
    # No certificate at all in the request: refused by default.
    body = new.authn_body()
    del body["cert_pem"]
    assert _authn(emqx, body)["result"] == "deny"


def test_disabled_device_is_refused_and_denied(rt: Runtime, emqx: TestClient,
                                               enroll) -> None:  # type: ignore[no-untyped-def]
    dev = enroll("dev-1")
    change_state(rt, "dev-1", DeviceState.DISABLED)
    assert _authn(emqx, dev.authn_body())["result"] == "deny"
    assert authz(emqx, "dev-1", "publish", "devices/dev-1/t") == "deny"
    change_state(rt, "dev-1", DeviceState.ACTIVE)
    assert _authn(emqx, dev.authn_body())["result"] == "allow"


def test_quarantined_device_gets_only_its_remediation_topic(
        rt: Runtime, emqx: TestClient, enroll) -> None:  # type: ignore[no-untyped-def]
    dev = enroll("dev-1")
    quarantine_devices(rt, Selector.parse(["dev-1"]), actor="test")
    answer = _authn(emqx, dev.authn_body())
    assert answer["result"] == "allow"
    acl = answer["acl"]
    assert isinstance(acl, list)
    assert evaluate(acl, "publish", "quarantine/dev-1/status") is True
    assert evaluate(acl, "publish", "devices/dev-1/telemetry") is not True
    assert authz(emqx, "dev-1", "publish", "quarantine/dev-1/status") == "allow"
    assert authz(emqx, "dev-1", "subscribe", "quarantine/dev-1/#") == "allow"
    assert authz(emqx, "dev-1", "publish", "devices/dev-1/telemetry") == "deny"
    assert authz(emqx, "dev-1", "publish", "quarantine/dev-2/status") == "deny"
    release_devices(rt, ["dev-1"], actor="test")
    assert authz(emqx, "dev-1", "publish", "devices/dev-1/telemetry") == "allow"
    # Quarantined with --revoke: its certificate is refused at authentication.
    quarantine_devices(rt, Selector.parse(["dev-1"]), actor="test", revoke=True)
    assert _authn(emqx, dev.authn_body())["result"] == "deny"


def test_deny_connect_rule_refuses_authentication(rt: Runtime, emqx: TestClient,
                                                  enroll) -> None:  # type: ignore[no-untyped-def]
    add_role(rt, Role.build("blocked", [Rule.parse("deny", "connect", "#")]))
    dev = enroll("dev-9", roles=("device", "blocked"))
    assert _authn(emqx, dev.authn_body())["result"] == "deny"


def test_expire_at_is_bounded(rt: Runtime, emqx: TestClient, enroll) -> None:  # type: ignore[no-untyped-def]
    dev = enroll("dev-1")
    now = int(rt.now().timestamp())
    assert _authn(emqx, dev.authn_body())["expire_at"] == now + 300
    rt.put(SETTINGS, EmqxSettings(authn_ttl=86_400))
    short = enroll("dev-2", days=1)
    expire = _authn(emqx, short.authn_body())["expire_at"]
    assert isinstance(expire, int) and now < expire <= now + 86_400
    assert expire == int(get_certificate(rt, short.serial).not_after.timestamp())


def test_without_cert_pem_when_allowed_any_current_certificate_counts(
        rt: Runtime, emqx: TestClient, enroll) -> None:  # type: ignore[no-untyped-def]
    rt.put(SETTINGS, EmqxSettings(require_cert_pem=False))
    dev = enroll("dev-1")
    body = dev.authn_body()
    del body["cert_pem"]
    assert _authn(emqx, body)["result"] == "allow"
    revoke(rt, dev.serial)
    assert _authn(emqx, body)["result"] == "deny"


def test_only_broker_tokens_reach_the_hooks(rt: Runtime, token: str, broker_token: str,
                                            enroll) -> None:  # type: ignore[no-untyped-def]
    rt.settings.auth_failure_limit = 1_000_000
    enroll("dev-1")
    body = {"username": "dev-1", "action": "publish", "topic": "devices/dev-1/t"}
    anon = TestClient(create_app(rt))
    admin = TestClient(create_app(rt), headers={"Authorization": f"Bearer {token}"})
    _, operator_token = issue_token(rt, "op", Scope.OPERATOR, None)
    operator = TestClient(create_app(rt), headers={"Authorization": f"Bearer {operator_token}"})
    broker = TestClient(create_app(rt), headers={"Authorization": f"Bearer {broker_token}"})
    for path in ("/v1/emqx/authn", "/v1/emqx/authz"):
        assert anon.post(path, json=body).status_code == 401
        assert anon.post(path, json=body,
                         headers={"Authorization": "Bearer nonsense"}).status_code == 401
        assert admin.post(path, json=body).status_code == 403
        assert operator.post(path, json=body).status_code == 403
    # The broker token opens nothing else: walk every route of the API.
    spec = admin.get("/openapi.json").json()
    walked = 0
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            if path.startswith("/v1/emqx/authn") or path.startswith("/v1/emqx/authz"):
                assert op["x-required-scope"] == "broker"
                continue
            if op.get("x-required-scope") in (None, "device"):
                continue  # public, or the device's own token
            url = path.replace("{", "").replace("}", "")
            resp = broker.request(method.upper(), url, json={})
            assert resp.status_code == 403, (method, path, resp.status_code)
            walked += 1
    assert walked > 20


def test_decisions_are_security_events(rt: Runtime, emqx: TestClient, enroll) -> None:  # type: ignore[no-untyped-def]
    dev = enroll("dev-1")
    _authn(emqx, dev.authn_body())
    _authn(emqx, dev.authn_body(username="dev-2", clientid="dev-2", cert_common_name="dev-2"))
    authz(emqx, "dev-1", "publish", "devices/dev-2/t")
    authz(emqx, "dev-1", "publish", "devices/dev-1/t")
    rt.events.flush()
    authn = list_events(rt.engine, kind="broker.authn")
    assert {(e.outcome, e.actor) for e in authn} == {("success", "dev-1"),
                                                     ("failure", "dev-2")}
    assert all(e.source == "192.0.2.10" for e in authn)
    denied = list_events(rt.engine, kind="broker.authz")
    assert [(e.outcome, e.actor, e.subject) for e in denied] == [
        ("denied", "dev-1", "publish devices/dev-2/t")]




@pytest.mark.parametrize("clientid", ["dev-2", "other"])
def test_client_id_must_be_the_certificate_cn(emqx: TestClient, enroll, clientid: str) -> None:  # type: ignore[no-untyped-def]
    dev = enroll("dev-1")
    assert _authn(emqx, dev.authn_body(clientid=clientid))["result"] == "deny"
    assert authz(emqx, "dev-1", "publish", "devices/dev-1/t", clientid=clientid) == "deny"


def test_acl_preview_for_operators(rt: Runtime, token: str, enroll) -> None:  # type: ignore[no-untyped-def]
    enroll("dev-1")
    admin = TestClient(create_app(rt), headers={"Authorization": f"Bearer {token}"})
    resp = admin.get("/v1/emqx/acl/dev-1")
    assert resp.status_code == 200
    assert resp.json()[-1] == {"permission": "deny", "action": "all", "topic": "#"}
    missing = admin.get("/v1/emqx/acl/ghost")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
