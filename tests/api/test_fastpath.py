"""The decision fast path answers exactly what the framework's route answers.

Every request is sent to two apps over the same runtime: one with the fast path, one
without. Status, content type and body must be the same, for well-formed decisions (allow,
deny, unknown device, disabled device) and for everything else (bad JSON, extra or missing
fields, wrong types, over-long fields, no token, a bad token, a token with too little scope).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from iotsec.api.fastpath import LIMITS, parse_body
from iotsec.app.identity.devices import NewDevice, add_device
from iotsec.app.identity.lifecycle import change_state
from iotsec.app.runtime import Runtime
from iotsec.identity.registry import DeviceState
from tests.api.support import fast_and_slow, scoped_tokens

PATH = "/v1/authz/check"
FUZZ = hsettings(max_examples=150, deadline=None, database=None,
                 suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture
def pair(rt: Runtime) -> Iterator[tuple[TestClient, TestClient]]:
    add_device(rt, NewDevice(id="sensor-1"))
    add_device(rt, NewDevice(id="sensor-2"))
    change_state(rt, "sensor-2", DeviceState.DISABLED)
    with fast_and_slow(rt) as both:
        yield both


@pytest.fixture
def tokens(rt: Runtime, initialised: Any) -> dict[str, str]:
    return scoped_tokens(rt, initialised.admin_token)


def _both(pair: tuple[TestClient, TestClient], content: bytes,
          headers: dict[str, str]) -> tuple[Any, Any]:
    answers = []
    for client in pair:
        r = client.post(PATH, content=content, headers=headers)
        answers.append((r.status_code, r.headers.get("content-type"), r.json(),
                        r.headers.get("www-authenticate")))
    return answers[0], answers[1]


def _json_headers(token: str | None) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return headers


CASES: list[dict[str, Any]] = [
    {"device": "sensor-1", "action": "publish", "resource": "devices/sensor-1/temp"},
    {"device": "sensor-1", "action": "publish", "resource": "devices/sensor-9/temp"},
    {"device": "sensor-1", "action": "subscribe", "resource": "devices/#"},
    {"device": "sensor-1", "action": "subscribe", "resource": "commands/sensor-1/#"},
    {"device": "sensor-1", "action": "publish", "resource": "a/#/b"},
    {"device": "sensor-1", "action": "fly", "resource": "x"},
    {"device": "sensor-2", "action": "publish", "resource": "devices/sensor-2/temp"},
    {"device": "nobody", "action": "publish", "resource": "devices/nobody/temp"},
    {"device": "bad id!", "action": "publish", "resource": "x"},
    {"device": "sensor-1", "action": "publish", "resource": "devices/sensor-1/t",
     "cert_serial": "zz"},
    {"device": "sensor-1", "action": "publish", "resource": "devices/sensor-1/t",
     "cert_serial": None},
    {"device": "sensor-1", "action": "publish"},
    {"device": "sensor-1", "action": "publish", "resource": "x", "extra": 1},
    {"device": 5, "action": "publish", "resource": "x"},
    {"device": "sensor-1", "action": "publish", "resource": "x" * (LIMITS["resource"] + 1)},
]


@pytest.mark.parametrize("body", CASES, ids=range(len(CASES)))
@pytest.mark.parametrize("who", ["admin", "auditor", "operator"])
def test_same_answers_for_decisions(pair: tuple[TestClient, TestClient],
                                    tokens: dict[str, str], body: dict[str, Any],
                                    who: str) -> None:
    fast, slow = _both(pair, json.dumps(body).encode(), _json_headers(tokens[who]))
    assert fast == slow


@pytest.mark.parametrize(("content", "headers"), [
    (b"{not json", _json_headers("x")),
    (b"[]", _json_headers("x")),
    (json.dumps(CASES[0]).encode(), _json_headers(None)),
    (json.dumps(CASES[0]).encode(), _json_headers("iot_notatoken")),
    (json.dumps(CASES[0]).encode(), {"Content-Type": "text/plain"}),
    (json.dumps(CASES[0]).encode(), {"Content-Type": "application/json",
                                     "Authorization": "Basic abc"}),
])
def test_same_answers_for_refusals(pair: tuple[TestClient, TestClient], content: bytes,
                                   headers: dict[str, str]) -> None:
    fast, slow = _both(pair, content, headers)
    assert fast == slow
    assert fast[0] in (401, 422)


def test_wrong_content_type_with_a_valid_token(pair: tuple[TestClient, TestClient],
                                               tokens: dict[str, str]) -> None:
    headers = {"Content-Type": "text/plain", "Authorization": f"Bearer {tokens['admin']}"}
    fast, slow = _both(pair, json.dumps(CASES[0]).encode(), headers)
    assert fast == slow


def test_a_disabled_device_is_denied_at_once(rt: Runtime, pair: tuple[TestClient, TestClient],
                                             tokens: dict[str, str]) -> None:
    """The registry entry a decision uses is cached, but a change made by this process
    applies to the next decision."""
    body = json.dumps(CASES[0]).encode()
    fast, _ = _both(pair, body, _json_headers(tokens["admin"]))
    assert fast[2]["allowed"] is True
    change_state(rt, "sensor-1", DeviceState.DISABLED)
    fast, slow = _both(pair, body, _json_headers(tokens["admin"]))
    assert fast == slow
    assert fast[2]["allowed"] is False


text = st.text(max_size=30) | st.sampled_from(["sensor-1", "publish", "subscribe",
                                                "devices/sensor-1/#", "devices/+/t", "#"])
bodies = st.fixed_dictionaries(
    {"device": text, "action": text, "resource": text},
    optional={"cert_serial": st.none() | text | st.integers(), "other": text}) | \
    st.dictionaries(st.sampled_from(["device", "action", "resource", "cert_serial"]),
                    text | st.integers() | st.none(), max_size=4)


@FUZZ
@given(body=bodies)
def test_same_answers_property(pair: tuple[TestClient, TestClient], tokens: dict[str, str],
                               body: dict[str, Any]) -> None:
    fast, slow = _both(pair, json.dumps(body).encode(), _json_headers(tokens["auditor"]))
    assert fast == slow
    assert fast[0] < 500


def test_parse_body_accepts_only_the_exact_shape() -> None:
    headers = {b"content-type": b"application/json"}
    ok = json.dumps(CASES[0]).encode()
    assert parse_body(headers, ok) == CASES[0]
    assert parse_body({}, ok) is None
    assert parse_body(headers, b"\xff") is None
    assert parse_body(headers, json.dumps({**CASES[0], "x": "y"}).encode()) is None
    assert parse_body(headers, json.dumps({"device": "d", "action": "a"}).encode()) is None
