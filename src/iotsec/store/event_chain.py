"""Appending security events to the hash chain: the statements, as SQL text that SQLite
and PostgreSQL both run, and the linking of new rows to the chain's head.

Two paths append with them, to one order:

- a unit of work, on its own connection and inside its own transaction
  (:func:`iotsec.app.events.append_events`, through :class:`~iotsec.store.direct.Direct`);
- a command that has read the home's SQLite file on the standard library's driver
  (:mod:`iotsec.store.reader`) and then records what it did (``iotsec scan``'s
  ``scan.run``): :func:`append_on_sqlite`, in a write transaction of its own on that
  connection, so that such a command never imports SQLAlchemy.

Both read the head and insert after it while they hold the chain: SQLite's write lock
(``BEGIN IMMEDIATE``, which the engine's units of work take as well), or on PostgreSQL the
advisory lock :data:`CHAIN_LOCK`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from iotsec.errors import ConflictError
from iotsec.eventlog.chain import GENESIS, entry_hash
from iotsec.store.failures import UNIT_FAILURE, driver_failure

__all__ = ["CHAIN_LOCK", "HEAD", "INSERT", "LOCK", "append_on_sqlite", "link"]

#: The PostgreSQL advisory lock that orders appends to the chain ("iotsec" + 1).
CHAIN_LOCK: Final = 0x696F7473656301
#: Wait for the right to append (PostgreSQL; held until the transaction ends).
LOCK: Final = "SELECT pg_advisory_xact_lock(:key)"
#: The position and hash of the chain's last entry (no row: the chain is empty).
HEAD: Final = ("SELECT seq, hash FROM events WHERE seq IS NOT NULL "
               "ORDER BY seq DESC LIMIT 1")
#: One event row (:meth:`iotsec.eventlog.event.Event.row` with ``seq`` and ``hash``).
INSERT: Final = ("INSERT INTO events (at, kind, outcome, actor, source, subject, detail, "
                 "seq, hash) VALUES (:at, :kind, :outcome, :actor, :source, :subject, "
                 ":detail, :seq, :hash)")


def link(head: tuple[int, str] | None, rows: Sequence[dict[str, Any]]) -> None:
    """Give each of ``rows`` its place after ``head`` (the chain's last ``seq`` and
    ``hash``; None when it is empty) and its hash, in order."""
    seq, previous = (0, GENESIS) if head is None else head
    for row in rows:
        seq += 1
        previous = entry_hash(previous, seq, row["at"], row["kind"], row["outcome"],
                              row["actor"], row["source"], row["subject"], row["detail"])
        row["seq"], row["hash"] = seq, previous


def append_on_sqlite(conn: sqlite3.Connection, rows: Sequence[dict[str, Any]], *,
                     sqlite_file: Path | None = None) -> None:
    """Append ``rows`` (event rows without ``seq`` and ``hash``) to the chain in one write
    transaction of their own on ``conn``, a connection in autocommit mode
    (:func:`iotsec.store.reader.connect_sqlite`) with no transaction open. All of them are
    committed, or none. A driver error becomes the same error as in a unit of work: a
    :class:`~iotsec.errors.StoreError` that names a full disk, a read-only or corrupt
    database, or a :class:`~iotsec.errors.ConflictError`."""
    if not rows:
        return
    try:
        conn.execute("BEGIN IMMEDIATE")  # the write lock first: the head cannot move
        try:
            found = conn.execute(HEAD).fetchone()
            link(None if found is None else (int(found[0]), str(found[1])), rows)
            conn.executemany(INSERT, rows)
            conn.execute("COMMIT")
        except BaseException:
            # SQLite ends the transaction itself on some errors (a full disk): a ROLLBACK
            # then would fail and hide the error that counts.
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    except sqlite3.IntegrityError as exc:
        message, hint = UNIT_FAILURE["conflict"]
        raise ConflictError(message, hint=hint) from exc
    except sqlite3.Error as exc:
        message, hint = UNIT_FAILURE["refused"]
        raise driver_failure(exc, message, hint, sqlite_file=sqlite_file) from exc
