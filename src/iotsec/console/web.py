"""The console's request handling: sessions from the cookie, CSRF and origin checks on every
POST, the scope each view needs, and one place that turns errors into pages.

A view is a plain function of a :class:`Ctx` that returns a response; it runs in the thread
pool (the services it calls block on the store). :func:`view` wraps it into an endpoint.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from iotsec.app.access.api_tokens import Scope
from iotsec.app.access.console_sessions import ConsoleSession, resume_session
from iotsec.app.runtime import Runtime
from iotsec.errors import AuthError, ForbiddenError, InputTooLargeError, IotsecError

__all__ = ["COOKIE", "MAX_FORM", "Ctx", "View", "page", "render", "templates", "view"]

#: ``__Host-``: the browser keeps it only if Secure, Path=/ and without Domain.
COOKIE = "__Host-iotsec-console"
MAX_FORM = 16 * 1024
_TEMPLATES = Path(__file__).with_name("templates")

templates = Environment(loader=FileSystemLoader(_TEMPLATES),
                        autoescape=select_autoescape(default=True, default_for_string=True),
                        auto_reload=False)


def _when(value: datetime | int | None) -> str:
    """A moment as ``YYYY-MM-DD HH:MM:SSZ`` (Unix seconds or an aware datetime)."""
    if value is None:
        return "-"
    if isinstance(value, int):
        value = datetime.fromtimestamp(value, UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


templates.filters["when"] = _when


@dataclass
class Ctx:
    """What a view gets: the runtime, the live session (``None`` on public views), the
    request's query and form fields, its path parameters and its source address."""

    rt: Runtime
    session: ConsoleSession | None
    query: dict[str, str]
    form: dict[str, str]
    params: dict[str, Any]
    source: str | None
    htmx: bool
    path: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def user(self) -> ConsoleSession:
        assert self.session is not None
        return self.session

    def may(self, needed: Scope) -> bool:
        return self.session is not None and self.session.may(needed)


View = Callable[[Ctx], Response]


def render(ctx: Ctx | None, name: str, status: int = 200, **values: Any) -> HTMLResponse:
    """The template ``name`` with the session's name, scope and CSRF token."""
    session = ctx.session if ctx is not None else None
    html = templates.get_template(name).render(
        session=session, csrf=session.csrf if session else "",
        can_operate=session is not None and session.may(Scope.OPERATOR),
        path=ctx.path if ctx is not None else "", **values)
    return HTMLResponse(html, status_code=status)


def page(ctx: Ctx, name: str, **values: Any) -> HTMLResponse:
    """A page, or only its ``fragment`` template when htmx asks for a partial update."""
    fragment = values.pop("fragment", None)
    if ctx.htmx and fragment is not None:
        return render(ctx, fragment, **values)
    return render(ctx, name, **values)


def _error(status: int, message: str, hint: str = "", session: ConsoleSession | None = None
           ) -> HTMLResponse:
    html = templates.get_template("error.html").render(
        session=session, csrf=session.csrf if session else "", can_operate=False, path="",
        status=status, message=message, hint=hint)
    return HTMLResponse(html, status_code=status)


def _same_origin(request: Request) -> bool:
    """A POST from a page of this origin: the browser's Origin (or, without it, its
    Sec-Fetch-Site) says so. A refusal only; nothing is granted on these headers."""
    origin = request.headers.get("origin")
    if origin is not None:
        return origin == f"https://{request.headers.get('host', '')}"
    return request.headers.get("sec-fetch-site", "same-origin") in ("same-origin", "none")


def _form(body: bytes) -> dict[str, str]:
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=64,
                          strict_parsing=False)
    except (UnicodeDecodeError, ValueError):
        return {}
    return dict(pairs)


def _signin_redirect(request: Request, reason: str) -> Response:
    if request.headers.get("hx-request"):
        response: Response = Response(status_code=401, headers={"HX-Redirect": "/ui/signin"})
    elif request.method == "GET":
        response = RedirectResponse("/ui/signin", status_code=303)
    else:
        response = _error(401, reason, "sign in again")
    response.delete_cookie(COOKIE, path="/", secure=True, httponly=True, samesite="strict")
    return response


def view(handler: View, *, needed: Scope = Scope.AUDITOR, public: bool = False
         ) -> Callable[[Request], Any]:
    """The endpoint of ``handler``: over HTTPS only; a session of at least ``needed``
    unless ``public``; on POST, a same-origin request with the session's CSRF token."""
    async def endpoint(request: Request) -> Response:
        if request.url.scheme != "https":
            return _error(403, "the console is served over HTTPS only",
                          "serve without --http, or open the https:// address")
        form: dict[str, str] = {}
        if request.method == "POST":
            body = b""
            async for chunk in request.stream():
                body += chunk
                if len(body) > MAX_FORM:
                    error = InputTooLargeError(f"a console form has at most {MAX_FORM} bytes")
                    return _error(413, str(error))
            if not _same_origin(request):
                return _error(403, "this form was sent from another site",
                              "use the console's own pages")
            form = _form(body)
        rt: Runtime = request.app.state.runtime
        secret = request.cookies.get(COOKIE, "")
        source = request.client.host if request.client else None

        def run() -> Response:
            session = None
            if not public:
                session = resume_session(rt, secret)
                if request.method == "POST" and not hmac.compare_digest(
                        form.get("csrf", "").encode(), session.csrf.encode()):
                    return _error(403, "the form's CSRF token is missing or not valid",
                                  "reload the page and try again", session)
                if not session.may(needed):
                    raise ForbiddenError(f"your scope is {session.scope.value}; this needs "
                                         f"{needed.value}",
                                         hint=f"sign in with an {needed.value} token")
            ctx = Ctx(rt, session, dict(request.query_params), form,
                      dict(request.path_params), source,
                      bool(request.headers.get("hx-request")), request.url.path,
                      {"secret": secret})
            try:
                return handler(ctx)
            except AuthError:
                raise
            except IotsecError as e:
                return _error(e.status if e.status < 500 else 500, str(e), e.hint, session)

        try:
            return await run_in_threadpool(run)
        except AuthError as e:
            return _signin_redirect(request, str(e))
        except ForbiddenError as e:
            return _error(403, str(e), e.hint)
    return endpoint
