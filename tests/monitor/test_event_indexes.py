"""A device's events are found through the indexes on events.actor and events.subject
(migration 0017), not by scanning the table: the statements 'events list --device' and
'incident timeline' run are captured and explained on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import event, text

from iotsec.app.events import Event, list_events
from iotsec.app.identity import devices
from iotsec.app.monitor.incidents import timeline


def _statements(rt, call: Callable[[], Any]) -> list[tuple[str, Any]]:
    seen: list[tuple[str, Any]] = []

    def keep(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if "FROM events" in statement:
            seen.append((statement, parameters))

    event.listen(rt.engine, "before_cursor_execute", keep)
    try:
        call()
    finally:
        event.remove(rt.engine, "before_cursor_execute", keep)
    assert seen
    return seen


def _plan(rt, statement: str, parameters: Any) -> str:
    with rt.engine.connect() as conn:
        if rt.engine.dialect.name == "postgresql":
            # A tiny test table is cheaper to scan: ask whether the index can be used at all.
            conn.exec_driver_sql("SET enable_seqscan = off")
            rows = conn.exec_driver_sql("EXPLAIN " + statement, parameters).all()
        else:
            rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters).all()
        conn.execute(text("SELECT 1"))
    return "\n".join(str(r[-1]) for r in rows)


def test_device_events_and_timeline_use_the_indexes(rt) -> None:
    devices.add_device(rt, devices.NewDevice.parse("cam-1"))
    for i in range(50):
        rt.events.record(Event(rt.now() - timedelta(minutes=i), "broker.deny", "denied",
                               actor=f"dev-{i % 7}", subject=f"topic/{i}"))
    rt.events.flush()
    for statement, parameters in _statements(
            rt, lambda: list_events(rt.engine, actor="cam-1", since=rt.now() - timedelta(hours=2))):
        plan = _plan(rt, statement, parameters)
        assert "ix_events_actor_at" in plan, plan
    statement, parameters = next(
        s for s in _statements(rt, lambda: timeline(rt, "cam-1",
                                                    since=rt.now() - timedelta(hours=1)))
        if "events.actor" in s[0])
    plan = _plan(rt, statement, parameters)
    assert "ix_events_actor_at" in plan and "ix_events_subject_at" in plan, plan
