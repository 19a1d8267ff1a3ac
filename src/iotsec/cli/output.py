"""Rendering for the CLI: Rich tables for people, ``--json`` for scripts, files written safely."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from iotsec.errors import InputTooLargeError, InvalidInputError, IotsecError, NotFoundError

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, tuple | set | frozenset):
        return list(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def print_error(exc: IotsecError) -> None:
    """The one line on stderr a refused command ends with: what was wrong, then the hint."""
    hint = f" ({exc.hint})" if exc.hint else ""
    err_console.print(f"iotsec: error: {exc}{hint}", markup=False, soft_wrap=True)


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, default=_default, indent=2, sort_keys=True) + "\n")


def table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    t = Table(title=title, show_lines=False, header_style="bold")
    for col in columns:
        t.add_column(col, overflow="fold")
    for row in rows:
        t.add_row(*("" if v is None else str(v) for v in row))
    console.print(t)


def when(moment: datetime | None) -> str:
    return "" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%SZ")


def read_input(path: str, limit: int, what: str) -> bytes:
    """Read a file (or ``-`` for standard input), refusing more than ``limit`` bytes
    before reading it all."""
    if path == "-":
        data = sys.stdin.buffer.read(limit + 1)
    else:
        p = Path(path)
        try:
            if p.stat().st_size > limit:
                raise InputTooLargeError(f"{what} {path} is {p.stat().st_size} bytes; "
                                         f"the limit is {limit}")
            with p.open("rb") as fh:
                data = fh.read(limit + 1)
        except FileNotFoundError:
            raise NotFoundError(f"{what} {path} does not exist",
                                hint="check the path") from None
        except IsADirectoryError:
            raise InvalidInputError(f"{what} {path} is a directory",
                                    hint="give a file") from None
    if len(data) > limit:
        raise InputTooLargeError(f"{what} is larger than {limit} bytes")
    return data


def write_output(path: str | None, data: bytes, *, private: bool = False) -> None:
    """Write to ``path`` atomically (a private file is never overwritten; a public one is
    replaced whole, so a reader never sees half of it) or to standard output."""
    if path is None or path == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    from iotsec.filesystem import atomic_write, write_private_file

    target = Path(path)
    if private:
        write_private_file(target, data)
        return
    if target.exists() and target.is_dir():
        raise InvalidInputError(f"{path} is a directory", hint="give a file name with -o")
    atomic_write(target, data, dir_mode=0o755)
