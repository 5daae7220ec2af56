"""The ASGI application factory."""

from __future__ import annotations

from fastapi import FastAPI

from ringfence import __version__
from ringfence.api import errors
from ringfence.api.access_log import AccessLog
from ringfence.api.deps import Services
from ringfence.api.routes import acrobits, admin, device, files, health, messages, push


def create_app(services: Services) -> FastAPI:
    app = FastAPI(
        title="ringfence",
        version=__version__,
        description="The cloud side of a SIP softphone service: device API, "
        "Acrobits-compatible web services and admin API.",
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.services = services
    errors.install(app)
    for module in (health, device, push, messages, files, acrobits, admin):
        app.include_router(module.router)
    app.add_middleware(AccessLog)
    return app
