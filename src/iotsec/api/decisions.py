"""Access decisions as the HTTP edge makes them: on the event loop when everything a
decision needs is in memory, otherwise after the missing registry entries are read in a
worker thread. Shared by the ``/v1/authz/check`` route and its ASGI fast path, so both
decide the same way.

Requests whose devices are not in memory yet and that arrive together (a broker
reconnecting its clients after a restart, a serving process just started) are read in one
batch: the first such request of an event loop turn schedules one read for every device
asked about in that turn, and each request then decides from memory."""

from __future__ import annotations

import asyncio
import weakref

from fastapi.concurrency import run_in_threadpool

from iotsec.access.engine import Decision
from iotsec.app.access import decisions as access
from iotsec.app.runtime import Runtime

__all__ = ["decide"]


class _Batch:
    """The devices asked about in one event loop turn, read together."""

    __slots__ = ("device_ids", "done")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.device_ids: list[str] = []
        self.done: asyncio.Future[None] = loop.create_future()


#: The batch being gathered, per runtime and event loop (a loop's futures are its own).
_GATHERING: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop,
                                      dict[int, _Batch]] = weakref.WeakKeyDictionary()


async def _read_together(rt: Runtime, device_id: str) -> None:
    loop = asyncio.get_running_loop()
    gathering = _GATHERING.setdefault(loop, {})
    batch = gathering.get(id(rt))
    if batch is None:
        batch = gathering[id(rt)] = _Batch(loop)
        loop.call_soon(_start, loop, rt, batch)
    batch.device_ids.append(device_id)
    await asyncio.shield(batch.done)


def _start(loop: asyncio.AbstractEventLoop, rt: Runtime, batch: _Batch) -> None:
    gathering = _GATHERING.get(loop)
    if gathering is not None and gathering.get(id(rt)) is batch:
        del gathering[id(rt)]
    task = loop.create_task(run_in_threadpool(access.prefetch, rt, batch.device_ids))

    def finished(t: asyncio.Task[None]) -> None:
        # A failed read is not an answer: each request then decides with ``check``, which
        # reads again and reports its own error.
        if not t.cancelled():
            t.exception()
        if not batch.done.done():
            batch.done.set_result(None)

    task.add_done_callback(finished)


async def decide(rt: Runtime, device: str, action: str, resource: str,
                 cert_serial: str | None) -> Decision:
    """A decision, on the event loop when everything it needs is in memory (the compiled
    policy, the device's cached registry entry); otherwise the entry is read with those of
    the other requests of the same moment, in a worker thread, and the decision made then
    (in a worker thread with ``check`` if it still cannot be made from memory)."""
    cached = access.check_cached(rt, device, action, resource, cert_serial)
    if cached is not None:
        return cached
    if rt.settings.hot_cache_seconds > 0:  # else nothing is kept in memory to read into
        await _read_together(rt, device)
    cached = access.check_cached(rt, device, action, resource, cert_serial)
    if cached is not None:
        return cached
    return await run_in_threadpool(access.check, rt, device, action, resource, cert_serial)
