"""The decision fast path: ``POST /v1/authz/check`` without the framework's per-request cost.

Brokers and gateways ask for decisions at high rates, and a decision itself is a few
microseconds (a compiled policy and cached registry entries); the framework's routing,
dependency injection and model validation cost many times that. This ASGI layer answers
the *well-formed* decision request itself, with the very same functions the route uses
(:func:`~iotsec.app.access.api_tokens.authenticate`, :func:`~iotsec.api.access_routes.decide`,
:func:`~iotsec.app.wire.decision.decision_fields`, :func:`~iotsec.api.problems.for_error`).
Anything it does not fully understand — another path or method, a body that is not a JSON
object of exactly the documented string fields within their limits, a missing or non-bearer
``Authorization`` header — goes to the application unchanged, which answers it (with its
problem responses) as it would without this layer. The route stays in the OpenAPI document
with its scope; a test checks that both paths give the same answers.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from typing import Any

from annotated_types import MaxLen
from starlette.types import ASGIApp, Receive, Scope, Send

from iotsec.api.decisions import decide
from iotsec.api.limits import replay_body
from iotsec.api.problems import for_error, unexpected
from iotsec.api.schemas import AuthzIn
from iotsec.app.access.api_tokens import Principal, authenticate
from iotsec.app.access.api_tokens import Scope as TokenScope
from iotsec.app.runtime import Runtime
from iotsec.app.wire.decision import decision_fields
from iotsec.errors import IotsecError

__all__ = [
    "LIMITS", "MAX_BODY", "PATH", "REQUIRED", "BearerFastPath", "DecisionFastPath", "parse_body"
]

PATH = "/v1/authz/check"


def _limits() -> dict[str, int]:
    """Field name -> maximum length, read from the route's request model."""
    limits = {}
    for name, info in AuthzIn.model_fields.items():
        limits[name] = next(m.max_length for m in info.metadata if isinstance(m, MaxLen))
    return limits


LIMITS = _limits()
REQUIRED = frozenset(n for n, info in AuthzIn.model_fields.items() if info.is_required())
MAX_BODY = sum(LIMITS.values()) * 6 + 1024  # every character escaped as \\uXXXX, plus keys


def parse_body(headers: dict[bytes, bytes], body: bytes) -> dict[str, str | None] | None:
    """The request fields when the body is exactly what the route accepts, else ``None``
    (the application then answers, with its own validation errors)."""
    if not headers.get(b"content-type", b"").startswith(b"application/json"):
        return None
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict) or not REQUIRED <= data.keys() <= LIMITS.keys():
        return None
    for name, value in data.items():
        if value is None and name not in REQUIRED:
            continue
        if not isinstance(value, str) or len(value) > LIMITS[name]:
            return None
    return data


class BearerFastPath(ABC):
    """An ASGI layer that answers one hot ``POST`` route itself when the request carries a
    bearer token and a body it understands (``prepare``), after ``authenticate`` for
    ``needed``; anything else goes to the application unchanged (body replayed)."""

    path: str
    needed: TokenScope
    max_body: int
    #: The status of a successful answer.
    status: int = 200

    def __init__(self, app: ASGIApp, runtime: Runtime) -> None:
        self.app = app
        self.rt = runtime

    def route(self, path: str) -> Any:
        """What the path says for ``prepare`` (``True`` when it carries nothing), or
        ``None`` when the path is not this layer's route."""
        return True if path == self.path else None

    @abstractmethod
    def prepare(self, headers: dict[bytes, bytes], body: bytes, route: Any) -> Any:
        """What ``answer`` needs from the body (and what ``route`` gave of the path), or
        ``None`` to leave the request to the app."""

    @abstractmethod
    async def answer(self, prepared: Any, source: str | None,
                     caller: Principal) -> dict[str, Any]:
        """The JSON answer for a prepared request from ``caller`` (errors raise and become
        problems)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self.route(scope["path"]) if scope["type"] == "http" \
            and scope["method"] == "POST" else None
        if route is None:
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more and size <= self.max_body:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = bool(message.get("more_body", False))
        body = b"".join(chunks)
        headers = dict(scope["headers"])
        scheme, _, token = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
        prepared = None if more or size > self.max_body or scheme.lower() != "bearer" \
            or not token.strip() else self.prepare(headers, body, route)
        if prepared is None:
            await self.app(scope, replay_body(body, more, receive), send)
            return
        client = scope.get("client")
        source = client[0] if client else None
        try:
            caller = authenticate(self.rt, token.strip(), needed=self.needed, source=source,
                                  action=f"POST {scope['path']}")
            content = await self.answer(prepared, source, caller)
        except IotsecError as exc:
            await for_error(exc)(scope, receive, send)
            return
        except Exception:
            # The application's own answer to an unexpected error (logged, 500 problem).
            await unexpected()(scope, receive, send)
            return
        await _json(send, content, self.status)


class DecisionFastPath(BearerFastPath):
    path = PATH
    needed = TokenScope.AUDITOR
    max_body = MAX_BODY

    def prepare(self, headers: dict[bytes, bytes], body: bytes, route: Any) -> Any:
        return parse_body(headers, body)

    async def answer(self, prepared: Any, source: str | None,
                     caller: Principal) -> dict[str, Any]:
        decision = await decide(self.rt, str(prepared["device"]), str(prepared["action"]),
                                str(prepared["resource"]), prepared.get("cert_serial"))
        return decision_fields(decision)


async def _json(send: Send, content: dict[str, Any], status: int = 200) -> None:
    body = json.dumps(content, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
