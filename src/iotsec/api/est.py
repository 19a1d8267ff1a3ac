"""The EST application (RFC 7030, with RFC 8951): ``/.well-known/est/[LABEL/]OP``.

It parses the request, calls one service of :mod:`iotsec.app.enrol.est` in the thread pool
(they read and write the store; the event loop stays free) or, for ``simpleenroll`` with an
enrolment secret, awaits its grouped unit of work on the loop, and renders the answer in EST's
wire formats (:mod:`iotsec.pki.est`). Who the client is comes from two places only: an HTTP
Basic ``Authorization`` header (an enrolment secret, RFC 7030 3.2.3) and the certificate
chain the TLS layer verified in the handshake, which it puts into the request's ASGI TLS
extension (``scope["extensions"]["tls"]["client_cert_chain"]``, PEM, leaf first). A
certificate or identity in any other header is never looked at.

Errors follow RFC 7030: 401 with ``WWW-Authenticate: Basic``, 403, 404, 405 with
``Allow``, 413, 415, 429 with ``Retry-After``, 202 with ``Retry-After`` while a device waits
for approval; every error body is one line of ``text/plain``. Nothing answers 500: an
unexpected failure is logged and answered 503.
"""

from __future__ import annotations

import asyncio
import binascii
import functools
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final, ParamSpec, TypeVar

import anyio.to_thread
from anyio import CapacityLimiter
from cryptography import x509
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from iotsec.api.headers import SecurityHeaders
from iotsec.app.enrol import est as service
from iotsec.app.runtime import Runtime
from iotsec.app.throttle import Throttle, failure_throttle
from iotsec.errors import (
    AuthError,
    EnrolmentAuthError,
    ForbiddenError,
    InputTooLargeError,
    IotsecError,
    MalformedInputError,
    NotFoundError,
    ThrottledError,
)
from iotsec.identity.enrolment import parse_template_name
from iotsec.pki.est import (
    CONTENT_CSRATTRS,
    CONTENT_PKCS7,
    CONTENT_PKCS7_CERTS,
    CONTENT_PKCS10,
    MAX_EST_BODY,
    decode_base64_body,
    encode_base64_body,
    serverkeygen_body,
)

__all__ = [
    "EST_PREFIX", "EST_THREADS", "MAX_AUTHORIZATION", "MAX_CLIENT_CHAIN", "WWW_AUTHENTICATE",
    "client_chain", "create_est_app", "parse_basic"
]

log = logging.getLogger("iotsec.api.est")

