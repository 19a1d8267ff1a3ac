"""Aggregates served stale while they are recomputed: the first request of a process
computes them; after that a request never waits for them. Once older than its lifetime a
value is still answered, and one background thread computes the next one."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from iotsec.app.runtime import Runtime, Slot

__all__ = ["MIN_REFRESH", "held", "stale_while_refreshing"]

T = TypeVar("T")
log = logging.getLogger("iotsec.console")

#: A refresh asked for by hand recomputes at most this often (seconds): a page's
#: "refresh now" link must not let anyone make the store scan a million rows at will.
MIN_REFRESH = 5.0


class _Entry:
    __slots__ = ("at", "refreshing", "value")

    def __init__(self, at: float, value: Any) -> None:
        self.at, self.value, self.refreshing = at, value, False


_ENTRIES: Slot[dict[str, _Entry]] = Slot("console.cache")
_LOCK = threading.Lock()


def stale_while_refreshing(rt: Runtime, key: str, ttl: float, load: Callable[[], T], *,
                           fresh: bool = False) -> tuple[T, float]:
    """``load()``'s value and its age in seconds. ``fresh``: computed now, unless the value
    held is younger than :data:`MIN_REFRESH`."""
    entries = rt.get_or_put(_ENTRIES, dict)
    now = time.monotonic()
    with _LOCK:
        entry = entries.get(key)
    if entry is None or (fresh and now - entry.at >= MIN_REFRESH):
        value = load()
        with _LOCK:
            entries[key] = _Entry(time.monotonic(), value)
        return value, 0.0
    with _LOCK:
        start = now - entry.at >= ttl and not entry.refreshing
        if start:
            entry.refreshing = True
    if start:
        def refresh() -> None:
            try:
                value = load()
            except Exception:  # the old value stays; the next request tries again
                log.exception("recomputing %s failed", key)
                with _LOCK:
                    entry.refreshing = False
                return
            with _LOCK:
                entries[key] = _Entry(time.monotonic(), value)

        threading.Thread(target=refresh, name=f"console-{key}", daemon=True).start()
    return entry.value, now - entry.at


def held(rt: Runtime, key: str) -> Any | None:
    """The value held under ``key``, if any, without computing anything."""
    entries = rt.get(_ENTRIES) or {}
    with _LOCK:
        entry = entries.get(key)
    return entry.value if entry is not None else None
