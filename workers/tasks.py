"""LLM execution task. It receives a job id, never a payload; the job record in Redis holds the rest.

Redelivery is safe by construction: a finished job is never changed again (the store refuses), and its metrics are
counted by the step that finishes it, so a message that comes back after a worker died neither re-runs a finished
job nor counts one twice. A job cancelled while it runs stops before its next provider attempt.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import redis
from celery import Task
from celery.utils.log import get_task_logger
from pydantic import ValidationError

from shared.accounting import Bill, bill, usage_of
from shared.auth import KeyStore, settle_job
from shared.execution import Cancelled, ChainExhausted, Served
from shared.job_store import JobStore
from shared.jobs import JobRecord, JobStatus, Usage
from shared.pricing import saved_pct
from shared.services.toolbox import Toolbox
from shared.settings import Settings
from workers.celery_app import EXECUTE_TASK, app
from workers.runtime import Services, services

log = get_task_logger(__name__)


@app.task(name=EXECUTE_TASK, bind=True, max_retries=10, ignore_result=True)
def execute_job(self: Task, job_id: str) -> dict[str, Any]:
    """Run one job. Redis trouble retries the task (the job stays where it was); any other unexpected error fails
    the job with the reason, so no job is left `running` forever. The outcome lives on the job record, so Celery
    keeps no result (storing one would cost a write and a publish per job, and the sender a subscription)."""
    try:
        return _execute(self, job_id)
    except redis.RedisError as error:
        raise self.retry(exc=error, countdown=min(30, 2**self.request.retries)) from error
    except Exception as error:
        log.exception("job %s failed unexpectedly", job_id)
        _fail(job_id, f"internal error: {type(error).__name__}: {error}")
        return {"job_id": job_id, "status": JobStatus.failed}


def _fail(job_id: str, reason: str) -> None:
    """Fail a job that broke its run; one whose record cannot even be read is failed field by field, and its
    reservation released, so it never stays `running` with its budget held."""
    jobs = services().jobs
    try:
        record = jobs.get(job_id)
    except ValidationError as error:
        first = error.errors()[0]
        reason = f"the job's record cannot be read: {'.'.join(map(str, first['loc']))}: {first['msg']}"
        billing = (
            jobs.billing(job_id) if jobs.finish(job_id, **_finished(status=JobStatus.failed, error=reason)) else None
        )
        if billing is not None and billing.spend_key:
            KeyStore(jobs.settings, jobs.redis).settle(billing.spend_key, job_id, billing.reserved_usd, 0.0)
        return
    if record is not None:
        finish_job(jobs, record, status=JobStatus.failed, error=reason)


def _execute(self: Task, job_id: str) -> dict[str, Any]:
    runtime = services()
    store, executor = runtime.jobs, runtime.executor
    queue = (self.request.delivery_info or {}).get("routing_key", "?")
    record = store.claim(
        job_id,
        queue,
        status=JobStatus.running,
        stage="running",
        started_at=time.time(),
        worker=f"{self.request.hostname} ({queue})",
    )
    if record is None:
        log.warning("job %s has no record (expired or deleted); dropping", job_id)
        return {"job_id": job_id, "status": "missing"}
    if record.status.terminal:  # a redelivered message for a finished job: counted when it finished, nothing to do
        return {"job_id": job_id, "status": record.status}
    try:
        document = _document_text(record)
        cancelled = lambda: store.status(job_id) == JobStatus.cancelled  # noqa: E731
        relay = _Relay(store, job_id, cancelled) if record.input.stream else None
        toolbox = _toolbox(record, runtime)
        if toolbox:
            served = executor.serve_with_tools(record, toolbox, document, cancelled=cancelled, on_delta=relay)
        else:
            served = executor.serve(record, document, cancelled=cancelled, on_delta=relay)
    except Cancelled as cancelled_between_calls:
        # What the turns that answered before the cancel used (a tool loop's), and the document's preprocessing.
        spent = cancelled_between_calls.spent
        cost = _charge(record, spent, executor.settings)[1].cost_usd if spent else 0.0
        settle_job(store.settings, store.redis, record, cost + record.spent_usd)
        return {"job_id": job_id, "status": JobStatus.cancelled}
    except ChainExhausted as error:
        spent = {}
        if error.spent is not None:  # a tool loop's answered turns are billed even though the job failed
            used, charge = _charge(record, error.spent, executor.settings)
            spent = {"usage": used, "cost_usd": charge.cost_usd + record.spent_usd, "model_used": error.spent.model}
        finished = finish_job(
            store,
            record,
            status=JobStatus.failed,
            attempts=error.attempts,
            error=str(error),
            tool_calls=error.tool_calls,
            **spent,
        )
    else:
        completion = served.completion
        used, charge = _charge(record, served, executor.settings)
        preprocessing = record.document.preprocessing_cost_usd if record.document else 0.0
        finished = finish_job(
            store,
            record,
            status=JobStatus.succeeded,
            result=completion.text,
            stop_reason=completion.stop_reason,
            model_used=served.model,
            provider_used=served.provider,
            cache_hit=served.cache_hit,
            usage=used,
            cost_usd=charge.cost_usd + preprocessing,
            baseline_cost_usd=charge.baseline_cost_usd,
            savings_usd=charge.savings_usd - preprocessing,
            savings_pct=saved_pct(charge.cost_usd + preprocessing, charge.baseline_cost_usd),
            attempts=served.attempts,
            tool_calls=served.tool_calls,
        )
    if finished is not None:
        return {"job_id": job_id, "status": finished.status}
    return {"job_id": job_id, "status": "superseded"}


def _charge(record: JobRecord, served: Served, settings: Settings) -> tuple[Usage, Bill]:
    """What a served answer used and costs, against the job's baseline. A cache hit was paid for by the call that
    filled the cache: this one used nothing."""
    completion = served.completion
    if served.cache_hit:
        used = Usage(input_tokens=0, output_tokens=0, reported_by_provider=completion.usage_reported)
    else:
        used = Usage(**usage_of(completion).model_dump(), reported_by_provider=completion.usage_reported)
    when = datetime.fromtimestamp(record.created_at, tz=UTC)
    charge = bill(record.plan, served.model, used, settings=settings, when=when, answer_tokens=completion.output_tokens)
    return used, charge


class _Relay:
    """Hands the answer's pieces to the job's stream until the job is cancelled (asked at most every 0.2 s): the
    rest of a cancelled answer is not delivered, though the call runs on and is billed at what it reports."""

    CHECK_EVERY_S = 0.2

    def __init__(self, store: JobStore, job_id: str, cancelled: Callable[[], bool]) -> None:
        self.store, self.job_id, self.cancelled = store, job_id, cancelled
        self.checked_at = time.monotonic()
        self.stopped = False

    def __call__(self, text: str) -> None:
        now = time.monotonic()
        if not self.stopped and now - self.checked_at >= self.CHECK_EVERY_S:
            self.checked_at, self.stopped = now, self.cancelled()
        if not self.stopped:
            self.store.answers.append(self.job_id, text)


def _toolbox(record: JobRecord, runtime: Services) -> Toolbox | None:
    """The job's downstream tools, as this process reaches them; services down here are noted on the record."""
    if record.services is None or not record.services.services:
        return None
    toolbox = Toolbox(record.services, runtime.mcp)
    if toolbox.unavailable:
        for service, reason in toolbox.unavailable.items():
            record.services.skipped[service] = f"unavailable in the worker: {reason}"
        record.services.services = [c for c in record.services.services if c.service not in toolbox.unavailable]
        runtime.jobs.update(record.id, services=record.services)
    return toolbox


