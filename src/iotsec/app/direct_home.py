"""A home opened on the standard library alone, for the commands whose whole-process time is
a goal of their own (``iotsec data encrypt`` and ``decrypt``, ADR 0033).

:func:`open_direct_home` opens what :func:`iotsec.app.runtime.open_runtime` opens, with the
same checks, for the common kind of home that needs neither the settings model (pydantic)
nor SQLAlchemy: the embedded SQLite store, keys in files, and the generated home secret
(whose KEK files unlock with HKDF, ADR 0030). It returns None, having written nothing, for
any other home and whenever one of those checks does not pass, so that the caller runs the
command through the full runtime, which then does exactly what it always did (the error it
reports included). That is the case with:

- any ``IOTSEC_`` variable but ``IOTSEC_HOME`` (and ``IOTSEC_DEBUG``, which is no setting)
  in the environment: settings are validated by the settings model;
- a store in another database (the home's ``database.json``);
- a home that is not initialised, a store that cannot be read or is not migrated;
- a key store other than files (``keystore.json`` naming a token);
- a home secret that is a passphrase (its KEK files unlock with scrypt, slow on purpose),
  or that cannot be read;
- no active key-encryption key yet (the first one is made through the runtime).

The checks of the environment and of the home are shared with :mod:`iotsec.app.direct_store`.

A :class:`DirectHome` writes through :mod:`iotsec.store.writer`: the same units of work,
rows and event chain as the runtime's engine, on the connection that read the schema.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path

from iotsec.app.direct_store import (
    HOME,
    KEYS_DIR,
    PASSPHRASE_FILE,
    SQLITE_FILE,
    exists,
    file_keystore,
    home_dir,
    settings_given,
)
from iotsec.app.store_location import DATABASE_FILE
from iotsec.custody.home import KEK_DIR, read_passphrase_file
from iotsec.custody.home_secret import is_generated_secret
from iotsec.custody.keks import KekCustody, backend_of
from iotsec.errors import IotsecError
from iotsec.eventlog.event import Event, key_use_event
from iotsec.protect.kek import KeyWrapper
from iotsec.store.migrate import is_current_on
from iotsec.store.reader import connect_sqlite, read_transaction
from iotsec.store.writer import Writer, append_events, write_transaction

__all__ = ["DirectHome", "open_direct_home"]


def _utcnow() -> datetime:
    return datetime.now(UTC)


class DirectHome:
    """An open SQLite home with file KEKs: its store connection and its KEK custody."""

    # A plain class, as the other values of this path are named tuples: the
    # dataclasses module (and the inspect module it loads) is not imported by it.
    __slots__ = ("clock", "conn", "home", "keks", "sqlite_file")

    def __init__(self, home: Path, sqlite_file: Path, conn: sqlite3.Connection,
                 keks: KekCustody, clock: Callable[[], datetime] = _utcnow) -> None:
        self.home = home
        self.sqlite_file = sqlite_file
        self.conn = conn
        self.keks = keks
        self.clock = clock

    def __repr__(self) -> str:
        return f"DirectHome({str(self.home)!r})"

    def now(self) -> datetime:
        return self.clock()

    def unit(self) -> AbstractContextManager[Writer]:
        """One unit of work on the store (:func:`iotsec.store.writer.write_transaction`)."""
        return write_transaction(self.conn, sqlite_file=self.sqlite_file)

    def append(self, writer: Writer, events: list[Event]) -> None:
        """Append ``events`` to the event chain within ``writer``'s unit of work."""
        append_events(writer, [event.row() for event in events])

    def record(self, event: Event) -> None:
        """Record ``event`` in a unit of work of its own (as the CLI's event sink does)."""
        with self.unit() as writer:
            self.append(writer, [event])

    def recorded_keks(self) -> _RecordedKeks:
        """The KEKs, each unwrap recorded as a ``key.use`` event (as
        :class:`iotsec.app.custody.keys.RecordedKeks` records it)."""
        return _RecordedKeks(self)

    def close(self) -> None:
        self.conn.close()


class _RecordedKeks:
    """A :class:`~iotsec.protect.kek.KekResolver` over a direct home's KEKs."""

    def __init__(self, home: DirectHome) -> None:
        self._home = home

    def kek(self, key_id: str) -> KeyWrapper:
        # Deferred: only decryption unwraps through the recorded KEKs, and encryption
        # starts without the custody's base module.
        from iotsec.custody.base import RecordedKek

        home, backend = self._home, backend_of(key_id)

        def record(label: str, operation: str) -> None:
            home.record(key_use_event(home.now(), label, operation, backend))
        return RecordedKek(home.keks.kek(key_id), record)


def _connected(sqlite_file: Path) -> sqlite3.Connection | None:
    """A connection to a migrated store, or None."""
    try:
        conn = connect_sqlite(sqlite_file)
    except IotsecError:
        return None
    try:
        with read_transaction(conn, pyformat=False, errors=sqlite3.Error,
                              sqlite_file=sqlite_file) as reader:
            if is_current_on(reader, sqlite=True):
                return conn
    except IotsecError:
        pass
    conn.close()
    return None


def _file_keks(home: Path) -> KekCustody | None:
    """The home's KEK custody when it is unlocked by the generated home secret and has an
    active file KEK, else None."""
    try:
        secret = read_passphrase_file(home / PASSPHRASE_FILE)
        if secret is None or not is_generated_secret(secret):
            return None
        keks = KekCustody(home / KEYS_DIR / KEK_DIR, secret)
        active = keks.active_id()
    except (IotsecError, OSError):
        return None
    if active is None or backend_of(active) != "file":
        return None
    return keks


def open_direct_home(environ: Mapping[str, str] | None = None) -> DirectHome | None:
    """The home of ``environ`` (default: this process's) opened without the settings model
    or SQLAlchemy, or None when the command must run through the full runtime (see the
    module's notes). Close it when done."""
    given = settings_given(os.environ if environ is None else environ, frozenset({HOME}))
    home = None if given is None else home_dir(given)
    if home is None or exists(home / DATABASE_FILE) is not False or not file_keystore(home):
        return None
    sqlite_file = home / SQLITE_FILE
    if exists(sqlite_file) is not True:
        return None
    keks = _file_keks(home)
    if keks is None:
        return None
    conn = _connected(sqlite_file)
    if conn is None:
        return None
    return DirectHome(home, sqlite_file, conn, keks)

