"""A request-body size limit enforced before the body is read whole."""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["MAX_BODY", "BodyLimit"]

MAX_BODY = 256 * 1024


class BodyLimit:
    """Answer 413 (problem+json) to any request body over ``limit`` bytes."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY,
                 overrides: dict[str, int] | None = None) -> None:
        self.app = app
        self.default = limit
        self.overrides = overrides or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.overrides.get(scope.get("path", ""), self.default)
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    too_big = int(value) > limit
                except ValueError:
                    too_big = True
                if too_big:
                    await self._refuse(send, limit)
                    return
        # Bodies are small (a CSR, a JSON document), so read them here, counting, and
        # replay them to the app: nothing over the limit ever reaches a parser.
        chunks: list[bytes] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > limit:
                await self._refuse(send, limit)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        await self.app(scope, replay_body(b"".join(chunks), False, receive), send)

    async def _refuse(self, send: Send, limit: int) -> None:
        body = json.dumps({"type": "urn:iotsec:problem:input-too-large",
                           "title": "Request body too large", "status": 413,
                           "detail": f"the request body exceeds {limit} bytes"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/problem+json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def replay_body(body: bytes, more: bool, receive: Receive) -> Receive:
    """A ``receive`` that hands the app the ``body`` already read (``more``: whether the
    client has more to send), then goes on with the client's own ``receive``."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": more}
        return await receive()

    return replay