def _document_text(record: JobRecord) -> str | None:
    """The document as the model reads it: its compressed form when it was preprocessed, else whole."""
    use = record.document
    if use is None:
        return None
    runtime = services()
    if use.summary_key:
        compressed = runtime.summaries.get(use.summary_key)
        if compressed is None:
            raise ChainExhausted("the compressed document expired before the model could read it; resubmit", [])
        return compressed.text
    text = runtime.documents.text(use.id)
    if text is None:
        raise ChainExhausted(f"document {use.id} expired before the model could read it; upload it again", [])
    return text


def _finished(**fields: Any) -> dict[str, Any]:
    """A terminal record's fields: stage "done", full progress and the time, unless `fields` say otherwise."""
    return {"stage": "done", "progress": 1.0, "finished_at": time.time()} | fields


def finish_job(store: JobStore, record: JobRecord, **fields: Any) -> JobRecord | None:
    """Make the job terminal (stage "done" unless `fields` say otherwise), wake its waiters, count it in the metrics
    and release its budget reservation; the finished record, or None if it already was terminal (cancelled
    meanwhile, or finished by another delivery)."""
    fields = _finished(**fields)
    finished = record.model_copy(update=fields)
    if not store.finish(record.id, counted=finished.outcome(), ttl=record.retention_s(store.settings), record=finished):
        # Cancelled while its call ran: the call is settled at what it cost (a no-op when a cancel of the queued
        # job, or another delivery, settled it already).
        settle_job(store.settings, store.redis, finished, finished.spent_usd)
        return None
    if record.input.stream:
        store.answers.close(record.id, fields["status"])
    settle_job(store.settings, store.redis, finished, finished.spent_usd)
    return finished
