"""``iotsec data encrypt`` and ``decrypt`` before Typer is imported (ADR 0033).

Their whole-process time is a goal (docs/benchmarks.md), and importing Typer, pydantic and
SQLAlchemy alone would take several times what encrypting 50 MB takes. :func:`run` reads the
command line with :func:`iotsec.cli.data_spec.parse` (the interface the Typer commands
declare), opens the home with :func:`iotsec.app.direct_home.open_direct_home`, and calls
the same services as the Typer commands (``encrypt_file_direct``, ``decrypt_file_direct``)
and the same report. Whenever either declines (a command line it does not fully understand,
a home that needs the full runtime), :func:`run` returns None before anything was written,
and the Typer command runs instead.

Errors are left to :func:`iotsec.cli.main.main`, as the Typer command leaves them; what
Typer's own main loop does around a command is done here too: an interrupt exits 130
silently, an end of input ends with "Aborted!" (exit 1), and a closed standard output
(EPIPE) exits 1 without a message.
"""

from __future__ import annotations

import errno
import sys
from collections.abc import Callable
from typing import IO, Any

from iotsec.app import protect as service
from iotsec.app.direct_home import DirectHome, open_direct_home
from iotsec.cli.data_spec import (
    DECRYPT,
    ENCRYPT,
    CommandSpec,
    parse,
    parse_size,
    report_decrypted,
    report_encrypted,
)

__all__ = ["COMMANDS", "run"]


def _encrypt(home: DirectHome, values: dict[str, Any]) -> None:
    info = service.encrypt_file_direct(home, values["source"], values["output"],
                                       chunk_size=values["chunk_size"])
    report_encrypted(info, values["output"], values["as_json"])


def _decrypt(home: DirectHome, values: dict[str, Any]) -> None:
    info = service.decrypt_file_direct(home, values["source"], values["output"])
    report_decrypted(info, values["output"], values["as_json"])


#: The commands run here, each with its interface and what runs it.
COMMANDS: tuple[tuple[CommandSpec, Callable[[DirectHome, dict[str, Any]], None]], ...] = (
    (ENCRYPT, _encrypt),
    (DECRYPT, _decrypt),
)


class _Pacified:
    """A stream whose flush ignores a closed pipe (as click wraps standard output and error
    after EPIPE, so that the interpreter's last flush does not report it again)."""

    def __init__(self, wrapped: IO[Any]) -> None:
        self.wrapped = wrapped

    def flush(self) -> None:
        try:
            self.wrapped.flush()
        except OSError as exc:
            if exc.errno != errno.EPIPE:
                raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self.wrapped, name)


def run(args: list[str]) -> int | None:
    """The exit code of the command line ``args`` (without the program name), or None
    when it is left to the Typer app."""
    for spec, command in COMMANDS:
        if args[:len(spec.path)] != list(spec.path):
            continue
        values = parse(spec, args[len(spec.path):])
        if values is None:
            return None
        if "chunk_size" in values:
            # Checked first, as the Typer command checks it: before the home is opened.
            values["chunk_size"] = parse_size(values["chunk_size"])
        home = open_direct_home()
        if home is None:
            return None
        try:
            command(home, values)
        except KeyboardInterrupt:
            return 130
        except EOFError:
            sys.stderr.write("\nAborted!\n")
            return 1
        except OSError as exc:
            if exc.errno != errno.EPIPE:
                raise
            sys.stdout = _Pacified(sys.stdout)
            sys.stderr = _Pacified(sys.stderr)
            return 1
        finally:
            home.close()
        return 0
    return None
