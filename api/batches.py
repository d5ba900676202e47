"""Batch intake: JSON lists, shared-request document lists, and JSONL uploads, each line judged on its own."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from api.limits import too_deep
from shared.auth import ApiKey
from shared.batches import BatchItem
from shared.errors import OrchestratorError
from shared.orchestrator import Orchestrator
from shared.pricing import Percent, Usd, saved_pct
from shared.requests import JobRequest, Proposal
from shared.routing import RequestOptions


class BatchRequest(BaseModel):
    """Either `items` (job bodies), or one `request` applied to every document of `documents`."""

    model_config = {"extra": "forbid"}

    items: list[dict[str, Any]] | None = Field(None, description="Job bodies, as for POST /v1/jobs.")
    request: str | None = Field(None, description="With `documents`: the request applied to each document.")
    documents: list[str] | None = None
    document_ids: list[str] | None = None
    context: dict[str, Any] = Field(default_factory=dict)
    options: RequestOptions = Field(default_factory=RequestOptions)

    def lines(self) -> list[dict[str, Any]]:
        if self.items is not None:
            return self.items
        if not self.request or not (self.documents or self.document_ids):
            raise ValueError("give `items`, or `request` with `documents` or `document_ids`")
        shared = {"request": self.request, "context": self.context, "options": self.options.model_dump()}
        return [shared | {"document": text} for text in self.documents or []] + [
            shared | {"document_id": document_id} for document_id in self.document_ids or []
        ]


class PlannedItem(BaseModel):
    line: int
    intent: str | None = None
    tier: str | None = None
    model: str | None = None
    tokens: int = 0
    cost_usd: Usd = 0.0
    baseline_tokens: int = 0
    baseline_cost_usd: Usd = 0.0
    error: str | None = None


class DryRun(BaseModel):
    items: list[PlannedItem]
    planned: int
    refused: int
    tokens: int
    cost_usd: Usd
    baseline_tokens: int
    baseline_cost_usd: Usd
    savings_usd: Usd
    savings_pct: Percent


def parse_jsonl(text: str, max_depth: int = 32) -> list[tuple[int, dict[str, Any] | str]]:
    """(line number, parsed object or the reason it is not one) for every non-blank line; a line nested deeper
    than `max_depth` is refused before it is parsed, as a JSON body is."""
    parsed: list[tuple[int, dict[str, Any] | str]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        if too_deep(line.encode(), max_depth):
            parsed.append((number, f"JSON nested deeper than the limit of {max_depth}"))
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as error:
            parsed.append((number, f"not JSON: {error.msg} at column {error.colno}"))
            continue
        parsed.append((number, value if isinstance(value, dict) else "each line must be a JSON object"))
    return parsed


def as_job(value: dict[str, Any] | str) -> JobRequest:
    if isinstance(value, str):
        raise ValueError(value)
    return JobRequest.model_validate(value)


def refusal_reason(error: Exception) -> str:
    if isinstance(error, ValidationError):
        return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in error.errors())
    return str(error)


#: What refuses one line of a batch without refusing the batch: its body, its plan, its document, the budget.
REFUSALS = (ValidationError, ValueError, OrchestratorError)


def submit_lines(
    lines: list[tuple[int, dict[str, Any] | str]], orchestrator: Orchestrator, api_key: ApiKey | None = None
) -> list[BatchItem]:
    """Submit each line; a line that cannot be planned, or that the caller's budget cannot cover, is refused."""
    open_breakers = orchestrator.breakers.unavailable()
    items = []
    for number, value in lines:
        try:
            record = orchestrator.submit(as_job(value), api_key=api_key, open_breakers=open_breakers)
        except REFUSALS as error:
            items.append(BatchItem(line=number, error=refusal_reason(error)))
        else:
            items.append(BatchItem(line=number, job_id=record.id))
    return items


def plan_lines(lines: list[tuple[int, dict[str, Any] | str]], propose: Callable[[JobRequest], Proposal]) -> DryRun:
    """Every line planned, nothing run: `Planner.propose` needs no store; an `Orchestrator`'s, bound to the caller,
    also reads the caller's `document_id`s."""
    items = []
    for number, value in lines:
        try:
            proposal = propose(as_job(value))
        except REFUSALS as error:
            items.append(PlannedItem(line=number, error=refusal_reason(error)))
            continue
        plan = proposal.plan
        items.append(
            PlannedItem(
                line=number,
                intent=proposal.analysis.intent,
                tier=plan.tier,
                model=plan.model,
                tokens=plan.estimated_input_tokens + plan.estimated_output_tokens,
                cost_usd=plan.estimated_cost_usd,
                baseline_tokens=plan.baseline.input_tokens + plan.baseline.output_tokens,
                baseline_cost_usd=plan.baseline.cost_usd,
            )
        )
    cost = sum(item.cost_usd for item in items)
    baseline = sum(item.baseline_cost_usd for item in items)
    return DryRun(
        items=items,
        planned=sum(item.error is None for item in items),
        refused=sum(item.error is not None for item in items),
        tokens=sum(item.tokens for item in items),
        cost_usd=cost,
        baseline_tokens=sum(item.baseline_tokens for item in items),
        baseline_cost_usd=baseline,
        savings_usd=baseline - cost,
        savings_pct=saved_pct(cost, baseline),
    )
