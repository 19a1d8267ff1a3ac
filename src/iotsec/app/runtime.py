"""What every use case needs: settings, the store, key custody, the CAs and the clock."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from iotsec.app.store_location import with_remembered_database
from iotsec.config import Settings
from iotsec.custody.base import KeyStore
from iotsec.custody.home import (
    HomeCustody,
    open_key_store,
    with_remembered_keystore,
)
from iotsec.errors import HomeNotInitialisedError, NotFoundError, OfflineKeyError
from iotsec.eventlog.event import key_use_event
from iotsec.store.migrate import is_current_on
from iotsec.store.reader import (
    DriverConnection,
    Reader,
    open_postgres,
    open_sqlite,
    postgres_arguments,
)
from iotsec.store.writer import append_events, write_transaction

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from iotsec.app.events import EventSink
    from iotsec.eventlog.event import Event
    from iotsec.pki.ca import Authority

__all__ = ["Runtime", "Slot", "open_runtime", "record_key_use", "utcnow"]

T = TypeVar("T")


class Slot(Generic[T]):
    """A per-process value of type ``T`` that a :class:`Runtime` keeps for one module (the
    compiled policy, a throttle...). A slot is its own key, so values are typed and two
    modules can never collide on a name; ``name`` is for reading only."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"Slot({self.name!r})"


def utcnow() -> datetime:
    return datetime.now(UTC)


@contextmanager
def _raw_reading(engine: Engine) -> Iterator[Reader]:
    from iotsec.store.db import raw_reading  # deferred: see Runtime.engine

    with raw_reading(engine) as reader:
        yield reader


