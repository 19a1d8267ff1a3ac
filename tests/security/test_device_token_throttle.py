"""Refused device tokens on the OTA device routes are throttled per source like refused
operator tokens, and recorded with who the token claimed to be and where it came from."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from iotsec.api.app import create_app
from iotsec.app.events import Event, list_events
from iotsec.app.identity import device_tokens, devices
from iotsec.app.runtime import Runtime
from tests.api.support import assert_problem
from tests.tokens.support import claims_for, p256, public_pem, sign

SOURCE = "testclient"  # the client address the test client's requests come from


@pytest.fixture
def device(rt: Runtime) -> Iterator[TestClient]:
    """A client without credentials, over an app with device d1 and its registered key."""
    devices.add_device(rt, devices.NewDevice.parse("d1", []))
    with TestClient(create_app(rt)) as client:
        yield client


def _failures(rt: Runtime) -> list[Event]:
    rt.events.flush()
    return [e for e in reversed(list_events(rt.engine, kind="device-token"))
            if e.outcome == "failure"]


def test_fifteen_bad_device_tokens_are_throttled_and_recorded(device: TestClient,
                                                               rt: Runtime) -> None:
    assert rt.settings.auth_failure_limit == 10  # the default
    key = p256()
    kid = device_tokens.register_key(rt, "d1", public_pem(key))
    now = int(rt.now().timestamp())
    impostor = sign(p256(), kid, claims_for("d1", now))  # d1's kid, another key
    bad = [impostor, "not-a-jwt", "", sign(p256(), "k-9", claims_for("d9", now))]
    statuses = []
    for i in range(15):
        token = bad[i % len(bad)]
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        path = "/v1/ota/device/assignment" if i % 2 else "/v1/ota/tuf/metadata/root.json"
        statuses.append(device.get(path, headers=headers).status_code)
    assert statuses == [401] * 10 + [429] * 5
    throttled = assert_problem(device.get("/v1/ota/device/assignment"), 429)
    assert throttled["type"] == "urn:iotsec:problem:throttled"
    # A valid token from the throttled source is refused too, without being used up.
    good = sign(key, kid, claims_for("d1", now))
    assert device.get("/v1/ota/device/assignment",
                      headers={"Authorization": f"Bearer {good}"}).status_code == 429

    failures = _failures(rt)
    assert len(failures) == 10  # a throttled request is refused before it is looked at
    assert {e.source for e in failures} == {SOURCE}
    assert [e.actor for e in failures[:4]] == ["d1", "unknown", "unknown", "d9"]
    assert failures[0].detail == {"reason": "device-token-signature", "kid": kid}
    assert failures[1].detail == {"reason": "device-token-malformed"}
    assert failures[3].detail is not None and failures[3].detail["kid"] == "k-9"
    assert failures[0].subject == "GET /v1/ota/tuf/metadata/root.json"
    assert failures[1].subject == "GET /v1/ota/device/assignment"


def test_the_throttle_is_shared_with_operator_tokens(device: TestClient, rt: Runtime,
                                                     token: str) -> None:
    """A source refused for bad device tokens is refused for operator tokens too (and the
    other way round): it is one throttle per source, whatever the credential."""
    rt.settings.auth_failure_limit = 3
    for _ in range(3):
        assert device.get("/v1/ota/device/assignment",
                          headers={"Authorization": "Bearer a.b.c"}).status_code == 401
    assert device.get("/v1/devices", headers={"Authorization": f"Bearer {token}"}
                      ).status_code == 429


def test_a_good_device_token_is_recorded_with_its_source(device: TestClient,
                                                         rt: Runtime) -> None:
    key = p256()
    kid = device_tokens.register_key(rt, "d1", public_pem(key))
    jwt = sign(key, kid, claims_for("d1", int(rt.now().timestamp())))
    resp = device.get("/v1/ota/device/assignment", headers={"Authorization": f"Bearer {jwt}"})
    assert resp.status_code == 200, resp.text
    rt.events.flush()
    (success,) = [e for e in list_events(rt.engine, kind="device-token")
                  if e.outcome == "success"]
    assert (success.actor, success.source) == ("d1", SOURCE)


def test_verifying_for_a_broker_is_recorded_but_not_throttled(api: TestClient,
                                                              rt: Runtime) -> None:
    """``POST /v1/device-tokens/verify`` asks on a device's behalf: its bad tokens are
    recorded with the asking client's address, and never lock that client out."""
    rt.settings.auth_failure_limit = 3
    for _ in range(5):
        assert api.post("/v1/device-tokens/verify", json={"token": "a.b.c"}
                        ).status_code == 401
    assert api.get("/v1/devices").status_code == 200
    failures = _failures(rt)
    assert len(failures) == 5
    assert {(e.actor, e.source) for e in failures} == {("unknown", SOURCE)}
