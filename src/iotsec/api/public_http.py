"""The public plain-HTTP listener of ``iotsec serve --public-http-port``.

It is the one exception to "no plaintext listener off loopback": relying parties fetch
revocation status and CA certificates before they can trust any TLS connection (RFC 5019
5 and RFC 5280 4.2.1.13/4.2.2.1 name ``http://`` URLs for them), and everything served here
is signed or public: OCSP answers (``/ocsp``), CRLs (``/crl`` and every ``/crl/...`` path,
answered by the API's own routes), and the CA certificates (``/ca/issuing.der``,
``/ca/root.der``, ``/ca/chain.pem`` for the active CAs, ``/ca/<id>.der`` for any CA of the
store, as the caIssuers pointer of its certificates names it). Every other path is 404,
whatever its method: no token, no device data and no other route of the API is reachable
here.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass

from cryptography.hazmat.primitives.serialization import Encoding
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from iotsec.api.ocsp import handle_ocsp, is_ocsp_path, plain
from iotsec.app.pki.ca_publication import ca_certificate, served_ca_certificate
from iotsec.app.runtime import Runtime, Slot
from iotsec.errors import NotFoundError

__all__ = ["CA_FILES", "PublicApp"]

log = logging.getLogger("iotsec.api")

#: Path -> (which CA, content type); ``chain`` is the issuing CA then the root, in PEM.
CA_FILES: dict[str, tuple[str, bytes]] = {
    "/ca/issuing.der": ("issuing", b"application/pkix-cert"),
    "/ca/root.der": ("root", b"application/pkix-cert"),
    "/ca/chain.pem": ("chain", b"application/pem-certificate-chain"),
}
#: ``/ca/<id>.der``: the certificate of the CA with that store id (ids have at most 9 digits).
_BY_ID = re.compile(r"/ca/([1-9][0-9]{0,8})\.der")
#: How long the CA certificates are kept in memory before the store is asked again.
_CA_TTL = 60.0


@dataclass(frozen=True, slots=True)
class _CaFiles:
    files: dict[str, bytes]
    read_at: float


_HELD: Slot[_CaFiles] = Slot("public.ca-files")


def _load(rt: Runtime) -> _CaFiles:
    issuing, root = rt.authority("issuing"), rt.authority("root")
    chain = b"".join(a.certificate.public_bytes(Encoding.PEM) for a in (issuing, root))
    return rt.put(_HELD, _CaFiles({"issuing": issuing.der, "root": root.der, "chain": chain},
                                  time.monotonic()))


class PublicApp:
    """The public listener's ASGI application; ``api`` is the API application, which
    answers ``/crl`` and ``/crl/...`` with its own routes."""

    def __init__(self, runtime: Runtime, api: ASGIApp) -> None:
        self.rt = runtime
        self.api = api

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        path = scope["path"]
        if is_ocsp_path(path):
            await handle_ocsp(self.rt, scope, receive, send)
        elif path == "/crl" or path.startswith("/crl/"):
            await self.api(scope, receive, send)
        elif path in CA_FILES:
            await self._ca_file(scope, send, *CA_FILES[path])
        elif (by_id := _BY_ID.fullmatch(path)) is not None:
            await self._ca_by_id(scope, send, int(by_id.group(1)))
        else:
            await plain(send, 404, "not found: this listener serves only /ocsp, /crl and "
                                   "/ca/{issuing.der,root.der,chain.pem,<id>.der}")

    async def _ca_by_id(self, scope: Scope, send: Send, authority_id: int) -> None:
        if scope["method"] not in ("GET", "HEAD"):
            await plain(send, 405, "CA certificates are fetched with GET",
                        ((b"allow", b"GET, HEAD"),))
            return
        body = served_ca_certificate(self.rt, authority_id)
        if body is None:
            try:
                body = await run_in_threadpool(ca_certificate, self.rt, authority_id)
            except NotFoundError:
                await plain(send, 404, f"no CA with id {authority_id}")
                return
            except Exception:
                log.exception("the CA certificate could not be read")
                await plain(send, 503, "the CA certificates cannot be read now; try again")
                return
        await _send_certificate(send, body, b"application/pkix-cert")

    async def _ca_file(self, scope: Scope, send: Send, which: str, ctype: bytes) -> None:
        if scope["method"] not in ("GET", "HEAD"):
            await plain(send, 405, "CA certificates are fetched with GET",
                        ((b"allow", b"GET, HEAD"),))
            return
        held = self.rt.get(_HELD)
        if held is None or not 0 <= time.monotonic() - held.read_at < _CA_TTL:
            try:
                held = await run_in_threadpool(_load, self.rt)
            except Exception:
                log.exception("the CA certificates could not be read")
                await plain(send, 503, "the CA certificates cannot be read now; try again")
                return
        await _send_certificate(send, held.files[which], ctype)


async def _send_certificate(send: Send, body: bytes, ctype: bytes) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [
        (b"content-type", ctype), (b"content-length", str(len(body)).encode("ascii")),
        (b"cache-control", b"public, max-age=3600"),
        (b"x-content-type-options", b"nosniff")]})
    await send({"type": "http.response.body", "body": body})
