"""Aggregates a page never waits for: a value is computed in a background thread and held;
a request answers what is held (however old, with its age) and, once it is older than its
lifetime, has one background thread compute the next one. Until a first value exists the
page says it is being computed and asks again.

A value with a :class:`Stored` codec is also kept in the store (``console_summaries``), so
that a serving process that has just started, and every other serving process, answers the
newest one at once; a claim in the same row lets one process at a time recompute it (a
claim lapses, so a process that died while computing does not stop the others).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from sqlalchemy import and_, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from iotsec.app.runtime import Runtime, Slot
from iotsec.store import models as m
from iotsec.store.db import reading, transaction

__all__ = ["CLAIM_SECONDS", "MIN_REFRESH", "Held", "Stored", "held", "held_or_refreshing",
           "value_now"]

T = TypeVar("T")
log = logging.getLogger("iotsec.console")

#: A refresh asked for by hand recomputes at most this often (seconds): a page's
#: "refresh now" link must not let anyone make the store scan a million rows at will.
MIN_REFRESH = 5.0
#: How long a process's claim to recompute a stored value holds (seconds).
CLAIM_SECONDS = 120
#: How long a download waits for a computation already under way before it computes.
_WAIT_SECONDS = 300.0


class Stored(Protocol[T]):
    """How a value is written to and read from the store."""

    def encode(self, value: T) -> str: ...

    def decode(self, text: str) -> T: ...


@dataclass(frozen=True, slots=True)
class Held(Generic[T]):
    value: T
    #: Seconds since the value was computed.
    age: float
    #: Whether a newer value is being computed by this process.
    refreshing: bool


_LOCK = threading.Lock()


class _Entry:
    __slots__ = ("at", "done", "has_value", "refreshing", "value")

    def __init__(self) -> None:
        self.value: Any = None
        self.has_value = False
        self.at = 0.0  # wall-clock time the value was computed
        self.refreshing = False
        self.done = threading.Condition(_LOCK)


_ENTRIES: Slot[dict[str, _Entry]] = Slot("console.cache")


def _entry(rt: Runtime, key: str) -> _Entry:
    entries = rt.get_or_put(_ENTRIES, dict)
    with _LOCK:
        found = entries.get(key)
        if found is None:
            found = entries[key] = _Entry()
        return found


def _adopt_stored(rt: Runtime, key: str, entry: _Entry, stored: Stored[Any]) -> None:
    """Take the stored value if it is newer than the one held."""
    s = m.console_summaries.c
    with reading(rt.engine) as conn:
        row = conn.execute(select(s.computed_at, s.body).where(s.key == key)).first()
    if row is None or not row.body or row.computed_at <= entry.at:
        return
    try:
        value = stored.decode(row.body)
    except (ValueError, TypeError, KeyError, IndexError) as exc:  # another version wrote it
        log.warning("ignoring the stored %s: %s", key, exc)
        return
    with _LOCK:
        if row.computed_at > entry.at:
            entry.value, entry.at, entry.has_value = value, float(row.computed_at), True
            entry.done.notify_all()


def _claim(rt: Runtime, key: str) -> bool:
    """Whether this process may recompute the stored ``key`` now (no live claim of another)."""
    s = m.console_summaries.c
    now = int(time.time())
    try:
        with transaction(rt.engine) as conn:
            claimed = conn.execute(
                update(m.console_summaries)
                .where(and_(s.key == key, or_(s.claimed_until.is_(None),
                                              s.claimed_until < now)))
                .values(claimed_until=now + CLAIM_SECONDS)).rowcount
            if claimed:
                return True
            exists = conn.execute(select(s.key).where(s.key == key)).first() is not None
            if exists:
                return False
            conn.execute(insert(m.console_summaries).values(
                key=key, computed_at=0, body="", claimed_until=now + CLAIM_SECONDS))
            return True
    except IntegrityError:  # another process inserted the row first: its claim
        return False


def _release(rt: Runtime, key: str) -> None:
    s = m.console_summaries.c
    try:
        with transaction(rt.engine) as conn:
            conn.execute(update(m.console_summaries).where(s.key == key)
                         .values(claimed_until=None))
    except Exception:  # the claim lapses by itself
        log.exception("could not release the claim on %s", key)


def _keep(rt: Runtime, key: str, value: Any, at: float, stored: Stored[Any]) -> None:
    s = m.console_summaries.c
    body = stored.encode(value)
    with transaction(rt.engine) as conn:
        written = conn.execute(update(m.console_summaries).where(s.key == key).values(
            computed_at=int(at), body=body, claimed_until=None)).rowcount
        if not written:
            conn.execute(insert(m.console_summaries).values(
                key=key, computed_at=int(at), body=body, claimed_until=None))


def _compute(rt: Runtime, key: str, entry: _Entry, load: Callable[[], Any],
             stored: Stored[Any] | None) -> None:
    """Claim (a stored value), compute and keep; in a background thread, so that not even
    the claim's write is on a request's path."""
    if stored is not None:
        try:
            claimed = _claim(rt, key)
        except Exception:  # the store is unreachable for a while: a later request retries
            log.exception("could not claim %s", key)
            claimed = False
        if not claimed:  # another process is computing it: its value is read next time
            with _LOCK:
                entry.refreshing = False
                entry.done.notify_all()
            return
    try:
        at = time.time()
        value = load()
        if stored is not None:
            _keep(rt, key, value, at, stored)
    except Exception:  # the old value stays; a later request tries again
        log.exception("computing %s failed", key)
        if stored is not None:
            _release(rt, key)
        with _LOCK:
            entry.refreshing = False
            entry.done.notify_all()
        return
    with _LOCK:
        if at >= entry.at:
            entry.value, entry.at, entry.has_value = value, at, True
        entry.refreshing = False
        entry.done.notify_all()


def held_or_refreshing(rt: Runtime, key: str, ttl: float, load: Callable[[], T], *,
                       fresh: bool = False, stored: Stored[T] | None = None
                       ) -> Held[T] | None:
    """The value held under ``key`` (``None`` while a first one is computed), never waiting
    for ``load``. A value older than ``ttl`` seconds, or ``fresh`` and older than
    :data:`MIN_REFRESH`, has a newer one computed in a background thread."""
    entry = _entry(rt, key)
    if stored is not None:
        with _LOCK:
            looked = entry.has_value and time.time() - entry.at < ttl and not fresh
        if not looked:  # a newer value may be in the store (another process computed it)
            _adopt_stored(rt, key, entry, stored)
    now = time.time()
    with _LOCK:
        age = now - entry.at
        due = (not entry.has_value or age >= ttl or (fresh and age >= MIN_REFRESH))
        start = due and not entry.refreshing
        if start:
            entry.refreshing = True
    with _LOCK:  # what is held now, before a computation started here can replace it
        answer = (Held(entry.value, max(0.0, now - entry.at), entry.refreshing)
                  if entry.has_value else None)
    if start:
        _start(rt, key, entry, load, stored)
    return answer


_THREADS: Slot[set[threading.Thread]] = Slot("console.cache.threads")


def _start(rt: Runtime, key: str, entry: _Entry, load: Callable[[], Any],
           stored: Stored[Any] | None) -> None:
    """Compute in a thread the runtime waits for when it closes (it must not outlive the
    store it reads)."""
    with _LOCK:
        threads = rt.get(_THREADS)
        if threads is None:
            threads = rt.put(_THREADS, set())
            joined = threads

            def join_all() -> None:
                for thread in list(joined):
                    thread.join(timeout=_WAIT_SECONDS)

            rt.on_close(join_all)

    def run() -> None:
        try:
            _compute(rt, key, entry, load, stored)
        finally:
            threads.discard(threading.current_thread())

    thread = threading.Thread(target=run, name=f"console-{key}", daemon=True)
    threads.add(thread)
    thread.start()


def value_now(rt: Runtime, key: str, ttl: float, load: Callable[[], T], *,
              fresh: bool = False, stored: Stored[T] | None = None) -> T:
    """The value held under ``key``, waiting for a first one if none is held (a download:
    the request is for the value itself); ``fresh`` also waits for the newer value it has
    computed."""
    got = held_or_refreshing(rt, key, ttl, load, fresh=fresh, stored=stored)
    if got is not None and not (fresh and got.refreshing):
        return got.value
    entry = _entry(rt, key)
    deadline = time.monotonic() + _WAIT_SECONDS
    with _LOCK:
        while entry.refreshing and time.monotonic() < deadline:
            entry.done.wait(timeout=1.0)
        if entry.has_value:
            return entry.value  # type: ignore[no-any-return]
    value = load()  # its computation failed, or another process holds the claim
    with _LOCK:
        entry.value, entry.at, entry.has_value = value, time.time(), True
    return value


def held(rt: Runtime, key: str) -> Any | None:
    """The value held under ``key``, if any, without computing anything."""
    entries = rt.get(_ENTRIES) or {}
    with _LOCK:
        entry = entries.get(key)
        return entry.value if entry is not None and entry.has_value else None
