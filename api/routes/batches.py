"""Batch endpoints: submit, follow, stream results in input order, cancel; `dry_run` plans without running."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from typing import Any

from fastapi import APIRouter, Query, Request, status
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

from api.batches import BatchRequest, DryRun, parse_jsonl, plan_lines, refusal_reason, submit_lines
from api.deps import Caller, OrchestratorDep
from shared.auth import ApiKey, owner_of
from shared.batches import BatchItem, BatchStore, BatchSummary, result_line
from shared.errors import Conflict, InvalidRequest, NotFound, RateLimited, TooLarge
from shared.orchestrator import Orchestrator

router = APIRouter(tags=["batches"])
_JSONL_TYPES = {"application/x-ndjson", "application/jsonl", "application/x-jsonlines", "text/plain"}


class BatchAccepted(BaseModel):
    id: str
    total: int
    accepted: int
    refused: list[BatchItem]
    poll: str


async def _lines(request: Request, limit: int, max_depth: int) -> list[tuple[int, dict[str, Any] | str]]:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        upload = (await request.form()).get("file")
        if upload is None or isinstance(upload, str):
            raise InvalidRequest("multipart upload needs a `file` field", "file")
        lines = parse_jsonl((await upload.read()).decode("utf-8", errors="replace"), max_depth)
    elif kind in _JSONL_TYPES:
        lines = parse_jsonl((await request.body()).decode("utf-8", errors="replace"), max_depth)
    else:
        try:
            batch = BatchRequest.model_validate_json(await request.body())
            lines = list(enumerate(batch.lines(), start=1))
        except (ValidationError, ValueError) as error:
            raise InvalidRequest(refusal_reason(error)) from None
    if not lines:
        raise InvalidRequest("the batch has no items")
    if len(lines) > limit:
        raise TooLarge(f"{len(lines):,} items; a batch takes at most {limit:,}")
    return lines


def _batches(orchestrator: Orchestrator) -> BatchStore:
    return BatchStore(orchestrator.settings, orchestrator.jobs.redis, orchestrator.jobs)


@router.post(
    "/v1/batches",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=BatchAccepted,
    responses={200: {"model": DryRun, "description": "dry_run=true: the plan of every item, nothing runs"}},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": BatchRequest.model_json_schema()},
                "application/x-ndjson": {"schema": {"type": "string", "description": "one job body per line"}},
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {"file": {"type": "string", "format": "binary"}},
                        "required": ["file"],
                    }
                },
            },
        }
    },
)
async def create_batch(
    request: Request,
    orchestrator: OrchestratorDep,
    caller: Caller,
    dry_run: bool = Query(False, description="Plan every item and project the cost; run none."),
) -> Any:
    """Submit many jobs: `{"items": [...]}`, `{"request": ..., "documents": [...]}` or a JSONL upload. A line that
    cannot be planned is refused with its line number; the others run."""
    settings = orchestrator.settings
    lines = await _lines(request, settings.max_batch_items, settings.max_json_depth)
    if dry_run:
        planned = await run_in_threadpool(plan_lines, lines, partial(orchestrator.propose, caller=caller))
        return JSONResponse(planned.model_dump(mode="json"))
    if caller is not None and len(lines) > 1:
        await run_in_threadpool(_count_items, orchestrator, caller, len(lines))
    batches = _batches(orchestrator)
    items = await run_in_threadpool(submit_lines, lines, orchestrator, caller)
    batch_id = await run_in_threadpool(batches.create, items, owner_of(caller))
    refused = [item for item in items if item.error]
    return BatchAccepted(
        id=batch_id,
        total=len(items),
        accepted=len(items) - len(refused),
        refused=refused,
        poll=f"/v1/batches/{batch_id}",
    )


def _count_items(orchestrator: Orchestrator, caller: ApiKey, items: int) -> None:
    """A batch of N items counts N requests against the key's rate: the request itself was counted, the rest
    are taken here, all or none."""
    rate = orchestrator.keys.take(caller, items - 1)
    if rate is None or rate.allowed:
        return
    limit = caller.rate_per_minute
    if items > limit:
        raise RateLimited(
            f"a batch of {items:,} items counts {items:,} requests; key {caller.name!r} has "
            f"{limit:,} per minute: send at most {limit:,} items at a time",
            None,
        )
    raise RateLimited(
        f"a batch of {items:,} items counts {items:,} requests; {rate.available + 1:,} fit now within the rate of "
        f"{limit:,} per minute of key {caller.name!r}; retry in {rate.retry_after:.1f}s",
        rate.retry_after,
    )


def _summary_or_404(batches: BatchStore, batch_id: str, caller: ApiKey | None) -> BatchSummary:
    summary = batches.summary(batch_id) if batches.visible(batch_id, caller) else None
    if summary is None:
        raise NotFound(f"no batch {batch_id} (unknown or expired)")
    return summary


def _items_or_404(batches: BatchStore, batch_id: str, caller: ApiKey | None) -> list[BatchItem]:
    items = batches.items(batch_id) if batches.visible(batch_id, caller) else None
    if items is None:
        raise NotFound(f"no batch {batch_id} (unknown or expired)")
    return items


@router.get("/v1/batches/{batch_id}", response_model=BatchSummary)
def get_batch(batch_id: str, orchestrator: OrchestratorDep, caller: Caller) -> BatchSummary:
    """Counts per status, progress, tokens, cost and savings so far."""
    return _summary_or_404(_batches(orchestrator), batch_id, caller)


@router.get(
    "/v1/batches/{batch_id}/results",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-ndjson": {}}}},
)
def batch_results(batch_id: str, orchestrator: OrchestratorDep, caller: Caller) -> StreamingResponse:
    """One JSON line per input line, in input order: the result, or why the line was refused."""
    batches = _batches(orchestrator)
    items = _items_or_404(batches, batch_id, caller)

    def lines() -> Iterator[str]:
        for item, record in batches.records(items):
            yield result_line(item, record) + "\n"

    return StreamingResponse(lines(), media_type="application/x-ndjson")


@router.delete("/v1/batches/{batch_id}", response_model=BatchSummary)
def cancel_batch(batch_id: str, orchestrator: OrchestratorDep, caller: Caller) -> BatchSummary:
    """Cancel every job of the batch that has not finished."""
    batches = _batches(orchestrator)
    for _, record in batches.records(_items_or_404(batches, batch_id, caller)):
        if record is not None and not record.status.terminal:
            try:
                orchestrator.cancel(record.id, "batch cancelled", caller)
            except Conflict:
                pass  # it finished meanwhile
    return _summary_or_404(batches, batch_id, caller)
