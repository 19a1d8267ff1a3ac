"""Console sessions and their defences, over the real application on SQLite and PostgreSQL:
cookie flags, the session stored hashed, CSRF and origin checks, timeouts, revocation,
scopes, throttling, the events recorded, and every route refused without a session."""

from __future__ import annotations

import hashlib
import re
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import insert, select
from starlette.routing import Route

from iotsec.api.app import create_app
from iotsec.app.access.api_tokens import Scope, issue_token, list_tokens, revoke_token
from iotsec.app.events import list_events
from iotsec.app.identity.devices import NewDevice, add_device, get_device
from iotsec.app.monitor.incident_records import list_incidents
from iotsec.app.runtime import Runtime
from iotsec.console.app import CSP, ROUTES
from iotsec.console.web import COOKIE
from iotsec.identity.registry import DeviceState
from iotsec.store import models as m
from iotsec.store.db import reading, transaction
from tests.conftest import FakeClock
from tests.console.conftest import ORIGIN

POST = {"origin": ORIGIN}


def _sign_in(web: TestClient, token: str) -> str:
    """Sign in; returns the page's CSRF token."""
    r = web.post("/ui/signin", data={"token": token}, headers=POST)
    assert r.status_code == 303, r.text
    assert r.headers["location"] == "/ui/overview"
    page = web.get("/ui/overview")
    assert page.status_code == 200
    found = re.search(r'name="csrf" value="([0-9a-f]{64})"', page.text)
    assert found, page.text
    return found[1]


def _token(rt: Runtime, scope: Scope) -> str:
    return issue_token(rt, f"{scope.value}-person", scope, None)[1]


def test_sign_in_sets_a_host_only_secure_cookie_and_stores_only_its_hash(
        web: TestClient, admin_token: str, rt: Runtime):
    r = web.post("/ui/signin", data={"token": admin_token}, headers=POST)
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=")
    for flag in ("HttpOnly", "Secure", "SameSite=strict", "Path=/"):
        assert flag.lower() in cookie.lower(), cookie
    assert "domain" not in cookie.lower()
    secret = cookie.split(";")[0].split("=", 1)[1]
    with reading(rt.engine) as conn:
        rows = conn.execute(select(m.console_sessions)).all()
    assert [row.id_sha256 for row in rows] == [hashlib.sha256(secret.encode()).hexdigest()]
    assert secret not in str(rows)
    assert r.headers["content-security-policy"] == CSP
    kinds = [(e.kind, e.outcome) for e in list_events(rt.engine, kind="console.signin")]
    assert ("console.signin", "success") in kinds


def test_no_token_and_no_secret_in_any_page(web: TestClient, admin_token: str):
    _sign_in(web, admin_token)
    secret = web.cookies.get(COOKIE)
    assert secret
    for path in ("/ui/overview", "/ui/devices", "/ui/certificates", "/ui/alerts"):
        r = web.get(path)
        assert r.status_code == 200
        assert admin_token not in r.text and secret not in r.text
        assert admin_token.split("_", 2)[2] not in r.text  # the secret, underscores and all
        assert r.headers["cache-control"] == "no-store"
        assert r.headers["content-security-policy"] == CSP
        assert r.headers["x-frame-options"] == "DENY"
        # No inline script or style: every script has a src, no style attribute or element.
        assert not re.search(r"<script(?![^>]*\bsrc=)", r.text)
        assert "<style" not in r.text and " style=" not in r.text


def test_every_route_is_refused_without_a_session(web: TestClient, rt: Runtime):
    rt.settings.auth_failure_limit = 1_000_000
    add_device(rt, NewDevice.parse("walk-1"))
    public = {("GET", "/signin"), ("POST", "/signin")}
    walked = 0
    for route in ROUTES:
        assert isinstance(route, Route)
        for method in sorted(route.methods or ()):
            if method == "HEAD" or (method, route.path) in public:
                continue
            path = "/ui" + route.path.replace("{device_id}", "walk-1").replace(
                "{alert_id}", "1").replace("{campaign_id}", "1").replace(
                "{name}", "owasp-iot-top10.json")
            r = web.request(method, path, data={"csrf": "x", "do": "disable",
                                                "confirm": "walk-1", "to": "resolved",
                                                "sure": "yes"},
                            headers=POST)
            walked += 1
            assert r.status_code in (303, 401), (method, path, r.status_code)
            if r.status_code == 303:
                assert r.headers["location"] == "/ui/signin"
            assert "walk-1" not in r.text or method == "POST"
    assert walked >= 10
    assert get_device(rt, "walk-1").state is DeviceState.PENDING


