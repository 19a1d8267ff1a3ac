"""What this process counted since it started: decisions, authentications, request
latencies. Counting is a locked dictionary update (no library, nothing on the store), so
the hot paths pay well under a microsecond; ``/metrics`` (:mod:`iotsec.app.monitor.metrics`)
exposes a snapshot in the Prometheus format.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

__all__ = ["COUNTERS", "LATENCY_BUCKETS", "Counters", "Histogram"]

#: Upper bounds (seconds) of the request latency buckets; +Inf is implied.
LATENCY_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                          5.0, 10.0)


@dataclass(slots=True)
class Histogram:
    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)  # per bucket, the last one is +Inf
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1

    def copy(self) -> Histogram:
        return Histogram(self.bounds, list(self.counts), self.total, self.count)


class Counters:
    """Named counters and histograms, each with a tuple of label values."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, tuple[str, ...]], int] = {}
        self._histograms: dict[tuple[str, tuple[str, ...]], Histogram] = {}

    def inc(self, name: str, labels: tuple[str, ...] = (), amount: int = 1) -> None:
        key = (name, labels)
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + amount

    def observe(self, name: str, value: float, labels: tuple[str, ...] = (),
                bounds: Sequence[float] = LATENCY_BUCKETS) -> None:
        key = (name, labels)
        with self._lock:
            histogram = self._histograms.get(key)
            if histogram is None:
                histogram = self._histograms[key] = Histogram(tuple(bounds))
            histogram.observe(value)

    def snapshot(self) -> tuple[dict[tuple[str, tuple[str, ...]], int],
                                dict[tuple[str, tuple[str, ...]], Histogram]]:
        with self._lock:
            return dict(self._counts), {k: h.copy() for k, h in self._histograms.items()}

    def clear(self) -> None:
        with self._lock:
            self._counts.clear()
            self._histograms.clear()


#: The process's counters.
COUNTERS: Final = Counters()
