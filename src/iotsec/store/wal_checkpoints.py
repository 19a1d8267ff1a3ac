"""Checkpoints of a SQLite store's WAL by a thread of their own (ADR 0048).

In WAL mode a commit appends the pages it changed to the ``-wal`` file, and a checkpoint
copies them into the database file, syncing both. Left to SQLite, the checkpoint runs in
the connection whose commit took the WAL past ``wal_autocheckpoint`` pages (4,000: ADR
0042), inside that commit: a serving process's group commit then holds every request of
its group for the copy and the two syncs (the 99th percentile of EST enrolments was 41-57
ms with them and 30-37 ms without, docs/benchmarks.md section 32).

A serving process therefore copies the WAL as it grows, from a thread with a connection
of its own: every :data:`INTERVAL` seconds a ``PASSIVE`` checkpoint, which waits for no
reader or writer and copies what no reader still needs. Once it has copied every frame,
the next commit starts the WAL again from its beginning, so the WAL rarely reaches the
writers' own threshold; when it does (a long reader held frames back), their checkpoint
still runs as before, so the WAL stays bounded either way. Durability is unchanged: a
commit is in the WAL before it returns, as before; only when its pages reach the
database file changes. The driver lets other threads run while SQLite copies and syncs.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Final

from iotsec.errors import IotsecError
from iotsec.store.reader import connect_sqlite

__all__ = ["INTERVAL", "WalCheckpoints"]

#: Seconds between two checkpoints (one with nothing new to copy syncs nothing).
INTERVAL: Final = 0.1


class WalCheckpoints:
    """A thread that checkpoints the WAL of the SQLite store at ``path`` until closed."""

    def __init__(self, path: Path, *, interval: float = INTERVAL) -> None:
        self.path, self.interval = path, interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: Checkpoints run, and those that failed (a store that could not be reached: the
        #: next one tries again).
        self.runs = self.failures = 0
        #: The last one's answer: (1 if it could not finish, frames in the WAL, frames
        #: copied to the database file).
        self.last: tuple[int, int, int] | None = None

    def start(self) -> WalCheckpoints:
        self._thread = threading.Thread(target=self._run, name="iotsec-wal-checkpoints",
                                        daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            while not self._stop.wait(self.interval):
                try:
                    if conn is None:
                        conn = connect_sqlite(self.path)
                    row = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                except (sqlite3.Error, IotsecError):  # the writers' own checkpoints remain
                    self.failures += 1
                    if conn is not None:
                        conn.close()
                        conn = None
                    continue
                self.runs += 1
                self.last = None if row is None else (int(row[0]), int(row[1]), int(row[2]))
        finally:
            if conn is not None:
                conn.close()
