"""Authentication of the /v1 routes, the public endpoints and the OpenAPI document."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.api.support import assert_problem

WELL_FORMED_BUT_UNKNOWN = "iotsec_0123456789abcdef_" + "A" * 43


def _wrong_secret(token: str) -> str:
    prefix, secret = token[:-43], token[-43:]
    return prefix + ("B" if secret[0] != "B" else "C") + secret[1:]


HEADERS = [
    None,
    "",
    "Bearer",
    "Bearer ",
    "Basic YWRtaW46YWRtaW4=",
    "Bearer not-a-token",
    "Bearer iotsec_zz_short",
    f"Bearer {WELL_FORMED_BUT_UNKNOWN}",
]


def test_missing_or_malformed_token_is_401(anon: TestClient) -> None:
    for header in HEADERS:
        headers = {} if header is None else {"Authorization": header}
        resp = anon.get("/v1/devices", headers=headers)
        body = assert_problem(resp, 401)
        assert resp.headers["www-authenticate"] == 'Bearer realm="iotsec"', header
        assert body["type"] == "urn:iotsec:problem:unauthorized"


def test_wrong_secret_for_a_real_token_id_is_401(anon: TestClient, token: str) -> None:
    resp = anon.get("/v1/devices", headers={"Authorization": f"Bearer {_wrong_secret(token)}"})
    body = assert_problem(resp, 401)
    assert "WWW-Authenticate" in resp.headers
    # The answer never says which part of the token was wrong, nor echoes it.
    assert token[-43:] not in resp.text
    assert body["detail"] == "the API token is not valid"


def test_every_v1_route_needs_the_token(anon: TestClient) -> None:
    calls = [
        ("GET", "/v1/ca/chain"), ("GET", "/v1/devices"), ("GET", "/v1/devices/d1"),
        ("POST", "/v1/devices"), ("POST", "/v1/devices/d1/disable"),
        ("POST", "/v1/devices/d1/certificates"), ("POST", "/v1/devices/d1/certificates/keygen"),
        ("POST", "/v1/devices/d1/revoke"), ("GET", "/v1/certificates"),
        ("GET", "/v1/certificates/0A"), ("POST", "/v1/certificates/0A/revoke"),
        ("POST", "/v1/certificates/0A/renew"),
    ]
    for method, path in calls:
        # Even with an invalid body, authentication is decided first.
        resp = anon.request(method, path, json={})
        assert resp.status_code == 401, (method, path, resp.status_code)
        assert_problem(resp, 401)
    resp = anon.post("/v1/devices", json={"id": "d1"})
    assert_problem(resp, 401)


def test_admin_token_is_accepted(api: TestClient) -> None:
    resp = api.get("/v1/devices")
    assert resp.status_code == 200
    assert resp.json() == []


def test_scheme_is_case_insensitive(anon: TestClient, token: str) -> None:
    resp = anon.get("/v1/devices", headers={"Authorization": f"bearer {token}"})
    assert resp.status_code == 200


def test_public_endpoints_need_no_token(anon: TestClient) -> None:
    assert anon.get("/healthz").json() == {"status": "ok"}
    resp = anon.get("/crl")
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/pkix-crl"


def test_openapi_document_lists_the_routes(anon: TestClient) -> None:
    resp = anon.get("/openapi.json")
    assert resp.status_code == 200
    doc = resp.json()
    assert doc["info"]["title"] == "iotsec"
    assert "/v1/devices" in doc["paths"]
    assert {"get", "post"} <= set(doc["paths"]["/v1/devices"])
    assert "/v1/certificates/{serial}/revoke" in doc["paths"]
    assert "/crl" in doc["paths"]
