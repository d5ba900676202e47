"""Finished records kept compact on the real Redis: three fields, under a kilobyte, read back as they were finished."""

from __future__ import annotations

import time

import pytest

from shared.job_store import JobStore
from shared.jobs import Attempt, JobInput, JobRecord, JobStatus, Usage, new_job_id
from shared.planning import Planner
from shared.requests import JobRequest
from shared.settings import get_settings
from shared.store import redis_client
from tests.integration.conftest import poll

QUESTION = "Translate 'the road to Lyon' into French"
#: What a finished record leaves out: what analysis recomputes, and the models planning rejected.
RECOMPUTED = {"analysis": {"intent_scores": True, "features": True, "decision": {"thresholds"}}, "plan": {"rejected"}}


@pytest.fixture
def store(redis_env):
    settings = get_settings()
    return JobStore(settings, redis_client(settings))


def running(store: JobStore, request: str = QUESTION) -> JobRecord:
    proposal = Planner(store.settings).propose(JobRequest(request=request))
    record = JobRecord(
        id=new_job_id(),
        status=JobStatus.running,
        queue="llm.simple",
        created_at=time.time(),
        started_at=time.time(),
        input=JobInput(request=request),
        deliveries=1,
        worker="celery@host (llm.simple)",
        **proposal.model_dump(),
    )
    store.create(record)
    return record


def finishing(record: JobRecord) -> dict:
    return {
        "status": JobStatus.succeeded,
        "stage": "done",
        "progress": 1.0,
        "finished_at": time.time(),
        "result": "La route de Lyon",
        "model_used": record.plan.model,
        "provider_used": record.plan.provider,
        "usage": Usage(input_tokens=31, output_tokens=9),
        "cost_usd": 0.0000123,
        "baseline_cost_usd": 0.00142,
        "attempts": [
            Attempt(
                model=record.plan.model, provider=record.plan.provider, number=1, ok=True, started_at=1, duration_ms=9
            )
        ],
    }


def test_a_finished_record_is_three_fields_and_reads_back_as_finished(store):
    record = running(store)
    assert record.analysis.features and record.analysis.decision.thresholds  # what the open record holds
    fields = finishing(record)
    assert store.finish(record.id, record=record, **fields) == JobStatus.running

    raw = store.redis.hgetall(store.keys.job(record.id))
    assert set(raw) == {"status", "deliveries", "z"}
    read = store.get(record.id)
    finished = record.model_copy(update=fields)
    assert read.model_dump(exclude=RECOMPUTED) == finished.model_dump(exclude=RECOMPUTED)
    assert read.analysis.features == {} and read.analysis.decision.thresholds == {}
    assert read.analysis.skill == record.analysis.skill and read.plan.reason == record.plan.reason
    assert store.status(record.id) == JobStatus.succeeded
    assert store.get_many([record.id]) == [read]
    # finished records never change: a second finish is refused and leaves it as it is
    assert store.finish(record.id, record=record, status=JobStatus.failed) is None
    assert store.get(record.id) == read


def test_a_delivery_counted_after_the_finishing_worker_read_the_record_is_kept(store):
    record = running(store)  # the finishing worker's copy says one delivery
    again = store.claim(record.id, "llm.simple", worker="celery@other (llm.simple)")
    assert again.deliveries == 2
    store.finish(record.id, record=record, **finishing(record))
    assert store.get(record.id).deliveries == 2


def test_a_finished_record_costs_under_a_kilobyte_beside_its_text(store):
    record = running(store)
    fields = finishing(record)
    store.finish(record.id, record=record, **fields)
    used = store.redis.memory_usage(store.keys.job(record.id), samples=0)
    assert used - len(QUESTION) - len(fields["result"]) <= 1024
    open_record = running(store)
    assert store.redis.memory_usage(store.keys.job(open_record.id), samples=0) > 2 * used


def test_a_record_finished_without_its_copy_keeps_its_fields(store):
    """A record that no longer validates is failed field by field (workers.tasks._fail) and stays readable raw."""
    record = running(store)
    assert store.finish(record.id, status=JobStatus.failed, error="unreadable") == JobStatus.running
    assert store.get(record.id).error == "unreadable"
    assert "plan" in store.redis.hgetall(store.keys.job(record.id))


@pytest.mark.distributed
def test_jobs_answered_through_the_api_and_workers_are_stored_compact(api, start_worker, redis_env):
    client = redis_client(get_settings())
    body = {"request": QUESTION, "options": {"cache": False}}
    queued = api.post("/v1/jobs", json=body).json()
    cancelled = api.delete(f"/v1/jobs/{queued['id']}").json()  # before any worker runs
    start_worker()
    answered = api.post("/v1/orchestrate", json=body, params={"wait": 20}).json()
    polled = poll(api, api.post("/v1/jobs", json=body).json()["id"])
    assert (cancelled["status"], answered["status"], polled["status"]) == ("cancelled", "succeeded", "succeeded")
    for job in (cancelled, answered, polled):
        assert set(client.hgetall(JobStore(get_settings()).keys.job(job["id"]))) == {"status", "deliveries", "z"}
    again = api.get(f"/v1/jobs/{polled['id']}").json()
    assert again["result"] == polled["result"] and again["usage"] == polled["usage"]
    assert again["plan"]["model"] == polled["plan"]["model"] and again["analysis"]["features"] == {}
    assert api.get(f"/v1/jobs/{cancelled['id']}").json()["error"] == cancelled["error"]
