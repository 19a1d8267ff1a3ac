"""Appending security events to the hash chain: the statements, as SQL text that SQLite
and PostgreSQL both run (the rows are linked by :func:`iotsec.eventlog.entries.link_rows`).

Two paths append with them, to one order:

- a unit of work, on its own connection and inside its own transaction
  (:func:`iotsec.app.events.append_events`, through :class:`~iotsec.store.direct.Direct`);
- a command that runs without SQLAlchemy on the home's SQLite file (``iotsec data
  encrypt``, ``iotsec scan``'s ``scan.run``): :func:`iotsec.store.writer.append_events`, in
  a write transaction on the standard library's driver (:func:`iotsec.store.writer.
  write_transaction`).

Both read the head and insert after it while they hold the chain: SQLite's write lock
(``BEGIN IMMEDIATE``, which the engine's units of work take as well), or on PostgreSQL the
advisory lock :data:`CHAIN_LOCK`.
"""

from __future__ import annotations

from typing import Final

__all__ = ["CHAIN_LOCK", "HEAD", "INSERT", "LOCK"]

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
