"""What the read services take: a store to read and a clock.

The runtime is one (:class:`iotsec.app.runtime.Runtime`); a command that starts without it
(:mod:`iotsec.cli.lean`) gives the same reads on a store opened on its driver
(:mod:`iotsec.app.direct_store`), without the settings model.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from iotsec.store.reader import DriverConnection, Reader

__all__ = ["DirectReads", "Reads", "open_direct_reads"]


class Reads(Protocol):
    """A store to read, in one read transaction at a time, and the time it is."""

    def reading(self) -> AbstractContextManager[Reader]: ...

    def now(self) -> datetime: ...


class DirectReads:
    """:class:`Reads` on a store opened on its driver, with the system's clock (the one
    the runtime keeps when no setting names another)."""

    __slots__ = ("_store",)

    def __init__(self, store: DriverConnection) -> None:
        self._store = store

    def reading(self) -> AbstractContextManager[Reader]:
        return self._store.reading()

    def now(self) -> datetime:
        return datetime.now(UTC)

    def close(self) -> None:
        self._store.close()


def open_direct_reads() -> DirectReads | None:
    """Reads on the home's store opened on its driver
    (:func:`iotsec.app.direct_store.open_direct_store`), or None when the command must open
    the runtime instead (nothing was read then). Close it when done."""
    from iotsec.app.direct_store import open_direct_store  # deferred: the runtime's reads need none

    store = open_direct_store()
    return None if store is None else DirectReads(store)
