"""``iotsec detect``: rules validate/apply/show, status and a one-shot run, in text and
JSON, and refusals that say what to do."""

from __future__ import annotations

from pathlib import Path

import pytest

from iotsec.detect.rules import DEFAULT_RULES
from tests.cli.support import Cli, use_home

TLS_FAIL = ("2026-11-26T03:00:00+0000: Client connection from 203.0.113.9 failed: "
            "error:0A0000C7:SSL routines::peer did not return a certificate.\n")


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> Cli:
    use_home(monkeypatch, tmp_path / "home")
    return Cli(capsys)


def test_rules_validate_apply_show(cli: Cli, tmp_path: Path) -> None:
    shown = cli.json("detect", "rules", "show")
    assert shown["version"] is None and shown["document"] == DEFAULT_RULES
    assert len(shown["rules"]) == 11
    assert cli.ok("detect", "rules", "show", "--document").out == DEFAULT_RULES
    assert "authn-failures-by-source" in cli.ok("detect", "rules", "show").out
    good = tmp_path / "rules.yaml"
    good.write_text("rules:\n  - {name: spray, kind: authn-failures, threshold: 2}\n")
    assert cli.json("detect", "rules", "validate", str(good))["valid"] is True
    assert cli.json("detect", "rules", "show")["version"] is None  # validate applies nothing
    applied = cli.json("detect", "rules", "apply", str(good))
    assert applied["version"] == 1 and [r["name"] for r in applied["rules"]] == ["spray"]
    assert cli.json("detect", "rules", "show")["version"] == 1
    events = cli.json("events", "list", "--kind", "detect.rules")
    assert events[0]["actor"] == "cli"


def test_bad_rules_are_refused_with_their_line(cli: Cli, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules:\n  - name: x\n    kind: authn-failures\n    per: device\n"
                   "    threshold: 2\n"
                   "    action: disable\n")
    for command in ("validate", "apply"):
        err = cli.refused("detect", "rules", command, str(bad))
        assert "line 2" in err and "someone else" in err
    assert cli.json("detect", "rules", "show")["version"] is None


def test_run_once_and_status(cli: Cli, tmp_path: Path) -> None:
    assert cli.json("detect", "status")["holder"] is None
    assert "No process has run detection" in cli.ok("detect", "status").out
    log = tmp_path / "mosquitto.log"
    log.write_text(TLS_FAIL * 25)
    result = cli.json("detect", "run", "--once", "--log", str(log))
    assert result["lines"] == 25 and len(result["alerts"]) == 1
    status = cli.json("detect", "status")
    assert status["holder"] and status["live"] is False  # released on the way out
    source = {s["source"]: s for s in status["sources"]}["mosquitto-log"]
    assert source["lines"] == 25 and source["lag"] == 0
    assert source["position"] == log.stat().st_size
    text = cli.ok("detect", "status").out
    assert "mosquitto-log" in text and "Lease holder" in text
    alerts = cli.json("alerts", "list")
    assert alerts[0]["rule"] == "authn-failures-by-source"
    # Nothing new on a second run.
    assert cli.json("detect", "run", "--once", "--log", str(log))["lines"] == 0


def test_run_refuses_when_turned_off(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IOTSEC_DETECT_TICK_SECONDS", "0")
    assert "turned off" in cli.refused("detect", "run", "--once")


def test_compliance_judges_5_10_1_met_once_detection_runs(cli: Cli, tmp_path: Path) -> None:
    def provision() -> dict:
        report = cli("compliance", "report", "--framework", "etsi-en-303-645", "--json", "-")
        found = [p for p in _walk(report.json()) if p.get("id") == "5.10-1"]
        return found[0]

    before = provision()
    assert before["automatic_status"] != "pass"
    log = tmp_path / "mosquitto.log"
    log.write_text(TLS_FAIL)
    cli.ok("detect", "run", "--once", "--log", str(log))
    after = provision()
    assert after["status"] == "pass" and after["automatic_status"] == "pass"
    assert after["evidence"][0]["ref"] == "monitor.detection"
    assert not after["needs_justification"]


def _walk(node: object) -> list[dict]:
    found: list[dict] = []
    if isinstance(node, dict):
        if "id" in node and "automatic_status" in node:
            found.append(node)
        for value in node.values():
            found += _walk(value)
    elif isinstance(node, list):
        for value in node:
            found += _walk(value)
    return found
