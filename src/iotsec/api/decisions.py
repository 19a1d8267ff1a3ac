"""Access decisions as the HTTP edge makes them: on the event loop when everything a
decision needs is in memory, in a worker thread otherwise. Shared by the ``/v1/authz/check``
route and its ASGI fast path, so both decide the same way."""

from __future__ import annotations

from fastapi.concurrency import run_in_threadpool

from iotsec.access.engine import Decision
from iotsec.app.access import decisions as access
from iotsec.app.runtime import Runtime

__all__ = ["decide"]


async def decide(rt: Runtime, device: str, action: str, resource: str,
                 cert_serial: str | None) -> Decision:
    """A decision, on the event loop when everything it needs is in memory (the compiled
    policy, the device's cached registry entry); otherwise in a worker thread, which reads
    the store."""
    cached = access.check_cached(rt, device, action, resource, cert_serial)
    if cached is not None:
        return cached
    return await run_in_threadpool(access.check, rt, device, action, resource, cert_serial)
