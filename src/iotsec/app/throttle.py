"""The failed-authentication throttle, shared by every kind of credential (operator API
tokens, device tokens): a source that fails too often is refused for a while."""

from __future__ import annotations

import threading
import time
from collections import deque

from iotsec.app.runtime import Runtime, Slot
from iotsec.errors import ThrottledError

__all__ = ["Throttle", "failure_throttle"]


class Throttle:
    """At most ``limit`` failed authentications per source in ``window`` seconds; past
    that, the source is refused for ``penalty`` seconds. Per process."""

    def __init__(self, limit: int = 10, window: float = 60.0, penalty: float = 60.0,
                 clock: object = time.monotonic) -> None:
        self.limit, self.window, self.penalty = limit, window, penalty
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}
        self._blocked: dict[str, float] = {}
        self._lock = threading.Lock()

    def _now(self) -> float:
        return float(self._clock())  # type: ignore[operator]

    def check(self, source: str) -> None:
        with self._lock:
            until = self._blocked.get(source)
            if until is not None:
                if self._now() < until:
                    raise ThrottledError("too many failed authentications from this address",
                                         retry_after=int(until - self._now()) + 1)
                del self._blocked[source]

    def failed(self, source: str) -> None:
        with self._lock:
            now = self._now()
            times = self._failures.setdefault(source, deque())
            times.append(now)
            while times and times[0] < now - self.window:
                times.popleft()
            if len(times) >= self.limit:
                self._blocked[source] = now + self.penalty
                times.clear()
            if len(self._failures) > 100_000:  # bound memory under a spray of sources
                self._failures.clear()

    def succeeded(self, source: str) -> None:
        with self._lock:
            self._failures.pop(source, None)


#: Failed authentications per source, for the throttle.
_THROTTLE: Slot[Throttle] = Slot("throttle")


def failure_throttle(rt: Runtime) -> Throttle:
    """The process's failed-authentication throttle, shared by every kind of credential
    (operator tokens, device tokens): a source that fails with one is refused the others."""
    return rt.get_or_put(_THROTTLE, lambda: Throttle(limit=rt.settings.auth_failure_limit))
