"""The issuance fast path answers exactly what the framework's route answers.

Each request goes to two apps over the same runtime, one with the fast path and one
without, for devices set up alike (``a-*`` for the fast app, ``b-*`` for the other). Status,
content type, security headers and the body (but for what differs between two certificates:
serial, digest, PEM, validity) must be the same, for issuances and for refusals; and the
fast path must really have answered the requests it claims.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography import x509
from fastapi.testclient import TestClient

from iotsec.api import issue_fastpath
from iotsec.app.identity.devices import NewDevice, add_device
from iotsec.app.identity.lifecycle import change_state
from iotsec.app.runtime import Runtime
from iotsec.identity.registry import DeviceState
from tests.api.support import fast_and_slow, scoped_tokens
from tests.helpers import make_csr, make_key

#: What differs between two certificates issued alike.
_OWN = ("serial", "sha256", "pem", "not_before", "not_after", "device_id", "subject")


@pytest.fixture
def pair(rt: Runtime) -> Iterator[tuple[TestClient, TestClient]]:
    for side in "ab":
        add_device(rt, NewDevice(id=f"{side}-1"))
        add_device(rt, NewDevice(id=f"{side}-2"))
        change_state(rt, f"{side}-2", DeviceState.DISABLED)
    with fast_and_slow(rt) as both:
        yield both


@pytest.fixture
def tokens(rt: Runtime, initialised: Any) -> dict[str, str]:
    return scoped_tokens(rt, initialised.admin_token)


@pytest.fixture
def answered(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """(device, actor) of every issuance the fast path itself made."""
    calls: list[tuple[str, str]] = []
    real = issue_fastpath._issue

    async def spy(rt: Runtime, device_id: str, body: Any, actor: str) -> Any:
        calls.append((device_id, actor))
        return await real(rt, device_id, body, actor)

    monkeypatch.setattr(issue_fastpath, "_issue", spy)
    return calls


def _answer(client: TestClient, device: str, content: bytes,
            headers: dict[str, str]) -> tuple[Any, ...]:
    r = client.post(f"/v1/devices/{device}/certificates", content=content, headers=headers)
    body = r.json()
    if isinstance(body, dict):
        body = {k: v for k, v in body.items() if k not in _OWN}
        # The device's side and a certificate's serial differ between the two apps.
        detail = str(body.get("detail", "")).replace("a-", "?-").replace("b-", "?-")
        body["detail"] = re.sub(r"\b[0-9A-F]{20,}\b", "SERIAL", detail)
    return (r.status_code, r.headers.get("content-type"), body,
            r.headers.get("www-authenticate"), r.headers.get("x-content-type-options"),
            r.headers.get("cache-control"))


def _content(body: Any) -> bytes:
    """The request body; a ``"csr": "CSR"`` becomes a CSR for a new key (one per side:
    the same key twice would be a key held by another device)."""
    if isinstance(body, bytes):
        return body
    if isinstance(body, dict) and body.get("csr") == "CSR":
        body = {**body, "csr": make_csr().decode()}
    return json.dumps(body).encode()


def _both(pair: tuple[TestClient, TestClient], device: str, body: Any,
          headers: dict[str, str]) -> tuple[Any, Any]:
    fast, slow = pair
    return (_answer(fast, f"a-{device}", _content(body), headers),
            _answer(slow, f"b-{device}", _content(body), headers))


def _headers(token: str | None) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def test_an_issuance_is_answered_by_the_fast_path_alike(
        pair: tuple[TestClient, TestClient], tokens: dict[str, str],
        answered: list[tuple[str, str]]) -> None:
    fast, slow = _both(pair, "1", {"csr": "CSR", "days": 30}, _headers(tokens["operator"]))
    assert fast == slow
    assert fast[0] == 201
    assert answered == [("a-1", "t-operator")]


def test_the_certificate_is_the_devices(pair: tuple[TestClient, TestClient],
                                        tokens: dict[str, str],
                                        answered: list[tuple[str, str]]) -> None:
    key = make_key()
    r = pair[0].post("/v1/devices/a-1/certificates", json={"csr": make_csr(key).decode()},
                     headers={"Authorization": f"Bearer {tokens['admin']}"})
    assert r.status_code == 201, r.text
    cert = x509.load_pem_x509_certificate(r.json()["pem"].encode())
    assert cert.public_key() == key.public_key()
    assert r.json()["device_id"] == "a-1"
    assert [device for device, _ in answered] == ["a-1"]


@pytest.mark.parametrize(("device", "body", "who"), [
    ("9", {"csr": "CSR"}, "operator"),  # an unknown device
    ("2", {"csr": "CSR"}, "operator"),  # a disabled device
    ("1", {"csr": "not a csr"}, "operator"),
    ("1", {"csr": "CSR", "profile": "nope"}, "operator"),
    ("1", {"csr": "CSR"}, "auditor"),
    ("1", {"csr": "CSR"}, None),
    ("1", {"csr": "CSR", "days": 0}, "operator"),
    ("1", {"csr": "CSR", "extra": 1}, "operator"),
    ("1", {"days": 3}, "operator"),
    ("1", [], "operator"),
    ("1", b"{not json", "operator"),
    ("bad id!", {"csr": "CSR"}, "operator"),
])
def test_same_refusals(pair: tuple[TestClient, TestClient], tokens: dict[str, str],
                       device: str, body: Any, who: str | None) -> None:
    fast, slow = _both(pair, device, body, _headers(tokens[who] if who else None))
    assert fast == slow
    assert 400 <= fast[0] < 500


def test_a_key_held_by_another_device_is_refused_alike(
        rt: Runtime, pair: tuple[TestClient, TestClient], tokens: dict[str, str]) -> None:
    headers = _headers(tokens["operator"])
    add_device(rt, NewDevice(id="a-3"))
    add_device(rt, NewDevice(id="b-3"))
    answers = []
    for side, client in zip("ab", pair, strict=True):
        key = make_key()
        csr = json.dumps({"csr": make_csr(key).decode()}).encode()
        assert _answer(client, f"{side}-1", csr, headers)[0] == 201
        answers.append(_answer(client, f"{side}-3", csr, headers))
    fast, slow = answers
    assert fast == slow
    assert fast[0] == 409


def test_other_content_types_and_methods_go_to_the_app(
        pair: tuple[TestClient, TestClient], tokens: dict[str, str],
        answered: list[tuple[str, str]]) -> None:
    headers = {"Content-Type": "text/plain", "Authorization": f"Bearer {tokens['operator']}"}
    fast, slow = _both(pair, "1", {"csr": "CSR"}, headers)
    assert fast == slow
    for client in pair:
        r = client.get("/v1/devices/a-1/certificates",
                       headers={"Authorization": f"Bearer {tokens['operator']}"})
        assert r.status_code == 405
    assert answered == []
