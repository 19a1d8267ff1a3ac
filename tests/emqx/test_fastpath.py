"""The EMQX authorization fast path answers exactly as the route does."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iotsec.api.app import create_app
from iotsec.app.runtime import Runtime

BODIES = [
    {"username": "dev-1", "clientid": "dev-1", "action": "publish",
     "topic": "devices/dev-1/t", "qos": "1", "retain": "false"},
    {"username": "dev-1", "action": "publish", "topic": "devices/dev-2/t"},
    {"username": "dev-1", "action": "subscribe", "topic": "#"},
    {"username": "dev-1", "action": "subscribe", "topic": "commands/dev-1/#"},
    {"username": "ghost", "action": "publish", "topic": "devices/ghost/t"},
    {"username": "dev-1", "action": "retain", "topic": "t"},
    {},
]


def _pair(rt: Runtime, headers: dict[str, str]) -> tuple[TestClient, TestClient]:
    return (TestClient(create_app(rt, fast_path=True), headers=headers),
            TestClient(create_app(rt, fast_path=False), headers=headers))


def _same(fast: TestClient, slow: TestClient, content: bytes) -> None:
    a = fast.post("/v1/emqx/authz", content=content)
    b = slow.post("/v1/emqx/authz", content=content)
    assert (a.status_code, a.headers["content-type"]) == (b.status_code,
                                                          b.headers["content-type"])
    assert a.json() == b.json(), (content, a.text, b.text)


def test_same_answers_as_the_route(rt: Runtime, broker_token: str, token: str,
                                   enroll) -> None:  # type: ignore[no-untyped-def]
    rt.settings.auth_failure_limit = 1_000_000
    enroll("dev-1")
    enroll("dev-2")
    fast, slow = _pair(rt, {"Authorization": f"Bearer {broker_token}"})
    for body in BODIES:
        _same(fast, slow, json.dumps(body).encode())
    _same(fast, slow, b"not json")
    _same(fast, slow, b'{"username": "' + b"x" * 20_000 + b'"}')
    assert fast.post("/v1/emqx/authz", content=json.dumps(BODIES[0])).json() == {
        "result": "allow"}
    # Refused tokens: the same problem responses.
    for headers in ({"Authorization": f"Bearer {token}"},  # admin: 403
                    {"Authorization": "Bearer nonsense"}, {}):
        fast, slow = _pair(rt, headers)
        _same(fast, slow, json.dumps(BODIES[0]).encode())


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(["username", "clientid", "action", "topic", "qos"]),
                       st.sampled_from(["dev-1", "publish", "subscribe", "devices/dev-1/x",
                                        "#", "+/x", "", "1", "a/#/b"]), max_size=5))
def test_same_answers_for_any_body(rt: Runtime, broker_token: str,
                                   body: dict[str, str]) -> None:
    fast, slow = _pair(rt, {"Authorization": f"Bearer {broker_token}"})
    _same(fast, slow, json.dumps(body).encode())
