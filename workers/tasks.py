"""LLM execution task. It receives a job id, never a payload; the job record in Redis holds the rest.

Redelivery is safe: a job already terminal is skipped, so a message that comes back after a worker died never
runs (or bills) a finished job twice.
"""

from __future__ import annotations

import time
from typing import Any

from celery import Task
from celery.utils.log import get_task_logger

from shared.accounting import bill
from shared.execution import ChainExhausted, serve
from shared.jobs import JobStatus, JobStore, Usage
from shared.settings import get_settings
from workers.celery_app import EXECUTE_TASK, app

log = get_task_logger(__name__)


@app.task(name=EXECUTE_TASK, bind=True)
def execute_job(self: Task, job_id: str) -> dict[str, Any]:
    settings = get_settings()
    store = JobStore(settings)
    record = store.get(job_id)
    if record is None:
        log.warning("job %s has no record (expired or deleted); dropping", job_id)
        return {"job_id": job_id, "status": "missing"}
    if record.status.terminal:
        return {"job_id": job_id, "status": record.status}

    delivery = self.request.delivery_info or {}
    store.update(
        job_id,
        status=JobStatus.running,
        stage="running",
        started_at=time.time(),
        deliveries=record.deliveries + 1,
        worker=f"{self.request.hostname} ({delivery.get('routing_key', '?')})",
    )
    try:
        served = serve(record, settings)
    except ChainExhausted as error:
        store.update(
            job_id,
            status=JobStatus.failed,
            stage="failed",
            progress=1.0,
            finished_at=time.time(),
            attempts=error.attempts,
            error=str(error),
        )
        store.mark_done(job_id)
        return {"job_id": job_id, "status": JobStatus.failed}

    completion = served.completion
    charge = bill(record.plan, served.model, completion.input_tokens, completion.output_tokens, settings)
    store.update(
        job_id,
        status=JobStatus.succeeded,
        stage="done",
        progress=1.0,
        finished_at=time.time(),
        result=completion.text,
        model_used=served.model,
        provider_used=served.provider,
        usage=Usage(
            input_tokens=completion.input_tokens,
            output_tokens=completion.output_tokens,
            reported_by_provider=completion.usage_reported,
        ),
        cost_usd=charge.cost_usd,
        baseline_cost_usd=charge.baseline_cost_usd,
        savings_usd=charge.savings_usd,
        savings_pct=charge.savings_pct,
        attempts=served.attempts,
    )
    store.mark_done(job_id)
    return {"job_id": job_id, "status": JobStatus.succeeded}
