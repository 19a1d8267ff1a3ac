"""Security events: recorded in the store as a hash chain, listed by operators.

Every event is appended to one chain (:mod:`iotsec.eventlog.chain`): its position and its
hash over the previous event's hash are computed while the chain is locked (SQLite's write
lock; an advisory lock on PostgreSQL), so that every process appends to one order. A change
and its event can be one unit of work (:meth:`EventSink.record_in`): the event is then in
the chain when the change is reported done.

The CLI writes each other event in its own short transaction. A long-running server records
those through a buffer that a background thread flushes every fraction of a second (and on
shutdown), so that a record of every API decision does not put a database write on
every request's critical path.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, select, text

from iotsec.errors import InvalidInputError
from iotsec.eventlog.entries import GENESIS, link_rows
from iotsec.eventlog.event import ACTOR_WIDTH, MAX_FIELD, Event
from iotsec.store import event_chain
from iotsec.store import models as m
from iotsec.store.db import in_transaction, reading, transaction
from iotsec.store.direct import Direct, Unit
from iotsec.store.event_chain import CHAIN_LOCK
from iotsec.timeutil import from_ts, ts

__all__ = ["CHAIN_LOCK", "MAX_FIELD", "Event", "EventSink", "HeldEvents", "append_events",
           "chain_head", "iter_events", "list_events", "lock_chain"]

log = logging.getLogger("iotsec.events")


def lock_chain(conn: Connection) -> None:
    """Within ``conn``'s transaction, wait for the right to append to the chain (held until
    it ends). SQLite's write transactions are serialised already (BEGIN IMMEDIATE)."""
    if conn.dialect.name == "postgresql":
        conn.execute(text(event_chain.LOCK), {"key": CHAIN_LOCK})


def chain_head(conn: Connection) -> tuple[int, str]:
    """The position and hash of the chain's last entry ((0, GENESIS) when it is empty)."""
    e = m.events.c
    row = conn.execute(select(e.seq, e.hash).where(e.seq.is_not(None))
                       .order_by(e.seq.desc()).limit(1)).first()
    return (0, GENESIS) if row is None else (int(row.seq), str(row.hash))


# The append's statements (store/event_chain.py, shared with the append on the standard
# library's driver), run on the driver directly: every use case that records an event pays
# for them, and one certificate per call pays for them on each certificate.
_LOCK = Direct(text(event_chain.LOCK))
_HEAD = Direct(text(event_chain.HEAD))
_INSERT = Direct(text(event_chain.INSERT))


def append_events(conn: Unit, rows: list[dict[str, Any]]) -> None:
    """Append ``rows`` (:meth:`Event.row` values) to the chain within ``conn``'s
    transaction. On PostgreSQL the chain lock is held until that transaction ends: append
    last in a unit of work, after its other locks are taken."""
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        _LOCK.execute(conn, {"key": CHAIN_LOCK}).close()
    head = _HEAD.first(conn)
    seq, previous = (0, GENESIS) if head is None else (int(head.seq), str(head.hash))
    link_rows(rows, seq, previous)
    _INSERT.execute_many(conn, rows)


class HeldEvents:
    """Event rows held back for the unit of work that caused them (:meth:`EventSink.held`)."""

    __slots__ = ("rows", "taken")

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.taken: list[dict[str, Any]] = []

    def take(self) -> list[dict[str, Any]]:
        """The rows held so far, which the caller now appends in its unit of work (recorded
        apart after all if the block fails)."""
        rows = list(self.rows)
        self.rows.clear()
        self.taken += rows
        return rows


