"""Bulk inserts inside the caller's unit of work: ``COPY`` on PostgreSQL; on SQLite one
prepared ``INSERT`` run by ``executemany``, through a temporary table (filled with many
rows to a statement) and one ``INSERT ... SELECT`` from 256 rows (ADR 0049).

Both go through the driver's own connection, under the SQLAlchemy transaction the caller
holds, so they commit or roll back with everything else it wrote. A row that breaks a
constraint (a key that is already taken) raises :class:`BulkConflict`; the caller decides
what to tell the user (the statement is undone up to the caller's savepoint).

Foreign keys of bulk rows can be checked once per referenced key instead of once per row:
:func:`lock_keys` finds the referenced rows and locks them against deletion until the
transaction ends (what PostgreSQL's per-row check does, row after row), and inside
:func:`references_checked` PostgreSQL then skips its per-row checks for the rows the caller
inserts -- only for rows whose every reference the caller has so checked.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from itertools import chain
from typing import Any

from sqlalchemy import Column, Connection, Table, select
from sqlalchemy.exc import DBAPIError

from iotsec.errors import ConflictError

__all__ = ["BulkConflict", "insert_rows", "last_rowid", "links_from_names", "lock_keys",
           "names_written", "references_checked"]


class BulkConflict(ConflictError):
    """A bulk insert broke a unique or foreign key constraint."""


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def insert_rows(conn: Connection, table: Table, columns: Sequence[str],
                rows: Sequence[tuple[Any, ...]], *,
                same: Mapping[str, Any] | None = None) -> None:
    """Insert ``rows`` (values in ``columns`` order: text, integers or None) into ``table``
    within ``conn``'s transaction. ``same`` gives the columns whose value every row shares,
    once for all of them (on SQLite they are then bound once per batch, not per row)."""
    if not rows:
        return
    fixed = tuple((same or {}).items())
    # Names from the table's metadata (a column it lacks is a KeyError): no input reaches
    # the statement's text.
    names = [_quote(table.c[c].name) for c in (*columns, *(k for k, _ in fixed))]
    values = tuple(v for _, v in fixed)
    raw: Any = conn.connection.driver_connection
    with _driver_errors(conn, table):
        if conn.dialect.name == "postgresql":
            with raw.cursor() as cur, cur.copy(
                    f"COPY {_quote(table.name)} ({', '.join(names)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row + values if values else row)
        elif len(rows) < _STAGED:
            marks = ", ".join("?" for _ in names)
            raw.executemany(
                f"INSERT INTO {_quote(table.name)} ({', '.join(names)}) "  # noqa: S608
                f"VALUES ({marks})", [row + values for row in rows] if values else rows)
        else:
            _insert_staged(raw, table, names[:len(columns)], names[len(columns):], values,
                           rows)


#: From this many rows, a SQLite bulk insert goes through a staging table.
_STAGED = 256
#: The most values one statement filling a staging table binds: SQLite's limit on a
#: statement's parameters before 3.32 (32,766 since), so any build takes it.
_STAGE_VALUES = 999


def _insert_staged(raw: Any, table: Table, varying: Sequence[str], fixed: Sequence[str],
                   values: tuple[Any, ...], rows: Sequence[tuple[Any, ...]]) -> None:
    """SQLite: ``rows`` (the ``varying`` columns) into a temporary table of the connection's
    own (no key, no index), then into ``table`` by one ``INSERT ... SELECT`` that gives the
    ``fixed`` columns their ``values`` (bound once). A statement run once per row opens
    every b-tree of ``table`` (the table and each index) and finds its place from the root,
    row after row; one statement for all of them keeps its cursors open where the last row
    went, which for rows in key order is where the next one goes (an import's device rows
    take a third less time, ADR 0049). The temporary table is this transaction's: made and
    dropped inside it, undone with it."""
    stage = _quote(f"iotsec_stage_{table.name}")
    staged = ", ".join(varying)
    given = "".join(", ?" for _ in fixed)
    drop = f"DROP TABLE IF EXISTS temp.{stage}"
    raw.execute(f"CREATE TEMP TABLE {stage} ({staged})")
    try:
        _stage(raw, f"temp.{stage}", len(varying), rows)
        raw.execute(f"INSERT INTO main.{_quote(table.name)} "  # noqa: S608
                    f"({', '.join([*varying, *fixed])}) "
                    f"SELECT {staged}{given} FROM temp.{stage}", values)
    except BaseException:
        with suppress(Exception):  # the insert's own error is the one to report
            raw.execute(drop)
        raise
    raw.execute(drop)


def _stage(raw: Any, stage: str, width: int, rows: Sequence[tuple[Any, ...]]) -> None:
    """``rows`` (``width`` values each) into the staging table ``stage``, as many rows per
    statement as :data:`_STAGE_VALUES` allows: the driver binds and runs a statement per
    item of ``executemany``, and that per-statement work, not SQLite's append to a table
    without keys, is what one row per statement mostly costs (half the time, ADR 0049)."""
    one = "(" + ", ".join("?" for _ in range(width)) + ")"
    per = max(1, _STAGE_VALUES // width)
    whole = len(rows) - len(rows) % per if per > 1 else 0
    if whole:
        flat = list(chain.from_iterable(rows[:whole]))
        if len(flat) != whole * width:  # one statement per row would have said so
            raise ValueError(f"a row does not hold the {width} values of its columns")
        step = per * width
        raw.executemany(f"INSERT INTO {stage} VALUES {', '.join([one] * per)}",  # noqa: S608
                        [flat[i:i + step] for i in range(0, len(flat), step)])
    if whole < len(rows):
        raw.executemany(f"INSERT INTO {stage} VALUES {one}", rows[whole:])  # noqa: S608


@contextmanager
def _driver_errors(conn: Connection, table: Table) -> Iterator[None]:
    """The driver's errors of a bulk insert into ``table``: a broken constraint as
    :class:`BulkConflict`, anything else as SQLAlchemy's error, which the unit of work names
    (a full disk, an unreachable store) as it does every other store error."""
    # The driver's own exceptions, without importing the driver here (start-up time).
    dbapi = conn.dialect.loaded_dbapi
    try:
        yield
    except dbapi.IntegrityError as exc:
        raise BulkConflict(f"a row conflicts with what {table.name} holds",
                           hint="reload and try again") from exc
    except dbapi.Error as exc:
        raise DBAPIError.instance(f"bulk insert into {table.name}", None, exc, dbapi.Error,
                                  hide_parameters=True, dialect=conn.dialect) from exc


#: Keys looked up per statement by :func:`lock_keys`.
_LOOKUP = 500
#: Where a connection remembers whether its role may skip the per-row checks.
_MAY_SKIP = "iotsec.bulk.may_skip_reference_triggers"
#: PostgreSQL's "insufficient privilege".
_NO_PRIVILEGE = "42501"


def lock_keys(conn: Connection, column: Column[Any], values: Iterable[str]) -> set[str]:
    """The ``values`` that ``column`` (a unique key) holds, each of their rows locked until
    the transaction ends against a deletion or a change of the key by anyone else
    (``FOR KEY SHARE`` on PostgreSQL, the lock its own foreign-key check takes; a SQLite
    write transaction already keeps every other writer out)."""
    wanted = sorted(set(values))
    found: set[str] = set()
    for i in range(0, len(wanted), _LOOKUP):
        found.update(conn.execute(
            select(column).where(column.in_(wanted[i:i + _LOOKUP]))
            .with_for_update(read=True, key_share=True)).scalars())
    return found


@contextmanager
def references_checked(conn: Connection) -> Iterator[bool]:
    """For the statements run inside, the caller vouches that every foreign key of the rows
    they insert holds: each referenced row was inserted by this transaction (no one else
    can see it, let alone delete it) or is locked by :func:`lock_keys`. On PostgreSQL the
    server's per-row checks are then skipped (``session_replication_role = replica``, local
    to the transaction and set back on leaving); this needs a role allowed to set it (a
    superuser, or ``GRANT SET ON PARAMETER session_replication_role``). Without it, or on
    SQLite, nothing changes and every row is checked by the store as usual. Yields whether
    the checks are skipped.

    Every trigger is skipped in that mode, not only the foreign keys': the caller also
    announces what the statements inside changed (see the change feed)."""
    if conn.dialect.name != "postgresql" or conn.info.get(_MAY_SKIP) is False:
        yield False
        return
    savepoint = conn.begin_nested()
    try:
        conn.exec_driver_sql("SET LOCAL session_replication_role = replica")
    except DBAPIError as exc:
        savepoint.rollback()
        if getattr(exc.orig, "sqlstate", None) != _NO_PRIVILEGE:
            raise
        conn.info[_MAY_SKIP] = False  # asked once per connection
        yield False
        return
    savepoint.commit()
    conn.info[_MAY_SKIP] = True
    yield True
    # Not reached when a statement inside failed: the transaction is then rolled back,
    # which undoes the setting with it.
    conn.exec_driver_sql("SET LOCAL session_replication_role = origin")


#: The transaction's setting the PostgreSQL triggers of migration 0028 look at.
_WRITTEN = "iotsec.device_names_written"
#: The SQLite triggers of migration 0028 (on device_groups and device_roles).
_SQLITE_NAME_TRIGGERS = ("SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND "
                         "(name LIKE 'iotsec_device_groups_names_%' OR "
                         "name LIKE 'iotsec_device_roles_names_%') ORDER BY name")


@contextmanager
def names_written(conn: Connection) -> Iterator[None]:
    """For the link inserts run inside, the caller vouches that each device row they link
    was inserted by this transaction with its ``group_names`` and ``role_names`` equal to
    the links it is given (migration 0028): the database's triggers that keep the names
    then skip those statements, which would otherwise look every device up again (at
    1,000,000 devices, more than the import itself). Only this transaction is concerned:
    on PostgreSQL a setting local to it (``SET LOCAL``), on SQLite the triggers dropped and
    made again inside it (no other connection sees the store without them: SQLite has one
    writer, and readers see committed states). A failure inside rolls the transaction
    back, the setting or the triggers with it."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"SET LOCAL {_WRITTEN} = 'on'")
        yield
        conn.exec_driver_sql(f"SET LOCAL {_WRITTEN} = 'off'")
        return
    triggers = conn.exec_driver_sql(_SQLITE_NAME_TRIGGERS).all()
    for name, _sql in triggers:
        conn.exec_driver_sql(f"DROP TRIGGER {_quote(name)}")
    yield
    for _name, sql in triggers:
        conn.exec_driver_sql(sql)


