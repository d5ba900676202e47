"""Downstream MCP services: their state, tools and breaker as this process sees them."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import OrchestratorDep
from shared.services.models import ServiceState

router = APIRouter(tags=["services"])


@router.get("/v1/services", response_model=list[ServiceState])
def list_services(orchestrator: OrchestratorDep) -> list[ServiceState]:
    """The configured downstream MCP services: state, tools (as this process last listed them), breaker."""
    return orchestrator.services()
