"""``/v1/profiles`` and the profile a device or group selects: scopes (operators and admins
change, auditors read), issuance under a profile, and refusals as problems that change
nothing (SQLite and PostgreSQL)."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography import x509
from fastapi.testclient import TestClient

from iotsec.api.app import create_app
from iotsec.app.runtime import Runtime
from tests.api.support import add_device, assert_problem, issue, snapshot
from tests.helpers import make_csr, make_key

BODY = {"name": "gateways", "days": 30, "key_types": ["p256"],
        "ekus": ["clientAuth", "serverAuth"], "dns_from": ["attr:hostname"]}


def _client(api: TestClient, rt: Runtime, scope: str) -> TestClient:
    resp = api.post("/v1/tokens", json={"name": f"{scope}-bot", "scope": scope,
                                        "expires_in": "30d"})
    assert resp.status_code == 201, resp.text
    return TestClient(create_app(rt), headers={"Authorization": f"Bearer {resp.json()['token']}"})


def _everything(api: TestClient) -> tuple[Any, ...]:
    profiles = api.get("/v1/profiles")
    assert profiles.status_code == 200
    return (*snapshot(api), profiles.json())


def test_profile_routes_and_issuance(api: TestClient, rt: Runtime) -> None:
    operator = _client(api, rt, "operator")
    created = operator.post("/v1/profiles", json=BODY)
    assert created.status_code == 201, created.text
    assert created.json()["dns_from"] == ["attr:hostname"]
    assert [p["name"] for p in api.get("/v1/profiles").json()] == ["device", "server",
                                                                  "gateways"]
    add_device(api, "gw-1", groups=["sites"], attributes={"hostname": "gw1.example.net"})
    add_device(api, "gw-2", groups=["sites"])
    put = operator.put("/v1/groups/sites/profile", json={"profile": "gateways"})
    assert put.json() == {"kind": "group", "name": "sites", "profile": "gateways"}
    shown = api.get("/v1/profiles/gateways").json()
    assert shown["usage"] == {"devices": 0, "groups": 1, "templates": 0}

    cert = issue(api, "gw-1", make_csr())
    assert cert["profile"] == "gateways"
    parsed = x509.load_pem_x509_certificate(cert["pem"].encode())
    san = parsed.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["gw1.example.net"]
    # gw-2 lacks the attribute: 422, nothing issued; its own profile settles it.
    before = _everything(api)
    body = assert_problem(api.post("/v1/devices/gw-2/certificates",
                                   json={"csr": make_csr().decode()}), 422)
    assert "hostname" in body["detail"]
    assert _everything(api) == before
    assert operator.put("/v1/devices/gw-2/profile", json={"profile": "device"}).status_code == 200
    assert api.get("/v1/devices/gw-2").json()["profile"] == "device"
    assert issue(api, "gw-2", make_csr())["profile"] == "device"
    assert issue(api, "gw-2", make_csr(), profile="server")["profile"] == "server"

    assert_problem(operator.delete("/v1/profiles/gateways"), 409)
    assert operator.put("/v1/groups/sites/profile", json={"profile": None}).json()[
        "profile"] is None
    removed = operator.delete("/v1/profiles/gateways")
    assert removed.status_code == 200 and removed.json() == {"kind": "profile",
                                                             "name": "gateways"}
    assert_problem(api.get("/v1/profiles/gateways"), 404)


def test_auditor_reads_but_changes_nothing(api: TestClient, rt: Runtime) -> None:
    assert api.post("/v1/profiles", json=BODY).status_code == 201
    add_device(api, "dev-1", groups=["fleet"])
    auditor = _client(api, rt, "auditor")
    assert auditor.get("/v1/profiles").status_code == 200
    assert auditor.get("/v1/profiles/gateways").status_code == 200
    before = _everything(api)
    for method, path, body in (
            ("POST", "/v1/profiles", {**BODY, "name": "other"}),
            ("DELETE", "/v1/profiles/gateways", None),
            ("PUT", "/v1/devices/dev-1/profile", {"profile": "gateways"}),
            ("PUT", "/v1/groups/fleet/profile", {"profile": "gateways"})):
        assert_problem(auditor.request(method, path, json=body), 403)
    assert _everything(api) == before


@pytest.mark.parametrize(("body", "status"), [
    ({**BODY, "name": "device"}, 422),
    ({**BODY, "name": "gateways"}, 409),
    ({**BODY, "name": "x" * 65}, 422),
    ({**BODY, "name": "x", "days": 0}, 422),
    ({**BODY, "name": "x", "days": 2**70}, 422),
    ({**BODY, "name": "x", "key_types": []}, 422),
    ({**BODY, "name": "x", "key_types": ["dsa"]}, 422),
    ({**BODY, "name": "x", "ekus": ["anyExtendedKeyUsage"]}, 422),
    ({**BODY, "name": "x", "dns_from": ["attr:"]}, 422),
    ({**BODY, "name": "x", "dns_from": ["a" * 300]}, 422),
    ({**BODY, "name": "x", "dns_from": ["x.example"] * 17}, 422),
    ({**BODY, "name": "x", "days": 8, "no_revocation": True}, 422),
    ({**BODY, "name": "x", "extra": 1}, 422),
    ({"name": "x"}, 422),
])
def test_bad_profiles_are_problems(api: TestClient, body: dict[str, Any], status: int) -> None:
    assert api.post("/v1/profiles", json=BODY).status_code == 201
    before = _everything(api)
    assert_problem(api.post("/v1/profiles", json=body), status)
    assert _everything(api) == before


def test_selection_and_issuance_refusals(api: TestClient) -> None:
    assert api.post("/v1/profiles", json=BODY).status_code == 201
    add_device(api, "dev-1", attributes={"hostname": "dev1.example"})
    before = _everything(api)
    assert_problem(api.put("/v1/devices/dev-1/profile", json={"profile": "nope"}), 404)
    assert_problem(api.put("/v1/devices/nobody/profile", json={"profile": "server"}), 404)
    assert_problem(api.put("/v1/groups/nogroup/profile", json={"profile": "server"}), 404)
    assert_problem(api.put("/v1/devices/dev-1/profile", json={"profile": "Bad Name"}), 422)
    assert_problem(api.put("/v1/devices/dev-1/profile", json={}), 422)
    rsa = make_csr(make_key("rsa2048")).decode()
    body = assert_problem(api.post("/v1/devices/dev-1/certificates",
                                   json={"csr": rsa, "profile": "gateways"}), 422)
    assert "allows p256" in body["detail"]
    assert_problem(api.post("/v1/devices/dev-1/certificates",
                            json={"csr": make_csr().decode(), "profile": "gateways",
                                  "days": 31}), 422)
    assert_problem(api.post("/v1/devices/dev-1/certificates",
                            json={"csr": make_csr().decode(), "profile": "nope"}), 404)
    assert _everything(api) == before
