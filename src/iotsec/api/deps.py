"""Dependencies shared by the routers: the runtime and the authenticated operator.

Every ``/v1`` route declares the scope it needs by taking one of ``AuditorDep``
(read-only), ``OperatorDep`` (devices and certificates) or ``AdminDep`` (policy, tokens).
The scope is also recorded in the OpenAPI document as ``x-required-scope``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request

from iotsec.app.access.api_tokens import Principal, Scope, authenticate
from iotsec.app.runtime import Runtime

__all__ = ["AdminDep", "AuditorDep", "OperatorDep", "RuntimeDep", "get_runtime", "require"]


async def get_runtime(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


def require(scope: Scope) -> Callable[[Request, Runtime], Awaitable[Principal]]:
    # Runs on the event loop, not in the thread pool: a token check is a cache hit (the store
    # is read once per ``hot_cache_seconds``, and written once per last-use period), and a
    # thread hop per request would cost more than the check itself.
    async def dependency(request: Request, rt: Annotated[Runtime, Depends(get_runtime)]
                         ) -> Principal:
        source = request.client.host if request.client else None
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        action = f"{request.method} {request.url.path}"
        if scheme.lower() != "bearer" or not token.strip():
            token = ""
        return authenticate(rt, token.strip(), needed=scope, source=source, action=action)
    dependency.required_scope = scope  # type: ignore[attr-defined]
    return dependency


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
AuditorDep = Annotated[Principal, Depends(require(Scope.AUDITOR))]
OperatorDep = Annotated[Principal, Depends(require(Scope.OPERATOR))]
AdminDep = Annotated[Principal, Depends(require(Scope.ADMIN))]
