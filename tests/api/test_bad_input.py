"""Bad input: the exact status, an RFC 9457 body, and a store left as it was."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from cryptography.x509 import load_der_x509_csr
from fastapi.testclient import TestClient

from iotsec.api.app import create_app
from iotsec.app.runtime import Runtime
from tests.api.support import add_device, assert_problem, issue, snapshot
from tests.helpers import make_csr, make_key

Call = Callable[[TestClient], httpx.Response]


@pytest.fixture
def seeded(api: TestClient) -> dict[str, Any]:
    """One registered device with one certificate, plus one revoked certificate."""
    add_device(api, "dev-1")
    cert = issue(api, "dev-1", make_csr())
    revoked = issue(api, "dev-1", make_csr())
    resp = api.post(f"/v1/certificates/{revoked['serial']}/revoke", json={})
    assert resp.status_code == 200
    return {"serial": cert["serial"], "revoked": revoked["serial"]}


@pytest.fixture
def unchanged(api: TestClient, seeded: dict[str, Any]) -> Iterator[None]:
    """Asserts, after the test, that the store looks exactly as before it."""
    before = snapshot(api)
    yield
    assert snapshot(api) == before


def _bad_signature_csr() -> str:
    """A well-formed CSR whose subject was altered after signing."""
    der = make_csr(cn="ignored", der=True)
    assert der.count(b"ignored") == 1
    forged = der.replace(b"ignored", b"ignorex")
    assert not load_der_x509_csr(forged).is_signature_valid
    text = base64.b64encode(forged).decode()
    lines = [text[i:i + 64] for i in range(0, len(text), 64)]
    return "\n".join(["-----BEGIN CERTIFICATE REQUEST-----", *lines,
                      "-----END CERTIFICATE REQUEST-----", ""])


def _truncated_csr() -> str:
    pem = make_csr().decode()
    return pem[: len(pem) // 2]


def _truncated_body_csr() -> str:
    lines = make_csr().decode().splitlines()
    return "\n".join([lines[0], lines[1], lines[-1]]) + "\n"


def _issue(csr: str, device: str = "dev-1") -> Call:
    return lambda c: c.post(f"/v1/devices/{device}/certificates", json={"csr": csr})


def _rsa1024_csr() -> str:
    return make_csr(make_key("rsa1024")).decode()


def _over_64k_csr() -> str:
    # Under the schema's 70 000-character cap and the 256 KiB body limit, but over the CSR
    # parser's 64 KiB limit: the parser refuses it (413) before parsing it.
    pem = make_csr().decode()
    padded = pem + "\n" * (66 * 1024 - len(pem))
    assert 64 * 1024 < len(padded) <= 70_000
    return padded


# (id, status, call) - every call must fail with exactly that status and change nothing.
CASES: list[tuple[str, int, Call]] = [
    ("garbage-csr", 400, _issue("this is not a certificate request")),
    ("garbage-pem-armour", 400, _issue("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n"
                                       "-----END CERTIFICATE REQUEST-----\n")),
    ("empty-csr", 400, _issue("")),
    ("truncated-pem", 400, _issue(_truncated_csr())),
    ("truncated-pem-body", 400, _issue(_truncated_body_csr())),
    ("bad-signature", 422, _issue(_bad_signature_csr())),
    ("rsa-1024", 422, _issue(_rsa1024_csr())),
    ("unknown-device-issue", 404, _issue(make_csr().decode(), device="nope")),
    ("unknown-device-show", 404, lambda c: c.get("/v1/devices/nope")),
    ("unknown-device-revoke", 404, lambda c: c.post("/v1/devices/nope/revoke", json={})),
    ("unknown-device-retire", 404, lambda c: c.post("/v1/devices/nope/retire")),
    ("id-with-slash", 422, lambda c: c.post("/v1/devices", json={"id": "a/b"})),
    ("id-with-space", 422, lambda c: c.post("/v1/devices", json={"id": "a b"})),
    ("id-300-chars", 422, lambda c: c.post("/v1/devices", json={"id": "a" * 300})),
    ("id-129-chars", 422, lambda c: c.post("/v1/devices", json={"id": "a" * 129})),
    ("id-empty", 422, lambda c: c.post("/v1/devices", json={"id": ""})),
    ("id-leading-dash", 422, lambda c: c.post("/v1/devices", json={"id": "-a"})),
    ("id-mqtt-wildcard", 422, lambda c: c.post("/v1/devices", json={"id": "a+b"})),
    ("id-non-ascii", 422, lambda c: c.post("/v1/devices", json={"id": "caf\u00e9"})),
    ("id-newline", 422, lambda c: c.post("/v1/devices", json={"id": "ab\n"})),
    ("id-not-a-string", 422, lambda c: c.post("/v1/devices", json={"id": 5})),
    ("id-missing", 422, lambda c: c.post("/v1/devices", json={})),
    ("bad-group", 422, lambda c: c.post("/v1/devices", json={"id": "x", "groups": ["a/b"]})),
    ("bad-attribute-name", 422,
     lambda c: c.post("/v1/devices", json={"id": "x", "attributes": {"1 x": "v"}})),
    ("attribute-too-long", 422,
     lambda c: c.post("/v1/devices", json={"id": "x", "attributes": {"k": "v" * 1025}})),
    ("too-many-attributes", 422, lambda c: c.post(
        "/v1/devices", json={"id": "x", "attributes": {f"k{i}": "v" for i in range(65)}})),
    ("space-in-path-id", 422, lambda c: c.get("/v1/devices/a%20b")),
    ("300-chars-in-path-id", 422, lambda c: c.get("/v1/devices/" + "a" * 300)),
    ("duplicate-device", 409, lambda c: c.post("/v1/devices", json={"id": "dev-1"})),
    ("unknown-serial", 404, lambda c: c.get("/v1/certificates/0123456789ABCDEF01")),
    ("unknown-serial-revoke", 404,
     lambda c: c.post("/v1/certificates/0123456789ABCDEF01/revoke", json={})),
    ("unknown-serial-renew", 404, lambda c: c.post(
        "/v1/certificates/0123456789ABCDEF01/renew", json={"csr": make_csr().decode()})),
    ("non-hex-serial", 422, lambda c: c.get("/v1/certificates/not-hex")),
    ("zero-serial", 422, lambda c: c.get("/v1/certificates/00")),
    ("serial-too-long", 422, lambda c: c.get("/v1/certificates/" + "A" * 41)),
    ("non-hex-serial-revoke", 422, lambda c: c.post("/v1/certificates/xyz/revoke", json={})),
    ("unknown-reason", 422, lambda c: c.post("/v1/devices/dev-1/revoke",
                                             json={"reason": "becauseISaidSo"})),
    ("reason-certificate-hold", 422, lambda c: c.post("/v1/devices/dev-1/revoke",
                                                      json={"reason": "certificateHold"})),
    ("reason-unknown-code", 422, lambda c: c.post("/v1/devices/dev-1/revoke",
                                                  json={"reason": "6"})),
    ("body-over-256k", 413, lambda c: c.post("/v1/devices", json={"id": "x" * (300 * 1024)})),
    ("csr-over-64k", 413, _issue(_over_64k_csr())),
    ("csr-over-schema-limit", 422, _issue("A" * 100_000)),
    ("invalid-json", 422, lambda c: c.post("/v1/devices", content=b"{\"id\": ",
                                           headers={"content-type": "application/json"})),
    ("json-not-an-object", 422, lambda c: c.post("/v1/devices", json=["dev-9"])),
    ("extra-field", 422, lambda c: c.post("/v1/devices", json={"id": "x", "colour": "red"})),
    ("extra-field-issue", 422, lambda c: c.post(
        "/v1/devices/dev-1/certificates", json={"csr": make_csr().decode(), "cn": "x"})),
    ("days-zero", 422, lambda c: c.post("/v1/devices/dev-1/certificates",
                                        json={"csr": make_csr().decode(), "days": 0})),
    ("days-negative", 422, lambda c: c.post("/v1/devices/dev-1/certificates",
                                            json={"csr": make_csr().decode(), "days": -5})),
    ("days-huge", 422, lambda c: c.post("/v1/devices/dev-1/certificates",
                                        json={"csr": make_csr().decode(), "days": 10**9})),
    ("days-string", 422, lambda c: c.post("/v1/devices/dev-1/certificates",
                                          json={"csr": make_csr().decode(), "days": "ten"})),
    ("keygen-unknown-key-type", 422, lambda c: c.post(
        "/v1/devices/dev-1/certificates/keygen",
        json={"pkcs12_passphrase": "long enough passphrase", "key_type": "dsa-512"})),
    ("expiring-not-a-duration", 422,
     lambda c: c.get("/v1/certificates", params={"expiring_within": "soon"})),
    ("list-limit-zero", 422, lambda c: c.get("/v1/certificates", params={"limit": 0})),
    ("list-bad-state", 422, lambda c: c.get("/v1/devices", params={"state": "lost"})),
    ("crl-unknown-ca", 422, lambda c: c.get("/crl", params={"ca": "intermediate"})),
]


def _seeded_cases(seeded: dict[str, Any]) -> list[tuple[str, int, Call]]:
    serial, revoked = seeded["serial"], seeded["revoked"]

    def renew(target: str, csr: str, **extra: Any) -> Call:
        return lambda c: c.post(f"/v1/certificates/{target}/renew", json={"csr": csr, **extra})

    good = make_csr().decode()
    return [
        ("revoke-twice", 409, lambda c: c.post(f"/v1/certificates/{revoked}/revoke",
                                               json={"reason": "keyCompromise"})),
        ("revoke-twice-lower-case", 409,
         lambda c: c.post(f"/v1/certificates/{revoked.lower()}/revoke", json={})),
        ("renew-revoked", 409, renew(revoked, good)),
        ("renew-garbage-csr", 400, renew(serial, "garbage")),
        ("renew-rsa-1024", 422, renew(serial, _rsa1024_csr())),
        ("renew-grace-too-long", 422, renew(serial, good, grace="91d")),
        ("renew-grace-not-a-duration", 422, renew(serial, good, grace="later")),
        ("renew-grace-over-schema", 422, renew(serial, good, grace="1" * 17)),
        ("renew-days-zero", 422, renew(serial, good, days=0)),
        ("renew-extra-field", 422, renew(serial, good, reason="x")),
        ("revoke-unknown-reason", 422, lambda c: c.post(f"/v1/certificates/{serial}/revoke",
                                                        json={"reason": "removeFromCRL"})),
    ]


def test_bad_input_is_refused(api: TestClient, seeded: dict[str, Any]) -> None:
    # One home per backend for all the cases (a home per case would cost seconds): each
    # case is checked on its own and the failures are reported together.
    before = snapshot(api)
    failures: list[str] = []
    for case, status, call in CASES + _seeded_cases(seeded):
        try:
            assert_problem(call(api), status)
            assert snapshot(api) == before, "the store changed"
        except AssertionError as exc:
            failures.append(f"{case}: {exc}")
    assert not failures, "\n".join(failures)


@pytest.mark.usefixtures("unchanged")
def test_size_limits(api: TestClient) -> None:
    # A CSR over 64 KiB inside a body under 256 KiB: the CSR parser's limit, 413.
    body = assert_problem(api.post("/v1/devices/dev-1/certificates",
                                   json={"csr": _over_64k_csr()}), 413)
    assert body["type"] == "urn:iotsec:problem:input-too-large"
    assert "65536" in body["detail"]

    # A body over 256 KiB sent without Content-Length (chunked) is cut off while read.
    def chunks() -> Iterator[bytes]:
        yield b'{"id": "'
        for _ in range(300):
            yield b"x" * 1024
        yield b'"}'

    resp = api.post("/v1/devices", content=chunks(),
                    headers={"content-type": "application/json"})
    assert "content-length" not in resp.request.headers
    body = assert_problem(resp, 413)
    assert body["type"] == "urn:iotsec:problem:input-too-large"

    # A Content-Length over the limit is refused before anything is read.
    resp = api.post("/v1/devices", content=b'{"id": "x"}',
                    headers={"content-type": "application/json",
                             "content-length": str(10 * 1024 * 1024)})
    assert_problem(resp, 413)

    # Just under the limit, the body reaches validation.
    assert_problem(api.post("/v1/devices", json={"id": "x" * (250 * 1024)}), 422)


@pytest.mark.usefixtures("unchanged")
def test_unauthenticated_bad_input_is_401_first(anon: TestClient) -> None:
    assert_problem(anon.post("/v1/devices", json={"id": "a/b"}), 401)


def test_no_500_from_a_superscript_reason_code(rt: Runtime, token: str,
                                               api: TestClient) -> None:
    add_device(api, "dev-2")
    with TestClient(create_app(rt), raise_server_exceptions=False,
                    headers={"Authorization": f"Bearer {token}"}) as client:
        resp = client.post("/v1/devices/dev-2/revoke", json={"reason": "\u00b2"})
    assert_problem(resp, 422)
