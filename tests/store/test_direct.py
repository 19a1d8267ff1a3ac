"""Statements on the driver (store/direct.py) run in the unit of work's transaction, and
their errors are mapped like SQLAlchemy's; a unit of work held on the driver's own
connection (store/db.py's driver_transaction) commits, rolls back and locks as the engine's
does. SQLite and PostgreSQL."""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy import Connection, bindparam, func, insert, select
from sqlalchemy.exc import DBAPIError

from iotsec.errors import ConflictError
from iotsec.store import models as m
from iotsec.store.db import driver_transaction, in_transaction, make_engine, transaction
from iotsec.store.direct import Direct, Savepoints, core
from iotsec.store.failures import unique_violation

_ADD = Direct(insert(m.groups).values(name=bindparam("name"), created_at=bindparam("at")))
_NAMED = Direct(select(m.groups.c.name, m.groups.c.created_at)
                .where(m.groups.c.name == bindparam("name")))


def _count(rt, name: str) -> int:
    with rt.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(m.groups)
                                .where(m.groups.c.name == name)).scalar_one())


def test_rows_come_back_with_their_column_names(rt) -> None:
    with transaction(rt.engine) as conn:
        _ADD.execute(conn, {"name": "direct-1", "at": 1}).close()
        row = _NAMED.first(conn, {"name": "direct-1"})
        assert _NAMED.first(conn, {"name": "absent"}) is None
    assert row is not None and (row.name, row.created_at) == ("direct-1", 1)
    assert _count(rt, "direct-1") == 1


def test_a_unique_violation_is_a_conflict_and_the_transaction_rolls_back(rt) -> None:
    with transaction(rt.engine) as conn:
        _ADD.execute(conn, {"name": "direct-2", "at": 1}).close()
    with pytest.raises(ConflictError), transaction(rt.engine) as conn:
        _ADD.execute(conn, {"name": "direct-3", "at": 1}).close()
        _ADD.execute(conn, {"name": "direct-2", "at": 2}).close()
    assert _count(rt, "direct-3") == 0
    assert _count(rt, "direct-2") == 1


def test_many_rows_in_one_call(rt) -> None:
    with transaction(rt.engine) as conn:
        _ADD.execute_many(conn, [{"name": f"direct-m{i}", "at": i}
                                 for i in range(5)])
    assert sum(_count(rt, f"direct-m{i}") for i in range(5)) == 5


def test_one_row_of_many_is_written_and_its_conflict_mapped(rt) -> None:
    # One mapping runs as a single statement (no pipeline on PostgreSQL): same outcome.
    with driver_transaction(rt.engine) as unit:
        _ADD.execute_many(unit, [{"name": "direct-one", "at": 7}])
        assert _NAMED.first(unit, {"name": "direct-one"}).created_at == 7
    with pytest.raises(ConflictError), driver_transaction(rt.engine) as unit:
        _ADD.execute_many(unit, [{"name": "direct-one", "at": 8}])
    assert _count(rt, "direct-one") == 1


# The unit of work held on the driver's own connection (db.driver_transaction).


def test_a_unit_on_the_driver_commits_and_its_connection_serves_the_next(rt) -> None:
    with driver_transaction(rt.engine) as unit:
        _ADD.execute(unit, {"name": "driver-1", "at": 1}).close()
        first = unit.driver
    assert _count(rt, "driver-1") == 1
    with driver_transaction(rt.engine) as unit:
        assert _NAMED.first(unit, {"name": "driver-1"}).created_at == 1
        assert unit.driver is first


def test_a_unit_on_the_driver_rolls_back_on_a_conflict_or_an_exception(rt) -> None:
    with driver_transaction(rt.engine) as unit:
        _ADD.execute(unit, {"name": "driver-2", "at": 1}).close()
    with pytest.raises(ConflictError), driver_transaction(rt.engine) as unit:
        _ADD.execute(unit, {"name": "driver-3", "at": 1}).close()
        _ADD.execute(unit, {"name": "driver-2", "at": 2}).close()
    with pytest.raises(RuntimeError), driver_transaction(rt.engine) as unit:
        _ADD.execute(unit, {"name": "driver-4", "at": 1}).close()
        raise RuntimeError("the caller failed")
    assert (_count(rt, "driver-2"), _count(rt, "driver-3"), _count(rt, "driver-4")) == (1, 0, 0)
    # The connection went back clean: the next unit writes and commits on it.
    with driver_transaction(rt.engine) as unit:
        _ADD.execute(unit, {"name": "driver-5", "at": 1}).close()
    assert _count(rt, "driver-5") == 1


