"""Request latency for ``/metrics``: the outermost ASGI layer of a listener times every
HTTP request, from its first byte handed to the application to the end of its answer."""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Receive, Scope, Send

from iotsec.app.counters import COUNTERS

__all__ = ["RequestTimer"]


class RequestTimer:
    """Observe each HTTP request's duration under ``listener`` (``api``, ``est``...)."""

    def __init__(self, app: ASGIApp, listener: str) -> None:
        self.app = app
        self._labels = (listener,)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        try:
            await self.app(scope, receive, send)
        finally:
            COUNTERS.observe("http_request", time.perf_counter() - start, self._labels)
