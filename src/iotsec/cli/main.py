"""Entry point: the one place where errors become exit codes.

The command line is the Typer app of :mod:`iotsec.cli.root`, imported when a command runs.
The commands whose whole-process time is a goal of their own, ``iotsec data encrypt`` and
``decrypt`` (ADR 0033), ``iotsec authz check`` (ADR 0050), ``cert list`` and ``device show``
(ADR 0051), are first offered to
:mod:`iotsec.cli.lean`, which runs them without Typer, pydantic or SQLAlchemy when it
understands the whole command line and the home, and otherwise leaves them to the Typer
app: either way they do the same work, print the same and exit with the same code. This
module imports neither Typer nor any command.
"""

from __future__ import annotations

import atexit
import gc
import os
import sys
from typing import TYPE_CHECKING

from iotsec.errors import IotsecError

if TYPE_CHECKING:
    import typer

__all__ = ["main"]


#: The Typer app :func:`main` runs instead of the root command of :mod:`iotsec.cli.root`,
#: when one is set here (the tests mount a few command groups this way).
app: typer.Typer | None = None


def _app() -> typer.Typer:
    """The Typer app to run: the one set in :data:`app`, else the root command."""
    if app is not None:
        return app
    from iotsec.cli.root import app as root_app

    return root_app


def _lean(args: list[str]) -> int | None:
    """The exit code of ``args`` run by :mod:`iotsec.cli.lean`, or None when it leaves
    them to the Typer app."""
    if args[:1] not in (["data"], ["authz"], ["cert"], ["device"]):
        return None
    # The cyclic garbage collector is paused while the command's modules load and it runs:
    # loading them allocates many objects that live until the process ends, and scanning
    # them again and again took a few milliseconds of a command that takes tens. The
    # command itself makes no garbage that reference counting would not free.
    gc.disable()
    try:
        from iotsec.cli.lean import run  # deferred: only these commands need it

        return run(args)
    finally:
        gc.enable()


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; refused operations exit 1 with one line on stderr, usage errors 2.

    Run as the ``iotsec`` program (no ``argv``: the arguments are the process's), the
    process then ends at once (:func:`_end_process`); given ``argv``, the exit code is
    returned."""
    code = _run(argv)
    if argv is None:
        _end_process(code)
    return code


def _end_process(code: int) -> None:
    """End the process with ``code`` without tearing the interpreter down: freeing every
    object and module of a command one by one takes longer than many commands themselves.
    What an exit must still do is done first: the ``atexit`` functions, and the standard
    streams flushed. Returns (the process then exits the usual way) while a thread that
    Python would wait for is still running, or when a stream cannot be flushed (Python
    reports that at exit)."""
    # Threads Python waits for at exit are made by the threading module: a command that
    # never imported it (``data encrypt`` does not) has none, and need not import it to know.
    threading = sys.modules.get("threading")
    if threading is not None:
        main_thread = threading.main_thread()
        if any(t is not main_thread and not t.daemon for t in threading.enumerate()):
            return
    try:
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
    except (OSError, ValueError):
        return
    atexit._run_exitfuncs()
    try:
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
    except (OSError, ValueError):
        code = code or 120  # as Python's own exit when it cannot flush standard output
    os._exit(code)


def _run(argv: list[str] | None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        code = _lean(args)
        if code is not None:
            return code
        # Standalone mode: Typer reports usage errors itself (exit 2) and raises SystemExit.
        _app()(args=args, prog_name="iotsec")
    except SystemExit as exc:
        status = exc.code
        return status if isinstance(status, int) else (0 if status is None else 1)
    except IotsecError as exc:
        from iotsec.cli.output import print_error  # deferred: Rich, for errors only

        print_error(exc)
        return 1
    except OSError as exc:
        # A full disk, a read-only file system, a file where a directory is needed: the
        # system refused, which is no bug of iotsec's. Translated here once for every command.
        from iotsec.cli.output import print_error
        from iotsec.filesystem import os_error

        print_error(os_error(exc))
        return 1
    except KeyboardInterrupt:
        from iotsec.cli.output import err_console

        err_console.print("iotsec: interrupted", markup=False)
        return 130
    except Exception as exc:
        if os.environ.get("IOTSEC_DEBUG"):
            raise
        from iotsec.cli.output import err_console

        err_console.print(f"iotsec: internal error: {type(exc).__name__}: {exc} "
                          "(this is a bug; run again with IOTSEC_DEBUG=1 for details)",
                          markup=False, soft_wrap=True)
        return 1
    return 0
