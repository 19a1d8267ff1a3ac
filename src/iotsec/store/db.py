"""Engine creation and the unit of work.

SQLite runs in WAL mode with ``synchronous=NORMAL`` (durable across process crashes, the
embedded default's trade-off) and foreign keys on. Every state change runs inside
:func:`transaction`: all of it commits, or none of it does.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError

from iotsec.errors import ConflictError, IotsecError, StoreError

__all__ = ["in_transaction", "make_engine", "reading", "store_error", "transaction",
           "unit_error"]


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # pysqlite's own transaction handling is switched off (isolation_level=None) so that
    # SQLAlchemy's BEGIN is the one that counts; BEGIN IMMEDIATE takes the write lock up
    # front and avoids deadlocked read-to-write upgrades between processes.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()


def _sqlite_begin(conn: Connection) -> None:
    readonly = conn.get_execution_options().get("iotsec_readonly", False)
    statement = "BEGIN" if readonly else "BEGIN IMMEDIATE"
    # On the driver directly: through SQLAlchemy's execution this costs more than the BEGIN
    # (every unit of work pays it). Its error is SQLAlchemy's all the same, for the callers.
    driver = conn.connection.driver_connection
    try:
        driver.execute(statement)  # type: ignore[union-attr]
    except sqlite3.Error as exc:
        raise DBAPIError.instance(statement, None, exc, sqlite3.Error,
                                  dialect=conn.dialect) from exc


def _create_private_sqlite_file(url: str) -> None:
    """Create the database file with mode 0600 before SQLite does (it would use the umask);
    its -wal and -shm files inherit that mode."""
    parsed = make_url(url)
    if parsed.database and parsed.database != ":memory:":
        path = Path(parsed.database)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))


def make_engine(url: str, **kwargs: Any) -> Engine:
    try:
        if url.startswith("sqlite"):
            _create_private_sqlite_file(url)
            engine = create_engine(url, connect_args={"check_same_thread": False}, **kwargs)
            event.listen(engine, "connect", _sqlite_pragmas)
            event.listen(engine, "begin", _sqlite_begin)
            return engine
        return create_engine(url, pool_pre_ping=True, **kwargs)
    except (SQLAlchemyError, ImportError, ValueError) as exc:
        raise StoreError(f"cannot use the database URL: {type(exc).__name__}",
                         hint="check IOTSEC_DATABASE_URL (e.g. postgresql+psycopg://user@host/db)"
                         ) from None


#: What a failed database operation means, by SQLite's error name (the primary result
#: code, without an extended suffix such as ``_DBMOVED``) or PostgreSQL's SQLSTATE: the
#: message and the hint an operator can act on.
_KNOWN_FAILURES: dict[str, tuple[str, str]] = {
    "SQLITE_FULL": ("the disk holding the database is full",
                    "free space on it, then run the command again"),
    "53100": ("the disk holding the database is full",
              "free space on the database server's disk, then run the command again"),
    "SQLITE_READONLY": ("the database is read-only",
                        "iotsec writes to its store (events, CRLs) even for commands that "
                        "only show something: give it write access to the home"),
    "25006": ("the database is read-only",
              "connect to a writable PostgreSQL server (not a read replica)"),
    "SQLITE_CANTOPEN": ("the database file cannot be opened",
                        "check that the home exists and is writable: SQLite creates its -wal "
                        "and -shm files beside the database"),
    "SQLITE_NOTADB": ("the database file is corrupt (it is not an SQLite database)",
                      "restore the home's iotsec.db from a backup"),
    "SQLITE_CORRUPT": ("the database file is corrupt",
                       "restore the home's iotsec.db from a backup"),
    "XX001": ("the database is corrupt (PostgreSQL reports data corruption)",
              "restore the database from a backup"),
    "SQLITE_IOERR": ("the disk holding the database failed (I/O error)",
                     "check the disk and the system log, then run the command again"),
    "SQLITE_BUSY": ("the database stayed locked by another process",
                    "run the command again when the other one has finished"),
}


#: Free bytes under which a failed write on an SQLite file is put down to a full disk.
_NEARLY_FULL = 256 * 1024


def _sqlite_disk_full(engine: Engine | None) -> bool:
    """Is the disk holding ``engine``'s SQLite file (nearly) full? SQLite reports a full
    disk as a plain I/O error when it cannot grow its -shm or -wal file."""
    if engine is None or engine.url.get_backend_name() != "sqlite":
        return False
    database = engine.url.database
    if not database or database == ":memory:":
        return False
    try:
        return shutil.disk_usage(Path(database).parent).free < _NEARLY_FULL
    except OSError:
        return False


def store_error(exc: DBAPIError, fallback: str, hint: str,
                engine: Engine | None = None) -> StoreError:
    """The :class:`StoreError` for a database failure: a full disk, a read-only or corrupt
    database are named as such; anything else gets ``fallback`` with the driver's class."""
    orig = exc.orig
    name = str(getattr(orig, "sqlite_errorname", "") or getattr(orig, "sqlstate", "") or "")
    primary = "_".join(name.split("_")[:2]) if name.startswith("SQLITE_") else name
    if name == "SQLITE_IOERR_SHMSIZE" or (primary == "SQLITE_IOERR"
                                          and _sqlite_disk_full(engine)):
        primary = "SQLITE_FULL"
    known = _KNOWN_FAILURES.get(primary)
    if known is not None:
        return StoreError(known[0], hint=known[1])
    return StoreError(f"{fallback} ({type(orig).__name__})", hint=hint)


