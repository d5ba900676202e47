"""The HTTP API: submit and poll jobs, orchestrate synchronously, analyse, health.

Every error a caller can cause or meet is an HTTP status with a message: 422 for a request no model can satisfy,
503 while Redis is unreachable or no provider is configured, 404 for an unknown job. Never a traceback.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

import anyio
import redis
from celery import Celery
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, status
from fastapi.exception_handlers import http_exception_handler, request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from kombu.exceptions import OperationalError
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.batch_routes import router as batch_routes
from api.mcp_server import create_mcp_server
from api.openai_compat import OpenAIError, is_openai_path
from api.openai_compat import router as openai_routes
from api.prometheus import RedisTotalsCollector
from api.security import ApiKeyMiddleware, BodySizeLimit
from api.submission import (
    DocumentTooLarge,
    JobAccepted,
    JobRequest,
    NoProviderConfigured,
    Proposal,
    UnknownDocument,
    cancel,
    propose,
    submit,
)
from shared.auth import BudgetExhausted
from shared.breaker import BreakerState, CircuitBreakers
from shared.documents import DocumentInfo, DocumentStore, NotText, decode_text
from shared.jobs import JobRecord, JobStore
from shared.metrics import MetricsReport, read_metrics
from shared.routing import PlanningError
from shared.services.manager import ServiceManager
from shared.services.models import ServiceState
from shared.settings import Settings, get_settings
from shared.store import StoreUnavailable, redis_client


class ErrorResponse(BaseModel):
    """Every error the API answers: a message (or, for a malformed body, the list of what is wrong)."""

    detail: str | list[dict[str, Any]]
    rejected: dict[str, str] | None = Field(None, description="Why each model was rejected, when none fits.")


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": description}
    for code, description in {
        401: "Missing or invalid API key",
        403: "Revoked API key",
        404: "Not found",
        409: "Conflict",
        413: "Too large",
        415: "Not UTF-8 text",
        422: "Invalid request, or no model satisfies it",
        429: "Rate limit or budget reached",
        503: "Redis unreachable or no provider configured",
    }.items()
}


class Health(BaseModel):
    status: str
    checks: dict[str, str] = {}


async def get_store(request: Request) -> JobStore:
    """Async because it does no I/O: FastAPI runs a plain def dependency in its thread pool, a second trip there for
    every request of a plain def endpoint."""
    return JobStore(request.app.state.settings)


Store = Annotated[JobStore, Depends(get_store)]


def create_app(settings: Settings | None = None, celery: Celery | None = None) -> FastAPI:
    settings = settings or get_settings()
    if celery is None:
        from workers.celery_app import app as celery

    breakers = CircuitBreakers(settings, redis_client(settings)) if settings.redis_url else None
    tools = ServiceManager(settings, breakers)  # sessions to downstream MCP services, opened on first use
    mcp_server = create_mcp_server(settings, tools)
    mcp_routes = mcp_server.streamable_http_app(streamable_http_path="/mcp", host=settings.api_host).routes

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        # Sync endpoints and waits run in worker threads; the default 40 would cap concurrent waits.
        anyio.to_thread.current_default_thread_limiter().total_tokens = 256
        try:
            async with mcp_server.session_manager.run():
                yield
        finally:
            await anyio.to_thread.run_sync(tools.close)

    app = FastAPI(
        title="Dynamic Orchestrator",
        version="0.1.0",
        summary="Cheapest capable model per request, on a task queue, with the savings accounted.",
        lifespan=lifespan,
    )

    app.add_middleware(ApiKeyMiddleware, settings=settings)
    app.add_middleware(BodySizeLimit, limit=settings.max_request_bytes)
    app.state.settings = settings
    app.state.celery = celery
    app.state.tools = tools  # its `breakers` are the process's breaker snapshot too
    app.include_router(batch_routes, responses=ERROR_RESPONSES)
    app.include_router(openai_routes)
    app.router.routes.extend(mcp_routes)  # MCP over streamable HTTP at /mcp, DNS-rebinding protection kept

    # The OpenAI-compatible routes answer every error in OpenAI's format: OpenAI's clients read it.
    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> Response:
        if is_openai_path(request.url.path):
            return OpenAIError.invalid(error.errors()).response()
        return await request_validation_exception_handler(request, error)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> Response:
        if is_openai_path(request.url.path):
            return OpenAIError(error.status_code, str(error.detail)).response(error.headers)
        return await http_exception_handler(request, error)

    @app.exception_handler(PlanningError)
    async def planning_failed(_: Request, error: PlanningError) -> JSONResponse:
        return JSONResponse({"detail": str(error), "rejected": error.reasons}, status.HTTP_422_UNPROCESSABLE_CONTENT)

    @app.exception_handler(BudgetExhausted)
    async def budget_exhausted(_: Request, error: BudgetExhausted) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status.HTTP_429_TOO_MANY_REQUESTS)

    @app.exception_handler(DocumentTooLarge)
    async def too_large(_: Request, error: DocumentTooLarge) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status.HTTP_413_CONTENT_TOO_LARGE)

    @app.exception_handler(UnknownDocument)
    async def unknown_document(_: Request, error: UnknownDocument) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status.HTTP_404_NOT_FOUND)

    @app.exception_handler(NoProviderConfigured)
    async def no_provider(_: Request, error: NoProviderConfigured) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status.HTTP_503_SERVICE_UNAVAILABLE)

    @app.exception_handler(redis.RedisError)
    @app.exception_handler(StoreUnavailable)
    @app.exception_handler(OperationalError)
    async def store_down(request: Request, error: Exception) -> JSONResponse:
        message, retry = f"the job store (Redis) is unavailable, retry shortly: {error}", {"Retry-After": "2"}
        if is_openai_path(request.url.path):
            return OpenAIError(503, message, "api_error", "store_unavailable").response(retry)
        return JSONResponse({"detail": message}, status.HTTP_503_SERVICE_UNAVAILABLE, headers=retry)

    rest = APIRouter(responses=ERROR_RESPONSES)  # the OpenAI-compatible routes document OpenAI's error format

    @rest.post("/v1/jobs", status_code=status.HTTP_202_ACCEPTED, response_model=JobAccepted, tags=["jobs"])
    def create_job(body: JobRequest, store: Store, request: Request) -> Response:
        """Queue a request; poll `GET /v1/jobs/{id}` for the result."""
        accepted = JobAccepted.of(
            submit(body, settings, store, celery, api_key=request.state.api_key, tools=tools, breakers=breakers)
        )
        # Serialized here: FastAPI would validate the model it was just built from again before serializing it.
        return Response(accepted.model_dump_json(), status.HTTP_202_ACCEPTED, media_type="application/json")

    @rest.get("/v1/jobs/{job_id}", response_model=JobRecord, tags=["jobs"])
    def get_job(job_id: str, store: Store) -> JobRecord:
        record = store.get(job_id)
        if record is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no job {job_id} (unknown or expired)")
        return record

    @rest.delete(
        "/v1/jobs/{job_id}",
        response_model=JobRecord,
        responses={404: {"description": "Unknown job"}, 409: {"description": "Already finished"}},
        tags=["jobs"],
    )
    def cancel_job(job_id: str, store: Store) -> JobRecord:
        """Cancel a queued or running job. A running provider call finishes, but nothing after it runs or bills."""
        record = store.get(job_id)
        if record is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no job {job_id} (unknown or expired)")
        if not cancel(record, "cancelled by request", settings, store, celery):
            current = store.status(job_id)
            raise HTTPException(status.HTTP_409_CONFLICT, f"job {job_id} already {current}; nothing to cancel")
        return store.get(job_id)

    @rest.get("/v1/health/providers", response_model=list[BreakerState], tags=["health"])
    def provider_health(store: Store) -> list[BreakerState]:
        """Circuit breaker of every catalog model: closed, open (skipped by planning) or half_open (one probe)."""
        return CircuitBreakers(settings, store.redis).states()

    @rest.post(
        "/v1/orchestrate",
        response_model=JobRecord,
        responses={202: {"model": JobAccepted, "description": "Still running after `wait` seconds: poll it."}},
        tags=["jobs"],
    )
    def orchestrate(
        body: JobRequest,
        store: Store,
        request: Request,
        wait: Annotated[float | None, Query(ge=0, le=600, description="Seconds to wait for the result.")] = None,
    ) -> Any:
        """Queue a request and wait for its result; past the wait, answer 202 with the job id to poll."""
        record = submit(body, settings, store, celery, api_key=request.state.api_key, tools=tools, breakers=breakers)
        timeout = settings.orchestrate_wait_seconds if wait is None else wait
        finished = store.wait(record.id, timeout) or record
        if not finished.status.terminal:
            return JSONResponse(JobAccepted.of(finished).model_dump(mode="json"), status.HTTP_202_ACCEPTED)
        return finished

    @rest.post(
        "/v1/documents",
        status_code=status.HTTP_201_CREATED,
        response_model=DocumentInfo,
        tags=["documents"],
        responses={413: {"description": "Too large"}, 415: {"description": "Not UTF-8 text"}},
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "text/plain": {"schema": {"type": "string"}},
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "properties": {"file": {"type": "string", "format": "binary"}},
                            "required": ["file"],
                        }
                    },
                    "application/json": {
                        "schema": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}
                    },
                },
            }
        },
    )
    async def upload_document(request: Request) -> DocumentInfo:
        """Store a document (raw text body, a multipart `file`, or JSON `{"text": ...}`); its id is its sha256."""
        text = await _document_from(request, settings.document_processing.max_document_bytes)
        return await run_in_threadpool(DocumentStore(settings).put, text)

    @rest.get("/v1/documents/{document_id}", response_model=DocumentInfo, tags=["documents"])
    def get_document(document_id: str) -> DocumentInfo:
        info = DocumentStore(settings).info(document_id)
        if info is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no document {document_id} (unknown or expired)")
        return info

    @rest.post("/v1/analyze", response_model=Proposal, tags=["analysis"])
    def analyze_request(body: JobRequest) -> Proposal:
        """Intent, complexity, tokens, the plan (model, fallbacks, estimated and baseline cost) and the downstream
        services and tools the request would be offered; runs nothing."""
        return propose(body, settings, require_keys=False, tools=tools)

    @rest.get("/v1/services", response_model=list[ServiceState], tags=["services"])
    def list_services() -> list[ServiceState]:
        """The configured downstream MCP services: state, tools (as this process last listed them), breaker."""
        return tools.states()

    @rest.get("/v1/metrics", response_model=MetricsReport, tags=["metrics"])
    def metrics(
        store: Store,
        period: Annotated[Literal["1m", "5m", "1h", "1d"], Query(description="Period to aggregate.")] = "5m",
    ) -> MetricsReport:
        """Requests, tokens, cost and savings against the baseline, latency percentiles and distributions."""
        return read_metrics(settings, store.redis, period)

    registry = CollectorRegistry()
    registry.register(RedisTotalsCollector(settings))

    @rest.get("/metrics", include_in_schema=False)
    def prometheus() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @rest.get("/healthz", response_model=Health, tags=["health"])
    def healthz() -> Health:
        """The process is up."""
        return Health(status="ok")

    @rest.get("/readyz", response_model=Health, tags=["health"], responses={503: {"model": Health}})
    async def readyz() -> Any:
        """Redis (job store) and the broker answer."""
        checks = await run_in_threadpool(_readiness, settings, celery)
        ready = all(value == "ok" for value in checks.values())
        body = Health(status="ready" if ready else "not ready", checks=checks).model_dump()
        return JSONResponse(body, status.HTTP_200_OK if ready else status.HTTP_503_SERVICE_UNAVAILABLE)

    app.include_router(rest)
    return app


async def _document_from(request: Request, limit: int) -> str:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit + 4096:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, f"document larger than the limit of {limit:,} bytes")
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        form = await request.form()
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "multipart upload needs a `file` field")
        data, name = await upload.read(limit + 1), upload.filename or "file"
    elif kind == "application/json":
        try:
            payload = await request.json()
        except ValueError:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "body is not valid JSON") from None
        if not isinstance(payload, dict) or not isinstance(payload.get("text"), str):
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, 'JSON body must be {"text": "..."}')
        data, name = payload["text"].encode("utf-8"), "document"
    else:
        data, name = await request.body(), "document"
    if len(data) > limit:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, f"document larger than the limit of {limit:,} bytes")
    try:
        text = decode_text(data, name)
    except NotText as error:
        raise HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, str(error)) from None
    if not text.strip():
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "document is empty")
    return text


def _readiness(settings: Settings, celery: Celery) -> dict[str, str]:
    checks: dict[str, str] = {}
    try:
        JobStore(settings).redis.ping()
        checks["redis"] = "ok"
    except (redis.RedisError, StoreUnavailable) as error:
        checks["redis"] = f"unreachable: {error}"
    try:
        with celery.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=2)
        checks["broker"] = "ok"
    except Exception as error:  # kombu raises transport-specific errors
        checks["broker"] = f"unreachable: {error}"
    return checks
