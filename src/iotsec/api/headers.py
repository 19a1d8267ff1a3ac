"""Security headers on every answer of the API.

The outermost layer of the application, so that every answer gets them: the routes', the
problem responses', the body limit's 413 and the decision fast paths', which answer without
the framework.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["HSTS", "NOSNIFF", "NO_STORE", "SecurityHeaders"]

# Two years, the preload lists' minimum; no includeSubDomains: iotsec may be served on a
# host name whose sibling names are not iotsec's to decide for.
HSTS = (b"strict-transport-security", b"max-age=63072000")
# Answers are JSON, PEM or DER: a browser must not guess them into HTML.
NOSNIFF = (b"x-content-type-options", b"nosniff")
# Answers carry tokens, keys, decisions and registry data: no cache may keep them. A route
# that means to be cached (the public CRL) says so itself, and that is kept.
NO_STORE = (b"cache-control", b"no-store")


class SecurityHeaders:
    """Add ``X-Content-Type-Options: nosniff`` and, unless the answer sets its own,
    ``Cache-Control: no-store`` to every HTTP answer, and ``Strict-Transport-Security``
    to answers over HTTPS."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        https = scope.get("scheme") == "https"

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                names = {name.lower() for name, _ in headers}
                headers.append(NOSNIFF)
                if NO_STORE[0] not in names:
                    headers.append(NO_STORE)
                if https:
                    headers.append(HSTS)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)
