"""The device token routes, mounted on a bare app with the problem+json handlers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from iotsec.api import device_tokens, problems
from iotsec.app.identity import devices
from iotsec.app.runtime import Runtime
from iotsec.app.setup import InitResult
from iotsec.timeutil import ts
from tests.tokens.support import claims_for, p256, public_pem, sign


@pytest.fixture
def bare(rt: Runtime) -> FastAPI:
    app = FastAPI()
    app.state.runtime = rt
    problems.install(app)
    app.include_router(device_tokens.router)
    return app


@pytest.fixture
def api(bare: FastAPI, initialised: InitResult) -> Iterator[TestClient]:
    assert initialised.admin_token is not None
    with TestClient(bare, headers={"Authorization": f"Bearer {initialised.admin_token}"}
                    ) as client:
        yield client


def test_register_list_and_verify(rt: Runtime, api: TestClient) -> None:
    devices.add_device(rt, devices.NewDevice.parse("d1"))
    key = p256()
    created = api.post("/v1/devices/d1/keys", json={"public_key_pem": public_pem(key).decode()})
    assert created.status_code == 201, created.text
    kid = created.json()["kid"]
    listed = api.get("/v1/devices/d1/keys")
    assert listed.status_code == 200
    [entry] = listed.json()
    assert (entry["kid"], entry["algorithm"], entry["status"]) == (kid, "ES256", "active")

    claims = claims_for("d1", ts(rt.now()), room="42")
    token = sign(key, kid, claims)
    ok = api.post("/v1/device-tokens/verify", json={"token": token})
    assert ok.status_code == 200, ok.text
    body = ok.json()
    assert (body["device_id"], body["kid"], body["jti"]) == ("d1", kid, claims["jti"])
    assert body["claims"]["room"] == "42"
    assert body["expires_at"].startswith(str(rt.now().year))

    again = api.post("/v1/device-tokens/verify", json={"token": token})
    assert again.status_code == 401
    assert again.headers["content-type"].startswith("application/problem+json")
    problem = again.json()
    assert problem["type"] == "urn:iotsec:problem:device-token-replayed"
    assert problem["title"] == "TokenReplayError"
    assert token not in again.text


@pytest.mark.parametrize(("token", "code"), [
    ("garbage", "device-token-malformed"),
    ("A" * 12_000, "device-token-malformed"),
    ("eyJhbGciOiJub25lIn0.eyJzdWIiOiJkMSJ9.", "device-token-algorithm"),
])
def test_refused_tokens_are_401_problems(api: TestClient, token: str, code: str) -> None:
    answer = api.post("/v1/device-tokens/verify", json={"token": token})
    assert answer.status_code == 401
    assert answer.json()["type"] == f"urn:iotsec:problem:{code}"


def test_bad_key_bodies(rt: Runtime, api: TestClient) -> None:
    devices.add_device(rt, devices.NewDevice.parse("d1"))
    assert api.post("/v1/devices/d1/keys", json={"public_key_pem": "nope"}).status_code == 400
    assert api.post("/v1/devices/d1/keys", json={"pem": "x"}).status_code == 422
    assert api.post("/v1/devices/ghost/keys",
                    json={"public_key_pem": public_pem(p256()).decode()}).status_code == 404
    assert api.get("/v1/devices/ghost/keys").status_code == 404


def test_routes_need_a_token(bare: FastAPI, initialised: InitResult) -> None:
    with TestClient(bare) as anon:
        assert anon.post("/v1/device-tokens/verify", json={"token": "x"}).status_code == 401
        assert anon.get("/v1/devices/d1/keys").status_code == 401
