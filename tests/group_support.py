"""Helpers for tests of the group commit (:mod:`iotsec.app.pki.group_issuance`): requests
made to wait for one another so that they form one group, whatever the thread scheduling."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from iotsec.app.pki.group_issuance import IssuanceGroups

__all__ = ["Gate", "concurrently"]


class Gate:
    """Holds the first group's commit until ``expected`` other requests wait behind it, so
    that they form the next group (whatever the thread scheduling)."""

    def __init__(self, groups: IssuanceGroups, expected: int,
                 then: Callable[[int], None] | None = None) -> None:
        self.groups = groups
        self.expected = expected
        self.then = then
        self.commits = 0

    def __call__(self) -> None:
        self.commits += 1
        if self.commits == 1:
            for _ in range(2000):
                with self.groups._lock:
                    if len(self.groups._waiting) >= self.expected:
                        break
                threading.Event().wait(0.005)
            else:
                raise AssertionError("the other requests never arrived")
        if self.then is not None:
            self.then(self.commits)


def concurrently(calls: list[Callable[[], Any]]) -> list[Any]:
    """Run every call at once in threads of its own; each result or exception, in order."""
    results: list[Any] = [None] * len(calls)

    def run(i: int, call: Callable[[], Any]) -> None:
        try:
            results[i] = call()
        except Exception as exc:  # the test inspects it
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    return results
