"""Registry entries for the decision hot path, cached per serving process.

A decision needs the device's state, groups and attributes. Reading them from the store on
every request would cost more than the decision itself, and a time-to-live alone would make
a large fleet miss the cache on nearly every request. So entries stay until the device
changes: at most every ``hot_cache_seconds`` one indexed query asks the store which devices
were updated since the last look (``devices.updated_at``) and drops those entries; changes
made by this process drop them at once (``clear``). A device's groups and attributes are
written only when it is registered and its state changes with ``updated_at``, so every
change is seen within that delay.
"""

from __future__ import annotations

import threading
import time

from sqlalchemy import select

from iotsec.app.runtime import Runtime
from iotsec.identity.registry import Device
from iotsec.store import models as m
from iotsec.store.db import reading
from iotsec.timeutil import ts

#: Writes whose transaction began up to this many seconds before a look are still caught.
MARGIN_SECONDS = 5
MAX_ENTRIES = 500_000


class DeviceCache:
    def __init__(self, rt: Runtime) -> None:
        self._entries: dict[str, Device] = {}
        self._looked = time.monotonic()
        self._since = ts(rt.now())
        self._looking = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def _revalidate(self, rt: Runtime) -> None:
        now = time.monotonic()
        if now - self._looked < rt.settings.hot_cache_seconds:
            return
        # One look at a time; the others go on with the entries they have (which are at most
        # one delay old).
        if not self._looking.acquire(blocking=False):
            return
        try:
            since = ts(rt.now())
            if self._entries:
                with reading(rt.engine) as conn:
                    changed = conn.execute(select(m.devices.c.id).where(
                        m.devices.c.updated_at >= self._since - MARGIN_SECONDS)).scalars().all()
                for device_id in changed:
                    self._entries.pop(device_id, None)
            self._looked, self._since = now, since
        finally:
            self._looking.release()

    def preload(self, rt: Runtime) -> int:
        """Read every registered device (up to the cache's size), so that a serving process
        answers its first requests from memory; returns how many were read. Changes made
        while it reads are caught by the next look (it started before the read)."""
        from iotsec.app.devices import MAX_LIST, list_devices

        after: str | None = None
        while len(self._entries) < MAX_ENTRIES:
            page = list_devices(rt, limit=MAX_LIST, after=after)
            for device in page:
                self._entries[device.id] = device
            if len(page) < MAX_LIST:
                break
            after = page[-1].id
        return len(self._entries)

    def peek(self, rt: Runtime, device_id: str) -> Device | None:
        """The cached entry, or ``None`` when it must be read from the store."""
        self._revalidate(rt)
        return self._entries.get(device_id)

    def get(self, rt: Runtime, device_id: str) -> Device:
        """The entry, read from the store when it is not cached (a
        :class:`~iotsec.errors.NotFoundError` for an unknown device, which is not cached)."""
        from iotsec.app.devices import get_device

        device = self.peek(rt, device_id)
        if device is None:
            device = get_device(rt, device_id)
            if len(self._entries) >= MAX_ENTRIES:
                self._entries.clear()
            # Keyed by the registered id, which is what the store reports as changed.
            self._entries[device.id] = device
        return device
