"""Dependencies shared by the routers: the runtime and the authenticated operator."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from iotsec.app.runtime import Runtime
from iotsec.app.tokens import Principal, authenticate
from iotsec.errors import AuthError, ForbiddenError


def get_runtime(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


def require_admin(request: Request,
                  rt: Annotated[Runtime, Depends(get_runtime)]) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise AuthError("missing bearer token")
    principal = authenticate(rt, token.strip())
    if principal.role != "admin":
        raise ForbiddenError(f"token {principal.name!r} may not do this",
                             hint="use an admin token")
    return principal


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
AdminDep = Annotated[Principal, Depends(require_admin)]