def last_rowid(conn: Connection, table: Table) -> int | None:
    """On SQLite, the highest rowid of ``table`` (0 when empty): the rows a write
    transaction inserts next have higher ones (see :func:`links_from_names`). None on
    other stores."""
    if conn.dialect.name != "sqlite":
        return None
    found = conn.exec_driver_sql(
        f"SELECT coalesce(max(rowid), 0) FROM {_quote(table.name)}").scalar_one()  # noqa: S608
    return int(found)


def links_from_names(conn: Connection, *, source: Table, after: int, names: str,
                     link: Table, key: str, name: str, single: bool = False) -> int:
    """On SQLite, insert into ``link`` one row ``(key, name)`` per name of the space
    separated column ``names`` of each ``source`` row whose rowid is above ``after`` (the
    rows this write transaction inserted since :func:`last_rowid`), the row's primary key
    as ``key``; in the store, without a round trip through the driver per link. Names are
    the registry's (``[A-Za-z0-9][A-Za-z0-9._:-]*``: no space, quote or backslash), which
    SQLite's ``json_each`` then splits. ``single``: the caller knows each row names at most
    one, and the column is then taken whole, without ``json_each`` (half the time); a row
    that names more is then left out, never linked to a name it does not hold. Returns the
    number of links inserted, for the caller to compare with what it expects (a row so
    left out makes it fall short)."""
    (primary,) = source.primary_key.columns
    column = _quote(source.c[names].name)
    # One statement either way, in the rows' order: the links reach the link table's key in
    # that order too (two statements, one per kind of row, would interleave their keys,
    # which costs more than json_each saves: docs/benchmarks.md, section 33).
    if single:
        split, value, only = "", f"s.{column}", f" AND instr(s.{column}, ' ') = 0"
    else:
        split = f""", json_each('["' || replace(s.{column}, ' ', '","') || '"]') AS j"""
        value, only = "j.value", ""
    statement = (f"INSERT INTO {_quote(link.name)} ({_quote(link.c[key].name)}, "  # noqa: S608
                 f"{_quote(link.c[name].name)}) SELECT s.{_quote(primary.name)}, {value} "
                 f"FROM {_quote(source.name)} AS s{split} "
                 f"WHERE s.rowid > ? AND s.{column} <> ''{only}")
    raw: Any = conn.connection.driver_connection
    with _driver_errors(conn, link):
        return int(raw.execute(statement, (after,)).rowcount)
