"""Health: the process is up, its stores answer, and the state of every model's circuit breaker."""

from __future__ import annotations

from typing import Any

import redis
from fastapi import APIRouter, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from api.deps import OrchestratorDep
from shared.breaker import BreakerState
from shared.errors import StoreUnavailable
from shared.orchestrator import Orchestrator

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str
    checks: dict[str, str] = {}


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    """The process is up."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses={503: {"model": Health}})
async def readyz(orchestrator: OrchestratorDep) -> Any:
    """Redis (job store) and the broker answer."""
    checks = await run_in_threadpool(_readiness, orchestrator)
    ready = all(value == "ok" for value in checks.values())
    body = Health(status="ready" if ready else "not ready", checks=checks).model_dump()
    return JSONResponse(body, status.HTTP_200_OK if ready else status.HTTP_503_SERVICE_UNAVAILABLE)


@router.get("/v1/health/providers", response_model=list[BreakerState])
def provider_health(orchestrator: OrchestratorDep) -> list[BreakerState]:
    """Circuit breaker of every catalog model: closed, open (skipped by planning) or half_open (one probe)."""
    return orchestrator.provider_health()


def _readiness(orchestrator: Orchestrator) -> dict[str, str]:
    checks: dict[str, str] = {}
    try:
        orchestrator.jobs.redis.ping()
        checks["redis"] = "ok"
    except (redis.RedisError, StoreUnavailable) as error:
        checks["redis"] = f"unreachable: {error}"
    try:
        orchestrator.dispatch.ping()
        checks["broker"] = "ok"
    except Exception as error:  # kombu raises transport-specific errors
        checks["broker"] = f"unreachable: {error}"
    return checks
