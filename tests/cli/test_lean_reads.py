"""``iotsec cert list`` and ``iotsec device show`` run before Typer is imported
(iotsec.cli.lean, ADR 0051): the same interfaces as the Typer commands, and the same
output, message and exit code for every command line, on SQLite and on PostgreSQL; a home
or a setting the lean path does not read is left to Typer, which obeys it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from iotsec.cli.identity_spec import CERT_LIST, DEVICE_SHOW
from iotsec.cli.spec import parse
from tests.cli.support import (
    Cli,
    assert_parse_reads_what_click_reads,
    assert_spec_is_the_interface,
    count_lean_runs,
    lean_and_typer_agree,
    on_postgresql,
)
from tests.helpers import make_csr


@pytest.mark.parametrize("spec", [CERT_LIST, DEVICE_SHOW], ids=["cert list", "device show"])
def test_the_spec_is_the_typer_commands_interface(spec: Any) -> None:
    assert_spec_is_the_interface(spec)


#: Command lines after 'cert list' and after 'device show': plain ones, and ones the
#: parser must leave to Typer (or read exactly as click does).
CERT_LIST_LINES: tuple[tuple[str, ...], ...] = (
    (), ("--json",), ("--device", "d"), ("--device=d", "--json"), ("--limit", "5"),
    ("--limit=5",), ("--limit", " 7 "), ("--limit", "1_000"), ("--limit", "-3"),
    ("--limit", "x"), ("--limit", "5.0"), ("--limit",), ("--limit", "1", "--limit", "2"),
    ("--expiring-within", "30d"), ("--expiring-within", "30d", "--json", "--limit", "9"),
    ("--help",), ("x",), ("--json", "--json"), ("--json=1",), ("--devices", "d"), ("-x",),
    ("--", "--json"), ("--device", "-d"),
)
DEVICE_SHOW_LINES: tuple[tuple[str, ...], ...] = (
    ("d",), ("d", "--json"), ("--json", "d"), (), ("d", "e"), ("--help",), ("d", "--help"),
    ("-d",), ("--", "-d"), ("d", "--json=yes"), ("d", "--pem"), ("",), ("-",),
)


def test_the_parsers_read_what_click_reads_or_leave_it_to_typer() -> None:
    assert assert_parse_reads_what_click_reads(CERT_LIST, CERT_LIST_LINES) >= 10
    assert assert_parse_reads_what_click_reads(DEVICE_SHOW, DEVICE_SHOW_LINES) >= 4
    assert parse(CERT_LIST, ()) == {"device": None, "expiring_within": None, "limit": 1000,
                                    "as_json": False}
    assert parse(CERT_LIST, ("--limit", " 7 "))["limit"] == 7  # type: ignore[index]
    assert parse(CERT_LIST, ("--limit", "x")) is None
    assert parse(DEVICE_SHOW, ("d", "--json")) == {"device_id": "d", "as_json": True}


def _fleet(cli: Cli, tmp_path: Path) -> None:
    """Devices with groups, roles, attributes and a profile of their own, and certificates
    valid, revoked, and superseded by a renewal within its grace period (dev-2's)."""
    cli.ok("role", "add", "reader", "--allow", "subscribe:fleet/#")
    cli.ok("group", "add", "g", "--role", "reader")
    cli.ok("profile", "add", "short", "--days", "30", "--key-types", "p256")
    cli.ok("device", "add", "dev-1", "--group", "g", "--attr", "site=a", "--attr", "floor=2")
    cli.ok("device", "add", "dev-2", "--role", "reader")
    cli.ok("device", "add", "dev-3")
    cli.ok("device", "set-profile", "dev-2", "short")
    for n, device in enumerate(("dev-1", "dev-1", "dev-2", "dev-2")):
        (tmp_path / f"{n}.csr").write_bytes(make_csr(cn="admin"))
        cli.ok("cert", "issue", device, "--csr", str(tmp_path / f"{n}.csr"))
    serials = [c["serial"] for c in cli.json("cert", "list", "--device", "dev-2")]
    cli.ok("cert", "revoke", serials[0], "--reason", "key-compromise")
    (tmp_path / "renew.csr").write_bytes(make_csr())
    cli.ok("cert", "renew", serials[1], "--csr", str(tmp_path / "renew.csr"), "--grace", "7d")


#: Command lines of both commands: every form of output, the filters, and refusals (a
#: device not registered, an id that is not valid, a limit out of range, a window that
#: does not parse).
LINES: tuple[tuple[str, ...], ...] = (
    ("cert", "list"), ("cert", "list", "--json"), ("cert", "list", "--device", "dev-1"),
    ("cert", "list", "--device", "dev-2", "--json"), ("cert", "list", "--limit", "2", "--json"),
    ("cert", "list", "--expiring-within", "60d", "--json"),
    ("cert", "list", "--expiring-within", "60d"), ("cert", "list", "--device", "dev-3"),
    ("cert", "list", "--limit", "0"), ("cert", "list", "--expiring-within", "soon"),
    ("cert", "list", "--device", "not a device!"),
    ("device", "show", "dev-1"), ("device", "show", "dev-1", "--json"),
    ("device", "show", "dev-2"), ("device", "show", "dev-2", "--json"),
    ("device", "show", "dev-3"), ("device", "show", "dev-3", "--json"),
    ("device", "show", "ghost"), ("device", "show", "not a device!"),
)


def _ask(cli: Cli) -> list[tuple[int, str, str]]:
    return [(r.code, r.out, r.err) for r in (cli(*line) for line in LINES)]


def _check_output(output: list[tuple[int, str, str]]) -> None:
    codes = [code for code, _out, _err in output]
    assert codes == [0] * 8 + [1, 1, 1] + [0] * 6 + [1, 1]
    everything = json.loads(output[1][1])
    assert len(everything) == 5
    assert sorted(c["status"] for c in everything) == ["revoked", "superseded", "valid",
                                                       "valid", "valid"]
    assert {c["device_id"] for c in everything} == {"dev-1", "dev-2"}
    assert all(c["pem"] is None and c["not_after"].endswith("Z") for c in everything)
    assert len(json.loads(output[4][1])) == 2
    # The profile of 30 days: dev-2's certificates expire within 60 days, dev-1's do not.
    assert {c["device_id"] for c in json.loads(output[5][1])} == {"dev-2"}
    assert "0 certificates" in output[7][1]
    assert "limit must be between" in output[8][2] and "soon" in output[9][2]
    shown = json.loads(output[12][1])
    assert shown["attributes"] == {"floor": "2", "site": "a"} and shown["groups"] == ["g"]
    assert len(shown["certificates"]) == 2 and shown["profile"] is None
    other = json.loads(output[14][1])
    assert other["profile"] == "short" and other["roles"] == ["reader"]
    assert sorted(c["status"] for c in other["certificates"]) == ["revoked", "superseded",
                                                                  "valid"]
    assert "keyCompromise" in output[0][1] and "superseded" in output[0][1]
    assert sorted(str(c["revocation_reason"]) for c in everything) == [
        "None", "None", "None", "keyCompromise", "superseded"]
    assert "site=a" in output[11][1] and "certificates" in output[11][1]
    assert "not registered" in output[17][2] and output[17][2].startswith("iotsec: error:")


def test_the_lean_path_and_typer_print_the_same(ready: dict[str, Any], cli: Cli,
                                                monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path) -> None:
    _fleet(cli, tmp_path)
    _check_output(lean_and_typer_agree(monkeypatch, lambda: _ask(cli), len(LINES)))


@on_postgresql
def test_the_lean_path_and_typer_print_the_same_on_postgresql(
        postgres_ready: dict[str, Any], cli: Cli, monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    _fleet(cli, tmp_path)
    _check_output(lean_and_typer_agree(monkeypatch, lambda: _ask(cli), len(LINES)))
    # The passphrase may come from the environment instead of the home's file.
    secret = Path(os.environ["IOTSEC_HOME"]) / "ca-passphrase"
    monkeypatch.setenv("IOTSEC_CA_PASSPHRASE", secret.read_text().strip())
    secret.unlink()
    lean_and_typer_agree(monkeypatch, lambda: _ask(cli), len(LINES))


def test_a_setting_the_lean_path_does_not_read_leaves_the_command_to_typer(
        ready: dict[str, Any], cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    cli.ok("device", "add", "dev-1")
    calls = count_lean_runs(monkeypatch)
    monkeypatch.setenv("IOTSEC_HOT_CACHE_SECONDS", "2")
    assert json.loads(cli.ok("device", "show", "dev-1", "--json").out)["id"] == "dev-1"
    assert cli.ok("cert", "list", "--json").out.strip() == "[]"
    monkeypatch.setenv("IOTSEC_HOT_CACHE_SECONDS", "not a number")
    refused = cli("cert", "list")
    assert refused.code == 1 and "HOT_CACHE_SECONDS" in refused.err.upper()
    # Other commands of the two groups never go the lean way.
    monkeypatch.delenv("IOTSEC_HOT_CACHE_SECONDS")
    assert cli.ok("device", "list", "--json").out
    assert calls == [None, None, None, None]
