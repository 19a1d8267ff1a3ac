"""``iotsec enrol`` (secrets, templates, claim CAs) and ``iotsec device approve``: --json
and tables, the secret shown once, and refusals that change nothing."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from rich.console import Console

from iotsec.api.app import create_app
from iotsec.app.enrol import est as est_service
from iotsec.cli import output
from iotsec.cli.context import runtime
from tests.cli.support import Cli, use_home
from tests.enrol.asgi_est import Manufacturer, csr, pem

SECRET_ID = re.compile(r"es_[a-z2-7]{16}")
SECRET = re.compile(r"[A-Za-z0-9_-]{43}")


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> Cli:
    """``iotsec`` in-process over an initialised home of its own (IOTSEC_HOME)."""
    use_home(monkeypatch, tmp_path / "home")
    return Cli(capsys)


def store(cli: Cli) -> tuple[Any, ...]:
    """Everything the enrolment commands could change, as the CLI shows it."""
    return (cli.json("enrol", "secret", "list"), cli.json("enrol", "template", "list"),
            cli.json("enrol", "claim-ca", "list"), cli.json("device", "list"),
            cli.json("events", "list", "--limit", "10000"))


def test_secret_for_a_device_is_shown_once(cli: Cli) -> None:
    cli.ok("device", "add", "dev-1")
    created = cli.ok("enrol", "secret", "create", "dev-1", "--uses", "3", "--expires", "2h",
                     "--json")
    data = created.json()
    assert SECRET_ID.fullmatch(data["id"]) and SECRET.fullmatch(data["secret"])
    assert data["device_id"] == "dev-1" and data["template"] is None
    assert (data["uses_total"], data["uses_left"], data["state"]) == (3, 3, "active")
    assert "not shown again" in created.err
    # Never again: not in the list, as JSON or as a table, nor in the events.
    listed = cli.json("enrol", "secret", "list")
    assert [s["id"] for s in listed] == [data["id"]] and listed[0]["secret"] is None
    table = cli.ok("enrol", "secret", "list")
    assert data["id"] in table.out and data["secret"] not in table.out
    assert "3/3" in table.out and "dev-1" in table.out
    assert data["secret"] not in cli.ok("events", "list", "--json").out
    revoked = cli.json("enrol", "secret", "revoke", data["id"])
    assert revoked["state"] == "revoked" and revoked["secret"] is None
    assert cli.json("enrol", "secret", "list")[0]["state"] == "revoked"


def test_secret_printed_for_people(cli: Cli) -> None:
    cli.ok("enrol", "template", "add", "sensors", "--group", "plant-a")
    done = cli.ok("enrol", "secret", "create", "--template", "sensors")
    lines = done.out.splitlines()
    assert lines[0].split()[0] == "id" and SECRET_ID.fullmatch(lines[0].split()[1])
    assert lines[1].split()[0] == "secret" and SECRET.fullmatch(lines[1].split()[1])
    assert "shown once" in done.err and "not shown again" in done.err
    assert "template sensors" in done.err
    assert cli.ok("enrol", "secret", "revoke", lines[0].split()[1]).out.startswith("Revoked")


def test_templates(cli: Cli) -> None:
    cli.ok("role", "add", "telemetry", "--allow", "publish:devices/${device.id}/telemetry")
    added = cli.json("enrol", "template", "add", "sensors", "--group", "plant-a", "--group",
                     "floor-3", "--role", "telemetry", "--attr", "site=north",
                     "--id-from", "serial-number", "--require-approval", "--profile", "device")
    assert added == {**added, "name": "sensors", "groups": ["floor-3", "plant-a"],
                     "roles": ["telemetry"], "attributes": {"site": "north"},
                     "id_from": "serial-number", "require_approval": True, "profile": "device"}
    assert added["created_at"]
    assert cli.json("enrol", "template", "show", "sensors") == added
    assert cli.json("enrol", "template", "list") == [added]
    shown = cli.ok("enrol", "template", "show", "sensors").out
    assert "serial-number" in shown and "required" in shown and "site=north" in shown
    listed = cli.ok("enrol", "template", "list").out
    assert "1 provisioning template" in listed and "sensors" in listed
    replaced = cli.json("enrol", "template", "add", "sensors", "--replace")
    assert replaced["groups"] == [] and replaced["id_from"] == "csr-cn"
    assert cli.ok("enrol", "template", "add", "gw", "--profile", "server").out.startswith("Added")
    assert cli.json("enrol", "template", "remove", "gw") == {"kind": "template", "name": "gw"}
    assert [t["name"] for t in cli.json("enrol", "template", "list")] == ["sensors"]


def test_claim_cas(cli: Cli, tmp_path: Path) -> None:
    cli.ok("enrol", "template", "add", "factory", "--id-from", "serial-number")
    maker = Manufacturer.create()
    (tmp_path / "ca.pem").write_bytes(maker.pem)
    (tmp_path / "allow.txt").write_text("# the first batch\nHW-0001\nHW-0002  # spare\n\n")
    added = cli.json("enrol", "claim-ca", "add", "acme", "--ca", str(tmp_path / "ca.pem"),
                     "--template", "factory", "--allow", str(tmp_path / "allow.txt"),
                     "--hook", "https://provisioning.example/claims")
    assert added["name"] == "acme" and added["template"] == "factory"
    assert added["allow_list"] == 2 and added["hook_url"] == "https://provisioning.example/claims"
    assert added["subject"] == "CN=Acme Devices Factory CA"
    assert added["pem"].encode() == maker.pem and len(added["fingerprint"]) == 64
    assert cli.json("enrol", "claim-ca", "list") == [added]
    listed = cli.ok("enrol", "claim-ca", "list").out
    assert added["fingerprint"] in listed and "2 entries" in listed
    other = Manufacturer.create("Second Factory CA")
    (tmp_path / "other.pem").write_bytes(other.pem)
    plain = cli.ok("enrol", "claim-ca", "add", "second", "--ca", str(tmp_path / "other.pem"),
                   "--template", "factory")
    assert plain.out.startswith("Added claim CA second")
    assert cli.json("enrol", "claim-ca", "remove", "acme") == {"kind": "claim-ca",
                                                               "name": "acme"}
    assert [c["name"] for c in cli.json("enrol", "claim-ca", "list")] == ["second"]
    assert cli.ok("enrol", "claim-ca", "remove", "second").out.startswith("Removed")


def test_device_approve(cli: Cli) -> None:
    cli.ok("enrol", "template", "add", "gated", "--require-approval")
    secret = cli.json("enrol", "secret", "create", "--template", "gated")
    with runtime() as rt:
        waiting = est_service.enrol(rt, est_service.BasicCredential(secret["id"],
                                                                    secret["secret"]),
                                    csr(cn="gate-1"), label=None, source="192.0.2.1")
    assert isinstance(waiting, est_service.Pending)
    listed = cli.json("device", "list", "--state", "awaiting-approval")
    assert [d["id"] for d in listed] == ["gate-1"]
    token = cli.json("token", "create", "reader", "--scope", "auditor")["token"]
    with runtime() as rt, TestClient(create_app(rt),
                                     headers={"Authorization": f"Bearer {token}"}) as api:
        answer = api.get("/v1/devices", params={"state": "awaiting-approval"})
    assert answer.status_code == 200 and answer.json() == listed  # one wire model
    assert "gate-1" in cli.ok("device", "list", "--state", "awaiting-approval").out
    approved = cli.json("device", "approve", "gate-1")
    assert approved["id"] == "gate-1" and approved["state"] == "pending"
    assert cli.json("device", "list", "--state", "awaiting-approval") == []
    assert "not awaiting approval" in cli.refused("device", "approve", "gate-1")
    events = cli.json("events", "list", "--kind", "est.approved")
    assert [e["subject"] for e in events] == ["gate-1"]


def test_refusals_change_nothing(cli: Cli, tmp_path: Path) -> None:
    cli.ok("device", "add", "dev-1")
    cli.ok("device", "add", "gone")
    cli.ok("device", "retire", "gone")
    cli.ok("enrol", "template", "add", "sensors")
    secret = cli.json("enrol", "secret", "create", "--template", "sensors")
    maker = Manufacturer.create()
    (tmp_path / "ca.pem").write_bytes(maker.pem)
    cli.ok("enrol", "claim-ca", "add", "acme", "--ca", str(tmp_path / "ca.pem"),
           "--template", "sensors")
    (tmp_path / "leaf.pem").write_text(pem(maker.claim("HW-1")[1]))
    (tmp_path / "garbage.pem").write_text("not a certificate\n")
    (tmp_path / "bad-allow.txt").write_text("HW 1 with spaces\n")
    (tmp_path / "latin1.txt").write_bytes(b"caf\xe9\n")
    (tmp_path / "big.pem").write_bytes(b"A" * (64 * 1024 + 1))
    other = Manufacturer.create("Other CA")
    (tmp_path / "other.pem").write_bytes(other.pem)
    before = store(cli)
    ca = str(tmp_path / "ca.pem")
    cases: list[tuple[tuple[str, ...], str]] = [
        (("enrol", "secret", "create"), "one device or for one template"),
        (("enrol", "secret", "create", "dev-1", "--template", "sensors"), "not both"),
        (("enrol", "secret", "create", "nobody"), "not registered"),
        (("enrol", "secret", "create", "gone"), "retired"),
        (("enrol", "secret", "create", "a/b"), "not allowed"),
        (("enrol", "secret", "create", "dev-1", "--uses", "0"), "between 1 and"),
        (("enrol", "secret", "create", "dev-1", "--uses", "10001"), "between 1 and"),
        (("enrol", "secret", "create", "dev-1", "--expires", "31d"), "30 days"),
        (("enrol", "secret", "create", "dev-1", "--expires", "30s"), "one minute"),
        (("enrol", "secret", "create", "dev-1", "--expires", "soon"), "not a duration"),
        (("enrol", "secret", "create", "--template", "nothing"), "no provisioning template"),
        (("enrol", "secret", "revoke", "es_aaaaaaaaaaaaaaaa"), "no enrolment secret"),
        (("enrol", "secret", "revoke", "tok_1"), "not an enrolment secret id"),
        (("enrol", "template", "add", "bad name"), "not valid"),
        (("enrol", "template", "add", "x", "--id-from", "mac"), "unknown id source"),
        (("enrol", "template", "add", "x", "--role", "nobody"), "nobody"),
        (("enrol", "template", "add", "x", "--profile", "root"), "no certificate profile 'root'"),
        (("enrol", "template", "add", "x", "--attr", "novalue"), "key=value"),
        (("enrol", "template", "add", "x", "--group", "a/b"), "group name"),
        (("enrol", "template", "add", "sensors"), "already exists"),
        (("enrol", "template", "show", "nothing"), "no provisioning template"),
        (("enrol", "template", "remove", "nothing"), "no provisioning template"),
        (("enrol", "template", "remove", "sensors"), "is used by"),
        (("enrol", "claim-ca", "add", "x", "--ca", str(tmp_path / "nope.pem"), "--template",
          "sensors"), "does not exist"),
        (("enrol", "claim-ca", "add", "x", "--ca", str(tmp_path / "garbage.pem"),
          "--template", "sensors"), "not a PEM certificate"),
        (("enrol", "claim-ca", "add", "x", "--ca", str(tmp_path / "big.pem"), "--template",
          "sensors"), "limit"),
        (("enrol", "claim-ca", "add", "x", "--ca", str(tmp_path / "leaf.pem"), "--template",
          "sensors"), "not a CA certificate"),
        (("enrol", "claim-ca", "add", "x", "--ca", str(tmp_path / "other.pem"), "--template",
          "nothing"), "no provisioning template"),
        (("enrol", "claim-ca", "add", "x", "--ca", ca, "--template", "sensors"),
         "already has this name or certificate"),
        (("enrol", "claim-ca", "add", "x", "--ca", str(tmp_path / "other.pem"), "--template",
          "sensors", "--hook", "http://hooks.example/claim"), "loopback"),
        (("enrol", "claim-ca", "add", "x", "--ca", str(tmp_path / "other.pem"), "--template",
          "sensors", "--hook", "ftp://hooks.example/"), "http(s) URL"),
        (("enrol", "claim-ca", "add", "x", "--ca", str(tmp_path / "other.pem"), "--template",
          "sensors", "--allow", str(tmp_path / "bad-allow.txt")), "line 1"),
        (("enrol", "claim-ca", "add", "x", "--ca", str(tmp_path / "other.pem"), "--template",
          "sensors", "--allow", str(tmp_path / "latin1.txt")), "not UTF-8"),
        (("enrol", "claim-ca", "add", "x", "--ca", str(tmp_path / "other.pem"), "--template",
          "sensors", "--allow", str(tmp_path)), "is a directory"),
        (("enrol", "claim-ca", "remove", "nothing"), "no claim CA"),
        (("device", "approve", "dev-1"), "not awaiting approval"),
        (("device", "approve", "nobody"), "not registered"),
        (("device", "list", "--state", "waiting"), "awaiting-approval"),
    ]
    failures = []
    for args, expected in cases:
        message = cli.refused(*args)
        if expected not in message:
            failures.append((args, message))
        assert secret["secret"] not in message
    assert failures == []
    assert store(cli) == before


def test_usage_errors_exit_2(cli: Cli) -> None:
    for args in (("enrol", "secret", "create", "dev-1", "--uses", "many"),
                 ("enrol", "claim-ca", "add", "x", "--template", "t"),
                 ("enrol", "template", "add"), ("enrol", "nothing"), ("device", "approve")):
        result = cli(*args)
        assert result.code == 2, (args, result)
        assert "Traceback" not in result.out + result.err


def test_identifiers_stay_whole_in_narrow_tables(cli: Cli, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    cli.ok("enrol", "template", "add", "a-rather-long-template-name-for-the-north-plant")
    maker = Manufacturer.create()
    (tmp_path / "ca.pem").write_bytes(maker.pem)
    added = cli.json("enrol", "claim-ca", "add", "acme", "--ca", str(tmp_path / "ca.pem"),
                     "--template", "a-rather-long-template-name-for-the-north-plant")
    secret = cli.json("enrol", "secret", "create", "--template",
                      "a-rather-long-template-name-for-the-north-plant")
    buf = io.StringIO()
    monkeypatch.setattr(output, "console", Console(file=buf, force_terminal=True, width=60,
                                                   color_system=None))
    for args in (("enrol", "secret", "list"), ("enrol", "template", "list"),
                 ("enrol", "claim-ca", "list")):
        cli.ok(*args)
    text = buf.getvalue()
    for identifier in (secret["id"], added["fingerprint"],
                       "a-rather-long-template-name-for-the-north-plant"):
        assert identifier in text, identifier
    assert "…" not in text
