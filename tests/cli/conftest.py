"""Fixtures for the command-line tests: a fresh home per test, selected by IOTSEC_HOME."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.cli.support import Cli


@pytest.fixture
def cli_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A home that does not exist yet, selected through IOTSEC_HOME (SQLite store)."""
    for name in [n for n in os.environ if n.startswith("IOTSEC_")]:
        monkeypatch.delenv(name)
    home = tmp_path / "home"
    monkeypatch.setenv("IOTSEC_HOME", str(home))
    monkeypatch.chdir(tmp_path)
    return home


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], cli_home: Path) -> Cli:
    return Cli(capsys)


@pytest.fixture
def ready(cli: Cli) -> dict[str, Any]:
    """An initialised home; returns ``init --json``."""
    data: dict[str, Any] = cli.json("init")
    return data
