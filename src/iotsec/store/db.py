"""Engine creation and the unit of work.

SQLite runs in WAL mode with ``synchronous=NORMAL`` (durable across process crashes, the
embedded default's trade-off) and foreign keys on. Every state change runs inside
:func:`transaction`: all of it commits, or none of it does.
"""

from __future__ import annotations

import contextlib
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
from sqlalchemy.pool import SingletonThreadPool, StaticPool

from iotsec.errors import IotsecError, StoreError
from iotsec.store.direct import DriverUnit, Unit, run_plain
from iotsec.store.failures import driver_failure, unit_failure
from iotsec.store.reader import Reader, read_transaction, sqlite_pragmas
from iotsec.store.wal_checkpoints import WalCheckpoints
from iotsec.store.writer_queue import WriterQueue

__all__ = ["driver_transaction", "in_transaction", "make_engine", "raw_reading", "reading",
           "store_error", "transaction", "unit_error", "wal_checkpoints"]


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


def wal_checkpoints(engine: Engine) -> WalCheckpoints | None:
    """For a long-running process: a thread, started, that checkpoints the WAL of
    ``engine``'s SQLite file until it is closed (:mod:`iotsec.store.wal_checkpoints`);
    None for other stores."""
    path = _sqlite_file(engine)
    return None if path is None else WalCheckpoints(path).start()


def store_error(exc: DBAPIError, fallback: str, hint: str,
                engine: Engine | None = None) -> StoreError:
    """The :class:`StoreError` for a database failure: a full disk, a read-only or corrupt
    database are named as such; anything else gets ``fallback`` with the driver's class."""
    return driver_failure(exc.orig, fallback, hint, sqlite_file=_sqlite_file(engine))


_local = threading.local()
_writer_queues: weakref.WeakKeyDictionary[Engine, WriterQueue] = weakref.WeakKeyDictionary()
_writer_queues_guard = threading.Lock()


def _sqlite_writers(engine: Engine) -> WriterQueue | None:
    """The queue this process's writers of a SQLite ``engine`` wait in (None for others)."""
    found = _writer_queues.get(engine)  # every unit of work asks: no guard once it is made
    if found is not None:
        return found
    if engine.url.get_backend_name() != "sqlite":
        return None
    with _writer_queues_guard:
        queue = _writer_queues.get(engine)
        if queue is None:
            made = queue = _writer_queues[engine] = WriterQueue(_sqlite_file(engine))
            event.listen(engine, "engine_disposed", lambda _engine: made.close())
        return queue


def in_transaction() -> bool:
    """Is this thread inside :func:`transaction`? (A write on another connection would then
    wait for this thread's own lock on SQLite.)"""
    return getattr(_local, "depth", 0) > 0


def unit_error(exc: DBAPIError, engine: Engine) -> IotsecError:
    """What a database error that ends a unit of work means to its caller: a unique
    violation that it did not anticipate is a conflict, anything else a store error."""
    return unit_failure(exc.orig, integrity=isinstance(exc, IntegrityError),
                        sqlite_file=_sqlite_file(engine))


@contextmanager
def transaction(engine: Engine, *, references_vouched: bool = False) -> Iterator[Connection]:
    """One unit of work. Foreign database errors become :class:`StoreError`; a unique
    violation that the caller did not anticipate becomes :class:`ConflictError`.

    ``references_vouched``: the caller vouches that every foreign key of every row it
    writes holds (each referenced row is its own, inserted in this unit, or was checked
    and kept from deletion, see :func:`iotsec.store.bulk.lock_keys`), and that it deletes
    nothing whose dependants a cascade would have to remove. On SQLite the unit then runs
    with the connection's foreign-key enforcement off, which SQLite can only change
    between transactions: no lookup per inserted row (a bulk import's links). It is on
    again when the unit ends, before the connection serves anyone else. Elsewhere nothing
    changes (PostgreSQL: :func:`iotsec.store.bulk.references_checked`)."""
    vouched = references_vouched and engine.dialect.name == "sqlite"
    connect = _foreign_keys_off if vouched else _connect
    with _writer_turn(engine), _unit_errors(engine), connect(engine) as conn, conn.begin():
        yield conn


def _connect(engine: Engine) -> Connection:
    return engine.connect()


@contextmanager
def _foreign_keys_off(engine: Engine) -> Iterator[Connection]:
    """A connection of ``engine`` (SQLite) with foreign-key enforcement off until the
    caller's transaction on it has ended: on again before it goes back to the pool, or
    the connection is discarded."""
    with engine.connect() as conn:
        driver: Any = conn.connection.driver_connection
        driver.execute("PRAGMA foreign_keys=OFF")
        try:
            yield conn
        finally:
            try:
                driver.execute("PRAGMA foreign_keys=ON")
                restored = driver.execute("PRAGMA foreign_keys").fetchone() == (1,)
            except sqlite3.Error:
                restored = False
            if not restored:
                conn.invalidate()  # never handed to another unit of work unchecked


@contextmanager
def _unit_errors(engine: Engine) -> Iterator[None]:
    """A unit of work's database errors as the store names them (:func:`unit_error`);
    the project's own errors pass as they are."""
    try:
        yield
    except IotsecError:
        raise
    except DBAPIError as exc:
        raise unit_error(exc, engine) from exc


@contextmanager
def _writer_turn(engine: Engine) -> Iterator[None]:
    """This thread's turn among the process's writers of ``engine`` (the outermost unit of
    work of the thread queues; a nested one is inside its turn already)."""
    depth = getattr(_local, "depth", 0)
    # SQLite has one writer at a time, and a writer that finds the lock taken sleeps in
    # growing steps (busy_timeout) however soon it is released: under many concurrent
    # writers (an enrolment storm, serving workers) that costs more than the writes. They
    # queue before they meet SQLite's lock instead (writer_queue.py).
    writers = _sqlite_writers(engine) if depth == 0 else None
    _local.depth = depth + 1
    try:
        if writers is None:
            yield
        else:
            with writers.turn():
                yield
    finally:
        _local.depth -= 1


