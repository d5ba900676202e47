"""Metrics: requests, tokens, cost and savings over a period, and the Prometheus exposition."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.deps import Caller, OrchestratorDep
from shared.errors import Forbidden
from shared.metrics import MetricsReport

router = APIRouter(tags=["metrics"])


@router.get("/v1/metrics", response_model=MetricsReport)
def metrics(
    orchestrator: OrchestratorDep,
    caller: Caller,
    period: Annotated[Literal["1m", "5m", "1h", "1d"], Query(description="Period to aggregate.")] = "5m",
    scope: Annotated[
        Literal["tenant", "all"], Query(description="`all`: every tenant's (an admin key's only; 403 otherwise).")
    ] = "tenant",
) -> MetricsReport:
    """Requests, tokens, cost and savings against the baseline, latency percentiles and distributions: of the
    caller's tenant, or of every tenant (`scope=all`, an admin key). Without authentication, of everything."""
    return orchestrator.metrics_report(period, caller, every_tenant=scope == "all")


@router.get("/metrics", include_in_schema=False)
def prometheus(request: Request, caller: Caller) -> Response:
    """Every tenant's totals, for a Prometheus server scraping with an admin key (`authorization` in its
    `scrape_config`); open when authentication is off."""
    if caller is not None and not caller.admin:
        raise Forbidden("the Prometheus exposition counts every tenant: scrape it with an admin key")
    return Response(generate_latest(request.app.state.prometheus), media_type=CONTENT_TYPE_LATEST)
