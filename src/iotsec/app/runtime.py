"""What every use case needs: settings, the store, key custody, the CAs and the clock."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from sqlalchemy import Engine, select

from iotsec.app.events import Event, EventSink
from iotsec.app.store_location import with_remembered_database
from iotsec.config import Settings
from iotsec.custody.base import KeyStore
from iotsec.custody.home import (
    HomeCustody,
    open_key_store,
    with_remembered_keystore,
)
from iotsec.errors import HomeNotInitialisedError, NotFoundError, OfflineKeyError
from iotsec.store import models as m
from iotsec.store.db import make_engine, reading
from iotsec.store.migrate import is_current

if TYPE_CHECKING:
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


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    keys: KeyStore
    clock: Callable[[], datetime] = utcnow
    _authorities: dict[str, tuple[int, Authority]] = field(default_factory=dict)
    _by_id: dict[int, Authority] = field(default_factory=dict)
    #: Per-process derived state, one typed :class:`Slot` per kind (see :meth:`get`).
    _slots: dict[Slot[Any], Any] = field(default_factory=dict)
    #: Moves on every registry or policy change this process makes (see
    #: :meth:`registry_changed`), so per-process views of the registry know they are stale.
    registry_generation: int = 0
    events: EventSink = field(init=False)
    #: The token connection and the unlocked KEKs of this process.
    custody: HomeCustody = field(init=False)
    _recent: dict[str, tuple[float, object]] = field(default_factory=dict)
    _closers: list[Callable[[], None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.events = EventSink(self.engine)
        self.custody = HomeCustody(self.settings, self.keys)

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
        with reading(self.engine) as conn:
            row = conn.execute(
                select(m.authorities.c.cert_der, m.authorities.c.key_label,
                       m.authorities.c.key_offline)
                .where(m.authorities.c.id == authority_id)).first()
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
        with reading(self.engine) as conn:
            found = conn.execute(
                select(m.authorities.c.id)
                .where(m.authorities.c.role == role, m.authorities.c.state == "active")
                .order_by(m.authorities.c.id.desc()).limit(1)).scalar()
        return None if found is None else int(found)

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

    def close(self) -> None:
        try:
            for callback in reversed(self._closers):
                callback()
            self.custody.close()
            # Writes the events still buffered: on a full or read-only store this raises,
            # and the engine is closed all the same.
            self.events.close()
        finally:
            self.engine.dispose()


def open_runtime(settings: Settings | None = None, *, clock: Callable[[], datetime] = utcnow,
                 check_schema: bool = True) -> Runtime:
    """Open an initialised home. Raises :class:`HomeNotInitialisedError` otherwise."""
    settings = with_remembered_database(settings or Settings())
    home: Path = settings.resolved_home
    if settings.database_url is None and not (home / "iotsec.db").exists():
        raise HomeNotInitialisedError(f"{home} is not an initialised iotsec home")
    engine = make_engine(settings.store_url)
    if check_schema and not is_current(engine):
        engine.dispose()
        raise HomeNotInitialisedError("the store is not initialised or not migrated",
                                      hint="run 'iotsec init' (it migrates an existing store)")
    settings = with_remembered_keystore(settings)
    keys = open_key_store(settings)
    rt = Runtime(settings=settings, engine=engine, keys=keys, clock=clock)
    if hasattr(keys, "on_use"):
        keys.on_use = record_key_use(rt)
    return rt


def record_key_use(rt: Runtime, backend: str | None = None) -> Callable[[str, str], None]:
    """An ``on_use`` callback that records each use of a custody key as a ``key.use`` event
    (``backend``: where the key lives; by default the home's key store)."""
    where = backend or rt.settings.keystore

    def record(label: str, operation: str) -> None:
        rt.events.record(Event(at=rt.now(), kind="key.use", outcome="ok", subject=label,
                               detail={"operation": operation, "backend": where}))
    return record
