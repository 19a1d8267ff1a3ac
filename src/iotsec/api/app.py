"""The FastAPI application factory."""

from __future__ import annotations

from fastapi import FastAPI

from iotsec import __version__
from iotsec.api import problems
from iotsec.api.limits import BodyLimit
from iotsec.api.routes import public, v1
from iotsec.app.runtime import Runtime


def create_app(rt: Runtime) -> FastAPI:
    app = FastAPI(title="iotsec", version=__version__, docs_url=None, redoc_url=None,
                  description="Device identity, PKI and security control plane for IoT fleets.")
    app.state.runtime = rt
    problems.install(app)
    app.include_router(public)
    app.include_router(v1)
    app.add_middleware(BodyLimit)
    return app
