"""Jobs: submit one and poll it, or submit and wait; cancel one."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, status
from fastapi.responses import JSONResponse, Response

from api.deps import Caller, OrchestratorDep
from shared.errors import JobFailed
from shared.jobs import JobRecord, JobStatus
from shared.requests import JobAccepted, JobRequest

router = APIRouter(tags=["jobs"])


@router.post("/v1/jobs", status_code=status.HTTP_202_ACCEPTED, response_model=JobAccepted)
def create_job(body: JobRequest, orchestrator: OrchestratorDep, caller: Caller) -> Response:
    """Queue a request; poll `GET /v1/jobs/{id}` for the result."""
    accepted = JobAccepted.of(orchestrator.submit(body, api_key=caller))
    # Serialized here: FastAPI would validate the model it was just built from again before serializing it.
    return Response(accepted.model_dump_json(), status.HTTP_202_ACCEPTED, media_type="application/json")


@router.get("/v1/jobs/{job_id}", response_model=JobRecord)
def get_job(job_id: str, orchestrator: OrchestratorDep, caller: Caller) -> JobRecord:
    """The job's status, progress, answer, tokens, cost and savings: 404 unless it is the caller's tenant's."""
    return orchestrator.job(job_id, caller)


@router.delete("/v1/jobs/{job_id}", response_model=JobRecord)
def cancel_job(job_id: str, orchestrator: OrchestratorDep, caller: Caller) -> JobRecord:
    """Cancel a queued or running job. A running provider call finishes, but nothing after it runs or bills."""
    return orchestrator.cancel(job_id, "cancelled by request", caller)


@router.post(
    "/v1/orchestrate",
    response_model=JobRecord,
    responses={
        202: {"model": JobAccepted, "description": "Still running after `wait` seconds: poll it."},
        502: {"model": JobRecord, "description": "The job failed: its record, with `detail` saying why."},
    },
)
def orchestrate(
    body: JobRequest,
    orchestrator: OrchestratorDep,
    caller: Caller,
    wait: Annotated[float | None, Query(ge=0, le=600, description="Seconds to wait for the result.")] = None,
    store: Annotated[
        bool,
        Query(description="Keep the record as long as an async job's (`job_ttl_seconds`) instead of an hour."),
    ] = False,
) -> Any:
    """Queue a request and wait for its result; past the wait, answer 202 with the job id to poll. Its record is
    kept for `sync_record_ttl_seconds` once finished (the metrics keep its figures), unless `store=true`."""
    record = orchestrator.submit(body, api_key=caller, sync=not store)
    timeout = orchestrator.settings.orchestrate_wait_seconds if wait is None else wait
    finished = orchestrator.wait(record, timeout)
    if not finished.status.terminal:
        return JSONResponse(JobAccepted.of(finished).model_dump(mode="json"), status.HTTP_202_ACCEPTED)
    if finished.status != JobStatus.succeeded:
        raise JobFailed(
            f"job {finished.id} {finished.status}: {finished.error}", finished, finished.status == JobStatus.cancelled
        )
    return finished