class EventSink:
    """Writes events to the store, directly or through a flushed buffer."""

    def __init__(self, engine: Engine, *, buffered: bool = False, interval: float = 0.2) -> None:
        self._engine = engine
        self._buffer: deque[dict[str, Any]] = deque()
        # Repeats of one routine event within a flush interval, as one row with a count.
        self._repeats: dict[tuple[Any, ...], list[Any]] = {}
        self._lock = threading.Lock()
        self._writing = threading.Lock()
        self._held = threading.local()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if buffered:
            self._thread = threading.Thread(target=self._run, args=(interval,),
                                            name="iotsec-events", daemon=True)
            self._thread.start()

    def record(self, event: Event) -> None:
        held = getattr(self._held, "rows", None)
        if held is not None:
            held.append(event.row())
            return
        if self._thread is None and not in_transaction():
            self.flush()
            self._write([event.row()])
        else:
            # Buffered in a server; and always while this thread holds a transaction open,
            # whose lock the event's own write would wait for. Written at the next record
            # outside a transaction, or at flush/close.
            self._buffer.append(event.row())

    def record_many(self, events: list[Event]) -> None:
        """Record several events as :meth:`record` does, written together: one
        transaction and one append to the chain for all of them."""
        rows = [event.row() for event in events]
        if not rows:
            return
        held = getattr(self._held, "rows", None)
        if held is not None:
            held.extend(rows)
            return
        if self._thread is None and not in_transaction():
            self.flush()
            self._write(rows)
        else:
            self._buffer.extend(rows)

    @contextmanager
    def held(self) -> Iterator[HeldEvents]:
        """Hold the events this thread records meanwhile (a CA signature's ``key.use``), so
        that the unit of work that caused them appends them to the chain with its change
        (:meth:`HeldEvents.take`). What is not taken, and what was taken by a unit of work
        that then failed (the key was used all the same), is recorded as usual when the
        block ends (buffered)."""
        outer = getattr(self._held, "rows", None)
        held = HeldEvents()
        self._held.rows = held.rows
        failed = False
        try:
            yield held
        except BaseException:
            failed = True
            raise
        finally:
            self._held.rows = outer
            left = [*held.taken, *held.rows] if failed else list(held.rows)
            # Into the outer block, else the buffer (written at the next record outside a
            # transaction, or at flush/close): a write here could hide the failure.
            if outer is not None:
                outer.extend(left)
            else:
                self._buffer.extend(left)

    def record_in(self, conn: Connection, event: Event) -> None:
        """Append ``event`` within ``conn``'s transaction: it is in the chain exactly when
        the change it records is committed (call it last in the unit of work)."""
        append_events(conn, [event.row()])

    def record_repeated(self, event: Event) -> None:
        """Record a routine event that may repeat many times a second (an accepted API
        token on a hot path, a broker request denied again and again). A buffered sink writes
        identical repeats (same kind, outcome, actor, source, subject and detail) within a
        flush interval as one row: the first time, and ``count`` in its detail. Anything
        unusual goes through :meth:`record`."""
        if self._thread is None:
            self.record(event)
            return
        try:
            detail = frozenset(event.detail.items()) if event.detail else None
            key = (event.kind, event.outcome, event.actor, event.source, event.subject,
                   detail)
            hash(key)
        except TypeError:  # a detail with unhashable values: not a routine repeat
            self.record(event)
            return
        with self._lock:
            seen = self._repeats.get(key)
            if seen is None:
                self._repeats[key] = [event, 1]
            else:
                seen[1] += 1

    def flush(self) -> None:
        # Taken under the lock, written outside it: a request recording an event never
        # waits for the store.
        with self._lock:
            rows = []
            while self._buffer:
                rows.append(self._buffer.popleft())
            repeats, self._repeats = self._repeats, {}
        for event, count in repeats.values():
            row = event.row()
            if count > 1:
                detail = {**dict(event.detail or {}), "count": count}
                row["detail"] = json.dumps(detail, sort_keys=True, default=str)
            rows.append(row)
        if rows:
            with self._writing:
                self._write(rows)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.flush()

    def _run(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.flush()
            except Exception:  # keep the recorder alive; the events stay visible in the log
                log.exception("could not write security events")

    def _write(self, rows: list[dict[str, Any]]) -> None:
        # Through the unit of work, so a read-only or full store is a StoreError that says so.
        with transaction(self._engine) as conn:
            append_events(conn, rows)


def _filtered(query: Any, *, kind: str | None, actor: str | None, since: datetime | None,
              until: datetime | None) -> Any:
    e = m.events.c
    if kind:
        query = query.where(e.kind == kind)
    if actor is not None:
        query = query.where(e.actor == actor[:ACTOR_WIDTH])
    if since is not None:
        query = query.where(e.at >= ts(since))
    if until is not None:
        query = query.where(e.at <= ts(until))
    return query


def _event(r: Any) -> Event:
    return Event(at=from_ts(r.at), kind=r.kind, outcome=r.outcome, actor=r.actor,
                 source=r.source, subject=r.subject, detail=json.loads(r.detail), id=r.id,
                 seq=r.seq, hash=r.hash)


def list_events(engine: Engine, *, kind: str | None = None, limit: int = 100,
                before: int | None = None, actor: str | None = None,
                since: datetime | None = None, until: datetime | None = None) -> list[Event]:
    """Newest first; ``before`` pages by event id; ``actor`` keeps one device's (or one
    operator's) events; ``since``/``until`` bound their time (inclusive)."""
    if not 1 <= limit <= 10_000:
        raise InvalidInputError("limit must be between 1 and 10000")
    query = select(m.events).order_by(m.events.c.id.desc()).limit(limit)
    if before is not None:
        query = query.where(m.events.c.id < before)
    query = _filtered(query, kind=kind, actor=actor, since=since, until=until)
    with reading(engine) as conn:
        return [_event(r) for r in conn.execute(query)]


def iter_events(engine: Engine, *, kind: str | None = None, actor: str | None = None,
                since: datetime | None = None, until: datetime | None = None,
                batch: int = 5000) -> Iterator[Event]:
    """Every matching event, oldest first, read in batches (for exports of any size)."""
    last = 0
    while True:
        query = _filtered(select(m.events).where(m.events.c.id > last)
                          .order_by(m.events.c.id).limit(batch),
                          kind=kind, actor=actor, since=since, until=until)
        with reading(engine) as conn:
            rows = conn.execute(query).all()
        if not rows:
            return
        for r in rows:
            yield _event(r)
        last = rows[-1].id
