"""Fixtures for the command-line tests: a fresh home per test, selected by IOTSEC_HOME."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.cli.support import Cli, use_home


@pytest.fixture
def cli_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A home that does not exist yet, selected through IOTSEC_HOME (SQLite store)."""
    return use_home(monkeypatch, tmp_path / "home", initialise=False)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], cli_home: Path) -> Cli:
    return Cli(capsys)


@pytest.fixture
def ready(cli: Cli) -> dict[str, Any]:
    """An initialised home; returns ``init --json``."""
    data: dict[str, Any] = cli.json("init", "--store-passphrase")
    return data


@pytest.fixture
def postgres_ready(cli: Cli, database_url: str, monkeypatch: pytest.MonkeyPatch
                   ) -> dict[str, Any]:
    """An initialised home whose store is PostgreSQL (a private schema, selected through
    IOTSEC_DATABASE_URL); returns ``init --json``. The test is marked
    ``@on_postgresql`` (tests.cli.support)."""
    monkeypatch.setenv("IOTSEC_DATABASE_URL", database_url)
    data: dict[str, Any] = cli.json("init", "--store-passphrase")
    return data