def test_a_post_without_the_csrf_token_or_from_another_origin_changes_nothing(
        web: TestClient, admin_token: str, rt: Runtime):
    add_device(rt, NewDevice.parse("csrf-1"))
    csrf = _sign_in(web, admin_token)
    form = {"do": "disable", "confirm": "csrf-1"}
    r = web.post("/ui/devices/csrf-1/action", data=form, headers=POST)
    assert r.status_code == 403 and "CSRF" in r.text
    r = web.post("/ui/devices/csrf-1/action", data={**form, "csrf": "0" * 64}, headers=POST)
    assert r.status_code == 403
    r = web.post("/ui/devices/csrf-1/action", data={**form, "csrf": csrf},
                 headers={"origin": "https://evil.example"})
    assert r.status_code == 403 and "another site" in r.text
    assert get_device(rt, "csrf-1").state is DeviceState.PENDING
    r = web.post("/ui/devices/csrf-1/action", data={**form, "csrf": csrf}, headers=POST)
    assert r.status_code == 303
    assert get_device(rt, "csrf-1").state is DeviceState.DISABLED


def test_the_auditor_sees_no_action_and_the_server_refuses_them(web: TestClient,
                                                                rt: Runtime):
    add_device(rt, NewDevice.parse("audit-1"))
    csrf = _sign_in(web, _token(rt, Scope.AUDITOR))
    page = web.get("/ui/devices/audit-1")
    assert page.status_code == 200
    assert "/confirm?do=" not in page.text
    assert web.get("/ui/devices/audit-1/confirm?do=disable").status_code == 403
    r = web.post("/ui/devices/audit-1/action",
                 data={"csrf": csrf, "do": "disable", "confirm": "audit-1"}, headers=POST)
    assert r.status_code == 403 and "auditor" in r.text
    assert get_device(rt, "audit-1").state is DeviceState.PENDING


def test_idle_and_absolute_timeouts_end_the_session(web: TestClient, admin_token: str,
                                                    rt: Runtime, clock: FakeClock):
    _sign_in(web, admin_token)
    clock.advance(timedelta(minutes=rt.settings.console_idle_minutes - 1))
    assert web.get("/ui/devices").status_code == 200
    clock.advance(timedelta(minutes=rt.settings.console_idle_minutes + 1))
    r = web.get("/ui/devices")
    assert r.status_code == 303 and r.headers["location"] == "/ui/signin"
    with reading(rt.engine) as conn:
        assert conn.execute(select(m.console_sessions)).all() == []
    _sign_in(web, admin_token)
    for _ in range(rt.settings.console_absolute_hours * 3):
        clock.advance(timedelta(minutes=20))
        r = web.get("/ui/devices")
        if r.status_code != 200:
            break
    assert r.status_code == 303
    assert web.get("/ui/overview").status_code == 303


def test_revoking_the_token_ends_its_sessions(web: TestClient, rt: Runtime):
    info, token = issue_token(rt, "ops", Scope.OPERATOR, None)
    _sign_in(web, token)
    assert web.get("/ui/devices").status_code == 200
    revoke_token(rt, info.id)
    assert web.get("/ui/devices").status_code == 303


def test_sign_out_ends_the_session_in_the_store(web: TestClient, admin_token: str,
                                                rt: Runtime):
    csrf = _sign_in(web, admin_token)
    secret = web.cookies.get(COOKIE)
    r = web.post("/ui/signout", data={"csrf": csrf}, headers=POST)
    assert r.status_code == 303 and r.headers["location"] == "/ui/signin"
    web.cookies.set(COOKIE, secret or "", domain="testserver")
    assert web.get("/ui/overview").status_code == 303
    assert [e.outcome for e in list_events(rt.engine, kind="console.signout")] == ["success"]


