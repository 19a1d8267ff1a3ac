"""Registry entries for the decision hot path, cached per serving process.

A decision needs the device's state, groups, attributes and own roles. Reading them from
the store on every request would cost more than the decision itself, and a time-to-live
alone would make a large fleet miss the cache on nearly every request. So entries stay
until the device changes: at most every ``hot_cache_seconds`` one indexed query asks the
store which devices were updated since the last look (``devices.updated_at``), and the
cached ones among them are read again, in batches, and replaced; changes made by this
process to the registry drop the whole cache at once (``bindings.policy_changed``), except
a device an enrolment registers just in time, which no cache holds yet. A
device's groups and attributes are written only when it is registered, and its state and
its own roles change with ``updated_at``, so every change is seen within that delay.

A look asks again about writes up to ``MARGIN_SECONDS`` before the previous one, in case
their transactions were still open then; an entry read more than that margin after a
write's timestamp already reflects it and is not read again.

On PostgreSQL a serving process also follows the change feed (:mod:`iotsec.app.changes`):
a device changed through another process is read again as soon as its change commits
(:meth:`DeviceCache.reread`), and the periodic look stays as the bound.

Entries are read when a device is first asked about, one at a time (:meth:`get`) or many in
one batch (:meth:`get_many`, or :meth:`get_parts` for a caller that decides while the rest
is read), never the whole fleet at start. The cache holds at most ``MAX_ENTRIES``: when a
read would pass that, the entries read first are dropped (a sixteenth of the bound at a
time), so a fleet larger than the bound keeps most of what it asked about recently instead
of losing everything at once. A dropped entry is read again when next asked about.

In a serving process the looks run in a background thread (``background=True``): a request
never waits for the store because a look was due, and a bulk change (an import of 100,000
devices) is read again while requests go on being answered from the entries in memory.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterable, Iterator, Sequence

from iotsec.app.identity.device_reads import (
    DecisionEntry,
    decision_entries,
    entry_of,
    entry_parts,
    get_device,
)
from iotsec.app.runtime import Runtime
from iotsec.timeutil import ts

__all__ = ["MARGIN_SECONDS", "MAX_ENTRIES", "DeviceCache"]

#: Writes whose transaction began up to this many seconds before a look are still caught.
MARGIN_SECONDS = 5
MAX_ENTRIES = 500_000
#: The devices changed since a moment (``devices.updated_at`` is indexed).
_CHANGED = "SELECT id, updated_at FROM devices WHERE updated_at >= :since"


class DeviceCache:
    def __init__(self, rt: Runtime, *, background: bool = False) -> None:
        self._entries: dict[str, DecisionEntry] = {}
        #: When (store clock, whole seconds, rounded down) each entry was read.
        self._read_at: dict[str, int] = {}
        self._looked = time.monotonic()
        self._since = ts(rt.now())
        self._looking = threading.Lock()
        #: Looks are run by a background thread calling :meth:`revalidate`, never by a
        #: request.
        self.background = background

    def __len__(self) -> int:
        return len(self._entries)

    def revalidate(self, rt: Runtime, *, force: bool = False) -> None:
        """Look for devices changed since the last look (if one is due, or ``force``) and
        read the cached ones among them again."""
        now = time.monotonic()
        if not force and now - self._looked < rt.settings.hot_cache_seconds:
            return
        # One look at a time; the others go on with the entries they have (which are at most
        # one delay old).
        if not self._looking.acquire(blocking=False):
            return
        try:
            started = ts(rt.now())
            if self._entries:
                with rt.reading() as reader:
                    changed = reader.tuples(_CHANGED, {"since": self._since - MARGIN_SECONDS})
                read_at = self._read_at
                # Read again unless the entry was read more than the margin after the
                # write began (so after it committed); +1 for whole-second timestamps.
                stale = [device_id for device_id, updated in changed
                         if device_id in self._entries
                         and read_at.get(device_id, 0) <= updated + MARGIN_SECONDS + 1]
                if stale:
                    self._reread(rt, stale, started)
            self._looked, self._since = now, started
        finally:
            self._looking.release()

    def reread(self, rt: Runtime, device_ids: Iterable[str]) -> int:
        """Read again, now, the cached entries among ``device_ids`` (devices the change feed
        announced as changed, their change committed); returns how many were read."""
        started = ts(rt.now())
        cached = [device_id for device_id in set(device_ids) if device_id in self._entries]
        if cached:
            self._reread(rt, cached, started)
        return len(cached)

    def _reread(self, rt: Runtime, device_ids: list[str], started: int) -> None:
        found = decision_entries(rt, device_ids)
        for device_id in device_ids:
            entry = found.get(device_id)
            if entry is None:  # no longer registered
                self._entries.pop(device_id, None)
                self._read_at.pop(device_id, None)
            else:
                self._entries[device_id] = entry
                self._read_at[device_id] = started

    def peek(self, rt: Runtime, device_id: str) -> DecisionEntry | None:
        """The cached entry, or ``None`` when it must be read from the store. Without a
        background thread, a look that is due is made first."""
        if not self.background:
            self.revalidate(rt)
        return self._entries.get(device_id)

    def get(self, rt: Runtime, device_id: str) -> DecisionEntry:
        """The entry, read from the store when it is not cached (a
        :class:`~iotsec.errors.NotFoundError` for an unknown device, which is not cached)."""
        entry = self.peek(rt, device_id)
        if entry is None:
            read_at = ts(rt.now())
            entry = entry_of(get_device(rt, device_id))
            # Keyed by the registered id, which is what the store reports as changed.
            self._keep({entry.identity.device_id: entry}, read_at)
        return entry

    def _keep(self, read: dict[str, DecisionEntry], read_at: int) -> None:
        """Cache entries read at ``read_at``, first dropping the oldest ones if the bound
        would be passed."""
        entries, read_at_of = self._entries, self._read_at
        over = len(entries) + len(read) - MAX_ENTRIES
        if over > 0:
            # A dict keeps insertion order: its first keys are the entries read first. The
            # keys are copied in one call (no other thread runs meanwhile), then dropped;
            # an entry the background thread reads again meanwhile is fresh either way.
            for device_id in list(itertools.islice(entries, over + MAX_ENTRIES // 16)):
                entries.pop(device_id, None)
                read_at_of.pop(device_id, None)
        entries.update(read)
        for device_id in read:
            read_at_of[device_id] = read_at

    def _cached(self, rt: Runtime, device_ids: Sequence[str]
                ) -> tuple[dict[str, DecisionEntry], list[str]]:
        """The cached entries of ``device_ids`` (revalidated first unless a background
        thread does it) and the ids to read from the store, in their order."""
        if not self.background:
            self.revalidate(rt)
        found: dict[str, DecisionEntry] = {}
        missing: list[str] = []
        entries = self._entries
        for device_id in device_ids:
            entry = entries.get(device_id)
            if entry is None:
                missing.append(device_id)
            else:
                found[device_id] = entry
        return found, missing

    def get_parts(self, rt: Runtime, device_ids: Sequence[str]
                  ) -> Iterator[dict[str, DecisionEntry]]:
        """The entries of ``device_ids`` (valid ids) in parts: first the cached ones, then
        those read from the store, a statement's worth at a time as they arrive (the next
        is read meanwhile: :func:`~iotsec.app.identity.device_reads.entry_parts`), each
        part cached before it is given. Unregistered ids are absent (and not cached)."""
        found, missing = self._cached(rt, device_ids)
        yield found
        if missing:
            read_at = ts(rt.now())
            with rt.reading() as reader:
                for part in entry_parts(reader, missing):
                    self._keep(part, read_at)
                    yield part

    def get_many(self, rt: Runtime, device_ids: Sequence[str]) -> dict[str, DecisionEntry]:
        """The entries of ``device_ids`` (valid ids), the ones not cached read from the
        store together; unregistered ids are absent from the result (and not cached)."""
        found, missing = self._cached(rt, device_ids)
        if missing:
            read_at = ts(rt.now())
            read = decision_entries(rt, missing)
            self._keep(read, read_at)
            found.update(read)
        return found
