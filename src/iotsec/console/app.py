"""The console application, mounted at ``/ui`` on the API's HTTPS listener.

:data:`ROUTES` is the whole route table: every entry but the sign-in page and the static
assets needs a session (the tests walk it). Every answer carries a strict
Content-Security-Policy: scripts and styles from this origin only, no inline code, no
framing, forms posted to this origin only.
"""

from __future__ import annotations

import mimetypes
from pathlib import Path
from typing import ClassVar

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from iotsec.app.access.api_tokens import Scope as TokenScope
from iotsec.app.runtime import Runtime
from iotsec.console import audit, compliance, devices, firmware, policy, tokens, views
from iotsec.console.web import view

__all__ = ["CSP", "ROUTES", "STATIC", "ConsoleHeaders", "create_console"]

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
STATIC = Path(__file__).with_name("static")
_OPERATOR = TokenScope.OPERATOR

ROUTES: list[Route] = [
    Route("/", view(views.home), methods=["GET"]),
    Route("/signin", view(views.signin_form, public=True), methods=["GET"]),
    Route("/signin", view(views.signin, public=True), methods=["POST"]),
    Route("/signout", view(views.signout), methods=["POST"]),
    Route("/overview", view(views.overview_page), methods=["GET"]),
    Route("/devices", view(devices.devices), methods=["GET"]),
    Route("/devices/{device_id}", view(devices.device_page), methods=["GET"]),
    Route("/devices/{device_id}/confirm", view(devices.confirm, needed=_OPERATOR),
          methods=["GET"]),
    Route("/devices/{device_id}/action", view(devices.perform, needed=_OPERATOR),
          methods=["POST"]),
    Route("/certificates", view(views.certificates), methods=["GET"]),
    Route("/alerts", view(views.alerts), methods=["GET"]),
    Route("/policy", view(policy.policy), methods=["GET"]),
    Route("/firmware", view(firmware.firmware), methods=["GET"]),
    Route("/audit", view(audit.audit), methods=["GET"]),
    Route("/audit/report.{kind}", view(audit.download), methods=["GET"]),
    Route("/compliance", view(compliance.compliance), methods=["GET"]),
    Route("/compliance/{name}", view(compliance.download), methods=["GET"]),
    Route("/firmware/campaigns/{campaign_id}/control",
          view(firmware.campaign_control, needed=_OPERATOR), methods=["POST"]),
    Route("/alerts/{alert_id}/state", view(views.alert_state, needed=_OPERATOR),
          methods=["POST"]),
    Route("/tokens", view(tokens.tokens), methods=["GET"]),
    Route("/tokens", view(tokens.create, needed=TokenScope.ADMIN), methods=["POST"]),
]


def _assets() -> dict[str, tuple[bytes, str]]:
    """The static files, read once: a request names one of them or gets 404 (no path from
    the request ever reaches the file system)."""
    found: dict[str, tuple[bytes, str]] = {}
    for path in sorted(STATIC.rglob("*")):
        if path.is_file() and not path.name.startswith("."):
            kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            if kind in ("text/javascript", "application/javascript", "text/css"):
                kind += "; charset=utf-8"
            found[path.relative_to(STATIC).as_posix()] = (path.read_bytes(), kind)
    return found


class ConsoleHeaders:
    """The CSP and its companions on every answer of the console."""

    HEADERS: ClassVar[list[tuple[bytes, bytes]]] = [
               (b"content-security-policy", CSP.encode()),
               (b"x-frame-options", b"DENY"),
               (b"referrer-policy", b"same-origin"),
               (b"cross-origin-opener-policy", b"same-origin")]

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message,
                           "headers": [*message.get("headers", ()), *self.HEADERS]}
            await send(message)

        await self.app(scope, receive, with_headers)


def create_console(rt: Runtime) -> ASGIApp:
    """The console over ``rt``, to be mounted at ``/ui``."""
    assets = _assets()

    async def static(request: Request) -> Response:
        found = assets.get(str(request.path_params["name"]))
        if found is None:
            return Response(b"not found\n", status_code=404, media_type="text/plain")
        return Response(found[0], media_type=found[1],
                        headers={"cache-control": "public, max-age=3600"})

    app = Starlette(routes=[*ROUTES, Route("/static/{name:path}", static, methods=["GET"])])
    app.state.runtime = rt
    return ConsoleHeaders(app)
