"""``iotsec netseg`` mounted on a Typer app, run through the CLI's one error mapping."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import typer

import iotsec.cli.main as cli_main
from iotsec.cli import netseg
from tests.netseg.support import SITE, require_root_tools

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Run:
    root = typer.Typer(name="iotsec", no_args_is_help=True, add_completion=False,
                       pretty_exceptions_enable=False, rich_markup_mode=None)
    root.add_typer(netseg.app, name="netseg")

    @root.callback()
    def _root() -> None:
        """iotsec."""

    monkeypatch.setattr(cli_main, "app", root)

    def invoke(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = cli_main.main(["netseg", *args])
        out, err = capsys.readouterr()
        assert "Traceback" not in out + err
        return code, out, err

    return invoke


def test_validate_a_good_file(run: Run) -> None:
    code, out, _ = run("validate", str(SITE))
    assert code == 0
    assert "valid: 5 zones, 6 rules, 0 findings" in out
    code, out, _ = run("validate", str(SITE), "--json")
    data = json.loads(out)
    assert (code, data["valid"], data["zones"], data["rules"], data["findings"]) == \
        (0, True, 5, 6, [])


def test_validate_lists_every_problem_with_its_line(run: Run, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("zones:\n  - {name: a, subnets: [10.0.0.0/33]}\n  - {name: a, subnets: "
                   "[10.1.0.0/24]}\nrules:\n  - {action: allow, from: a, to: b}\n")
    code, out, _ = run("validate", str(bad))
    assert code == 1
    assert f"{bad}:2: error: invalid CIDR '10.0.0.0/33'" in out
    assert f"{bad}:3: error: duplicate zone name 'a'" in out
    assert f"{bad}:5: error: to: unknown zone 'b'" in out
    assert "invalid: 3 problem(s)" in out
    code, out, _ = run("validate", str(bad), "--json")
    data = json.loads(out)
    assert data["valid"] is False
    assert [p["line"] for p in data["problems"]] == [2, 3, 5]


def test_validate_findings_decide_the_exit_code(run: Run, tmp_path: Path) -> None:
    f = tmp_path / "p.yml"
    f.write_text("zones:\n  - {name: s, subnets: [10.0.0.0/24], interface: e1}\n"
                 "  - {name: b, subnets: [10.1.0.0/24], interface: e2}\nrules:\n"
                 "  - {name: tn, action: allow, from: s, to: b, services: [telnet]}\n")
    code, out, _ = run("validate", str(f))
    assert code == 1
    assert f"{f}:5: high: [plaintext-protocol] rule 1 'tn' (line 5) opens plaintext " \
        "telnet (23/tcp)" in out
    assert "[management-access]" in out
    f.write_text(f.read_text().replace("telnet", "mqtts"))
    code, out, _ = run("validate", str(f))
    assert code == 0, out


def test_validate_json_lists_each_finding_with_its_rule_and_line(run: Run,
                                                                  tmp_path: Path) -> None:
    f = tmp_path / "p.yml"
    f.write_text("zones:\n  - {name: s, subnets: [10.0.0.0/24], interface: e1}\n"
                 "  - {name: b, subnets: [10.1.0.0/24], interface: e2}\n"
                 "  - {name: idle, subnets: [10.2.0.0/24], interface: e3}\nrules:\n"
                 "  - {name: tn, action: allow, from: s, to: b, services: [telnet]}\n")
    code, out, _ = run("validate", str(f), "--json")
    assert code == 1
    found = json.loads(out)["findings"]
    assert [(x["severity"], x["code"], x["rule"], x["line"]) for x in found] == [
        ("high", "plaintext-protocol", "tn", 6), ("high", "management-access", "tn", 6),
        ("info", "unused-zone", None, 4)]
    assert found[0] == {
        "severity": "high", "code": "plaintext-protocol", "rule": "tn", "line": 6,
        "message": "rule 1 'tn' (line 6) opens plaintext telnet (23/tcp) from s to b",
        "fix": "use the TLS/DTLS variant (mqtts 8883, https 443, coaps 5684, ssh 22)"}


def test_check_allows_and_names_the_rule(run: Run) -> None:
    code, out, _ = run("check", str(SITE), "--from", "10.20.0.5", "--to", "10.30.0.9",
                       "--port", "8883")
    assert code == 0
    assert out.startswith("allow: 10.20.0.5 (sensors) -> 10.30.0.9 (broker) tcp/8883: "
                          "rule 1 'sensors-to-broker' (line 32)")


def test_check_denies_with_exit_1(run: Run) -> None:
    code, out, _ = run("check", str(SITE), "--from", "10.20.0.5", "--to", "10.30.0.9",
                       "--port", "1883")
    assert code == 1
    assert "deny:" in out and "no rule matches" in out
    code, out, _ = run("check", str(SITE), "--from", "10.40.0.5", "--to", "10.30.0.9",
                       "--port", "23", "--json")
    data = json.loads(out)
    assert code == 1
    assert (data["decision"], data["rule"], data["line"], data["from_zone"]) == \
        ("reject", "no-telnet", 57, "gateways")
    code, out, _ = run("check", str(SITE), "--from", "10.40.0.5", "--to", "10.30.0.9",
                       "--proto", "udp", "--port", "5684", "--json")
    assert (code, json.loads(out)["rule"]) == (0, "gateways-to-broker")


@pytest.mark.parametrize(("args", "shown"), [
    (["--from", "10.0.0.1", "--to", "x", "--port", "1"], "--to 'x' is not an IP address"),
    (["--from", "10.0.0.1", "--to", "10.0.0.2", "--port", "0"], "out of range"),
    (["--from", "10.0.0.1", "--to", "10.0.0.2", "--port", "70000"], "out of range"),
    (["--from", "10.0.0.1", "--to", "10.0.0.2"], "needs a destination port"),
    (["--from", "10.0.0.1", "--to", "10.0.0.2", "--port", "x"], "valid integer"),
])
def test_check_usage_errors_exit_2(run: Run, args: list[str], shown: str) -> None:
    code, _, err = run("check", str(SITE), *args)
    assert code == 2
    assert shown in err


def test_refusals_are_one_line(run: Run, tmp_path: Path) -> None:
    big = tmp_path / "big.yml"
    big.write_bytes(b"#" * (10 * 1024 * 1024))
    code, out, err = run("compile", str(big))
    assert (code, out) == (1, "")
    assert err.startswith("iotsec: error: policy file") and "the limit is" in err
    assert err.count("\n") == 1
    bad = tmp_path / "bad.yml"
    bad.write_text("zones:\n  - {name: a, subnets: [10.0.0.0/24]}\nrules:\n"
                   "  - {action: allow, from: a, to: a, proto: tcp, ports: [0]}\n")
    code, _, err = run("check", str(bad), "--from", "10.0.0.1", "--to", "10.0.0.2",
                       "--port", "1")
    assert code == 1
    assert err.startswith("iotsec: error: line 4: port 0 is out of range 1-65535")
    code, _, err = run("compile", str(tmp_path / "missing.yml"))
    assert code == 1 and "does not exist" in err


def test_compile_to_a_file_and_stdout(run: Run, tmp_path: Path) -> None:
    code, out, _ = run("compile", str(SITE))
    assert code == 0 and "table inet iotsec {" in out
    target = tmp_path / "out" / "fw.nft"
    code, out, _ = run("compile", str(SITE), "--format", "nftables", "-o", str(target))
    assert (code, out) == (0, "")
    assert target.read_text().startswith("#!/usr/sbin/nft -f")
    code, _, _ = run("compile", str(SITE), "--format", "iptables")
    assert code == 2


def test_compile_verify_runs_nft(run: Run, tmp_path: Path) -> None:
    require_root_tools("nft")
    target = tmp_path / "fw.nft"
    code, _, err = run("compile", str(SITE), "--verify", "-o", str(target))
    assert code == 0, err
    assert target.exists()


def test_services_table(run: Run) -> None:
    code, out, _ = run("services", "--json")
    data = {s["name"]: s for s in json.loads(out)}
    assert code == 0
    assert data["coap"]["ports"] == ["5683/udp"] and data["coap"]["plaintext"]
    assert data["mqtts"]["ports"] == ["8883/tcp"] and not data["mqtts"]["plaintext"]
    assert data["ssh"]["management"]
    code, out, _ = run("services")
    assert code == 0 and "mqtts" in out
