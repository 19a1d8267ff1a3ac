"""Statements run on the driver's own cursor, for the few hot paths where SQLAlchemy's
work per execution (100-150 µs a statement: cache key, parameter processing, result
set-up) costs more than the database itself: issuing one certificate per call.

A :class:`Direct` statement is built with SQLAlchemy Core like any other, compiled once per
dialect to the driver's SQL text, and executed with one call into the driver, on the
connection and inside the transaction of the caller's unit of work
(:func:`iotsec.store.db.transaction`). A driver error is translated to SQLAlchemy's own
exception, so the unit of work maps it like any other (a unique violation becomes a
conflict, a full disk a store error).

A statement also runs on a :class:`DriverUnit`: a unit of work held on a connection of the
driver itself, without SQLAlchemy's connection, pool and transaction objects around it
(:func:`iotsec.store.db.driver_transaction`, for issuing one certificate per call).

Only plain values go in and come out (``int``, ``str``, ``bytes``, ``None``): no type
processing is applied, which is what the columns of these paths hold on SQLite and
PostgreSQL alike. Expanding ``IN`` parameters are not supported.

:class:`Savepoint` marks a part of a unit of work that can fail alone (a request of a group
commit): on the driver too, as SQLAlchemy's nested transaction costs more than the work
of a small request.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable, Mapping, Sequence
from operator import itemgetter
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.engine.interfaces import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.base import Executable

__all__ = ["Direct", "DriverUnit", "Savepoints", "Unit", "core", "run_plain"]


class DriverUnit:
    """A unit of work on a connection of the driver itself (sqlite3 or psycopg), with the
    dialect its statements are compiled for (:func:`iotsec.store.db.driver_transaction`
    makes it and ends its transaction)."""

    __slots__ = ("dialect", "driver")

    def __init__(self, dialect: Dialect, driver: Any) -> None:
        self.dialect = dialect
        self.driver = driver


#: Where a :class:`Direct` statement runs: a SQLAlchemy connection in its unit of work, or
#: a :class:`DriverUnit`.
Unit = Connection | DriverUnit


def core(conn: Unit) -> Connection:
    """``conn`` as a SQLAlchemy connection, for the statements only SQLAlchemy runs (a
    batch's expanding ``IN``, an ``executemany`` of Core statements). A unit of work on
    the driver runs only :class:`Direct` statements: anything else is a programming error."""
    if isinstance(conn, DriverUnit):
        raise TypeError("this statement needs a SQLAlchemy unit of work "
                        "(iotsec.store.db.transaction), not one on the driver")
    return conn


def _driver(conn: Unit) -> Any:
    if isinstance(conn, DriverUnit):
        return conn.driver
    return conn.connection.driver_connection


class _Compiled:
    __slots__ = ("defaults", "names", "pick", "positional", "sql")

    def __init__(self, sql: str, positional: tuple[str, ...] | None,
                 defaults: dict[str, Any]) -> None:
        self.sql = sql
        self.positional = positional
        self.defaults = defaults
        self.names: dict[tuple[str, ...], Any] = {}
        #: The positional parameters' values, in order, from a mapping.
        self.pick: Callable[[Mapping[str, Any]], tuple[Any, ...]] | None = None
        if positional is not None:
            if len(positional) == 1:
                name = positional[0]
                self.pick = lambda values: (values[name],)
            elif positional:
                self.pick = itemgetter(*positional)
            else:
                self.pick = lambda values: ()


class Direct:
    """A Core statement executed directly on the driver (see the module's notes)."""

    __slots__ = ("_compiled", "_statement")

    def __init__(self, statement: Executable) -> None:
        self._statement = statement
        self._compiled: dict[str, _Compiled] = {}

    def _compile(self, dialect: Dialect) -> _Compiled:
        found = self._compiled.get(dialect.name)
        if found is None:
            compiled = self._statement.compile(dialect=dialect)  # type: ignore[attr-defined]
            positional = tuple(compiled.positiontup) if compiled.positional else None
            found = _Compiled(compiled.string, positional, dict(compiled.params))
            self._compiled[dialect.name] = found
        return found

    def _parameters(self, compiled: _Compiled, values: Mapping[str, Any]) -> Any:
        merged = {**compiled.defaults, **values} if compiled.defaults else values
        if compiled.pick is not None:
            return compiled.pick(merged)
        return merged

    def execute(self, conn: Unit, values: Mapping[str, Any] | None = None) -> Any:
        """Run the statement with ``values``; returns the driver's cursor."""
        dialect = conn.dialect
        compiled = self._compile(dialect)
        parameters = self._parameters(compiled, values or {})
        cursor = _driver(conn).cursor()
        try:
            cursor.execute(compiled.sql, parameters)
        except dialect.loaded_dbapi.Error as exc:
            raise _translated(compiled.sql, parameters, exc, dialect) from exc
        return cursor

    def execute_many(self, conn: Unit, values: Sequence[Mapping[str, Any]]) -> None:
        """Run the statement once per mapping of ``values`` (one driver call)."""
        dialect = conn.dialect
        compiled = self._compile(dialect)
        parameters = [self._parameters(compiled, v) for v in values]
        cursor = _driver(conn).cursor()
        try:
            if len(parameters) == 1:
                # One row: psycopg's executemany would enter and leave pipeline mode for it,
                # which costs more than the statement (a device's one group or role link).
                cursor.execute(compiled.sql, parameters[0])
            else:
                cursor.executemany(compiled.sql, parameters)
        except dialect.loaded_dbapi.Error as exc:
            raise _translated(compiled.sql, parameters, exc, dialect) from exc
        finally:
            cursor.close()

    def rows(self, conn: Unit, values: Mapping[str, Any] | None = None) -> list[Any]:
        """The rows the statement selects, each with its columns as attributes."""
        cursor = self.execute(conn, values)
        try:
            found = cursor.fetchall()
            if not found:
                return []
            names = tuple(d[0] for d in cursor.description)
        finally:
            cursor.close()
        compiled = self._compiled[conn.dialect.name]
        row_type: Any = compiled.names.get(names)
        if row_type is None:
            row_type = compiled.names[names] = namedtuple("Row", names)
        return [row_type._make(r) for r in found]

    def first(self, conn: Unit, values: Mapping[str, Any] | None = None) -> Any | None:
        """The first row the statement selects, or ``None``."""
        found = self.rows(conn, values)
        return found[0] if found else None


_SAVEPOINT = "iotsec_part"


def run_plain(conn: Unit, sql: str) -> None:
    """Run ``sql``, a statement without parameters (``BEGIN``, ``SAVEPOINT``), on the driver."""
    dialect = conn.dialect
    cursor = _driver(conn).cursor()
    try:
        cursor.execute(sql)
    except dialect.loaded_dbapi.Error as exc:
        raise _translated(sql, None, exc, dialect) from exc
    finally:
        cursor.close()


class Savepoints:
    """Parts of ``conn``'s transaction, one after another, each of which can be undone alone
    (not nested): :meth:`begin` starts the next part, :meth:`rollback` undoes what was
    written since the part began, and the transaction goes on. A part is kept when the next
    one begins or the transaction commits (a commit keeps the savepoints still open).

    On PostgreSQL, keeping a part and beginning the next is one round trip (both statements
    in one simple query); a rollback is one. A driver error in either (the database ended
    the whole transaction) is raised as SQLAlchemy's, and the caller's unit of work fails."""

    __slots__ = ("_conn", "_open")

    def __init__(self, conn: Unit) -> None:
        self._conn = conn
        self._open = False

    def begin(self) -> None:
        """Keep the part before (if any), and begin the next."""
        start = f"SAVEPOINT {_SAVEPOINT}"
        if not self._open:
            run_plain(self._conn, start)
        elif self._conn.dialect.name == "postgresql":
            run_plain(self._conn, f"RELEASE SAVEPOINT {_SAVEPOINT}; {start}")
        else:  # sqlite3 runs one statement per call; these run in the process
            run_plain(self._conn, f"RELEASE SAVEPOINT {_SAVEPOINT}")
            run_plain(self._conn, start)
        self._open = True

    def rollback(self) -> None:
        """Undo the current part; it stays open, empty, until the next begins."""
        run_plain(self._conn, f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}")


def _translated(sql: str, parameters: Any, exc: Exception, dialect: Dialect) -> BaseException:
    return DBAPIError.instance(sql, parameters, exc, dialect.loaded_dbapi.Error,
                               hide_parameters=True, dialect=dialect)