class _DriverConnections:
    """The connections of the driver itself that :func:`driver_transaction` takes turns on
    for one engine: made by the engine's pool (with every setting its own connections have)
    and detached from it, so that a unit of work pays for neither the pool's check-out and
    return nor SQLAlchemy's connection and transaction objects."""

    __slots__ = ("free", "lock")

    #: Idle connections kept per engine; more concurrent units of work open more, and
    #: close them when they end.
    KEEP = 8

    def __init__(self) -> None:
        self.free: list[Any] = []
        self.lock = threading.Lock()

    def take(self) -> Any | None:
        with self.lock:
            return self.free.pop() if self.free else None

    def give_back(self, driver: Any) -> None:
        with self.lock:
            if len(self.free) < self.KEEP:
                self.free.append(driver)
                return
        _close_quietly(driver)

    def close_all(self) -> None:
        with self.lock:
            idle, self.free = self.free, []
        for driver in idle:
            _close_quietly(driver)


_driver_connections: weakref.WeakKeyDictionary[Engine, _DriverConnections] = (
    weakref.WeakKeyDictionary())


def _close_quietly(driver: Any) -> None:
    # A connection the server already dropped cannot be closed cleanly; it is gone either way.
    with contextlib.suppress(Exception):
        driver.close()


def _connections_of(engine: Engine) -> _DriverConnections:
    found = _driver_connections.get(engine)
    if found is None:
        with _writer_queues_guard:
            found = _driver_connections.get(engine)
            if found is None:
                made = found = _driver_connections[engine] = _DriverConnections()
                # Disposing of the engine (a closed runtime, a test's teardown) closes
                # these as it closes the pool's.
                event.listen(engine, "engine_disposed", lambda _engine: made.close_all())
    return found


def _open_driver(engine: Engine) -> Any:
    """A new connection of the driver, made as the engine's own are (its pragmas on SQLite,
    its arguments and pre-ping on PostgreSQL), in autocommit mode: the unit of work says
    ``BEGIN`` and ``COMMIT`` itself (SQLite's connections are in that mode already)."""
    raw = engine.raw_connection()
    try:
        driver: Any = raw.driver_connection
        if engine.dialect.name != "sqlite":
            driver.rollback()  # the pre-ping's transaction
            driver.autocommit = True
        else:
            # A request of a group commit runs in a savepoint of its own, and SQLite keeps
            # what a statement inside one may have to undo in a statement journal: a
            # temporary file by default, made and written for statement after statement
            # (about 80 µs of a certificate's insert in an enrolment). These units of work
            # are small (one certificate, or a group's requests), so their journals are
            # kept in memory. Other connections keep the default: an import's or a large
            # query's temporary data stays on disk.
            driver.execute("PRAGMA temp_store=MEMORY")
    except BaseException:
        raw.invalidate()
        raise
    raw.detach()
    return driver


def _broken(driver: Any) -> bool:
    """Has the server dropped ``driver``'s connection (psycopg's flags; never on SQLite)?"""
    return bool(getattr(driver, "closed", False) or getattr(driver, "broken", False))


def _begin(engine: Engine, connections: _DriverConnections) -> DriverUnit:
    """A :class:`DriverUnit` whose transaction has begun: on SQLite with the write lock
    taken (``BEGIN IMMEDIATE``, as the engine's units of work do)."""
    statement = "BEGIN IMMEDIATE" if engine.dialect.name == "sqlite" else "BEGIN"
    while True:
        idle = connections.take()
        driver = _open_driver(engine) if idle is None else idle
        unit = DriverUnit(engine.dialect, driver)
        try:
            run_plain(unit, statement)
        except BaseException:
            # A kept connection the server has dropped since (a restart) is replaced, as
            # the engine's pre-ping replaces its own; any other failure is the unit's.
            if idle is not None and _broken(driver):
                _close_quietly(driver)
                continue
            _end(unit, connections)
            raise
        return unit


def _end(unit: DriverUnit, connections: _DriverConnections) -> None:
    """Roll back whatever ``unit`` left open and keep its connection, unless it is broken."""
    driver = unit.driver
    try:
        if unit.dialect.name == "sqlite":
            if driver.in_transaction:
                driver.execute("ROLLBACK")
        elif not _broken(driver):
            run_plain(unit, "ROLLBACK")
    except Exception:
        _close_quietly(driver)
        return
    if _broken(driver):
        _close_quietly(driver)
    else:
        connections.give_back(driver)


@contextmanager
def driver_transaction(engine: Engine) -> Iterator[Unit]:
    """One unit of work as :func:`transaction` makes it (the same write lock, commit and
    errors), held on a connection of the driver itself: for the hot paths whose statements
    all run on the driver (:class:`~iotsec.store.direct.Direct`), where SQLAlchemy's
    connection, pool and transaction objects cost more than the database's work (issuing
    one certificate per call). Nothing but :class:`~iotsec.store.direct.Direct` statements
    may run on it."""
    if isinstance(engine.pool, SingletonThreadPool | StaticPool):
        # One connection shared by the engine (an in-memory SQLite database): it cannot be
        # lent away, so the unit of work is the engine's.
        with transaction(engine) as conn:
            yield conn
        return
    connections = _connections_of(engine)
    with _writer_turn(engine), _unit_errors(engine):
        unit = _begin(engine, connections)
        try:
            yield unit
            run_plain(unit, "COMMIT")
        except BaseException:
            _end(unit, connections)
            raise
        connections.give_back(unit.driver)


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
