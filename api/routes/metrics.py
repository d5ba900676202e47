"""Metrics: requests, tokens, cost and savings over a period, and the Prometheus exposition."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.deps import OrchestratorDep
from shared.metrics import MetricsReport

router = APIRouter(tags=["metrics"])


@router.get("/v1/metrics", response_model=MetricsReport)
def metrics(
    orchestrator: OrchestratorDep,
    period: Annotated[Literal["1m", "5m", "1h", "1d"], Query(description="Period to aggregate.")] = "5m",
) -> MetricsReport:
    """Requests, tokens, cost and savings against the baseline, latency percentiles and distributions."""
    return orchestrator.metrics_report(period)


@router.get("/metrics", include_in_schema=False)
def prometheus(request: Request) -> Response:
    return Response(generate_latest(request.app.state.prometheus), media_type=CONTENT_TYPE_LATEST)
