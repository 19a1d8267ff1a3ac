"""``iotsec events``: list with filters, export for a SIEM, verify and checkpoint."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from sqlalchemy import create_engine, update

from iotsec.store import models as m
from tests.cli.support import Cli, use_home


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> Cli:
    use_home(monkeypatch, tmp_path / "home")
    run = Cli(capsys)
    # Events of several kinds: a token, and refused logins are recorded by the API; here a
    # created and a revoked token.
    token = run.json("token", "create", "ops", "--scope", "operator")
    run.ok("token", "revoke", token["id"])
    return run


def test_list_filters_by_time(cli: Cli) -> None:
    every = cli.json("events", "list")
    assert len(every) >= 2 and all(e["seq"] and len(e["hash"]) == 64 for e in every)
    assert cli.json("events", "list", "--since", "1h") == every
    assert cli.json("events", "list", "--until", "2h") == []
    assert cli.json("events", "list", "--since", "2000-01-01T00:00:00Z",
                    "--until", "2999-01-01") == every
    err = cli.refused("events", "list", "--since", "yesterday-ish")
    assert "neither a duration nor a date" in err


def test_export_formats(cli: Cli, tmp_path: Path) -> None:
    count = len(cli.json("events", "list"))
    out = cli.ok("events", "export").out.splitlines()
    assert len(out) == count and all(json.loads(line)["hash"] for line in out)
    assert [json.loads(line)["seq"] for line in out] == sorted(
        json.loads(line)["seq"] for line in out)  # oldest first
    target = tmp_path / "events.cef"
    result = cli.ok("events", "export", "--format", "cef", "-o", str(target))
    assert "Exported" in result.err
    lines = target.read_text().splitlines()
    assert len(lines) == count and all(line.startswith("CEF:0|iotsec|iotsec|") for line in lines)
    assert os.stat(target).st_mode & 0o077 == 0
    syslog = cli.ok("events", "export", "--format", "syslog").out.splitlines()
    assert all(line.startswith("<") and " iotsec - " in line for line in syslog)
    assert "unknown export format" in cli.refused("events", "export", "--format", "xml")


def test_verify_then_tamper(cli: Cli, tmp_path: Path) -> None:
    assert "intact" in cli.ok("events", "verify").out
    made = cli.json("events", "checkpoint")
    assert made["made"] is True and made["seq"] >= 2
    report = cli.json("events", "verify")
    assert report["ok"] and report["checkpointed_seq"] == made["seq"]
    engine = create_engine(f"sqlite:///{tmp_path / 'home' / 'iotsec.db'}")
    with engine.begin() as conn:
        conn.execute(update(m.events).where(m.events.c.seq == 1).values(actor="someone-else"))
    engine.dispose()
    result = cli("events", "verify")
    assert result.code == 1
    assert "entry 1" in result.err and "under a signed checkpoint" in result.err
    assert result.err.strip().splitlines()[-1].startswith("iotsec: error: the event chain")
    assert "Traceback" not in result.err
    doc = cli("events", "verify", "--json")
    assert doc.code == 1 and json.loads(doc.out)["faults"][0]["fault"] == "edited"
