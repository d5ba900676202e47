"""What the routes are handed: the process's orchestrator and the caller's key, each named once as a type."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from shared.auth import ApiKey
from shared.orchestrator import Orchestrator


async def _orchestrator(request: Request) -> Orchestrator:
    """Async because it does no I/O: FastAPI runs a plain def dependency in its thread pool."""
    return request.app.state.orchestrator


async def _caller(request: Request) -> ApiKey | None:
    """The key the middleware checked (None when authentication is off)."""
    return request.state.api_key


OrchestratorDep = Annotated[Orchestrator, Depends(_orchestrator)]
Caller = Annotated[ApiKey | None, Depends(_caller)]
