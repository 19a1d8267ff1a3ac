"""``/ocsp``: OCSP over HTTP (RFC 6960 appendix A, RFC 5019 5), as raw ASGI.

``POST /ocsp`` with an ``application/ocsp-request`` body, and ``GET /ocsp/{request}`` with
the DER request base64- and then URL-encoded in the path. Relying parties ask at high rates
and most answers are pre-signed (:func:`iotsec.app.pki.ocsp.answer_from_memory`), so this
answers without the framework: from memory on the event loop, else in the thread pool. It
is public, like ``/crl``: no token, because an answer is signed and says only what the CRL
says too.

Every OCSP outcome is an OCSPResponse with HTTP 200, unsuccessful ones included
(``malformedRequest`` for a body over the limit or a path that does not decode); only
requests that are not OCSP at all (another method, another content type) get a 4xx.
"""

from __future__ import annotations

import base64
import binascii
import logging
from datetime import datetime
from urllib.parse import unquote_to_bytes

from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from iotsec.app.pki.ocsp import OcspAnswer, answer, answer_from_memory
from iotsec.app.runtime import Runtime
from iotsec.pki.ocsp import MAX_REQUEST_BYTES, ResponseStatus, error_response

__all__ = ["CONTENT_TYPE", "MAX_GET_PATH", "OcspFastPath", "handle_ocsp", "is_ocsp_path",
           "plain"]

log = logging.getLogger("iotsec.api")

CONTENT_TYPE = b"application/ocsp-request"
#: The longest encoded request read from a GET path (RFC 5019 5 uses GET for requests
#: under 255 octets; base64 and URL encoding at most triple that).
MAX_GET_PATH = 4096


def is_ocsp_path(path: str) -> bool:
    return path == "/ocsp" or path.startswith("/ocsp/")


async def plain(send: Send, status: int, text: str,
                extra: tuple[tuple[bytes, bytes], ...] = ()) -> None:
    """A short text/plain answer (what the OCSP and public listener edges refuse with)."""
    body = text.encode("utf-8") + b"\n"
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"cache-control", b"no-store"), *extra]})
    await send({"type": "http.response.body", "body": body})


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The request body, or None when it is over ``limit`` (reading stops there)."""
    chunks: list[bytes] = []
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        more = bool(message.get("more_body", False))
    return b"".join(chunks)


def _from_path(scope: Scope) -> bytes | None:
    """The DER request encoded in a GET path, or None when it does not decode."""
    raw = scope.get("raw_path") or scope["path"].encode("latin-1")
    encoded = raw.split(b"?", 1)[0][len(b"/ocsp/"):]
    if not encoded or len(encoded) > MAX_GET_PATH:
        return None
    text = unquote_to_bytes(encoded).replace(b"-", b"+").replace(b"_", b"/")
    text += b"=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


async def _send(send: Send, result: OcspAnswer, now: datetime) -> None:
    headers = result.headers(now)
    headers.append((b"content-length", str(len(result.der)).encode("ascii")))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": result.der})


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


async def handle_ocsp(rt: Runtime, scope: Scope, receive: Receive, send: Send) -> None:
    """Answer one HTTP request to ``/ocsp`` or ``/ocsp/...``."""
    method, path = scope["method"], scope["path"]
    body: bytes | None
    if method == "POST" and path in ("/ocsp", "/ocsp/"):
        ctype = (_header(scope, b"content-type") or b"").split(b";")[0].strip().lower()
        if ctype != CONTENT_TYPE:
            await plain(send, 415, "an OCSP request is POSTed as application/ocsp-request")
            return
        length = _header(scope, b"content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_REQUEST_BYTES):
            body = None
        else:
            body = await _read_body(receive, MAX_REQUEST_BYTES)
    elif method in ("GET", "HEAD") and path.startswith("/ocsp/"):
        body = _from_path(scope)
    else:
        await plain(send, 405, "OCSP is POST /ocsp or GET /ocsp/{base64 request}",
                    ((b"allow", b"GET, HEAD, POST"),))
        return
    if body is None:
        await _send(send, OcspAnswer(error_response(ResponseStatus.malformedRequest)),
                    rt.now())
        return
    now = rt.now()
    result = answer_from_memory(rt, body, now)
    if result is None:
        try:
            result = await run_in_threadpool(answer, rt, body)
            now = rt.now()
        except Exception:
            # The store is down or a bug: the client gets the RFC's internalError, the
            # log gets the cause.
            log.exception("the OCSP responder failed")
            result = OcspAnswer(error_response(ResponseStatus.internalError))
    await _send(send, result, now)


class OcspFastPath:
    """An ASGI layer that answers ``/ocsp`` itself and hands everything else to ``app``."""

    def __init__(self, app: ASGIApp, runtime: Runtime) -> None:
        self.app = app
        self.rt = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and is_ocsp_path(scope["path"]):
            await handle_ocsp(self.rt, scope, receive, send)
            return
        await self.app(scope, receive, send)
