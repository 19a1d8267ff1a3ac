"""``--json`` prints the very JSON the REST API returns for the same resource."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from iotsec.api.app import create_app
from iotsec.cli.context import runtime
from tests.cli.support import Cli


@pytest.fixture
def api(ready: dict[str, Any]) -> Iterator[TestClient]:
    """The API over the CLI's home, with the admin token ``init`` printed."""
    with runtime() as rt, TestClient(
            create_app(rt), headers={"Authorization": f"Bearer {ready['admin_token']}"}
    ) as client:
        yield client


def _get(api: TestClient, path: str) -> Any:
    response = api.get(path)
    assert response.status_code == 200, response.text
    return response.json()


def test_devices_and_certificates(cli: Cli, api: TestClient, tmp_path: Path) -> None:
    added = cli.json("device", "add", "gw-1", "--group", "plant-a", "--attr", "site=north")
    issued = cli.json("cert", "issue", "gw-1", "--keygen", "-o", str(tmp_path / "out"))
    serial = issued["serial"]
    assert issued["pem"].startswith("-----BEGIN CERTIFICATE-----")
    assert set(issued) - set(_get(api, f"/v1/certificates/{serial}")) == {
        "files", "pkcs12_passphrase", "resumed"}

    assert added["id"] == "gw-1" and added["attributes"] == {"site": "north"}
    assert cli.json("device", "list") == _get(api, "/v1/devices")
    shown = cli.json("device", "show", "gw-1")
    assert shown == _get(api, "/v1/devices/gw-1")
    assert [c["serial"] for c in shown["certificates"]] == [serial]
    assert shown["certificates"][0]["pem"] is None  # lists carry no PEM
    assert cli.json("cert", "list") == _get(api, "/v1/certificates")
    one = cli.json("cert", "show", serial)
    assert one == _get(api, f"/v1/certificates/{serial}")
    assert one["pem"].startswith("-----BEGIN CERTIFICATE-----")


def test_roles_groups_and_decisions(cli: Cli, api: TestClient) -> None:
    cli.ok("device", "add", "sensor-1")
    cli.json("role", "add", "telemetry", "--allow", "subscribe:devices/+/telemetry",
             "--description", "read telemetry")
    assert cli.json("role", "list") == _get(api, "/v1/roles")
    assert cli.json("role", "show", "telemetry") == _get(api, "/v1/roles/telemetry")

    group = cli.json("group", "add", "plant-a", "--role", "telemetry")
    via_api = api.post("/v1/groups", json={"name": "plant-b", "roles": ["telemetry"]}).json()
    assert set(group) == set(via_api) == {"name", "roles"}
    assert cli.json("device", "assign", "sensor-1", "--role", "telemetry") == api.post(
        "/v1/devices/sensor-1/roles", json={"roles": ["telemetry"]}).json()
    # The device's own roles show in its record, the same through the CLI and the API.
    shown = cli.json("device", "show", "sensor-1")
    assert shown["roles"] == ["device", "telemetry"]  # its default role, then the one given
    listed = {d["id"]: d for d in _get(api, "/v1/devices")}
    assert listed["sensor-1"]["roles"] == shown["roles"]

    check = ["sensor-1", "subscribe", "devices/+/telemetry"]
    assert cli.json("authz", "check", *check) == api.post(
        "/v1/authz/check", json=dict(zip(["device", "action", "resource"], check, strict=True))
    ).json()


def test_tokens(cli: Cli, api: TestClient) -> None:
    created = cli.json("token", "create", "ci", "--scope", "operator")
    assert created["token"].startswith("iotsec_")
    listed = {t["id"]: t for t in cli.json("token", "list")}
    assert listed[created["id"]]["token"] is None
    from_api = {t["id"]: t for t in _get(api, "/v1/tokens")}
    # The API call itself marks the admin token used; the new token's entry is the same.
    assert listed[created["id"]] == from_api[created["id"]]
    assert set(listed) == set(from_api)


def test_cas(cli: Cli, api: TestClient) -> None:
    assert cli.json("ca", "list") == _get(api, "/v1/ca")
    rotated = cli.json("ca", "rotate")
    assert [a["state"] for a in rotated["changed"]] == ["active", "retiring"]
    assert cli.json("ca", "list") == _get(api, "/v1/ca")
