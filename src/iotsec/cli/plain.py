"""Output without Rich or pydantic: the one plain line a command reports with, and JSON for
scripts. :mod:`iotsec.cli.output` re-exports both; the commands that start without Typer
(:mod:`iotsec.cli.lean`) use them directly."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["note", "say", "write_json"]


def _printable(text: str) -> str:
    """``text`` with its control characters (a file name or a topic may hold an escape
    sequence) shown escaped."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def note(text: str) -> None:
    """One plain line on stderr, without Rich (a command whose start-up counts reports with
    this). Control characters are shown escaped."""
    sys.stderr.write(_printable(text) + "\n")
    sys.stderr.flush()


def say(text: str) -> None:
    """One plain line on stdout, without Rich, never wrapped (a command's one-line answer,
    read by people and scripts alike). Control characters are shown escaped."""
    sys.stdout.write(_printable(text) + "\n")


def write_json(data: Any, default: Callable[[Any], Any] | None = None) -> None:
    """Print ``data`` as JSON for scripts (``default`` serialises what JSON has no type for)."""
    sys.stdout.write(json.dumps(data, default=default, indent=2, sort_keys=True) + "\n")
