"""The EMQX authorization fast path: ``POST /v1/emqx/authz`` without the framework's
per-request cost.

EMQX asks for an authorization on every publish and subscription its cache and the ACL do
not decide, so this hook is as hot as ``POST /v1/authz/check`` and gets the same
treatment (see :mod:`iotsec.api.fastpath`): this ASGI layer answers a request that carries
a bearer token and a body within the limit itself, with the very functions the route uses
(:func:`~iotsec.app.tokens.authenticate` for the ``broker`` scope,
:func:`~iotsec.app.emqx.authorize_from_memory` / :func:`~iotsec.app.emqx.authorize`,
:func:`~iotsec.api.problems.for_error`). Anything else (another path or method, no bearer
token, a body over the limit) goes to the application unchanged, which answers it as it
would without this layer. A test checks that both give the same answers.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from iotsec.api.problems import for_error
from iotsec.app import emqx as service
from iotsec.app.runtime import Runtime
from iotsec.app.tokens import Scope as TokenScope
from iotsec.app.tokens import authenticate
from iotsec.broker.emqx import MAX_REQUEST_BYTES
from iotsec.errors import IotsecError

PATH = "/v1/emqx/authz"
ACTION = f"POST {PATH}"


class EmqxFastPath:
    def __init__(self, app: ASGIApp, runtime: Runtime) -> None:
        self.app = app
        self.rt = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more and size <= MAX_REQUEST_BYTES:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = bool(message.get("more_body", False))
        body = b"".join(chunks)
        headers = dict(scope["headers"])
        scheme, _, token = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
        if more or size > MAX_REQUEST_BYTES or scheme.lower() != "bearer" or not token.strip():
            await self.app(scope, _replay(body, more, receive), send)
            return
        client = scope.get("client")
        source = client[0] if client else None
        try:
            authenticate(self.rt, token.strip(), needed=TokenScope.BROKER, source=source,
                         action=ACTION)
        except IotsecError as exc:
            await for_error(exc)(scope, receive, send)
            return
        answer = service.authorize_from_memory(self.rt, body, source)
        if answer is None:
            answer = await run_in_threadpool(service.authorize, self.rt, body, source)
        await _json(send, answer)


def _replay(body: bytes, more: bool, receive: Receive) -> Receive:
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": more}
        return await receive()

    return replay


async def _json(send: Send, content: dict[str, Any]) -> None:
    body = json.dumps(content, separators=(",", ":")).encode("utf-8")
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
