"""Bulk inserts inside the caller's unit of work: ``COPY`` on PostgreSQL, one prepared
``INSERT`` run by ``executemany`` on SQLite.

Both go through the driver's own connection, under the SQLAlchemy transaction the caller
holds, so they commit or roll back with everything else it wrote. A row that breaks a
constraint (a key that is already taken) raises :class:`BulkConflict`; the caller decides
what to tell the user (the statement is undone up to the caller's savepoint).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Table
from sqlalchemy.exc import DBAPIError

from iotsec.errors import ConflictError

__all__ = ["BulkConflict", "insert_rows"]


class BulkConflict(ConflictError):
    """A bulk insert broke a unique or foreign key constraint."""


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def insert_rows(conn: Connection, table: Table, columns: Sequence[str],
                rows: Sequence[tuple[Any, ...]]) -> None:
    """Insert ``rows`` (values in ``columns`` order: text, integers or None) into ``table``
    within ``conn``'s transaction."""
    if not rows:
        return
    # Names from the table's metadata (a column it lacks is a KeyError): no input reaches
    # the statement's text.
    names = ", ".join(_quote(table.c[c].name) for c in columns)
    raw: Any = conn.connection.driver_connection
    # The driver's own exception, without importing the driver here (start-up time).
    integrity: type[Exception] = conn.dialect.loaded_dbapi.IntegrityError
    try:
        if conn.dialect.name == "postgresql":
            with raw.cursor() as cur, cur.copy(
                    f"COPY {_quote(table.name)} ({names}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        else:
            marks = ", ".join("?" for _ in columns)
            raw.executemany(
                f"INSERT INTO {_quote(table.name)} ({names}) VALUES ({marks})",  # noqa: S608
                rows)
    except integrity as exc:
        raise BulkConflict(f"a row conflicts with what {table.name} holds",
                           hint="reload and try again") from exc
    except conn.dialect.loaded_dbapi.Error as exc:
        # The driver's own error, as SQLAlchemy's: the unit of work names it (a full disk,
        # an unreachable store) as it does every other store error.
        raise DBAPIError.instance(f"bulk insert into {table.name}", None, exc,
                                  conn.dialect.loaded_dbapi.Error, hide_parameters=True,
                                  dialect=conn.dialect) from exc
