"""The ``/v1/ca`` routes (list: auditor; rotate, retire: admin) and ``GET /crl?ca=ID`` for
a retiring or retired CA, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from cryptography import x509
from fastapi.testclient import TestClient

from iotsec.api.app import create_app
from iotsec.app.pki import authorities as ca
from iotsec.app.runtime import Runtime, open_runtime
from iotsec.app.setup import OfflineRoot, init_home
from iotsec.config import Settings
from tests.conftest import FakeClock


def test_api_lists_rotates_retires_and_serves_crls(rt: Runtime, api: TestClient) -> None:
    auditor = api.post("/v1/tokens", json={"name": "aud", "scope": "auditor",
                                           "expires_in": "30d"}).json()["token"]
    with TestClient(create_app(rt), headers={"Authorization": f"Bearer {auditor}"}) as aud:
        listed = aud.get("/v1/ca")
        assert listed.status_code == 200
        assert [(a["role"], a["state"]) for a in listed.json()] == [("root", "active"),
                                                                    ("issuing", "active")]
        assert aud.post("/v1/ca/rotate", json={}).status_code == 403
    old = rt.issuing_id()
    rotated = api.post("/v1/ca/rotate", json={})
    assert rotated.status_code == 201, rotated.text
    body = rotated.json()
    assert [a["state"] for a in body["changed"]] == ["active", "retiring"]
    assert body["broker_dir"] is None
    crl = api.get(f"/crl?ca={old}")
    assert crl.status_code == 200
    assert x509.load_der_x509_crl(crl.content).issuer == ca.get_authority(rt, old) \
        .certificate.subject
    assert api.get("/crl?ca=issuing").status_code == 200
    assert api.get("/crl?ca=999").status_code == 404
    assert api.get("/crl?ca=-1").status_code == 422
    refused = api.post(f"/v1/ca/{rt.issuing_id()}/retire")
    assert refused.status_code == 409
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert api.post(f"/v1/ca/{old}/retire").json()["changed"][0]["state"] == "retired"
    assert api.get(f"/crl?ca={old}").status_code == 200  # still served once retired
    assert "BEGIN CERTIFICATE" in api.get("/v1/ca/bundle").text
    assert api.post("/v1/ca/rotate", json={"key_type": "dsa"}).status_code == 422


def test_crl_of_an_offline_root_is_served_past_its_refresh_age(
        settings: Settings, clock: FakeClock, tmp_path: Path) -> None:
    init_home(settings, now=clock(), offline_root=OfflineRoot(tmp_path / "root.key",
                                                              b"q" * 16), store_passphrase=True)
    rt = open_runtime(settings, clock=clock)
    try:
        with TestClient(create_app(rt)) as anon:
            first = anon.get("/crl?ca=root")
            assert first.status_code == 200
            clock.advance(timedelta(days=30))  # far past the refresh age: not re-signable
            again = anon.get("/crl?ca=root")
            assert again.status_code == 200 and again.content == first.content
            clock.advance(timedelta(days=400))  # past its nextUpdate: a clear refusal
            late = anon.get("/crl?ca=root")
            assert late.status_code == 409
            assert late.headers["content-type"].startswith("application/problem+json")
    finally:
        rt.close()
