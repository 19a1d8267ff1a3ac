"""Units of work on the standard library's ``sqlite3``, for the commands that run without
SQLAlchemy (``iotsec data encrypt`` and ``decrypt``, ADR 0033).

:func:`write_transaction` is :func:`iotsec.store.db.transaction` on a connection made by
:func:`iotsec.store.reader.connect_sqlite` (which has every pragma the engine's connections
have): ``BEGIN IMMEDIATE`` takes the write lock up front, as the engine's begin hook does;
all of the block commits or none of it does; and a driver error becomes the same error the
unit of work gives (:func:`iotsec.store.failures.unit_failure`): a full disk, a read-only
or corrupt database are named as such, an unexpected unique violation is a conflict.

:func:`append_events` appends to the event chain as :func:`iotsec.app.events.append_events`
does on SQLite, whose write lock (held since ``BEGIN IMMEDIATE``) orders every process's
appends: the head is read and the rows are chained (:func:`iotsec.eventlog.chain.link_rows`)
and inserted inside the caller's transaction.

Statements are SQL text with ``:name`` parameters, as for :class:`~iotsec.store.reader.Reader`;
a column renamed by a migration must be renamed here too (the tests of these paths compare
their rows with the engine's).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from iotsec.errors import IotsecError
from iotsec.eventlog.entries import GENESIS, link_rows
from iotsec.store import event_chain
from iotsec.store.failures import unit_failure
from iotsec.store.reader import Reader

__all__ = ["Writer", "append_events", "write_transaction"]



class Writer(Reader):
    """Runs statements on one ``sqlite3`` connection inside :func:`write_transaction`."""

    __slots__ = ()

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        """Run one statement with ``params``."""
        self._conn.execute(sql, params or {})

    def execute_many(self, sql: str, rows: list[dict[str, Any]]) -> None:
        """Run one statement once per mapping of ``rows`` (one driver call)."""
        self._conn.executemany(sql, rows)


def _rollback(conn: sqlite3.Connection) -> None:
    # SQLite ends the transaction itself after some errors (a full disk): then there is
    # nothing left to roll back, and the original error is the one to report.
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


@contextmanager
def write_transaction(conn: sqlite3.Connection, *, sqlite_file: Path) -> Iterator[Writer]:
    """One unit of work on ``conn`` (a connection of :func:`~iotsec.store.reader.
    connect_sqlite` to ``sqlite_file``): committed when the block ends, rolled back if it
    raises."""
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield Writer(conn, pyformat=False)
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise
    except IotsecError:
        raise
    except sqlite3.Error as exc:
        raise unit_failure(exc, integrity=isinstance(exc, sqlite3.IntegrityError),
                           sqlite_file=sqlite_file) from exc


def append_events(writer: Writer, rows: list[dict[str, Any]]) -> None:
    """Append ``rows`` (:meth:`iotsec.eventlog.event.Event.row` values) to the event chain
    within ``writer``'s transaction."""
    if not rows:
        return
    head = writer.first(event_chain.HEAD)
    seq, previous = (0, GENESIS) if head is None else (int(head.seq), str(head.hash))
    link_rows(rows, seq, previous)
    writer.execute_many(event_chain.INSERT, rows)
