"""``iotsec scan`` mounted in a Typer app: exit codes 0/1/2, report files, --with-nmap."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner, Result

from iotsec.cli.scan import scan
from tests.scan.conftest import Lab
from tests.services import require_tool

HOST = "127.0.0.1"
FAST = ["--credential-rate", "1000"]


def app() -> typer.Typer:
    root = typer.Typer()
    root.command("scan")(scan)

    @root.command("version")
    def _version() -> None:  # a second command, so that 'scan' is a subcommand
        pass

    return root


def run(*args: str, home: Path | None = None) -> Result:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOTSEC_")}
    env["IOTSEC_HOME"] = str(home) if home else "/nonexistent/iotsec-home"
    return CliRunner().invoke(app(), ["scan", *args], env=env)


@pytest.mark.parametrize(("args", "message"), [
    (["10.0.0.0/33"], "not a valid CIDR range"),
    (["10.0.0.0/8", "-p", "22"], "pass --confirm-large"),
    ([HOST, "-p", "0"], "outside 1-65535"),
    ([HOST, "-p", "1-70000"], "outside 1-65535"),
    (["no-such-host.invalid", "-p", "22"], "does not resolve"),
    ([], "no target was given"),
    (["--fleet", "-p", "22"], "not an initialised iotsec home"),
])
def test_could_not_run_exits_2(args: list[str], message: str) -> None:
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_out_of_scope_exits_2(tmp_path: Path) -> None:
    scope = tmp_path / "scope"
    scope.write_text("192.0.2.0/24\n")
    result = run(HOST, "-p", "22", "--scope", str(scope))
    assert result.exit_code == 2 and "outside the scope file" in result.output


def test_bad_fail_on_is_a_usage_error() -> None:
    assert run(HOST, "--fail-on", "urgent").exit_code == 2


@pytest.mark.parametrize("args", [["--json", "--sarif", "-"], ["--sarif", "-", "--html", "-"],
                                  ["--json", "--html", "-"]])
def test_only_one_report_on_stdout(args: list[str]) -> None:
    """Two reports on standard output would interleave: refused before anything runs."""
    result = run(HOST, "-p", "22", *args)
    assert result.exit_code == 2 and "only one report" in result.output


def test_findings_at_or_above_fail_on_exit_1(lab: Lab, tmp_path: Path) -> None:
    ports = lab.spec("mqtt_anon", "tls_mismatch")
    sarif, html, report = tmp_path / "r.sarif", tmp_path / "r.html", tmp_path / "r.json"
    result = run(HOST, "-p", ports, *FAST, "--sarif", str(sarif), "--html", str(html),
                 "--json-file", str(report), home=lab.rt.settings.home)
    assert result.exit_code == 1, result.output
    assert "mqtt/anonymous" in result.output
    assert json.loads(sarif.read_text())["version"] == "2.1.0"
    assert html.read_text().startswith("<!DOCTYPE html>")
    rules = {f["rule"] for f in json.loads(report.read_text())["findings"]}
    assert rules == {"plaintext/mqtt", "mqtt/anonymous", "mqtt/wildcard-subscribe",
                     "tls/hostname-mismatch"}
    # Only the medium finding remains when the MQTT port is left out: under 'high'.
    only_medium = run(HOST, "-p", lab.spec("tls_mismatch"), home=lab.rt.settings.home)
    assert only_medium.exit_code == 0, only_medium.output
    assert run(HOST, "-p", lab.spec("tls_mismatch"), "--fail-on", "medium",
               home=lab.rt.settings.home).exit_code == 1
    assert run(HOST, "-p", ports, *FAST, "--fail-on", "never",
               home=lab.rt.settings.home).exit_code == 0


def test_clean_scan_exits_0_and_json_goes_to_stdout(lab: Lab) -> None:
    result = run(HOST, "-p", lab.spec("tls_good", "ssh"), "--json", "--fail-on", "info",
                 home=lab.rt.settings.home)
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["findings"] == []
    assert sorted(s["service"] for h in document["hosts"] for s in h["services"]) == \
        ["https", "ssh"]


def test_without_a_home_the_fleet_ca_is_unknown(lab: Lab) -> None:
    result = run(HOST, "-p", lab.spec("tls_good"), "--json", "--fail-on", "never")
    assert result.exit_code == 0, result.output
    rules = [f["rule"] for f in json.loads(result.stdout)["findings"]]
    assert rules == ["tls/untrusted-ca"]


def test_json_schema_option() -> None:
    result = run("--json-schema")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["$id"] == "urn:iotsec:schema:scan-report:1"


def test_with_nmap_cross_check(lab: Lab) -> None:
    require_tool("nmap")
    result = run(HOST, "-p", lab.spec("ssh", "http_plain", "silent"), "--with-nmap", "--json",
                 home=lab.rt.settings.home)
    assert result.exit_code == 0, result.output
    cross = json.loads(result.stdout)["cross_check"]
    assert cross["tool"] == "nmap" and cross["agreed"] == 3
    assert cross["only_nmap"] == [] and cross["only_iotsec"] == []
