"""Fixtures for the data-protection command-line tests: the two Typer apps mounted on a
fresh root app, run through iotsec's real error mapping (``iotsec.cli.main.main``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from iotsec.cli.data import data_app
from iotsec.cli.protect import payload_app
from tests.cli.support import Result, mount, use_home


@pytest.fixture
def protect_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An initialised home (SQLite) selected through IOTSEC_HOME."""
    return use_home(monkeypatch, tmp_path / "home")


Run = Callable[..., Result]


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch, capsysbinary: pytest.CaptureFixture[bytes]) -> Run:
    """``run(*args, stdin=b"...")``: ``iotsec payload|data ...`` as main() runs it."""
    return mount(monkeypatch, capsysbinary, payload=payload_app, data=data_app)
