"""Helpers shared by the command-line tests: run ``iotsec`` in-process and check results."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from iotsec.cli.main import main

TOKEN = re.compile(r"iotsec_[0-9a-f]{16}_[A-Za-z0-9_-]{43}")
CONSOLE_SCRIPT = Path(sys.executable).with_name("iotsec")


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


class Cli:
    """Runs ``iotsec ARGS`` in this process, capturing what it prints."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self._capsys = capsys

    def __call__(self, *args: str) -> Result:
        self._capsys.readouterr()
        code = main(list(args))
        captured = self._capsys.readouterr()
        return Result(code, captured.out, captured.err)

    def ok(self, *args: str) -> Result:
        result = self(*args)
        assert result.code == 0, (args, result)
        assert "Traceback" not in result.out + result.err
        return result

    def json(self, *args: str) -> Any:
        return self.ok(*args, "--json").json()

    def refused(self, *args: str) -> str:
        """Assert ``iotsec ARGS`` is refused: exit 1, one 'iotsec: error:' line on stderr."""
        result = self(*args)
        assert_refused(result)
        return result.err.strip()

    def store(self) -> tuple[Any, Any]:
        """What the store holds, as the CLI shows it."""
        return (self.json("device", "list", "--limit", "10000"),
                self.json("cert", "list", "--limit", "100000"))


def assert_refused(result: Result) -> None:
    assert result.code == 1, result
    assert "Traceback" not in result.out + result.err, result
    assert result.err.startswith("iotsec: error:"), result
    assert result.err.endswith("\n") and result.err.count("\n") == 1, result
    assert "internal error" not in result.err, result


def run_script(*args: str, env: dict[str, str], cwd: Path | None = None,
               timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the installed ``iotsec`` console script."""
    return subprocess.run([str(CONSOLE_SCRIPT), *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, check=False)
