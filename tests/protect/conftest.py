"""Fixtures for the data-protection command-line tests: the two Typer apps mounted on a
fresh root app, run through iotsec's real error mapping (``iotsec.cli.main.main``)."""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import typer

from iotsec.app.setup import init_home
from iotsec.cli import main as cli_main
from iotsec.cli.protect import data_app, payload_app
from iotsec.config import Settings
from tests.cli.support import Result


@pytest.fixture
def protect_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An initialised home (SQLite) selected through IOTSEC_HOME."""
    for name in [n for n in os.environ if n.startswith("IOTSEC_")]:
        monkeypatch.delenv(name)
    home = tmp_path / "home"
    init_home(Settings(home=home))
    monkeypatch.setenv("IOTSEC_HOME", str(home))
    monkeypatch.chdir(tmp_path)
    return home


Run = Callable[..., Result]


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch, capsysbinary: pytest.CaptureFixture[bytes]) -> Run:
    """``run(*args, stdin=b"...")``: ``iotsec payload|data ...`` as main() runs it."""
    root = typer.Typer(add_completion=False, pretty_exceptions_enable=False,
                       rich_markup_mode=None)
    root.add_typer(payload_app, name="payload")
    root.add_typer(data_app, name="data")

    @root.callback()
    def _root() -> None:
        """iotsec (test mount)."""

    monkeypatch.setattr(cli_main, "app", root)

    def invoke(*args: str, stdin: bytes = b"") -> Result:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
        capsysbinary.readouterr()
        code = cli_main.main(list(args))
        out, err = capsysbinary.readouterr()
        # surrogateescape keeps binary output recoverable: result.out.encode(same).
        return Result(code, out.decode("utf-8", "surrogateescape"),
                      err.decode("utf-8", "replace"))

    return invoke