EST_PREFIX: Final = "/.well-known/est"
WWW_AUTHENTICATE: Final = 'Basic realm="iotsec EST"'
#: An Authorization header longer than this is refused unread (an id and a secret are ~70).
MAX_AUTHORIZATION: Final = 1024
#: Certificates of a client chain looked at (the TLS layer verified them; the services
#: check again).
MAX_CLIENT_CHAIN: Final = 8
#: The longest error line sent back.
_MAX_LINE = 300
_BASE64 = "base64"
# RFC 7617 2 and RFC 9110 11.4: the scheme (any case), one or more spaces, a token68.
_BASIC = re.compile(r"[Bb][Aa][Ss][Ii][Cc] +([A-Za-z0-9+/]+=*)")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def parse_basic(header: str) -> service.BasicCredential:
    """The enrolment secret in an ``Authorization: Basic`` header (RFC 7617): base64 of
    ``id:secret``, UTF-8, no control characters, a non-empty id. Anything else raises
    :class:`EnrolmentAuthError` (the services check the id and secret themselves)."""
    match = _BASIC.fullmatch(header) if len(header) <= MAX_AUTHORIZATION else None
    if match is None:
        raise EnrolmentAuthError("the Authorization header is not HTTP Basic")
    try:
        decoded = binascii.a2b_base64(match[1], strict_mode=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise EnrolmentAuthError("the Basic credentials are not base64 of UTF-8") from None
    user, colon, password = decoded.partition(":")
    if not colon or not user or _CONTROL.search(decoded):
        raise EnrolmentAuthError("the Basic credentials are not 'id:secret'")
    return service.BasicCredential(id=user, secret=password)


def client_chain(scope: Scope) -> service.ClientChain | None:
    """The client certificate chain the TLS layer verified for this connection (the ASGI
    TLS extension), leaf first; None when there is none. Nothing else is consulted."""
    extensions = scope.get("extensions")
    tls = extensions.get("tls") if isinstance(extensions, Mapping) else None
    pems = tls.get("client_cert_chain") if isinstance(tls, Mapping) else None
    if not isinstance(pems, list | tuple) or not pems:
        return None
    try:
        certs = tuple(x509.load_pem_x509_certificate(pem.encode("ascii"))
                      for pem in pems[:MAX_CLIENT_CHAIN])
    except (AttributeError, UnicodeEncodeError, ValueError):
        # The TLS layer is ours: a chain it cannot hand over is a fault there. Fail closed.
        log.error("the TLS layer gave a client certificate chain that does not parse")
        return None
    return service.ClientChain(certs=certs)


def _line(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= _MAX_LINE else flat[:_MAX_LINE - 3] + "..."


def _text(status: int, message: str, headers: Mapping[str, str] | None = None) -> Response:
    return PlainTextResponse(_line(message) + "\n", status_code=status, headers=headers)


def _unauthorized() -> Response:
    # One answer for every refused credential: whether a secret id exists, or which check
    # a certificate failed, is in the security event only.
    return _text(401, "authentication required: an enrolment secret (HTTP Basic) or a "
                 "client certificate", {"WWW-Authenticate": WWW_AUTHENTICATE})


def _refused(exc: Exception) -> Response:
    """The one mapping of errors to EST answers."""
    if isinstance(exc, ThrottledError):
        return _text(429, "too many failed attempts from this address; try again later",
                     {"Retry-After": str(exc.retry_after)})
    if isinstance(exc, AuthError):
        return _unauthorized()
    if isinstance(exc, ForbiddenError):
        return _text(403, str(exc))
    if isinstance(exc, NotFoundError):
        return _text(404, str(exc))
    if isinstance(exc, InputTooLargeError):
        return _text(413, str(exc))
    if isinstance(exc, IotsecError) and exc.status == 409:
        # A key or a device id another identity holds: the details name other devices,
        # which are not the client's to learn.
        return _text(403, "refused: the request conflicts with the registry (a key or "
                     "device id that another identity holds, or a device in a state that "
                     "may not enrol)")
    if isinstance(exc, IotsecError) and 400 <= exc.status < 500:
        hint = f" ({exc.hint})" if exc.hint else ""
        return _text(400, f"{exc}{hint}")
    if isinstance(exc, IotsecError):
        log.error("EST request failed on the server side: %s", exc)
    else:
        log.exception("unexpected error in an EST request")
    return _text(503, "the EST service is unavailable; it has been logged, try again later")


def _base64(status: int, der: bytes, content_type: str) -> Response:
    return Response(encode_base64_body(der), status_code=status, media_type=content_type,
                    headers={"Content-Transfer-Encoding": _BASE64})


def _issued(issued: service.Issued) -> Response:
    return _base64(200, issued.chain_der, CONTENT_PKCS7_CERTS)


def _rt(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


class _UnsupportedMedia(Exception):
    def __init__(self, media: str) -> None:
        super().__init__(media)
        self.media = media


def _source(request: Request) -> str | None:
    # The peer of this connection; forwarding headers are never read here.
    return request.client.host if request.client else None


def _throttle_check(request: Request) -> tuple[Throttle, str]:
    source = _source(request) or "unknown"
    throttle = failure_throttle(_rt(request))
    throttle.check(source)
    return throttle, source


def _certificate(request: Request) -> service.ClientChain:
    """The TLS client chain; without one, 401 (a blocked source gets its 429 first)."""
    chain = client_chain(request.scope)
    if chain is None:
        _throttle_check(request)
        raise EnrolmentAuthError("no client certificate")
    return chain


def _credential(request: Request) -> service.BasicCredential | service.ClientChain:
    """HTTP Basic when the client sent an Authorization header, else the TLS client chain.
    An Authorization header that is not well-formed Basic is a failed attempt for the
    throttle (the services count the rest)."""
    header = request.headers.get("authorization")
    if header is None:
        return _certificate(request)
    throttle, source = _throttle_check(request)
    try:
        return parse_basic(header)
    except EnrolmentAuthError:
        throttle.failed(source)
        raise


async def _csr(request: Request) -> bytes:
    """The DER CSR of the request: ``application/pkcs10``, base64, bounded while read."""
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media != CONTENT_PKCS10:
        raise _UnsupportedMedia(media)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_EST_BODY:
        raise InputTooLargeError(f"the request body exceeds {MAX_EST_BODY} bytes")
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_EST_BODY:
                raise InputTooLargeError(f"the request body exceeds {MAX_EST_BODY} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        # Nobody is left to answer; a 400 keeps it out of the error log.
        raise MalformedInputError("the client left before sending the whole body") from None
    return decode_base64_body(b"".join(chunks))


#: Threads the EST operations run in, apart from the thread pool the API's routes use: an
#: enrolment or renewal storm queues here and cannot take the threads the CRL, the
#: decisions and the operator API answer from. The store serialises writes anyway.
EST_THREADS: Final = 4
_P = ParamSpec("_P")
_T = TypeVar("_T")
_limiters: dict[asyncio.AbstractEventLoop, CapacityLimiter] = {}


async def _offload(fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
    """Run a (blocking) service call in one of the :data:`EST_THREADS` threads."""
    loop = asyncio.get_running_loop()
    limiter = _limiters.get(loop)
    if limiter is None:
        for stopped in [known for known in _limiters if known.is_closed()]:
            del _limiters[stopped]
        limiter = _limiters[loop] = CapacityLimiter(EST_THREADS)
    return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs),
                                          limiter=limiter)


async def _cacerts(request: Request, label: str | None) -> Response:
    der = await _offload(service.cacerts, _rt(request), label)
    return _base64(200, der, CONTENT_PKCS7)


async def _csrattrs(request: Request, label: str | None) -> Response:
    der = await _offload(service.csrattrs, _rt(request), label)
    if not der:
        return Response(status_code=204)
    return _base64(200, der, CONTENT_CSRATTRS)


def _pending(pending: service.Pending) -> Response:
    return _text(202, f"device {pending.device_id} awaits an operator's approval; ask again "
                 f"with the same credential and key in {pending.retry_after} seconds",
                 {"Retry-After": str(pending.retry_after)})


async def _simpleenroll(request: Request, label: str | None) -> Response:
    credential = _credential(request)
    csr = await _csr(request)
    if isinstance(credential, service.BasicCredential):
        # Awaited here: the enrolment runs in the group commit's thread, and no thread of
        # this listener waits for its commit.
        done = await service.enrol_async(_rt(request), credential, csr, label=label,
                                         source=_source(request))
    else:
        done = await _offload(service.enrol, _rt(request), credential, csr, label=label,
                              source=_source(request))
    return _pending(done) if isinstance(done, service.Pending) else _issued(done)


async def _simplereenroll(request: Request, label: str | None) -> Response:
    chain = _certificate(request)
    csr = await _csr(request)
    if label is None:
        # Awaited here: whether the certificate may renew is read in the unit of work, in
        # the group commit's thread, and no thread of this listener waits for its commit.
        issued = await service.reenrol_async(_rt(request), chain, csr,
                                             source=_source(request))
    else:  # its template is read first
        issued = await _offload(service.reenrol, _rt(request), chain, csr, label=label,
                                source=_source(request))
    return _issued(issued)


async def _serverkeygen(request: Request, label: str | None) -> Response:
    credential = _credential(request)
    csr = await _csr(request)
    done = await _offload(service.serverkeygen, _rt(request), credential, csr,
                                   label=label, source=_source(request))
    if isinstance(done, service.Pending):
        return _pending(done)
    key, issued = done
    content_type, body = serverkeygen_body(key, issued.chain_der)
    return Response(body, status_code=200, media_type=content_type)


_Handler = Callable[[Request, str | None], Awaitable[Response]]
#: Each operation: its one method and its handler (RFC 7030 3.2.2).
_OPERATIONS: Final[dict[str, tuple[str, _Handler]]] = {
    "cacerts": ("GET", _cacerts),
    "csrattrs": ("GET", _csrattrs),
    "simpleenroll": ("POST", _simpleenroll),
    "simplereenroll": ("POST", _simplereenroll),
    "serverkeygen": ("POST", _serverkeygen),
}


class _Operation:
    """The ASGI endpoint of both EST routes (a class, so that the router hands it every
    method and the 405 with its ``Allow`` is EST's own)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        response = await self._answer(request)
        await response(scope, receive, send)

    async def _answer(self, request: Request) -> Response:
        params: dict[str, Any] = request.path_params
        operation = _OPERATIONS.get(str(params.get("op", "")))
        label = params.get("label")
        if operation is None:
            return _text(404, "no such EST operation")
        method, handler = operation
        try:
            if label is not None:
                label = parse_template_name(str(label))
        except IotsecError:
            return _text(404, "no such EST label")
        if request.method != method:
            return _text(405, f"{request.method} is not allowed here; use {method}",
                         {"Allow": method})
        try:
            return await handler(request, label)
        except _UnsupportedMedia as exc:
            return _text(415, f"the request body must be {CONTENT_PKCS10} (base64), not "
                         f"{exc.media[:60] or 'unlabelled'}")
        except Exception as exc:
            return _refused(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    # The router's own answers (a path outside the EST routes) in EST's error format.
    status = exc.status_code if isinstance(exc, HTTPException) else 404
    return _text(status, "not found" if status == 404 else str(getattr(exc, "detail", "")))


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.error("unexpected error outside an EST operation: %s", type(exc).__name__)
    return _text(503, "the EST service is unavailable; try again later")


def create_est_app(rt: Runtime) -> Starlette:
    """The EST application over ``rt`` (which the caller keeps and closes)."""
    endpoint = _Operation()
    app = Starlette(routes=[Route(f"{EST_PREFIX}/{{op}}", endpoint),
                            Route(f"{EST_PREFIX}/{{label}}/{{op}}", endpoint)],
                    exception_handlers={HTTPException: _http_error, Exception: _unexpected})
    app.state.runtime = rt
    app.add_middleware(SecurityHeaders)
    return app
