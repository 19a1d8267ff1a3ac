"""Migration 0031: on SQLite the link tables are ``WITHOUT ROWID`` tables; going down and up
again keeps every link, the tables' indexes and the triggers that keep each device's link
names (migration 0028), which still fire. On PostgreSQL the migration changes nothing.

And the staged bulk insert (ADR 0049): a large batch goes through a temporary table of the
connection's own into the table; what it stores, and what it refuses, are what the
per-row insert stores and refuses, and no temporary table is left behind."""

from __future__ import annotations

import pytest
from sqlalchemy import Connection, text

from iotsec.access.policy import Role, Rule
from iotsec.app.access import roles as role_service
from iotsec.app.identity.devices import NewDevice, import_devices
from iotsec.app.runtime import Runtime
from iotsec.store import migrate
from iotsec.store import models as m
from iotsec.store.bulk import (
    _STAGE_VALUES,
    _STAGED,
    BulkConflict,
    insert_rows,
    last_rowid,
    links_from_names,
)
from iotsec.store.db import reading, transaction
from tests.helpers import alembic_to
from tests.store.link_names import names_of

_LINKS = ("device_groups", "device_roles")


def _definitions(conn: Connection) -> dict[str, str]:
    """The link tables' schema objects (tables, indexes, triggers), by name."""
    return {name: sql for name, sql in conn.execute(text(
        "SELECT name, sql FROM sqlite_master WHERE tbl_name IN ('device_groups', "
        "'device_roles') AND sql IS NOT NULL"))}


def _rows(rt: Runtime) -> dict[str, set[tuple[str, str]]]:
    with reading(rt.engine) as conn:
        return {t: {(d, n) for d, n in conn.execute(text(f"SELECT * FROM {t}"))}  # noqa: S608
                for t in _LINKS}


def _fleet(rt: Runtime) -> None:
    role_service.add_role(rt, Role.build("sensor", [Rule.parse("allow", "publish", "s/#")]))
    import_devices(rt, [NewDevice.parse(f"d-{n:03d}", ["fleet", f"batch-{n % 3}"], {},
                                        roles=["sensor"] if n % 2 else None)
                        for n in range(300)])


def test_sqlite_links_have_no_rowid(rt: Runtime) -> None:
    if rt.engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL has no rowid tables")
    with reading(rt.engine) as conn:
        definitions = _definitions(conn)
        for table in _LINKS:
            assert definitions[table].rstrip().upper().endswith("WITHOUT ROWID")
            with pytest.raises(Exception, match="no such column: rowid"):
                conn.execute(text(f"SELECT rowid FROM {table}"))  # noqa: S608


def test_the_migration_goes_down_and_up_keeping_links_indexes_and_triggers(
        rt: Runtime) -> None:
    _fleet(rt)
    links, names = _rows(rt), names_of(rt)
    assert len(links["device_groups"]) == 600 and len(links["device_roles"]) == 300
    sqlite = rt.engine.dialect.name == "sqlite"
    if sqlite:
        with reading(rt.engine) as conn:
            before = _definitions(conn)
    alembic_to(rt, "downgrade", "0030")
    assert _rows(rt) == links and names_of(rt) == names
    if sqlite:
        with reading(rt.engine) as conn:
            down = _definitions(conn)
            assert conn.execute(text("SELECT count(rowid) FROM device_groups")).scalar() == 600
        assert set(down) == set(before)
        assert all("WITHOUT ROWID" not in sql.upper() for sql in down.values())
    alembic_to(rt, "upgrade", "head")
    assert migrate.is_current(rt.engine)
    assert _rows(rt) == links and names_of(rt) == names
    if sqlite:
        with reading(rt.engine) as conn:
            after = _definitions(conn)
            assert conn.execute(text("PRAGMA foreign_key_check")).all() == []
            assert conn.execute(text("PRAGMA integrity_check")).scalar() == "ok"
        assert set(after) == set(before)
        for name in set(before) - set(_LINKS):  # the indexes and triggers, as they were
            assert after[name] == before[name]
    # The triggers fire on the tables made again: a link written by plain SQL, and one
    # removed by a cascade, change the device's names.
    with transaction(rt.engine) as conn:
        conn.execute(text("INSERT INTO groups (name, created_at) VALUES ('extra', 0)"))
        conn.execute(text("INSERT INTO device_groups VALUES ('d-000', 'extra')"))
    assert names_of(rt)["d-000"][0] == "batch-0 extra fleet"
    with transaction(rt.engine) as conn:
        conn.execute(text("DELETE FROM groups WHERE name = 'batch-0'"))
    assert names_of(rt)["d-000"][0] == "extra fleet"
    assert names_of(rt)["d-001"] == ("batch-1 fleet", "sensor")


def _groups(count: int, start: int = 0) -> list[tuple[str, int]]:
    return [(f"g-{n:05d}", n) for n in range(start, start + count)]


