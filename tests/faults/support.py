"""Helpers for the fault tests: the real ``iotsec`` command in a process of its own.

The command runs from the source tree under test (not from whatever copy is installed), so
a process that is killed, or runs under a fake clock, exercises exactly this code.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import iotsec

#: The ``src`` directory the imported iotsec package comes from.
SOURCE_ROOT = Path(iotsec.__file__).resolve().parents[1]
RUN_CLI = "import sys; from iotsec.cli.main import main; sys.exit(main(sys.argv[1:]))"


def command_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of a command using ``home``: no IOTSEC_ setting inherited."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOTSEC_")}
    env.update(IOTSEC_HOME=str(home), PYTHONPATH=str(SOURCE_ROOT), **extra)
    return env


def run_cli(*args: str, env: Mapping[str, str], prefix: Sequence[str] = (),
            cwd: Path | None = None, code: str = RUN_CLI,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``iotsec ARGS`` in a new Python process (behind ``prefix``, e.g. ``faketime``);
    ``code`` replaces the program that runs it (to install a fault first)."""
    return subprocess.run([*prefix, sys.executable, "-c", code, *args], env=dict(env),
                          cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          check=False)


def assert_one_line(result: subprocess.CompletedProcess[str], code: int = 1) -> str:
    """The command ended with ``code`` and one ``iotsec: error:`` line on stderr, no
    traceback and no "internal error"; returns that line."""
    assert result.returncode == code, result
    assert "Traceback" not in result.stdout + result.stderr, result
    assert result.stderr.startswith("iotsec: error:"), result
    assert result.stderr.count("\n") == 1 and result.stderr.endswith("\n"), result
    assert "internal error" not in result.stderr, result
    return result.stderr.strip()
