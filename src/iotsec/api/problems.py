"""RFC 9457 problem details: the one place where errors become HTTP responses."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from iotsec.errors import AuthError, IotsecError, ThrottledError

PROBLEM_JSON = "application/problem+json"
log = logging.getLogger("iotsec.api")


def problem(status: int, code: str, title: str, detail: str, *,
            headers: Mapping[str, str] | None = None, **extra: Any) -> JSONResponse:
    """A problem response; ``headers`` are sent with it (e.g. a 405's ``Allow``)."""
    body: dict[str, Any] = {"type": f"urn:iotsec:problem:{code}", "title": title,
                            "status": status, "detail": detail}
    body.update({k: v for k, v in extra.items() if v})
    headers = dict(headers or {})
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="iotsec"'
    if "retry_after" in extra:
        headers["Retry-After"] = str(extra.pop("retry_after"))
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def for_error(exc: IotsecError) -> JSONResponse:
    """The problem response for one of iotsec's own errors."""
    if exc.status >= 500:
        log.error("server-side failure: %s", exc)
    if isinstance(exc, ThrottledError):
        return problem(exc.status, exc.code, type(exc).__name__, str(exc), hint=exc.hint,
                       retry_after=exc.retry_after)
    return problem(exc.status, exc.code, type(exc).__name__, str(exc), hint=exc.hint)


def install(app: FastAPI) -> None:
    @app.exception_handler(IotsecError)
    async def _iotsec(_: Request, exc: IotsecError) -> JSONResponse:
        return for_error(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": [str(p) for p in e.get("loc", ())], "msg": e.get("msg", "")}
                  for e in exc.errors()]
        return problem(422, "invalid-request", "Invalid request",
                       "the request does not match the API schema", errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        # The framework's own headers stay: a 405 lists the allowed methods (RFC 9110).
        return problem(exc.status_code, "http", "HTTP error", str(exc.detail),
                       headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        return unexpected()


def unexpected() -> JSONResponse:
    """The answer to an unexpected error, logged with its traceback (call it while the
    exception is handled)."""
    log.exception("unexpected error")
    return problem(500, "internal", "Internal error",
                   "an unexpected error occurred; it has been logged")


__all__ = ["AuthError", "for_error", "install", "problem", "unexpected"]
