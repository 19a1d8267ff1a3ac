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
    from iotsec.store.reader import Reader

__all__ = ["DirectReads", "Reads"]


class Reads(Protocol):
    """A store to read, in one read transaction at a time, and the time it is."""

    def reading(self) -> AbstractContextManager[Reader]: ...

    def now(self) -> datetime: ...


class _Readable(Protocol):
    def reading(self) -> AbstractContextManager[Reader]: ...


class DirectReads:
    """:class:`Reads` on a store opened on its driver, with the system's clock (the one
    the runtime keeps when no setting names another)."""

    __slots__ = ("_store",)

    def __init__(self, store: _Readable) -> None:
        self._store = store

    def reading(self) -> AbstractContextManager[Reader]:
        return self._store.reading()

    def now(self) -> datetime:
        return datetime.now(UTC)
