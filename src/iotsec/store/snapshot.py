"""Whole-store copies: a consistent read of every table, row checks, bulk inserts, digests.

Used by backups (read every table, restore them into an empty store) and by moving a store
to another database. Tables are read in dependency order and rows in primary-key order, with
strings compared byte by byte on both backends (``COLLATE "C"`` on PostgreSQL, SQLite's
default), so a table's :class:`~iotsec.store.backup_format.RowDigest` is the same in a
SQLite store, a PostgreSQL store and a backup of either.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Final

from sqlalchemy import (
    Boolean,
    Connection,
    Engine,
    Integer,
    LargeBinary,
    Select,
    String,
    Table,
    delete,
    func,
    insert,
    inspect,
    select,
    text,
)
from sqlalchemy.exc import DBAPIError

from iotsec.errors import BackupFormatError, StoreError
from iotsec.store import models as m
from iotsec.store.backup_format import MAX_BATCH_ROWS, RowDigest, encode_row

__all__ = [
    "TABLES", "check_row", "clear_seeded_rows", "consistent_snapshot", "insert_rows",
    "non_empty_target", "read_batches", "reset_sequences", "table_digest"
]

#: Every table of the store, parents before children.
TABLES: Final[tuple[Table, ...]] = tuple(m.metadata.sorted_tables)
_BY_NAME: Final = {t.name: t for t in TABLES}


@contextmanager
def consistent_snapshot(engine: Engine) -> Iterator[Connection]:
    """A connection whose reads all see one moment of the store, without blocking writers:
    a read transaction on SQLite (WAL keeps its snapshot), REPEATABLE READ on PostgreSQL."""
    try:
        with engine.connect() as conn:
            if conn.dialect.name == "sqlite":
                conn = conn.execution_options(iotsec_readonly=True)
            else:
                conn = conn.execution_options(isolation_level="REPEATABLE READ",
                                              postgresql_readonly=True)
            with conn.begin():
                yield conn
    except DBAPIError as exc:
        raise StoreError(f"the store could not be read ({type(exc.orig).__name__})",
                         hint="check that the database is reachable") from exc


def ordered(conn: Connection, table: Table) -> Select[Any]:
    """All of ``table`` in primary-key order, strings compared as bytes on both backends."""
    keys = []
    for col in table.primary_key.columns:
        keys.append(col.collate("C") if conn.dialect.name == "postgresql"
                    and isinstance(col.type, String) else col)
    return select(*table.columns).order_by(*keys)


def read_batches(conn: Connection, table: Table) -> Iterator[list[tuple[Any, ...]]]:
    """The rows of ``table`` in order, in batches of at most :data:`MAX_BATCH_ROWS`, with
    binary values as ``bytes`` (streamed: the table is never held whole)."""
    result = conn.execute(ordered(conn, table).execution_options(
        stream_results=True, max_row_buffer=MAX_BATCH_ROWS))
    for part in result.partitions(MAX_BATCH_ROWS):
        yield [tuple(bytes(v) if isinstance(v, memoryview) else v for v in row)
               for row in part]


def table_digest(conn: Connection, table: Table) -> RowDigest:
    """Count and SHA-256 of what ``table`` holds now (see :class:`RowDigest`)."""
    digest = RowDigest()
    for batch in read_batches(conn, table):
        for row in batch:
            digest.add(encode_row(row))
    return digest


def table_named(name: str, columns: Sequence[str]) -> Table:
    """The store's table ``name``, refused unless its columns are exactly ``columns``."""
    table = _BY_NAME.get(name)
    if table is None:
        raise BackupFormatError(f"the backup holds an unknown table {name!r}")
    if list(columns) != [c.name for c in table.columns]:
        raise BackupFormatError(f"the backup's table {name!r} has other columns than this "
                                "store's", hint="restore with the iotsec version that made "
                                "the backup")
    return table


def check_row(table: Table, row: Sequence[Any]) -> tuple[Any, ...]:
    """``row`` if every value has its column's type, size and nullability; else refused."""
    for col, value in zip(table.columns, row, strict=True):
        kind = col.type
        if value is None:
            ok = bool(col.nullable)
        elif isinstance(kind, Boolean):
            ok = isinstance(value, bool)
        elif isinstance(kind, Integer):
            ok = type(value) is int and -(2**63) <= value < 2**63
        elif isinstance(kind, LargeBinary):
            ok = isinstance(value, bytes)
        elif isinstance(kind, String):
            ok = isinstance(value, str) and (kind.length is None or len(value) <= kind.length)
        else:  # pragma: no cover - a new column type must be added above
            ok = False
        if not ok:
            raise BackupFormatError(f"the backup holds an invalid value in "
                                    f"{table.name}.{col.name}")
    return tuple(row)


def insert_rows(conn: Connection, table: Table, rows: Sequence[Sequence[Any]]) -> None:
    if rows:
        names = [c.name for c in table.columns]
        conn.execute(insert(table), [dict(zip(names, r, strict=True)) for r in rows])


def clear_seeded_rows(conn: Connection) -> None:
    """Delete the rows the migrations seed (the policy version...) from a store that was
    empty before it was migrated, so that a whole store can be copied in."""
    for table in reversed(TABLES):
        conn.execute(delete(table))


def reset_sequences(conn: Connection) -> None:
    """After rows were inserted with their ids, move PostgreSQL's id sequences past them
    (SQLite takes the next rowid from the table itself)."""
    if conn.dialect.name != "postgresql":
        return
    for table in TABLES:
        pk = list(table.primary_key.columns)
        if len(pk) == 1 and isinstance(pk[0].type, Integer) and pk[0].autoincrement is not False:
            sequence = conn.execute(text("SELECT pg_get_serial_sequence(:t, :c)"),
                                    {"t": table.name, "c": pk[0].name}).scalar()
            if sequence is not None:
                top = conn.execute(select(func.max(pk[0]))).scalar()
                conn.execute(text("SELECT setval(CAST(:s AS regclass), :v, :called)"),
                             {"s": sequence, "v": top or 1, "called": top is not None})


def non_empty_target(conn: Connection) -> str | None:
    """Why the database behind ``conn`` cannot receive a whole store (tables that are not
    iotsec's, or iotsec tables with rows), or ``None`` when it is empty."""
    names = set(inspect(conn).get_table_names())
    foreign = sorted(names - set(_BY_NAME) - {"alembic_version"})
    if foreign:
        return f"it holds tables that are not iotsec's ({', '.join(foreign[:5])})"
    for table in TABLES:
        if table.name in names and conn.execute(select(func.count()).select_from(
                select(table).limit(1).subquery())).scalar():
            return f"its table {table.name!r} has rows"
    return None
