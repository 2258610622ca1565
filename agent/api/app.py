"""The native localhost API (`/v1/...`) as a FastAPI app: routers, the API context,
error handlers, and the security middleware around everything."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager

from fastapi import FastAPI

from agent import __version__
from agent.api import routers
from agent.api.context import ApiContext, ApiSettings
from agent.api.errors import install_error_handlers
from agent.api.log_redaction import redact_websocket_logs
from agent.api.security import SecurityMiddleware
from agent.pairing import PairingStore
from agent.service import CardService

Lifespan = Callable[[], AbstractAsyncContextManager[None]]


@contextlib.asynccontextmanager
async def _nothing() -> AsyncIterator[None]:
    yield


def create_app(
    *,
    service: CardService,
    pairing: PairingStore,
    settings: ApiSettings,
    lifespan: Lifespan = _nothing,
) -> FastAPI:
    """`lifespan` starts and stops what the API serves (the runtime: card service and
    components); the API itself starts nothing."""

    @contextlib.asynccontextmanager
    async def app_lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with lifespan():
            yield

    app = FastAPI(
        title="card-agent",
        version=__version__,
        description="Localhost API of the kiosk card agent. See docs/api.md.",
        lifespan=app_lifespan,
        docs_url=None,  # serve no script: no Swagger UI, only the JSON document
        redoc_url=None,
        openapi_url="/v1/openapi.json",
    )
    app.state.context = ApiContext(service, pairing, settings)
    install_error_handlers(app)
    for router in routers.ALL:
        app.include_router(router)
    redact_websocket_logs()  # /v1/events carries the token in its first message
    app.add_middleware(
        SecurityMiddleware,
        port=settings.port,
        allowed_origins=settings.allowed_origins,
        max_body_bytes=settings.max_body_bytes,
    )
    return app
