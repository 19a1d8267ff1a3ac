"""The EMQX authorization fast path: ``POST /v1/emqx/authz`` without the framework's
per-request cost.

EMQX asks for an authorization on every publish and subscription its cache and the ACL do
not decide, so this hook is as hot as ``POST /v1/authz/check`` and gets the same
treatment (see :mod:`iotsec.api.fastpath`): this ASGI layer answers a request that carries
a bearer token and a body within the limit itself, with the very functions the route uses
(:func:`~iotsec.app.access.api_tokens.authenticate` for the ``broker`` scope,
:func:`~iotsec.app.broker.emqx.authorize_from_memory` / :func:`~iotsec.app.broker.emqx.authorize`,
:func:`~iotsec.api.problems.for_error`). Anything else (another path or method, no bearer
token, a body over the limit) goes to the application unchanged, which answers it as it
would without this layer. A test checks that both give the same answers.
"""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool

from iotsec.api.fastpath import BearerFastPath
from iotsec.app.access.api_tokens import Principal
from iotsec.app.access.api_tokens import Scope as TokenScope
from iotsec.app.broker import emqx as service
from iotsec.broker.emqx import MAX_REQUEST_BYTES

__all__ = ["PATH", "EmqxFastPath"]

PATH = "/v1/emqx/authz"


class EmqxFastPath(BearerFastPath):
    path = PATH
    needed = TokenScope.BROKER
    max_body = MAX_REQUEST_BYTES

    def prepare(self, headers: dict[bytes, bytes], body: bytes, route: Any) -> Any:
        return body  # every body is EMQX's to answer: a malformed one gets an explicit deny

    async def answer(self, prepared: Any, source: str | None,
                     caller: Principal) -> dict[str, Any]:
        answer = service.authorize_from_memory(self.rt, prepared, source)
        if answer is None:
            answer = await run_in_threadpool(service.authorize, self.rt, prepared, source)
        return answer
