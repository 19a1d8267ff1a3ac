"""Every answer of the API carries ``X-Content-Type-Options: nosniff`` and ``Cache-Control:
no-store`` (unless a route chose its own caching), and over HTTPS ``Strict-Transport-Security``:
routes, problem responses, the body limit's 413 and the decision fast paths, which answer
without the framework."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from iotsec.api import access_routes
from iotsec.api.app import create_app
from iotsec.app.identity.devices import NewDevice, add_device
from iotsec.app.runtime import Runtime
from tests.security.serving import served

HSTS = "max-age=63072000"
DECISION = {"device": "sensor-1", "action": "publish", "resource": "devices/sensor-1/t"}


def _secured(answer: httpx.Response, *, https: bool, cache: str = "no-store") -> None:
    assert answer.headers.get_list("x-content-type-options") == ["nosniff"], answer.headers
    assert answer.headers.get_list("cache-control") == [cache], answer.headers
    assert answer.headers.get_list("strict-transport-security") == ([HSTS] if https else [])


def test_a_served_process_secures_every_kind_of_answer(tmp_path: Path) -> None:
    with served(tmp_path) as srv, srv.client() as client:
        auth = {"Authorization": f"Bearer {srv.token}"}
        assert client.post("/v1/devices", json={"id": "sensor-1"}, headers=auth
                           ).status_code == 201
        normal = client.get("/v1/devices", headers=auth)
        assert normal.status_code == 200
        _secured(normal, https=True)
        _secured(client.get("/healthz"), https=True)
        refused = client.get("/v1/devices")
        assert refused.status_code == 401
        assert refused.headers["content-type"] == "application/problem+json"
        _secured(refused, https=True)
        _secured(client.get("/v1/no-such-route", headers=auth), https=True)
        decision = client.post("/v1/authz/check", json=DECISION, headers=auth)
        assert decision.status_code == 200
        _secured(decision, https=True)
        emqx = client.post("/v1/emqx/authz", content=b"{}", headers=auth)
        assert emqx.status_code == 403  # an admin token is not a broker token
        _secured(emqx, https=True)
        too_big = client.post("/v1/devices", content=b"x" * (300 * 1024), headers={
            **auth, "content-type": "application/json"})
        assert too_big.status_code == 413
        _secured(too_big, https=True)
        # The public CRL keeps the caching it asks for.
        _secured(client.get("/crl"), https=True, cache="public, max-age=300")


def test_plain_http_gets_no_hsts(tmp_path: Path) -> None:
    with served(tmp_path, tls=False) as srv, srv.client() as client:
        _secured(client.get("/healthz"), https=False)
        _secured(client.get("/v1/devices"), https=False)


@pytest.mark.parametrize("https", [True, False])
def test_fast_path_answers_are_secured(rt: Runtime, token: str, https: bool,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The decision the fast path answers itself (the route is broken here, so an answer
    can only come from the fast path), and the problem it answers for a refused token."""
    add_device(rt, NewDevice(id="sensor-1"))

    async def broken(*_: object, **__: object) -> object:
        raise AssertionError("the route answered, not the fast path")

    monkeypatch.setattr(access_routes, "decide", broken)
    base = "https://testserver" if https else "http://testserver"
    with TestClient(create_app(rt), base_url=base) as client:
        decision = client.post("/v1/authz/check", json=DECISION,
                               headers={"Authorization": f"Bearer {token}"})
        assert decision.status_code == 200, decision.text
        _secured(decision, https=https)
        refused = client.post("/v1/authz/check", json=DECISION,
                              headers={"Authorization": "Bearer iotsec_0123456789abcdef_"
                                                        + "A" * 43})
        assert refused.status_code == 401
        _secured(refused, https=https)
