"""Analysis: what a request is and what would run, at what cost, without running anything."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import Caller, OrchestratorDep
from shared.requests import JobRequest, Proposal

router = APIRouter(tags=["analysis"])


@router.post("/v1/analyze", response_model=Proposal)
def analyze_request(body: JobRequest, orchestrator: OrchestratorDep, caller: Caller) -> Proposal:
    """Intent, skill, difficulty, the tier the quality target calls for, tokens, the plan (model, fallbacks,
    estimated and baseline cost, a document's compression) and the downstream services and tools the request would
    be offered; runs nothing. A `document_id` is read from the document store."""
    return orchestrator.propose(body, caller)
