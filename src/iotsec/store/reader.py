"""Reads on the database driver itself, for the services' read paths.

A command that only shows something (``cert list``, ``cert show``) runs a few plain
``SELECT`` statements. Through SQLAlchemy it first pays for importing SQLAlchemy (its engine
and its whole SQL compiler: more than the rest of such a command), so these reads are
written as SQL text that SQLite and PostgreSQL both run, and executed by a :class:`Reader`
on a DB-API connection:

- in a process that has no engine yet, on a SQLite home: a connection of the standard
  library's ``sqlite3``, opened by :func:`connect_sqlite` with the pragmas every connection
  of the store has (:func:`sqlite_pragmas`, which the engine uses as well);
- in a process that has no engine yet, on PostgreSQL: a connection of psycopg itself,
  opened by :func:`open_postgres` with the arguments SQLAlchemy would give it
  (:func:`postgres_arguments` reads the store's URL the way SQLAlchemy does);
- otherwise on a pooled connection of the process's engine (:func:`iotsec.store.db.
  raw_reading`): the API server reads through its pool like every other statement.

Every read runs in one read transaction (one snapshot), and a driver error becomes the same
:class:`~iotsec.errors.StoreError` the unit of work gives (:mod:`iotsec.store.failures`).
Statements name their parameters ``:name``; only plain values come back (``int``, ``str``,
``bytes``, ``None``), as the columns these reads select hold on both databases.
"""

from __future__ import annotations

import re
import sqlite3
from collections import namedtuple
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from functools import lru_cache
from itertools import islice
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qsl, unquote, urlsplit

from iotsec.errors import IotsecError
from iotsec.store.failures import driver_failure

__all__ = ["DriverConnection", "Reader", "connect_sqlite", "open_postgres",
           "open_sqlite", "postgres_arguments", "read_transaction", "revision",
           "sqlite_pragmas"]

# Compiled (and cached by the re module) on first use: only PostgreSQL statements need it,
# and a command on SQLite should not pay for it at start-up.
_NAMED: Final = r"(?<![:\w]):([A-Za-z_]\w*)"

#: WAL pages written before a commit checkpoints them into the database file.
WAL_CHECKPOINT_PAGES: Final = 4000
#: Bytes the WAL file keeps after a checkpoint has emptied it.
WAL_SIZE_LIMIT: Final = 64 * 1024 * 1024


def sqlite_pragmas(dbapi_conn: Any, _record: Any = None) -> None:
    """The settings of every connection to the store's SQLite file."""
    # pysqlite's own transaction handling is switched off (isolation_level=None) so that
    # our BEGIN is the one that counts; BEGIN IMMEDIATE takes the write lock up front and
    # avoids deadlocked read-to-write upgrades between processes.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=10000")
    # Checkpoint the WAL every 4,000 pages (16 MB at 4 KiB pages) rather than every 1,000:
    # a checkpoint copies each page once however often it was written since the last one
    # and syncs the file twice, and the pages a write touches repeat (the tables' and
    # indexes' newest leaves); ADR 0042. The WAL file is cut back to 64 MiB after a
    # checkpoint that a long reader had let it grow past.
    cur.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}")
    cur.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
    cur.close()


def connect_sqlite(path: Path) -> sqlite3.Connection:
    """A connection to the existing SQLite store at ``path``, set up as the engine's are."""
    try:
        # mode=rw: a file that vanished is an error, never a new empty store.
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=rw", uri=True,
                               check_same_thread=False, isolation_level=None)
        sqlite_pragmas(conn)
    except sqlite3.Error as exc:
        raise driver_failure(exc, "the database could not be read",
                             "check that the database is reachable and migrated",
                             sqlite_file=path) from exc
    return conn


def postgres_arguments(url: str) -> dict[str, Any] | None:
    """The keyword arguments of ``psycopg.connect`` for a ``postgresql+psycopg`` URL, the
    same SQLAlchemy's psycopg dialect gives it; ``None`` for any other URL, and for what
    only SQLAlchemy's dialect reads (hosts or ports in the query, a parameter given twice,
    a port that is not a number): those are opened by the engine."""
    if not url.startswith("postgresql+psycopg://"):
        return None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # a port that is not a number, a malformed IPv6 address
        return None
    query = parse_qsl(parts.query)
    names = {key for key, _ in query}
    if len(names) != len(query) or {"host", "port"} & names or parts.fragment:
        return None
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    host = (hostport[1:].partition("]")[0] if hostport.startswith("[")
            else hostport.partition(":")[0])
    arguments: dict[str, Any] = {}
    # As SQLAlchemy's ``URL.translate_connect_args``: empty parts are left out.
    for key, value in (("host", host), ("dbname", unquote(parts.path[1:])),
                       ("user", unquote(user)), ("password", unquote(password)),
                       ("port", port)):
        if value:
            arguments[key] = value
    arguments.update(query)
    return arguments


@lru_cache(maxsize=256)
def _pyformat(sql: str) -> str:
    """``sql`` with ``:name`` parameters in the ``%(name)s`` style of psycopg."""
    return re.sub(_NAMED, r"%(\1)s", sql.replace("%", "%%"))


@lru_cache(maxsize=256)
def _row_type(names: tuple[str, ...]) -> Callable[..., Any]:
    return namedtuple("Row", names)


@lru_cache(maxsize=1)
def _chunked_rows() -> bool:
    """Does psycopg's libpq give a statement's rows in chunks while it runs (version 17)?"""
    import psycopg

    return psycopg.pq.version() >= 170000


