"""``iotsec incident timeline``: a device's events and alerts in order, as a table, JSON,
a one-file HTML report, and over the API."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from iotsec.app.events import Event
from iotsec.app.runtime import open_runtime
from iotsec.config import Settings
from tests.cli.support import Cli, use_home
from tests.helpers import make_csr


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> Cli:
    use_home(monkeypatch, tmp_path / "home")
    return Cli(capsys)


def test_the_timeline_of_a_device(cli: Cli, tmp_path: Path) -> None:
    cli.ok("device", "add", "cam-1")
    cli.ok("device", "add", "cam-2")
    (tmp_path / "c.csr").write_bytes(make_csr())
    issued = cli.json("cert", "issue", "cam-1", "--csr", str(tmp_path / "c.csr"), "--days", "3")
    rt = open_runtime(Settings(home=tmp_path / "home"))
    try:  # what the broker log would have said, with text an attacker chose
        rt.events.record(Event(rt.now(), "broker.deny", "denied", actor="cam-1",
                               source="10.0.0.9", subject="<script>alert(1)</script>",
                               detail={"topic": "<b>x</b>"}))
    finally:
        rt.close()
    cli.ok("alerts", "check")
    cli.ok("cert", "revoke", issued["serial"], "--reason", "keyCompromise")
    cli.ok("device", "disable", "cam-1")
    entries = cli.json("incident", "timeline", "cam-1")
    kinds = [e["kind"] for e in entries]
    assert kinds[:2] == ["device.added", "cert.issued"]
    assert {"broker.deny", "cert.revoked", "device.state"} <= set(kinds)
    assert all(e["subject"] != "cam-2" for e in entries)
    assert [e["at"] for e in entries] == sorted(e["at"] for e in entries)
    report = tmp_path / "cam-1.html"
    result = cli.ok("incident", "timeline", "cam-1", "--html", str(report))
    assert "cert.revoked" in result.out
    page = report.read_text()
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;" in page
    assert page.startswith("<!DOCTYPE html>") and "<script" not in page
    assert cli.json("incident", "timeline", "cam-1", "--until", "2000-01-01") == []
    assert "is not registered" in cli.refused("incident", "timeline", "ghost")


def test_the_timeline_over_the_api(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from iotsec.api.app import create_app
    from iotsec.app.setup import init_home

    settings = Settings(home=tmp_path / "home", database_url=None)
    token = init_home(settings, store_passphrase=True).admin_token
    rt = open_runtime(settings)
    try:
        with TestClient(create_app(rt), headers={"Authorization": f"Bearer {token}"}) as api:
            assert api.post("/v1/devices", json={"id": "tl-1"}).status_code == 201
            body = api.get("/v1/devices/tl-1/timeline").json()
            assert [e["kind"] for e in body] == ["device.added"]
            assert body[0]["actor"] and body[0]["seq"]
            assert api.get("/v1/devices/ghost/timeline").status_code == 404
            assert api.get("/v1/devices/tl-1/timeline",
                           params={"since": "soon"}).status_code == 422
    finally:
        rt.close()
    assert json.dumps(body)


def test_quarantine_and_release_from_the_cli(cli: Cli) -> None:
    cli.ok("device", "add", "cam-5", "--group", "lobby")
    cli.ok("device", "add", "cam-6", "--group", "lobby")
    plan = cli.json("incident", "quarantine", "--group", "lobby", "--dry-run")
    assert plan["dry_run"] and plan["quarantined"] == ["cam-5", "cam-6"]
    done = cli.json("incident", "quarantine", "cam-5", "--reason", "exfiltration")
    assert done["quarantined"] == ["cam-5"]
    shown = cli.json("incident", "show", done["incident"])
    assert shown["held"] == ["cam-5"] and shown["actor"].startswith("cli")
    table = cli.ok("incident", "list").out
    assert done["incident"] in table and "exfiltration" in table
    kinds = [e["kind"] for e in cli.json("incident", "timeline", "cam-5")]
    assert "device.state" in kinds and "alert.incident.quarantine" in kinds
    recent = cli.json("incident", "timeline", "cam-5", "--since", "1h")
    assert [e["kind"] for e in recent] == kinds
    assert cli.json("incident", "timeline", "cam-5", "--since", "2999-01-01") == []
    assert "no devices selected" in cli.refused("incident", "quarantine")
    assert "not held in quarantine" in cli.refused("incident", "release", "cam-6")
    released = cli.json("incident", "release", "cam-5")
    assert released["released"] == [{"device": "cam-5", "state": "pending"}]
    assert cli.json("device", "show", "cam-5")["state"] == "pending"
