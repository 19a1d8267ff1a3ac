"""EMQX 5 HTTP authentication and authorization hooks, for a token of scope ``broker``.

EMQX posts a JSON body built from its request template; the answer is always HTTP 200
with ``{"result": "allow" | "deny", ...}`` (an authentication ``allow`` adds
``is_superuser``, ``expire_at`` and ``acl``). Bad input is answered ``deny``, never with
an error status: EMQX reads an error as "ignore", which falls through to whatever comes
next. Only a missing or invalid token gets 401 (a client that is not the broker learns
nothing); EMQX then falls through to ``no_match = deny``, which ``iotsec broker emqx
render`` configures.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from starlette.concurrency import run_in_threadpool

from iotsec.api.deps import AuditorDep, RuntimeDep, require
from iotsec.app.access.api_tokens import Principal, Scope
from iotsec.app.broker import emqx as service
from iotsec.broker.emqx import MAX_REQUEST_BYTES

__all__ = ["BrokerDep", "acl", "authn", "authz", "router"]

router = APIRouter(prefix="/v1/emqx", tags=["emqx"])
BrokerDep = Annotated[Principal, Depends(require(Scope.BROKER))]

_RESULT_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["result"],
    "properties": {"result": {"enum": ["allow", "deny"]},
                   "is_superuser": {"type": "boolean"},
                   "expire_at": {"type": "integer", "description": "Unix seconds"},
                   "acl": {"type": "array", "items": {"type": "object"}}}}
_BODY = {"requestBody": {"required": True, "content": {"application/json": {"schema": {
    "type": "object", "additionalProperties": {"type": "string"}}}}}}
_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/json": {"schema": _RESULT_SCHEMA}}}}


def _json(data: dict[str, Any]) -> Response:
    return Response(json.dumps(data, separators=(",", ":")).encode("utf-8"),
                    media_type="application/json")


async def _body(request: Request) -> bytes:
    # Read at most one byte over the limit: the parser then refuses it (and it is denied).
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_REQUEST_BYTES:
            break
    return b"".join(chunks)


def _source(request: Request) -> str | None:
    return request.client.host if request.client else None


@router.post("/authn", response_class=Response, responses=_RESPONSES, openapi_extra=_BODY)
async def authn(request: Request, rt: RuntimeDep, _: BrokerDep) -> Response:
    """EMQX HTTP authentication (``password_based`` / ``http``)."""
    body = await _body(request)
    return _json(await run_in_threadpool(service.authenticate, rt, body, _source(request)))


@router.post("/authz", response_class=Response, responses=_RESPONSES, openapi_extra=_BODY)
async def authz(request: Request, rt: RuntimeDep, _: BrokerDep) -> Response:
    """EMQX HTTP authorization source (``type = http``)."""
    body = await _body(request)
    source = _source(request)
    # On the event loop when the decision needs no store read (as /v1/authz/check does).
    answer = service.authorize_from_memory(rt, body, source)
    if answer is None:
        answer = await run_in_threadpool(service.authorize, rt, body, source)
    return _json(answer)


@router.get("/acl/{device_id}")
def acl(device_id: str, rt: RuntimeDep, _: AuditorDep) -> list[dict[str, Any]]:
    """The ACL an EMQX authentication of this device would carry now."""
    return [dict(r) for r in service.acl_preview(rt, device_id)]