def test_failed_sign_ins_are_recorded_and_throttled(web: TestClient, rt: Runtime):
    rt.settings.auth_failure_limit = 3
    codes = [web.post("/ui/signin", data={"token": f"iotsec_{i:016x}_{'a' * 43}"},
                      headers=POST).status_code for i in range(5)]
    assert codes[:3] == [401, 401, 401]
    assert codes[3:] == [429, 429]
    reasons = [e.detail["reason"] for e in list_events(rt.engine, kind="console.signin")]
    assert reasons.count("invalid token") == 3 and reasons.count("throttled") == 2
    assert COOKIE not in web.cookies


@pytest.mark.parametrize("scope", [Scope.BROKER])
def test_a_broker_token_cannot_sign_in(web: TestClient, rt: Runtime, scope: Scope):
    r = web.post("/ui/signin", data={"token": _token(rt, scope)}, headers=POST)
    assert r.status_code == 401
    assert COOKIE not in web.cookies


def test_the_console_refuses_plain_http(rt: Runtime, admin_token: str):
    with TestClient(create_app(rt), base_url="http://testserver",
                    follow_redirects=False) as plain:
        r = plain.post("/ui/signin", data={"token": admin_token})
        assert r.status_code == 403 and "HTTPS only" in r.text
        assert "set-cookie" not in r.headers


def test_the_operator_approves_a_device_awaiting_approval(web: TestClient, rt: Runtime):
    now = int(rt.now().timestamp())
    with transaction(rt.engine) as conn:  # as an enrolment under an approval template leaves it
        conn.execute(insert(m.devices).values(id="wait-1", state="awaiting-approval",
                                              attributes="{}", created_at=now,
                                              updated_at=now))
    csrf = _sign_in(web, _token(rt, Scope.OPERATOR))
    page = web.get("/ui/devices/wait-1")
    assert "/ui/devices/wait-1/confirm?do=approve" in page.text
    assert "confirm?do=disable" in page.text and "confirm?do=enable" not in page.text
    confirm = web.get("/ui/devices/wait-1/confirm?do=approve")
    assert confirm.status_code == 200 and 'name="confirm"' in confirm.text
    r = web.post("/ui/devices/wait-1/action",
                 data={"csrf": csrf, "do": "approve", "confirm": "wait-1"}, headers=POST)
    assert r.status_code == 303
    assert get_device(rt, "wait-1").state is DeviceState.PENDING
    events = list_events(rt.engine, kind="est.approved")
    assert [(e.subject, e.actor) for e in events] == [("wait-1", "operator-person")]


@pytest.mark.parametrize(("method", "path", "form"), [
    ("GET", "/ui/devices?q=a%2Fb", None),
    ("GET", "/ui/devices?state=gone", None),
    ("GET", "/ui/devices?after=%20", None),
    ("GET", "/ui/devices/bad%20id", None),
    ("GET", "/ui/devices/bad-1?action=publish", None),
    ("GET", "/ui/devices/bad-1/confirm?do=explode", None),
    ("GET", "/ui/alerts?state=gone", None),
    ("GET", "/ui/policy?device=bad-1&action=fly&topic=x", None),
    ("POST", "/ui/devices/bad-1/action", {"do": "retire", "confirm": "bad-2"}),
    ("POST", "/ui/devices/bad-1/action", {"do": "explode", "confirm": "bad-1"}),
    ("POST", "/ui/alerts/x/state", {"to": "resolved"}),
    ("POST", "/ui/alerts/99/state", {"to": "open"}),
    ("POST", "/ui/alerts/99/state", {"to": "resolved"}),
])
def test_bad_input_gets_a_clear_page_and_changes_nothing(
        web: TestClient, admin_token: str, rt: Runtime, method: str, path: str,
        form: dict[str, str] | None):
    add_device(rt, NewDevice.parse("bad-1"))
    csrf = _sign_in(web, admin_token)
    seq = len(list_events(rt.engine, limit=10_000))
    r = web.request(method, path, data={**form, "csrf": csrf} if form else None,
                    headers=POST)
    assert 400 <= r.status_code < 500, (path, r.status_code)
    assert 'role="alert"' in r.text
    assert "Traceback" not in r.text
    assert get_device(rt, "bad-1").state is DeviceState.PENDING
    assert len(list_events(rt.engine, limit=10_000)) == seq


