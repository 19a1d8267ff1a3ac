"""The event chain's append on the standard library's driver (store/writer.py): a
process that read the home's SQLite file on the driver records an event without making the
engine, into the one chain the units of work append to, with the same fields; a driver
error is named as in a unit of work and writes nothing."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from iotsec.app.events import Event, list_events
from iotsec.app.monitor.chain import verify
from iotsec.app.runtime import Runtime, open_runtime
from iotsec.config import Settings
from iotsec.errors import ConflictError, StoreError
from iotsec.store.writer import append_events, write_transaction


def _event(rt: Runtime, n: int) -> Event:
    # Attacker-chosen text (a control character, more than the column holds) is clipped
    # and escaped alike on both paths.
    return Event(rt.now(), "scan.run", "success", actor="cli\x1b" + "a" * 200,
                 subject=f"targets {n}", detail={"n": n, "hosts": [1, 2]})


def _append(conn: sqlite3.Connection, rows: list[dict[str, object]], path: Path) -> None:
    with write_transaction(conn, sqlite_file=path) as writer:
        append_events(writer, rows)


def _stored(rt: Runtime) -> list[tuple[object, ...]]:
    rt.events.flush()
    return [(e.at, e.kind, e.outcome, e.actor, e.source, e.subject, dict(e.detail or {}))
            for e in sorted(list_events(rt.engine, kind="scan.run"), key=lambda e: e.seq or 0)]


def test_events_recorded_on_the_driver_and_through_the_engine_form_one_chain(
        rt: Runtime, settings: Settings) -> None:
    fresh = open_runtime(settings, clock=rt.clock)
    try:
        for n in range(6):
            # Alternately: the fresh runtime (no engine yet on SQLite) and the engine's sink.
            (fresh if n % 2 == 0 else rt).record(_event(rt, n))
        # On SQLite the fresh runtime wrote on its sqlite3 connection: no engine, no sink.
        sqlite = settings.database_url is None
        assert (fresh.opened_engine is None and fresh._events is None) is sqlite
    finally:
        fresh.close()
    report = verify(rt)
    assert report.ok, report.first
    stored = _stored(rt)
    assert [row[5] for row in stored] == [f"targets {n}" for n in range(6)]
    # The same event gives the same stored fields whichever path wrote it.
    assert {(*row[:5], tuple(row[6]["hosts"])) for row in stored} == {
        (stored[0][0], "scan.run", "success", "cli\\x1b" + "a" * 153, None, (1, 2))}


def test_a_read_only_store_is_named_and_nothing_is_written(rt: Runtime,
                                                           settings: Settings) -> None:
    if settings.database_url is not None:
        pytest.skip("the sqlite3 append serves SQLite homes only")
    path = settings.resolved_home / "iotsec.db"
    before = _stored(rt)
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True,
                           isolation_level=None)
    try:
        with pytest.raises(StoreError, match="read-only"):
            _append(conn, [_event(rt, 1).row()], path)
        assert not conn.in_transaction
    finally:
        conn.close()
    assert _stored(rt) == before


def test_a_refused_row_writes_none_of_the_rows_and_leaves_no_transaction(
        rt: Runtime, settings: Settings) -> None:
    if settings.database_url is not None:
        pytest.skip("the sqlite3 append serves SQLite homes only")
    fresh = open_runtime(settings, clock=rt.clock)
    try:
        assert fresh.direct is not None
        good, bad = _event(rt, 1).row(), _event(rt, 2).row()
        bad["kind"] = None  # NOT NULL
        with pytest.raises(ConflictError):
            _append(fresh.direct.conn, [good, bad], settings.resolved_home / "iotsec.db")
        assert not fresh.direct.conn.in_transaction
        assert _stored(rt) == []
        fresh.record(_event(rt, 3))  # the connection goes on
    finally:
        fresh.close()
    assert [row[5] for row in _stored(rt)] == ["targets 3"]
    assert verify(rt).ok


def test_an_event_recorded_inside_a_read_goes_through_the_engine(rt: Runtime,
                                                                 settings: Settings) -> None:
    # The thread's read transaction holds the sqlite3 connection: the event is written on
    # a connection of the engine instead, and the read goes on.
    fresh = open_runtime(settings, clock=rt.clock)
    try:
        with fresh.reading() as reader:
            reader.first("SELECT id FROM events")
            fresh.record(_event(rt, 1))
            assert reader.first("SELECT 1 AS one").one == 1
        assert fresh._events is not None
    finally:
        fresh.close()
    assert [row[5] for row in _stored(rt)] == ["targets 1"]
