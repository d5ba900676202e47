"""The HTTP face of `shared.errors`: one table from every error a caller can meet to a status and a body.

REST routes answer `{"detail": message, "code": code, ...}` (FastAPI's `detail`, plus the code and details such as a
plan's rejected models); the OpenAI-compatible routes answer OpenAI's error format, which its clients turn into typed
exceptions. Failures of the store's libraries (redis, kombu) are the store being unavailable.
"""

from __future__ import annotations

import math
from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler, request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from kombu.exceptions import OperationalError
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.openai_compat import OpenAIError, is_openai_path
from shared.errors import JobFailed, OrchestratorError, StoreUnavailable


class ErrorResponse(BaseModel):
    """Every error the REST routes answer: a message (or, for a malformed body, the list of what is wrong)."""

    detail: str | list[dict[str, Any]]
    code: str | None = Field(None, description="Stable name of the error, e.g. not_found, no_model_fits.")
    rejected: dict[str, str] | None = Field(None, description="Why each model was rejected, when none fits.")


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": description}
    for code, description in {
        401: "Missing or invalid API key",
        400: "Ambiguous credentials (two keys)",
        403: "Revoked API key, or an admin-only request",
        404: "Not found",
        409: "Conflict",
        413: "Too large",
        415: "Not UTF-8 text",
        422: "Invalid request, or no model satisfies it",
        429: "Rate limit or budget reached",
        503: "Redis unreachable or no provider configured",
    }.items()
}

#: How a Redis Cluster node answers a client that is not cluster-aware, for keys it does not hold or spans of them.
CLUSTER_REPLIES = (redis.exceptions.MovedError, redis.exceptions.AskError)
#: OpenAI's error `type` for each status it documents.
_OPENAI_TYPES = {400: "invalid_request_error", 404: "invalid_request_error", 429: "insufficient_quota"}


def rest_body(error: OrchestratorError) -> dict[str, Any]:
    return {"detail": error.message, "code": error.code, **error.details()}


def openai_error(error: OrchestratorError) -> OpenAIError:
    """An orchestrator error as OpenAI's clients expect it: request errors are 400s there."""
    status = 400 if error.status in (409, 415, 422) else error.status
    kind = _OPENAI_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    code = "model_not_available" if error.code == "no_model_fits" else error.code
    return OpenAIError(status, error.message, kind, code, getattr(error, "param", None))


def _headers(error: OrchestratorError) -> dict[str, str]:
    retry = getattr(error, "retry_after_s", None)
    return {"Retry-After": str(math.ceil(retry))} if retry else {}


def install(app: FastAPI) -> None:
    """Every error handler of the app, in one place."""

    @app.exception_handler(OrchestratorError)
    async def orchestrator_error(request: Request, error: OrchestratorError) -> Response:
        if is_openai_path(request.url.path):
            return openai_error(error).response(_headers(error))
        if isinstance(error, JobFailed):
            body = error.record.model_dump(mode="json") | rest_body(error)
            return JSONResponse(body, error.status)
        return JSONResponse(rest_body(error), error.status, headers=_headers(error))

    @app.exception_handler(redis.RedisError)
    @app.exception_handler(OperationalError)
    async def store_down(request: Request, error: Exception) -> Response:
        if isinstance(error, CLUSTER_REPLIES):
            unavailable = StoreUnavailable(
                f"the Redis Cluster at ORCH_REDIS_URL sent this process elsewhere ({error}): it was taken for a single "
                "server, as it could not be reached when the process started; restart the process"
            )
        else:
            unavailable = StoreUnavailable(f"the job store (Redis) is unavailable, retry shortly: {error}")
        return await orchestrator_error(request, unavailable)

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
