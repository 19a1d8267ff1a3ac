"""The WAL of a SQLite store checkpointed by a thread of its own
(``iotsec.store.wal_checkpoints``, ADR 0048): it copies the WAL while a writer commits, so
that the WAL starts again from its beginning before the writers' own checkpoint is due; a
store it cannot reach is tried again; a serving runtime runs one on SQLite only and stops
it when it closes."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from iotsec.app.runtime import open_runtime
from iotsec.store.reader import connect_sqlite
from iotsec.store.wal_checkpoints import WalCheckpoints

NAME = "iotsec-wal-checkpoints"


def _store(path: Path) -> sqlite3.Connection:
    setup = sqlite3.connect(path)
    setup.execute("PRAGMA journal_mode=WAL")
    setup.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)")
    setup.close()
    return connect_sqlite(path)


def _commit(conn: sqlite3.Connection, rows: int = 1) -> None:
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany("INSERT INTO t (v) VALUES (randomblob(3000))", [()] * rows)
    conn.execute("COMMIT")


def _running() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == NAME]


def test_the_wal_is_copied_while_a_writer_commits_and_starts_again(tmp_path):
    path = tmp_path / "store.db"
    writer = _store(path)
    # The writer never checkpoints itself: without the thread its WAL would hold every page
    # it wrote, more than the writers' own threshold.
    writer.execute("PRAGMA wal_autocheckpoint=0")
    checkpoints = WalCheckpoints(path, interval=0.02).start()
    try:
        seen, restarts = 0, 0
        for _ in range(400):
            _commit(writer, rows=12)
            if checkpoints.last is not None:
                frames = checkpoints.last[1]
                restarts += frames < seen
                seen = frames
            # A server's writer works between its commits (a group commit collects and
            # runs its requests): the copies are made meanwhile. One that never pauses
            # finds the WAL never all copied, and still checkpoints itself (ADR 0048).
            time.sleep(0.005)
        # Two runs after the last commit: the second began after it.
        after, deadline = checkpoints.runs + 2, time.monotonic() + 3
        while (checkpoints.runs < after or checkpoints.last is None
               or checkpoints.last[1] != checkpoints.last[2]) and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        checkpoints.close()
    assert checkpoints.failures == 0 and checkpoints.runs > 0
    busy, frames, copied = checkpoints.last or (1, 0, -1)
    assert busy == 0 and frames == copied  # everything in the database file
    # Started again from its beginning while the writer wrote 4,800 pages and more, none
    # of them checkpointed by the writer.
    assert restarts > 0
    assert not _running()
    _commit(writer)  # starts again once more: everything had been copied
    assert writer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1] < max(frames, 10)
    assert writer.execute("SELECT count(*) FROM t").fetchone()[0] == 4801
    writer.close()


def test_a_store_it_cannot_reach_is_tried_again_until_closed(tmp_path):
    checkpoints = WalCheckpoints(tmp_path / "missing" / "store.db", interval=0.01).start()
    deadline = time.monotonic() + 3
    while checkpoints.failures < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    checkpoints.close()
    assert checkpoints.failures >= 3 and checkpoints.runs == 0
    assert not (tmp_path / "missing").exists()  # nothing made
    assert not _running()


def test_a_serving_runtime_checkpoints_on_sqlite_only_until_it_closes(settings, initialised,
                                                                     clock):
    rt = open_runtime(settings, clock=clock)
    try:
        rt.checkpoint_in_background()
        assert len(_running()) == (1 if rt.engine.dialect.name == "sqlite" else 0)
    finally:
        rt.close()
    assert not _running()
