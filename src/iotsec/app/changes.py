"""The change feed: how a serving process learns at once that another one changed what it
keeps in memory (a device's state, a revocation, the policy, an API token, the CAs).

On PostgreSQL, triggers (migration 0023) send ``NOTIFY iotsec_changes, '<kind>:<id>'`` in
the transaction of every such change, and PostgreSQL delivers it when that transaction
commits. Each serving process holds one extra connection that LISTENs, in a daemon thread
(:func:`listen`), and hands what arrives to the subscribers (:func:`subscribe`): each
follows the changes of its own cache, so that a change made through any process is
enforced by all within a fraction of a second instead of within ``hot_cache_seconds``.

A notification sent while the listening connection was down is lost, so after every
(re)connection -- the first one included, which may come after the caches were read --
subscribers are called with ``None``: revalidate everything. The periodic looks each
cache already makes remain, as the bound when the listener cannot reach the store at all.

SQLite has one host and no listeners: :func:`listen` does nothing there, and the caches
follow their periodic looks as before.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from iotsec.app.runtime import Runtime, Slot

if TYPE_CHECKING:
    import psycopg

__all__ = ["CHANNEL", "Change", "Listener", "Subscriber", "listen", "parse_change",
           "subscribe"]

log = logging.getLogger("iotsec.changes")

#: The PostgreSQL channel the triggers notify.
CHANNEL = "iotsec_changes"
#: Seconds between attempts to reconnect a lost listening connection (the longest wait).
RETRY_SECONDS = 1.0
#: How long one wait for notifications lasts before the thread looks whether to stop.
_WAIT_SECONDS = 0.5
#: How long notifications queued behind a first one are gathered into its batch, and how
#: many at most.
_DRAIN_SECONDS = 0.01
_BATCH = 1000


@dataclass(frozen=True, slots=True)
class Change:
    """One announced change: ``kind`` (device, cert, token, policy, authority) and ``key``
    (the device id, the certificate serial, the token id; ``*``: any or many)."""

    kind: str
    key: str


def parse_change(payload: str) -> Change:
    """A notification's payload as a :class:`Change` (``kind:key``; a payload without a
    colon is ``kind:*``)."""
    kind, sep, key = payload.partition(":")
    return Change(kind, key if sep and key else "*")


#: Called with the changes that arrived together, or with ``None``: revalidate everything
#: (the listening connection was (re)made, and changes may have been missed meanwhile).
Subscriber = Callable[[list[Change] | None], None]


@dataclass
class _Subscribers:
    callbacks: list[Subscriber] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


_SUBSCRIBERS: Slot[_Subscribers] = Slot("changes.subscribers")
_LISTENER: Slot[Listener] = Slot("changes.listener")


def subscribe(rt: Runtime, callback: Subscriber) -> None:
    """Call ``callback`` (from the listening thread) for each batch of changes. It must be
    quick (wake a thread, drop a cache entry): the next notifications wait for it."""
    subscribers = rt.get_or_put(_SUBSCRIBERS, _Subscribers)
    with subscribers.lock:
        subscribers.callbacks.append(callback)


def _deliver(rt: Runtime, changes: list[Change] | None) -> None:
    subscribers = rt.get_or_put(_SUBSCRIBERS, _Subscribers)
    with subscribers.lock:
        callbacks = list(subscribers.callbacks)
    for callback in callbacks:
        try:
            callback(changes)
        except Exception:  # one subscriber's failure must not starve the others
            log.exception("a change-feed subscriber failed")


def _connect_arguments(rt: Runtime) -> dict[str, Any] | None:
    """psycopg's connection arguments for the store, or None when it is not PostgreSQL."""
    url = rt.engine.url
    if url.get_backend_name() != "postgresql":
        return None
    _args, kwargs = rt.engine.dialect.create_connect_args(url)
    return dict(kwargs)


class Listener:
    """The listening connection of one process and its thread (see the module's text)."""

    def __init__(self, rt: Runtime, arguments: dict[str, Any]) -> None:
        self._rt = rt
        self._arguments = {**arguments, "autocommit": True,
                           # Named after the process, so that an operator (or a test)
                           # finds this process's listening session in pg_stat_activity.
                           "application_name": f"iotsec-changes/{os.getpid()}"}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="iotsec-changes", daemon=True)

    def start(self) -> Listener:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=_WAIT_SECONDS + 5)

    def _run(self) -> None:
        # Imported here: only a serving process on PostgreSQL listens, and every command
        # that imports the decisions would otherwise pay for the driver at start-up.
        import psycopg

        delay = 0.1
        while not self._stop.is_set():
            try:
                with psycopg.connect(**self._arguments) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    delay = 0.1
                    # Whatever changed while nobody listened (or before the first LISTEN)
                    # is found by one full revalidation.
                    _deliver(self._rt, None)
                    self._follow(conn)
            except psycopg.Error as exc:
                if self._stop.is_set():
                    break
                log.warning("the change feed lost its connection to the store (%s); "
                            "reconnecting", type(exc).__name__)
            except Exception:  # never leave the process without its feed
                log.exception("the change feed failed; reconnecting")
            # Back off while the store is unreachable, but never longer than a second: the
            # caches fall back on their periodic looks meanwhile.
            self._stop.wait(delay)
            delay = min(delay * 2, RETRY_SECONDS)

    def _follow(self, conn: psycopg.Connection[Any]) -> None:
        while not self._stop.is_set():
            # The first notification as soon as it arrives, then those already queued
            # behind it (a statement that changed several rows), delivered together.
            batch = [parse_change(n.payload)
                     for n in conn.notifies(timeout=_WAIT_SECONDS, stop_after=1)]
            if batch:
                batch += [parse_change(n.payload)
                          for n in conn.notifies(timeout=_DRAIN_SECONDS, stop_after=_BATCH)]
                _deliver(self._rt, batch)


def listen(rt: Runtime) -> Listener | None:
    """Start this process's listener, once, until ``rt`` closes; ``None`` on SQLite."""
    held = rt.get(_LISTENER)
    if held is not None:
        return held
    arguments = _connect_arguments(rt)
    if arguments is None:
        return None
    listener = rt.put(_LISTENER, Listener(rt, arguments)).start()
    rt.on_close(listener.stop)
    return listener