class Reader:
    """Runs read statements on one DB-API connection inside :func:`read_transaction`."""

    __slots__ = ("_conn", "_pyformat", "postgres")

    def __init__(self, conn: Any, *, pyformat: bool) -> None:
        self._conn = conn
        self._pyformat = pyformat
        #: The store is PostgreSQL (psycopg's parameter style), else SQLite.
        self.postgres = pyformat

    def rows(self, sql: str, params: Mapping[str, Any] | None = None) -> list[Any]:
        """Every row of ``sql``, each a named tuple of its columns."""
        cur = self._conn.cursor()
        try:
            cur.execute(_pyformat(sql) if self._pyformat else sql, params or {})
            names = tuple(d[0] for d in cur.description)
            make = _row_type(names)
            return [make(*row) for row in cur.fetchall()]
        finally:
            cur.close()

    def tuples(self, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        """Every row of ``sql`` as the driver gives it (a plain tuple): for reads of many
        rows, where a named tuple per row costs more than the row."""
        cur = self._conn.cursor()
        try:
            cur.execute(_pyformat(sql) if self._pyformat else sql, params or {})
            return list(cur.fetchall())
        finally:
            cur.close()

    def tuple_chunks(self, sql: str, params: Mapping[str, Any], size: int
                     ) -> Iterator[list[tuple[Any, ...]]]:
        """The rows of ``sql`` as :meth:`tuples` gives them, ``size`` at a time as they
        arrive. On PostgreSQL the server sends its rows while it runs the statement and
        they are taken ``size`` at a time (the libpq's chunked rows, from its version 17;
        an older libpq gives them all at once): the caller works on the first rows while
        the server still reads the next ones, on the other processor."""
        cur = self._conn.cursor()
        try:
            if not self._pyformat:
                cur.execute(sql, params)
                while rows := cur.fetchmany(size):
                    yield rows
            elif _chunked_rows():
                stream = cur.stream(_pyformat(sql), params, size=size)
                try:
                    while rows := list(islice(stream, size)):
                        yield rows
                finally:
                    # A caller that stops early: the statement is cancelled now, before
                    # the transaction ends, not whenever the stream is collected.
                    stream.close()
            else:
                cur.execute(_pyformat(sql), params)
                yield list(cur.fetchall())
        finally:
            cur.close()

    def first(self, sql: str, params: Mapping[str, Any] | None = None) -> Any | None:
        """The first row of ``sql``, or None."""
        found = self.rows(sql, params)
        return found[0] if found else None


@contextmanager
def read_transaction(conn: Any, *, pyformat: bool, errors: type[Exception],
                     sqlite_file: Path | None = None) -> Iterator[Reader]:
    """A :class:`Reader` on ``conn`` in one read transaction, ended when the block ends
    (nothing is written). ``errors``: the driver's base exception class."""
    try:
        if not pyformat:
            conn.execute("BEGIN")  # SQLite in autocommit mode: one snapshot for the block
        try:
            yield Reader(conn, pyformat=pyformat)
        finally:
            conn.rollback() if pyformat else conn.execute("ROLLBACK")
    except IotsecError:
        raise
    except errors as exc:
        raise driver_failure(exc, "the database could not be read",
                             "check that the database is reachable and migrated",
                             sqlite_file=sqlite_file) from exc


class DriverConnection:
    """One connection of the driver itself (sqlite3 or psycopg) that a process reads on
    while it has no engine (:func:`open_sqlite`, :func:`open_postgres`)."""

    __slots__ = ("conn", "errors", "postgres", "sqlite_file")

    def __init__(self, conn: Any, *, postgres: bool, errors: type[Exception],
                 sqlite_file: Path | None = None) -> None:
        self.conn = conn
        self.postgres = postgres
        self.errors = errors
        self.sqlite_file = sqlite_file

    @contextmanager
    def reading(self) -> Iterator[Reader]:
        """A :class:`Reader` on this connection in one read transaction (one thread at a
        time: the caller takes turns)."""
        with read_transaction(self.conn, pyformat=self.postgres, errors=self.errors,
                              sqlite_file=self.sqlite_file) as reader:
            yield reader

    def close(self) -> None:
        self.conn.close()


def open_sqlite(path: Path) -> DriverConnection:
    """A :class:`DriverConnection` to the existing SQLite store at ``path``."""
    return DriverConnection(connect_sqlite(path), postgres=False, errors=sqlite3.Error,
                            sqlite_file=path)


def open_postgres(arguments: Mapping[str, Any]) -> DriverConnection:
    """A :class:`DriverConnection` to PostgreSQL, opened by psycopg with ``arguments`` (see
    :func:`postgres_arguments`)."""
    # Deferred: a SQLite home never loads the PostgreSQL driver.
    import psycopg

    try:
        conn = psycopg.connect(**arguments)
    except psycopg.Error as exc:
        raise driver_failure(exc, "the database could not be read",
                             "check that the database is reachable and migrated") from exc
    return DriverConnection(conn, postgres=True, errors=psycopg.Error)


def revision(reader: Reader, *, sqlite: bool) -> list[str] | None:
    """The store's schema revisions (``alembic_version``), or None when it has no such
    table (a database that was never migrated)."""
    exists = ("SELECT name FROM sqlite_master WHERE type = 'table' AND "
              "name = 'alembic_version'" if sqlite
              else "SELECT to_regclass('alembic_version') AS name")
    found = reader.first(exists)
    if found is None or found.name is None:
        return None
    return [str(r.version_num) for r in reader.rows("SELECT version_num FROM alembic_version")]