def test_signing_in_again_ends_the_browsers_previous_session(web: TestClient,
                                                              admin_token: str, rt: Runtime):
    _sign_in(web, admin_token)
    first = web.cookies.get(COOKIE)
    _sign_in(web, admin_token)
    assert web.cookies.get(COOKIE) != first
    with reading(rt.engine) as conn:
        rows = conn.execute(select(m.console_sessions.c.id_sha256)).scalars().all()
    assert rows == [hashlib.sha256((web.cookies.get(COOKIE) or "").encode()).hexdigest()]


def test_the_operator_quarantines_and_releases_a_device(web: TestClient, rt: Runtime):
    add_device(rt, NewDevice.parse("cam-q"))
    before = get_device(rt, "cam-q").state
    csrf = _sign_in(web, _token(rt, Scope.OPERATOR))
    assert "/ui/devices/cam-q/confirm?do=quarantine" in web.get("/ui/devices/cam-q").text
    r = web.post("/ui/devices/cam-q/action",
                 data={"csrf": csrf, "do": "quarantine", "confirm": "cam-q"}, headers=POST)
    assert r.status_code == 303
    assert get_device(rt, "cam-q").state is DeviceState.QUARANTINED
    (incident,) = list_incidents(rt)
    assert incident.actor == "operator-person" and incident.state == "open"
    assert incident.id in web.get("/ui/alerts").text  # the incidents beside the alerts
    page = web.get("/ui/devices/cam-q").text
    assert "confirm?do=release" in page and "confirm?do=quarantine" not in page
    r = web.post("/ui/devices/cam-q/action",
                 data={"csrf": csrf, "do": "release", "confirm": "cam-q"}, headers=POST)
    assert r.status_code == 303
    assert get_device(rt, "cam-q").state is before
    assert list_incidents(rt)[0].state == "closed"


def test_an_admin_makes_a_token_shown_once(web: TestClient, rt: Runtime, admin_token: str):
    csrf = _sign_in(web, admin_token)
    listed = web.get("/ui/tokens")
    assert listed.status_code == 200 and 'action="/ui/tokens"' in listed.text
    r = web.post("/ui/tokens", data={"csrf": csrf, "name": "grafana", "scope": "auditor",
                                     "days": "30"}, headers=POST)
    assert r.status_code == 200 and "no-store" in r.headers["cache-control"]
    secret = re.search(r'value="(iotsec_[0-9a-f]{16}_[A-Za-z0-9_-]+)"', r.text)
    assert secret, r.text
    info = next(t for t in list_tokens(rt) if t.name == "grafana")
    assert info.scope is Scope.AUDITOR and info.expires_at is not None
    rt.events.flush()
    (made,) = [e for e in list_events(rt.engine, kind="token.created") if e.subject == info.id]
    assert made.actor is not None and made.actor != "" and secret[1] not in str(made.detail)
    assert secret[1] not in web.get("/ui/tokens").text  # never shown again
    with reading(rt.engine) as conn:  # only its digest is stored
        stored = conn.execute(select(m.api_tokens.c.secret_sha256)
                              .where(m.api_tokens.c.id == info.id)).scalar_one()
    assert stored != secret[1] and secret[1].split("_", 2)[2] not in stored
    for bad in ({"name": "x", "scope": "broker", "days": "30"},
                {"name": "x", "scope": "admin", "days": "0"},
                {"name": "bad name", "scope": "admin", "days": "3"}):
        assert web.post("/ui/tokens", data={"csrf": csrf, **bad},
                        headers=POST).status_code == 422
    assert [t.name for t in list_tokens(rt)].count("x") == 0


def test_only_an_admin_makes_tokens(web: TestClient, rt: Runtime):
    csrf = _sign_in(web, _token(rt, Scope.OPERATOR))
    assert 'action="/ui/tokens"' not in web.get("/ui/tokens").text
    r = web.post("/ui/tokens", data={"csrf": csrf, "name": "sneaky", "scope": "admin",
                                     "days": "30"}, headers=POST)
    assert r.status_code == 403
    assert "sneaky" not in [t.name for t in list_tokens(rt)]