@dataclass
class Runtime:
    """What a use case runs with. The store is reached two ways: :attr:`engine` (SQLAlchemy,
    made on first use) for units of work and most reads, and :meth:`reading` for the read
    paths written for the driver itself (:mod:`iotsec.store.reader`), so that a command that
    only reads them never imports SQLAlchemy."""

    settings: Settings
    keys: KeyStore
    clock: Callable[[], datetime] = utcnow
    #: The engine, when the caller made it already (else :attr:`engine` makes it).
    opened_engine: Engine | None = None
    #: A connection of the driver itself (the standard library's sqlite3 to the home's
    #: SQLite store, or psycopg to PostgreSQL), for :meth:`reading` in a process that has
    #: no engine.
    direct: DriverConnection | None = None
    _authorities: dict[str, tuple[int, Authority]] = field(default_factory=dict)
    _by_id: dict[int, Authority] = field(default_factory=dict)
    #: Per-process derived state, one typed :class:`Slot` per kind (see :meth:`get`).
    _slots: dict[Slot[Any], Any] = field(default_factory=dict)
    #: Moves on every registry or policy change this process makes (see
    #: :meth:`registry_changed`), so per-process views of the registry know they are stale.
    registry_generation: int = 0
    #: The token connection and the unlocked KEKs of this process.
    custody: HomeCustody = field(init=False)
    _recent: dict[str, tuple[float, object]] = field(default_factory=dict)
    _closers: list[Callable[[], None]] = field(default_factory=list)
    _events: EventSink | None = None
    _making: threading.RLock = field(default_factory=threading.RLock)
    _direct_turn: threading.RLock = field(default_factory=threading.RLock)

    def __post_init__(self) -> None:
        self.custody = HomeCustody(self.settings, self.keys)

    @property
    def engine(self) -> Engine:
        """The store's SQLAlchemy engine, made on first use."""
        engine = self.opened_engine
        if engine is None:
            with self._making:
                engine = self.opened_engine
                if engine is None:
                    # Deferred for start-up time: SQLAlchemy is imported by the first
                    # command path that needs it, never by one that only reads directly.
                    from iotsec.store.db import make_engine

                    engine = self.opened_engine = make_engine(self.settings.store_url)
        return engine

    @property
    def events(self) -> EventSink:
        """Where this process records security events (made on first use)."""
        sink = self._events
        if sink is None:
            with self._making:
                sink = self._events
                if sink is None:
                    engine = self.engine
                    from iotsec.app.events import EventSink  # deferred, as for the engine

                    sink = self._events = EventSink(engine)
        return sink

    @events.setter
    def events(self, sink: EventSink) -> None:
        self._events = sink

    def record(self, event: Event) -> None:
        """Record ``event`` now, in a short transaction of its own, as
        :meth:`EventSink.record <iotsec.app.events.EventSink.record>` does outside a unit of
        work. A process that has made neither the engine nor the event sink (a command that
        read the home's SQLite file on the driver, then records what it did) appends it to
        the chain on its :attr:`direct` connection, without SQLAlchemy; any other records it
        through :attr:`events`."""
        direct = self.direct
        if (self._events is None and self.opened_engine is None and direct is not None
                and direct.sqlite_file is not None):
            with self._direct_turn:
                # Not inside a read of this thread's (its snapshot would hold the
                # connection): then through the sink, on a connection of its own.
                if not direct.conn.in_transaction:
                    with write_transaction(direct.conn, sqlite_file=direct.sqlite_file) as w:
                        append_events(w, [event.row()])
                    return
        self.events.record(event)

    @contextmanager
    def reading(self) -> Iterator[Reader]:
        """A :class:`~iotsec.store.reader.Reader` in one read transaction: on the pooled
        connections of the engine once there is one, else on :attr:`direct`."""
        direct = self.direct
        if self.opened_engine is None and direct is not None:
            # One driver connection for the process: its threads take turns on it.
            with self._direct_turn, direct.reading() as reader:
                yield reader
            return
        with _raw_reading(self.engine) as reader:
            yield reader

    def now(self) -> datetime:
        return self.clock()

    def get(self, slot: Slot[T]) -> T | None:
        """The value this process keeps in ``slot``, if any."""
        value: T | None = self._slots.get(slot)
        return value

    def put(self, slot: Slot[T], value: T) -> T:
        """Keep ``value`` in ``slot`` (replacing what was there) and return it."""
        self._slots[slot] = value
        return value

    def get_or_put(self, slot: Slot[T], make: Callable[[], T]) -> T:
        """The value in ``slot``, made with ``make()`` the first time."""
        value: T | None = self._slots.get(slot)
        if value is None:
            value = self._slots[slot] = make()
        return value

    def registry_changed(self) -> None:
        """This process changed devices, roles or bindings: views of the registry it keeps
        are stale (other serving processes learn within ``hot_cache_seconds``)."""
        self.registry_generation += 1

    def authority(self, role: str) -> Authority:
        """The active CA of ``role`` ('root' or 'issuing'), loaded once per process and
        looked up again after ``hot_cache_seconds`` (a CA rotated by another process is
        used from then on; a rotation in this process applies at once)."""
        cached = self._authorities.get(role)
        if cached is not None and self.recent(
                f"authority.active.{role}", self.settings.hot_cache_seconds,
                lambda: self._active_id(role)) == cached[0]:
            return cached[1]
        self._authorities.pop(role, None)
        return self._load(role)[1]

    def authority_id(self, role: str) -> int:
        """The store id of the active CA of ``role`` (looked up again like
        :meth:`authority`)."""
        self.authority(role)
        return self._load(role)[0]

    def issuing_id(self) -> int:
        return self.authority_id("issuing")

    def authority_by_id(self, authority_id: int) -> Authority:
        """Any CA of the store with its signer (a retiring CA signs its CRLs)."""
        cached = self._by_id.get(authority_id)
        if cached is not None:
            return cached
        with self.reading() as reader:
            row = reader.first("SELECT cert_der, key_label, key_offline FROM authorities "
                               "WHERE id = :id", {"id": authority_id})
        if row is None:
            raise NotFoundError(f"no CA with id {authority_id}",
                                hint="'iotsec ca list' shows the CAs and their ids")
        if row.key_offline:
            raise OfflineKeyError(f"the key of CA {authority_id} is kept offline: it "
                                  "signs nothing here",
                                  hint="sign with the offline root ('iotsec ca "
                                  "sign-intermediate') and import the result")
        from iotsec.pki.ca import Authority  # deferred: read commands sign nothing

        loaded = Authority.from_der(row.cert_der, self.keys.load(row.key_label))
        self._by_id[authority_id] = loaded
        return loaded

    def authorities_changed(self) -> None:
        """This process rotated, imported or retired a CA: load the CAs again."""
        self._authorities.clear()
        self._by_id.clear()
        for role in ("root", "issuing"):
            self.forget(f"authority.active.{role}")

    def _active_id(self, role: str) -> int | None:
        with self.reading() as reader:
            found = reader.first("SELECT id FROM authorities WHERE role = :role AND "
                                 "state = 'active' ORDER BY id DESC LIMIT 1", {"role": role})
        return None if found is None else int(found.id)

    def _load(self, role: str) -> tuple[int, Authority]:
        cached = self._authorities.get(role)
        if cached is not None:
            return cached
        authority_id = self._active_id(role)
        if authority_id is None:
            raise HomeNotInitialisedError(f"no active {role} CA in the store")
        loaded = (authority_id, self.authority_by_id(authority_id))
        self._authorities[role] = loaded
        self.recent(f"authority.active.{role}", 0, lambda: authority_id)
        return loaded

    def recent(self, key: str, ttl: float, load: Callable[[], T]) -> T:
        """``load()``'s value, reused for ``ttl`` seconds in this process (``ttl`` 0: always
        load). For hot-path reads whose staleness is bounded and documented."""
        now = time.monotonic()
        hit = self._recent.get(key)
        if hit is not None and now - hit[0] < ttl:
            return hit[1]  # type: ignore[return-value]
        value = load()
        if len(self._recent) > 100_000:
            self._recent.clear()
        self._recent[key] = (now, value)
        return value

    def refresh(self, key: str, load: Callable[[], T]) -> T:
        """Load ``key``'s value now and keep it for :meth:`recent` (a background thread's
        way of sparing requests the load)."""
        value = load()
        self._recent[key] = (time.monotonic(), value)
        return value

    def forget(self, key: str) -> None:
        self._recent.pop(key, None)

    def forget_prefix(self, prefix: str) -> None:
        """Forget every :meth:`recent` value whose key starts with ``prefix`` (safe while
        other threads use :meth:`recent`: the keys are copied first)."""
        for key in list(self._recent):
            if key.startswith(prefix):
                self._recent.pop(key, None)

    def on_close(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` when the runtime closes (to stop its background threads)."""
        self._closers.append(callback)

    def checkpoint_in_background(self) -> None:
        """For a long-running process (``iotsec serve``): on SQLite, its WAL is copied into
        the database file by a thread of its own until the runtime closes, instead of
        inside the commits of its requests (ADR 0048). Nothing on other stores."""
        from iotsec.store.db import wal_checkpoints  # deferred, as in Runtime.engine

        checkpoints = wal_checkpoints(self.engine)
        if checkpoints is not None:
            self.on_close(checkpoints.close)

    def close(self) -> None:
        try:
            for callback in reversed(self._closers):
                callback()
            self.custody.close()
            # Writes the events still buffered: on a full or read-only store this raises,
            # and the engine is closed all the same.
            if self._events is not None:
                self._events.close()
        finally:
            if self.direct is not None:
                self.direct.close()
            if self.opened_engine is not None:
                self.opened_engine.dispose()


def open_runtime(settings: Settings | None = None, *, clock: Callable[[], datetime] = utcnow,
                 check_schema: bool = True) -> Runtime:
    """Open an initialised home. Raises :class:`HomeNotInitialisedError` otherwise."""
    settings = with_remembered_database(settings or Settings())
    home: Path = settings.resolved_home
    sqlite_file = home / "iotsec.db"
    if settings.database_url is None and not sqlite_file.exists():
        raise HomeNotInitialisedError(f"{home} is not an initialised iotsec home")
    # The store is read on its driver itself (sqlite3 for the home's SQLite file, psycopg
    # for PostgreSQL) until a path needs the engine; a URL only SQLAlchemy reads through
    # the engine from the start.
    engine: Engine | None = None
    direct: DriverConnection | None = None
    arguments = None if settings.database_url is None else postgres_arguments(
        settings.store_url)
    if settings.database_url is None:
        direct = open_sqlite(sqlite_file)
    elif arguments is not None:
        direct = open_postgres(arguments)
    else:
        from iotsec.store.db import make_engine  # deferred, as in Runtime.engine

        engine = make_engine(settings.store_url)
    try:
        if check_schema:
            if direct is not None:
                with direct.reading() as reader:
                    current = is_current_on(reader, sqlite=not direct.postgres)
            else:
                assert engine is not None
                with _raw_reading(engine) as reader:
                    current = is_current_on(reader,
                                            sqlite=engine.url.get_backend_name() == "sqlite")
            if not current:
                raise HomeNotInitialisedError(
                    "the store is not initialised or not migrated",
                    hint="run 'iotsec init' (it migrates an existing store)")
        settings = with_remembered_keystore(settings)
        keys = open_key_store(settings)
    except BaseException:
        if direct is not None:
            direct.close()
        if engine is not None:
            engine.dispose()
        raise
    rt = Runtime(settings=settings, keys=keys, clock=clock, opened_engine=engine,
                 direct=direct)
    if hasattr(keys, "on_use"):
        keys.on_use = record_key_use(rt)
    return rt


def record_key_use(rt: Runtime, backend: str | None = None) -> Callable[[str, str], None]:
    """An ``on_use`` callback that records each use of a custody key as a ``key.use`` event
    (``backend``: where the key lives; by default the home's key store)."""
    where = backend or rt.settings.keystore

    def record(label: str, operation: str) -> None:
        rt.events.record(key_use_event(rt.now(), label, operation, where))
    return record
