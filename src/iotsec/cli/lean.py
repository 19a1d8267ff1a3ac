"""``iotsec data encrypt``, ``decrypt`` (ADR 0033), ``authz check`` (ADR 0050), ``cert
list`` and ``device show`` (ADR 0051) before Typer is imported.

Their whole-process time is a goal (docs/benchmarks.md), and importing Typer, pydantic and
SQLAlchemy alone would take several times what encrypting 50 MB takes, or most of what one
decision at a million devices may take. :func:`run` reads the command line with
:func:`iotsec.cli.spec.parse` (the interface the Typer commands declare), opens the home
with :func:`iotsec.app.direct_home.open_direct_home` (the data commands) or its store with
:func:`iotsec.app.direct_store.open_direct_store` (the decision, the reads), and calls the same
services as the Typer commands (``encrypt_file_direct``, ``decrypt_file_direct``; the
decision of :mod:`iotsec.app.access.decide`; the reads and reports of
:mod:`iotsec.cli.identity_spec`) and the same report. Whenever one of them
declines (a command line it does not fully understand, a home that needs the full
runtime), :func:`run` returns None before anything was written, and the Typer command runs
instead.

Errors are left to :func:`iotsec.cli.main.main`, as the Typer command leaves them; what
Typer's own main loop does around a command is done here too: an interrupt exits 130
silently, an end of input ends with "Aborted!" (exit 1), and a closed standard output
(EPIPE) exits 1 without a message.
"""

from __future__ import annotations

import errno
import sys
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any, Protocol, TypeVar

from iotsec.cli.spec import CommandSpec, parse

if TYPE_CHECKING:
    from iotsec.app.direct_home import DirectHome
    from iotsec.app.reads import DirectReads
    from iotsec.protect.atrest import StreamInfo

__all__ = ["commands", "run"]


class _Closable(Protocol):
    def close(self) -> None: ...


_C = TypeVar("_C", bound=_Closable)
_R = TypeVar("_R")


def _closing(opened: _C | None, work: Callable[[_C], _R]) -> _R | None:
    """What ``work`` returns on ``opened``, closed afterwards; or None when nothing was
    opened (the home needs the runtime: the command runs through Typer, nothing done)."""
    if opened is None:
        return None
    try:
        return work(opened)
    finally:
        opened.close()


def _on_direct_home(work: Callable[[DirectHome], StreamInfo]) -> StreamInfo | None:
    """What ``work`` returns on the home opened without the runtime, or None when the
    command must run through Typer (nothing was done then)."""
    from iotsec.app.direct_home import open_direct_home

    return _closing(open_direct_home(), work)


def _encrypt(values: dict[str, Any]) -> int | None:
    # Deferred here and below: each command imports only what it runs with.
    from iotsec.cli.data_spec import parse_size, report_encrypted

    # Checked first, as the Typer command checks it: before the home is opened.
    chunk_size = parse_size(values["chunk_size"])
    from iotsec.app import protect as service

    info = _on_direct_home(lambda home: service.encrypt_file_direct(
        home, values["source"], values["output"], chunk_size=chunk_size))
    if info is None:
        return None
    report_encrypted(info, values["output"], values["as_json"])
    return 0


def _decrypt(values: dict[str, Any]) -> int | None:
    from iotsec.app import protect as service
    from iotsec.cli.data_spec import report_decrypted

    info = _on_direct_home(lambda home: service.decrypt_file_direct(
        home, values["source"], values["output"]))
    if info is None:
        return None
    report_decrypted(info, values["output"], values["as_json"])
    return 0


def _authz_check(values: dict[str, Any]) -> int | None:
    from iotsec.access.quarantine import DEFAULT_TOPIC_PREFIX
    from iotsec.app.access.decide import decide_on_store
    from iotsec.app.direct_store import open_direct_store
    from iotsec.cli.access_spec import report_decision

    store = open_direct_store()
    if store is None:
        return None
    try:
        with store.reading() as reader:
            decision = decide_on_store(reader, values["device"], values["action"],
                                       values["resource"], values["cert_serial"],
                                       quarantine_topic=DEFAULT_TOPIC_PREFIX)
    finally:
        store.close()
    return report_decision(decision, values["as_json"])


def _on_direct_reads(work: Callable[[DirectReads], None]) -> int | None:
    """0 once ``work`` ran on the home's store opened on its driver, or None when the
    command must run through Typer (nothing was read then)."""
    from iotsec.app.reads import open_direct_reads

    def read(reads: DirectReads) -> int:
        work(reads)
        return 0
    return _closing(open_direct_reads(), read)


def _cert_list(values: dict[str, Any]) -> int | None:
    from iotsec.cli.identity_spec import expiry_window, list_certificates_of

    # Read first, as the Typer command reads it: before the store is opened.
    window = expiry_window(values["expiring_within"])
    return _on_direct_reads(lambda reads: list_certificates_of(
        reads, values["device"], window, values["limit"], values["as_json"]))


def _device_show(values: dict[str, Any]) -> int | None:
    from iotsec.cli.identity_spec import show_device

    return _on_direct_reads(lambda reads: show_device(reads, values["device_id"],
                                                      values["as_json"]))


def commands(group: str) -> tuple[tuple[CommandSpec, Callable[[dict[str, Any]], int | None]],
                                   ...]:
    """The commands of ``group`` (the first word after ``iotsec``) run here, each with its
    interface and what runs it (its exit code, or None when it is left to the Typer
    command). Only that group's interfaces are imported."""
    if group == "data":
        from iotsec.cli.data_spec import DECRYPT, ENCRYPT

        return ((ENCRYPT, _encrypt), (DECRYPT, _decrypt))
    if group == "authz":
        from iotsec.cli.access_spec import AUTHZ_CHECK

        return ((AUTHZ_CHECK, _authz_check),)
    if group == "cert":
        from iotsec.cli.identity_spec import CERT_LIST

        return ((CERT_LIST, _cert_list),)
    if group == "device":
        from iotsec.cli.identity_spec import DEVICE_SHOW

        return ((DEVICE_SHOW, _device_show),)
    return ()


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
    for spec, command in commands(args[0]) if args else ():
        if args[:len(spec.path)] != list(spec.path):
            continue
        values = parse(spec, args[len(spec.path):])
        if values is None:
            return None
        try:
            return command(values)
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
    return None
