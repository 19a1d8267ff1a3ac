"""Engine creation and the unit of work.

SQLite runs in WAL mode with ``synchronous=NORMAL`` (durable across process crashes, the
embedded default's trade-off) and foreign keys on. Every state change runs inside
:func:`transaction`: all of it commits, or none of it does.
"""

from __future__ import annotations

import os
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
from iotsec.store.failures import UNIT_FAILURE, driver_failure
from iotsec.store.reader import Reader, read_transaction, sqlite_pragmas

__all__ = ["in_transaction", "make_engine", "raw_reading", "reading", "store_error", "transaction",
           "unit_error"]


_sqlite_pragmas = sqlite_pragmas  # the settings of every connection (reader.py)


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


def _sqlite_file(engine: Engine | None) -> Path | None:
    """The SQLite file of ``engine``, if it has one."""
    if engine is None or engine.url.get_backend_name() != "sqlite":
        return None
    database = engine.url.database
    if not database or database == ":memory:":
        return None
    return Path(database)


def store_error(exc: DBAPIError, fallback: str, hint: str,
                engine: Engine | None = None) -> StoreError:
    """The :class:`StoreError` for a database failure: a full disk, a read-only or corrupt
    database are named as such; anything else gets ``fallback`` with the driver's class."""
    return driver_failure(exc.orig, fallback, hint, sqlite_file=_sqlite_file(engine))


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
        message, hint = UNIT_FAILURE["conflict"]
        return ConflictError(message, hint=hint)
    message, hint = UNIT_FAILURE["refused"]
    return store_error(exc, message, hint, engine)


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


@contextmanager
def raw_reading(engine: Engine) -> Iterator[Reader]:
    """A :class:`~iotsec.store.reader.Reader` on a pooled connection of ``engine`` (the
    driver's own connection, returned to the pool afterwards)."""
    try:
        raw = engine.raw_connection()
    except DBAPIError as exc:
        raise store_error(exc, "the database could not be read",
                          "check that the database is reachable and migrated", engine) from exc
    try:
        sqlite = engine.url.get_backend_name() == "sqlite"
        with read_transaction(raw.driver_connection, pyformat=not sqlite,
                              errors=engine.dialect.loaded_dbapi.Error,
                              sqlite_file=_sqlite_file(engine)) as reader:
            yield reader
    finally:
        raw.close()