_local = threading.local()
_writer_locks: weakref.WeakKeyDictionary[Engine, threading.Lock] = weakref.WeakKeyDictionary()
_writer_locks_guard = threading.Lock()
#: Seconds a writer queues in the process before it meets SQLite's own lock (and its
#: busy timeout) regardless: a thread that holds a transaction while waiting for another
#: thread's write must not hang.
_WRITER_WAIT = 10.0


def _sqlite_writers(engine: Engine) -> threading.Lock | None:
    """The lock this process's writers of a SQLite ``engine`` queue on (None for others)."""
    if engine.url.get_backend_name() != "sqlite":
        return None
    with _writer_locks_guard:
        lock = _writer_locks.get(engine)
        if lock is None:
            lock = _writer_locks[engine] = threading.Lock()
        return lock


def in_transaction() -> bool:
    """Is this thread inside :func:`transaction`? (A write on another connection would then
    wait for this thread's own lock on SQLite.)"""
    return getattr(_local, "depth", 0) > 0


def unit_error(exc: DBAPIError, engine: Engine) -> IotsecError:
    """What a database error that ends a unit of work means to its caller: a unique
    violation that it did not anticipate is a conflict, anything else a store error."""
    if isinstance(exc, IntegrityError):
        return ConflictError("the change conflicts with what is already stored",
                             hint="reload the object and try again")
    return store_error(exc, "the database refused the operation",
                       "check that the database is reachable and migrated "
                       "('iotsec init' migrates it)", engine)


@contextmanager
def transaction(engine: Engine) -> Iterator[Connection]:
    """One unit of work. Foreign database errors become :class:`StoreError`; a unique
    violation that the caller did not anticipate becomes :class:`ConflictError`."""
    depth = getattr(_local, "depth", 0)
    _local.depth = depth + 1
    # SQLite has one writer at a time, and a writer that finds the lock taken sleeps in
    # growing steps (busy_timeout) however soon it is released: under many concurrent
    # writers (an enrolment storm) that costs more than the writes. The threads of one
    # process queue on a lock of their own instead, and wake as soon as it is free; other
    # processes still meet at SQLite's lock.
    writers = _sqlite_writers(engine) if depth == 0 else None
    if writers is not None and not writers.acquire(timeout=_WRITER_WAIT):
        writers = None  # as long as SQLite itself would wait: its busy timeout decides
    try:
        with engine.begin() as conn:
            yield conn
    except IotsecError:
        raise
    except DBAPIError as exc:
        raise unit_error(exc, engine) from exc
    finally:
        if writers is not None:
            writers.release()
        _local.depth -= 1


@contextmanager
def reading(engine: Engine) -> Iterator[Connection]:
    """A read-only connection (no write lock taken on SQLite)."""
    try:
        with engine.connect().execution_options(iotsec_readonly=True) as conn:
            yield conn
    except IotsecError:
        raise
    except DBAPIError as exc:
        raise store_error(exc, "the database could not be read",
                          "check that the database is reachable and migrated", engine) from exc