def test_a_unit_on_the_driver_holds_the_write_lock_until_it_commits(rt) -> None:
    if rt.engine.dialect.name != "sqlite":
        pytest.skip("SQLite's single writer")
    with driver_transaction(rt.engine) as unit:
        _ADD.execute(unit, {"name": "driver-6", "at": 1}).close()
        # Another connection sees nothing yet, and cannot write before the commit.
        with rt.reading() as reader:
            assert reader.first("SELECT name FROM groups WHERE name = 'driver-6'") is None
        assert in_transaction()
        other = rt.engine.raw_connection()
        try:
            other.driver_connection.execute("PRAGMA busy_timeout=0")
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.driver_connection.execute("BEGIN IMMEDIATE")
        finally:
            other.close()
    assert not in_transaction()
    assert _count(rt, "driver-6") == 1


def test_only_direct_statements_run_on_the_driver(rt) -> None:
    with pytest.raises(TypeError, match="SQLAlchemy unit of work"), \
            driver_transaction(rt.engine) as unit:
        core(unit).execute(insert(m.groups).values(name="driver-7", created_at=1))
    assert _count(rt, "driver-7") == 0


def test_a_dropped_connection_is_replaced_and_disposing_closes_the_rest(rt) -> None:
    if rt.engine.dialect.name != "postgresql":
        pytest.skip("a server that drops a connection")
    with driver_transaction(rt.engine) as unit:
        dropped = unit.driver
        pid = dropped.info.backend_pid
    with rt.engine.connect() as conn:
        conn.execute(select(func.pg_terminate_backend(pid)))
    with driver_transaction(rt.engine) as unit:
        _ADD.execute(unit, {"name": "driver-8", "at": 1}).close()
        kept = unit.driver
    assert kept is not dropped and dropped.closed
    assert _count(rt, "driver-8") == 1
    rt.engine.dispose()
    assert kept.closed


def test_an_engine_of_one_shared_connection_keeps_its_own_unit_of_work() -> None:
    # An in-memory SQLite database lives in the engine's one connection: lending it away
    # would leave the engine a new, empty database.
    engine = make_engine("sqlite://")
    try:
        m.metadata.create_all(engine, tables=[m.groups])
        with driver_transaction(engine) as unit:
            assert isinstance(unit, Connection)
            _ADD.execute(unit, {"name": "memory-1", "at": 1}).close()
        with engine.connect() as conn:
            assert conn.execute(select(m.groups.c.name)).scalars().all() == ["memory-1"]
    finally:
        engine.dispose()


@pytest.mark.parametrize("unit_of_work", [transaction, driver_transaction])
def test_savepoints_one_after_another_undo_only_their_own_part(rt, unit_of_work) -> None:
    """A group's units of work, each in the next part of ``Savepoints``: the part that
    fails (here a unique violation, which on PostgreSQL ends every statement until the
    rollback) is undone alone; the parts before and after it, and what is written after
    the last one, commit. On PostgreSQL keeping a part and beginning the next is one
    statement."""
    with transaction(rt.engine) as conn:
        _ADD.execute(conn, {"name": "sp-taken", "at": 1}).close()
    with unit_of_work(rt.engine) as conn:
        parts = Savepoints(conn)
        parts.begin()
        _ADD.execute(conn, {"name": "sp-1", "at": 1}).close()
        parts.begin()
        _ADD.execute(conn, {"name": "sp-2", "at": 1}).close()
        with pytest.raises(DBAPIError) as failed:
            _ADD.execute(conn, {"name": "sp-taken", "at": 2}).close()
        assert unique_violation(failed.value.orig)
        parts.rollback()
        parts.begin()
        _ADD.execute(conn, {"name": "sp-3", "at": 1}).close()
        parts.rollback()
        _ADD.execute(conn, {"name": "sp-after", "at": 1}).close()
    assert [_count(rt, n) for n in ("sp-1", "sp-2", "sp-3", "sp-after", "sp-taken")] == [
        1, 0, 0, 1, 1]


def test_a_foreign_key_failure_is_no_unique_violation(rt) -> None:
    link = Direct(insert(m.device_groups).values(device_id=bindparam("d"),
                                                 group_name=bindparam("g")))
    with driver_transaction(rt.engine) as unit:
        parts = Savepoints(unit)
        parts.begin()
        with pytest.raises(DBAPIError) as failed:
            link.execute(unit, {"d": "nobody", "g": "nothing"}).close()
        parts.rollback()
    assert not unique_violation(failed.value.orig)
