"""Rendering for the CLI: Rich tables for people, ``--json`` for scripts, files written safely."""

from __future__ import annotations

import builtins
import os
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, cast, overload

from iotsec.cli.plain import note, write_json
from iotsec.errors import InputTooLargeError, InvalidInputError, IotsecError, NotFoundError
from iotsec.filesystem import DEFAULT_DIR_MODE, atomic_write, write_private_file

__all__ = [
    "IDENTIFIER_COLUMNS", "console", "emit_json", "err_console", "note", "plural", "print_error",
    "read_input", "rich_console", "secret_input", "table", "when", "write_output"
]

if TYPE_CHECKING:
    from rich.console import Console


class _OnFirstUse:
    """A Rich console made when first used: ``--json`` output and plain tables need none,
    and importing Rich is a noticeable part of a command's start-up. Its methods are the
    console's; Rich objects that take a console are given :func:`rich_console`."""

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._console: Console | None = None

    def made(self) -> Console:
        if self._console is None:
            from rich.console import Console

            self._console = Console(**self._options)
        return self._console

    def __getattr__(self, name: str) -> Any:
        return getattr(self.made(), name)

    @property
    def is_terminal(self) -> bool:
        """Whether the console writes to a terminal, as Rich's ``Console.is_terminal``
        decides it, without making the console (and importing Rich) when it was not made
        yet: a table to a pipe is written plainly, with no Rich at all."""
        if self._console is not None or "get_ipython" in vars(builtins):
            return self.made().is_terminal  # Rich's own answer (it knows notebooks)
        # Rich's rules for a console without force_terminal or a file of its own: IDLE is
        # no terminal; TTY_COMPATIBLE=0/1 and FORCE_COLOR decide; else the stream's isatty.
        if getattr(sys.stdin, "__module__", "").startswith("idlelib"):
            return False
        compatible = os.environ.get("TTY_COMPATIBLE", "")
        if compatible in ("0", "1"):
            return compatible == "1"
        force = os.environ.get("FORCE_COLOR")
        if force is not None:
            return force != ""
        stream = sys.stderr if self._options.get("stderr") else sys.stdout
        stream = getattr(stream, "rich_proxied_file", stream)
        isatty = getattr(stream, "isatty", None)
        try:
            return False if isatty is None else bool(isatty())
        except ValueError:  # a closed stream
            return False


console = cast("Console", _OnFirstUse(highlight=False))
err_console = cast("Console", _OnFirstUse(stderr=True, highlight=False))


def rich_console(which: Console) -> Console:
    """The Rich console behind :data:`console` or :data:`err_console` (made now if need
    be), for a Rich object that takes one (a table's measure, a progress bar)."""
    return which.made() if isinstance(which, _OnFirstUse) else which


def _default(value: Any) -> Any:
    from pydantic import BaseModel  # deferred: a command that prints no model needs none

    if isinstance(value, BaseModel):
        # A wire model (iotsec.app.wire): the very JSON the API sends for it.
        return value.model_dump(mode="json")
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
    """Print ``data`` as JSON for scripts: a wire model, a list of them, or plain JSON."""
    write_json(data, _default)


#: Columns that hold identifiers: never wrapped, never cut (a serial or a device id cut in two
#: is a wrong id). Other columns fold when the terminal is narrow.
IDENTIFIER_COLUMNS: Final = frozenset({
    "id", "serial", "device", "label", "role", "rule", "key", "kid", "code", "provision",
    "framework", "host", "target", "location", "product", "release", "name", "subject",
    "actor", "source", "group", "role name",
})


def plural(count: int, word: str, many: str | None = None) -> str:
    """``1 device``, ``2 devices`` (``many`` for irregular plurals)."""
    return f"{count} {word if count == 1 else many or word + 's'}"


def _cell(value: Any) -> str:
    return "" if value is None else str(value)


def table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]], *,
          ids: Sequence[str] = ()) -> None:
    """Rows for people: a Rich table on a terminal, plain aligned columns otherwise (for
    ``grep``, ``awk`` and logs). Identifier columns (:data:`IDENTIFIER_COLUMNS`, or
    ``ids``) are shown whole in both."""
    cells = [[_cell(v) for v in row] for row in rows]
    if not console.is_terminal:
        _plain(title, columns, cells)
        return
    out = rich_console(console)
    from rich.measure import Measurement
    from rich.table import Table

    whole = IDENTIFIER_COLUMNS.union(ids)
    t = Table(title=title, show_lines=False, header_style="bold")
    for i, col in enumerate(columns):
        if col in whole:
            width = max([len(col), *(len(r[i]) for r in cells if i < len(r))])
            t.add_column(col, no_wrap=True, overflow="ignore", min_width=width)
        else:
            t.add_column(col, overflow="fold")
    for row in cells:
        t.add_row(*row)
    # When the identifiers alone are wider than the terminal, render wider and let the
    # terminal wrap the lines: a wrapped line still holds the whole identifier, a cropped
    # one does not.
    needed = Measurement.get(out, out.options, t).minimum
    out.print(t, width=max(out.width, needed), crop=False)


def _plain(title: str | None, columns: Sequence[str], cells: Sequence[Sequence[str]]) -> None:
    # The title on its own line (it can carry a warning: "not verified"), then one line per
    # row, columns two spaces apart; a cell's own line breaks become spaces so a row stays
    # one line. No borders, colours or wrapping: the output is for programs as much as for
    # people (--json is the stable form).
    flat = [[" ".join(c.split()) for c in row] for row in cells]
    widths = [max([len(col), *(len(r[i]) for r in flat if i < len(r))])
              for i, col in enumerate(columns)]
    lines = [columns, *flat]
    out = sys.stdout
    if title:
        out.write(f"{title}\n")
    for line in lines:
        out.write("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=False)).rstrip()
                  + "\n")


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


#: The largest passphrase file read.
MAX_SECRET_FILE = 4096


@overload
def secret_input(env: str, path: Path | None, what: str) -> bytes: ...


@overload
def secret_input(env: str, path: Path | None, what: str, *, required: bool) -> bytes | None: ...


def secret_input(env: str, path: Path | None, what: str, *, required: bool = True
                 ) -> bytes | None:
    """A passphrase from a file (its first line) or the environment variable ``env``, never
    from an argument (it would show in the process list and the shell history); ``None``
    when neither is given and not ``required``."""
    if path is not None:
        lines = read_input(str(path), MAX_SECRET_FILE, "passphrase file").splitlines()
        value = lines[0].strip() if lines else b""
    else:
        value = os.environ.get(env, "").encode("utf-8")
    if not value:
        if not required:
            return None
        raise InvalidInputError(f"no {what} was given",
                                hint=f"set {env}, or give a passphrase file")
    return value


def write_output(path: str | None, data: bytes, *, private: bool = False) -> None:
    """Write to ``path`` atomically (a private file is never overwritten; a public one is
    replaced whole, so a reader never sees half of it) or to standard output."""
    if path is None or path == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    target = Path(path)
    if private:
        write_private_file(target, data)
        return
    if target.exists() and target.is_dir():
        raise InvalidInputError(f"{path} is a directory", hint="give a file name with -o")
    atomic_write(target, data, mode=0o644, dir_mode=DEFAULT_DIR_MODE)
