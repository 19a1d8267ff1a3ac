"""The FastAPI application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute

from iotsec import __version__
from iotsec.access.document import MAX_DOCUMENT_BYTES
from iotsec.api import problems
from iotsec.api.access_routes import router as access_router
from iotsec.api.audit import router as audit_router
from iotsec.api.ca import router as ca_router
from iotsec.api.compliance import router as compliance_router
from iotsec.api.device_tokens import router as device_tokens_router
from iotsec.api.emqx import router as emqx_router
from iotsec.api.emqx_fastpath import EmqxFastPath
from iotsec.api.fastpath import DecisionFastPath
from iotsec.api.headers import SecurityHeaders
from iotsec.api.incidents import router as incidents_router
from iotsec.api.issue_fastpath import IssuanceFastPath
from iotsec.api.limits import BodyLimit
from iotsec.api.monitor import router as monitor_router
from iotsec.api.ocsp import OcspFastPath
from iotsec.api.ota import device_router as ota_device_router
from iotsec.api.ota import router as ota_router
from iotsec.api.profiles import router as profiles_router
from iotsec.api.routes import public, v1
from iotsec.api.timing import RequestTimer
from iotsec.app.runtime import Runtime
from iotsec.console.app import create_console

__all__ = ["create_app"]


def _declare_scopes(router: APIRouter) -> APIRouter:
    """Record each route's required scope in the OpenAPI document (x-required-scope)."""
    for route in router.routes:
        if not isinstance(route, APIRoute):
            continue
        for dep in route.dependant.dependencies:
            scope = getattr(dep.call, "required_scope", None)
            if scope is not None:
                route.openapi_extra = {**(route.openapi_extra or {}),
                                       "x-required-scope": str(scope)}
    return router


def create_app(rt: Runtime, *, fast_path: bool = True, owns_runtime: bool = False) -> FastAPI:
    """The API over ``rt``. ``fast_path=False`` leaves every decision and issuance request
    to the framework's route (the tests compare both); ``owns_runtime`` closes ``rt`` at
    shutdown."""
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        rt.events.flush()
        if owns_runtime:
            rt.close()

    app = FastAPI(title="iotsec", version=__version__, docs_url=None, redoc_url=None,
                  lifespan=lifespan,
                  description="Device identity, PKI and security control plane for IoT fleets.")
    app.state.runtime = rt
    problems.install(app)
    for router in (public, v1, access_router, device_tokens_router, ota_router,
                   ota_device_router, emqx_router, audit_router, compliance_router,
                   monitor_router, profiles_router, ca_router, incidents_router):
        app.include_router(_declare_scopes(router))
    # The web console: its own routes, sessions and CSP, outside the OpenAPI document.
    app.mount("/ui", create_console(rt))
    # Inside the body limit: the fast paths answer well-formed decision, EMQX and issuance
    # requests themselves and hand everything else to the application.
    if fast_path:
        # Innermost the issuance's, so that the hotter decisions never pass through it.
        app.add_middleware(IssuanceFastPath, runtime=rt)
        app.add_middleware(DecisionFastPath, runtime=rt)
        app.add_middleware(EmqxFastPath, runtime=rt)
    app.add_middleware(BodyLimit, overrides={"/v1/policy": MAX_DOCUMENT_BYTES + 1024})
    # OCSP (POST /ocsp, GET /ocsp/{request}) is answered by this layer alone, outside the
    # body limit: it bounds its own requests and answers an oversized one malformedRequest
    # (RFC 6960), not 413. Public, like /crl, and mostly from memory (iotsec.api.ocsp).
    app.add_middleware(OcspFastPath, runtime=rt)
    # Outermost: every answer gets the security headers, the body limit's and the fast
    # paths' too.
    app.add_middleware(SecurityHeaders)
    # Outside everything: the latency of every answer, for /metrics.
    app.add_middleware(RequestTimer, listener="api")
    return app