def test_a_staged_insert_stores_what_a_row_by_row_one_does(rt: Runtime) -> None:
    small, large = _groups(3), _groups(_STAGED * 2, start=10)
    with transaction(rt.engine) as conn:
        insert_rows(conn, m.groups, ("name", "created_at"), small)
        insert_rows(conn, m.groups, ("name", "created_at"), large)
    with reading(rt.engine) as conn:
        stored = {(n, at) for n, at in conn.execute(text(
            "SELECT name, created_at FROM groups WHERE name LIKE 'g-%'"))}
        if conn.dialect.name == "sqlite":
            assert conn.execute(text("SELECT count(*) FROM temp.sqlite_master")).scalar() == 0
    assert stored == set(small + large)


def test_a_staged_insert_keeps_the_rows_order_across_its_statements(rt: Runtime) -> None:
    """Many rows per statement into the staging table, the rest one per statement: every
    row arrives once, in the order given (for rows in key order, where the next one goes)."""
    per = _STAGE_VALUES // 2
    rows = _groups(per * 2 + 7, start=20000)[::-1]
    with transaction(rt.engine) as conn:
        insert_rows(conn, m.groups, ("name", "created_at"), rows)
    with reading(rt.engine) as conn:
        order = "rowid" if conn.dialect.name == "sqlite" else "created_at DESC"
        stored = [tuple(r) for r in conn.execute(text(
            f"SELECT name, created_at FROM groups WHERE name LIKE 'g-%' ORDER BY {order}"))]  # noqa: S608
    assert stored == rows


def test_a_staged_row_with_too_few_values_is_refused_and_leaves_nothing(rt: Runtime) -> None:
    rows: list[tuple[object, ...]] = list(_groups(_STAGED * 2))
    rows[100] = ("g-short",)
    # SQLite: the staging's own check (its rows are bound many to a statement); PostgreSQL:
    # COPY's refusal of the row.
    said = ("the 2 values of its columns" if rt.engine.dialect.name == "sqlite"
            else "BadCopyFileFormat")
    with pytest.raises(Exception, match=said), transaction(rt.engine) as conn:
        insert_rows(conn, m.groups, ("name", "created_at"), rows)
    with reading(rt.engine) as conn:
        assert conn.execute(text("SELECT count(*) FROM groups WHERE name LIKE 'g-%'")).scalar() == 0


@pytest.mark.parametrize("count", [3, _STAGED * 2])
def test_values_every_row_shares_are_given_once_and_stored_in_every_row(
        rt: Runtime, count: int) -> None:
    """``insert_rows(..., same=...)``: the shared columns are stored in each row, on the
    row-by-row path, the staged one and ``COPY`` alike."""
    names = [(name,) for name, _ in _groups(count, start=1000)]
    with transaction(rt.engine) as conn:
        insert_rows(conn, m.groups, ("name",), names, same={"created_at": 4242})
    with reading(rt.engine) as conn:
        stored = set(conn.execute(text(
            "SELECT name, created_at FROM groups WHERE name LIKE 'g-%'")).tuples())
        if conn.dialect.name == "sqlite":
            assert conn.execute(text("SELECT count(*) FROM temp.sqlite_master")).scalar() == 0
    assert stored == {(name, 4242) for (name,) in names}


def test_a_staged_insert_that_breaks_a_key_is_refused_and_leaves_nothing(
        rt: Runtime) -> None:
    with transaction(rt.engine) as conn:
        insert_rows(conn, m.groups, ("name", "created_at"), _groups(1, start=500))
    clash = _groups(_STAGED * 2)  # g-00000 .. : g-00500 among them
    with pytest.raises(BulkConflict), transaction(rt.engine) as conn:
        try:
            insert_rows(conn, m.groups, ("name", "created_at"), clash)
        finally:
            if conn.dialect.name == "sqlite":
                # Dropped by the insert itself, before the transaction ends.
                assert conn.execute(text(
                    "SELECT count(*) FROM temp.sqlite_master")).scalar() == 0
    with reading(rt.engine) as conn:
        assert conn.execute(text(
            "SELECT name FROM groups WHERE name LIKE 'g-%'")).scalars().all() == ["g-00500"]


def test_links_of_single_names_leave_out_a_row_with_two(rt: Runtime) -> None:
    """``links_from_names(single=True)`` takes each row's names whole: a row that holds two
    is left out (its count falls short, which the import refuses), never linked to a group
    named by both, even with the store's reference checks off as in an import."""
    if rt.engine.dialect.name != "sqlite":
        pytest.skip("SQLite only: PostgreSQL copies the links from the client")
    with transaction(rt.engine) as conn:
        insert_rows(conn, m.groups, ("name", "created_at"), [("a", 0), ("b", 0)])
    with transaction(rt.engine, references_vouched=True) as conn:
        before = last_rowid(conn, m.devices)
        assert before is not None
        insert_rows(conn, m.devices, ("id", "state", "attributes", "created_at",
                                      "updated_at", "group_names"),
                    [("one", "pending", "{}", 0, 0, "a"), ("two", "pending", "{}", 0, 0, "a b"),
                     ("none", "pending", "{}", 0, 0, "")])
        made = links_from_names(conn, source=m.devices, after=before, names="group_names",
                                link=m.device_groups, key="device_id", name="group_name",
                                single=True)
        links = conn.execute(text("SELECT device_id, group_name FROM device_groups "
                                  "WHERE device_id IN ('one', 'two', 'none')")).all()
    assert made == 1
    assert [tuple(r) for r in links] == [("one", "a")]
