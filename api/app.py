"""The HTTP API, built in one place: the lifespan, the middleware, one error table, and the routers.

Every route is a few lines in `api/routes/` (one module per resource): dependencies in, one call into the
`Orchestrator` built here for the process, a model out. Errors are `shared.errors`, answered by `api/errors.py`
as a status with a message (in OpenAI's format on the OpenAI-compatible routes); never a traceback.
"""

from __future__ import annotations

from contextlib import asynccontextmanager

import anyio
from celery import Celery
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from api import errors
from api.limits import RequestLimits
from api.mcp_server import create_mcp_server
from api.openai_compat import router as openai_routes
from api.prometheus import RedisTotalsCollector
from api.routes import rest_routes
from api.security import ApiKeyMiddleware, reply
from shared.breaker import CircuitBreakers
from shared.orchestrator import Orchestrator
from shared.services.manager import ServiceManager
from shared.settings import Settings, get_settings
from shared.store import redis_client


def build_orchestrator(settings: Settings, celery: Celery | None = None) -> Orchestrator:
    """The process's orchestrator: stores, breakers (one snapshot shared by every request) and downstream tools."""
    if celery is None:
        from workers.celery_app import app as celery
    from workers.celery_app import CeleryDispatch

    breakers = CircuitBreakers(settings, redis_client(settings))
    tools = ServiceManager(settings, breakers)  # sessions to downstream MCP services, opened on first use
    return Orchestrator(settings, CeleryDispatch(celery), tools, breakers)


def create_app(settings: Settings | None = None, celery: Celery | None = None) -> FastAPI:
    settings = settings or get_settings()
    orchestrator = build_orchestrator(settings, celery)
    mcp_server = create_mcp_server(orchestrator)
    mcp_routes = mcp_server.streamable_http_app(streamable_http_path="/mcp", host=settings.api_host).routes

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        # Sync endpoints and waits run in worker threads; the default 40 would cap concurrent waits.
        anyio.to_thread.current_default_thread_limiter().total_tokens = 256
        try:
            async with mcp_server.session_manager.run():
                yield
        finally:
            await anyio.to_thread.run_sync(orchestrator.close)

    app = FastAPI(
        title="Dynamic Orchestrator",
        version="0.1.0",
        summary="Cheapest capable model per request, on a task queue, with the savings accounted.",
        lifespan=lifespan,
    )
    # Inside the key check (the last added runs first): a caller without a valid key is refused before its body is
    # read, so only a key holder can make the server hold a body, and never more than the limit.
    limits = {"max_bytes": settings.max_request_bytes, "max_json_depth": settings.max_json_depth}
    app.add_middleware(RequestLimits, **limits, reply=reply)
    app.add_middleware(ApiKeyMiddleware, settings=settings)
    app.state.settings = settings
    app.state.orchestrator = orchestrator
    app.state.prometheus = CollectorRegistry()
    app.state.prometheus.register(RedisTotalsCollector(settings))
    errors.install(app)
    app.include_router(rest_routes, responses=errors.ERROR_RESPONSES)
    app.include_router(openai_routes)  # documents OpenAI's error format instead
    app.router.routes.extend(mcp_routes)  # MCP over streamable HTTP at /mcp, DNS-rebinding protection kept
    return app
