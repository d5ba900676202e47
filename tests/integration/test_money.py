"""Money that cannot leak, on a real server, Redis and workers: what a key is charged is what its jobs cost."""

from __future__ import annotations

import time

import pytest

from shared.auth import worst_case_cost
from shared.job_store import JobStore
from shared.jobs import JobStatus
from shared.planning import Planner
from shared.requests import JobRequest
from tests.integration.conftest import poll
from tests.wire.servers import Reply

QUESTION = "What is a noun?"


def _reservation(settings) -> float:
    return worst_case_cost(Planner(settings).propose(JobRequest(request=QUESTION)).plan, settings)


def test_a_provider_reporting_more_than_reserved_is_settled_at_its_real_cost_and_the_key_is_refused(
    secured, start_worker, wire_servers
):
    settings, keys, client = secured
    model = Planner(settings).propose(JobRequest(request=QUESTION)).plan.model
    wire_servers[settings.catalog.spec(model).provider].set_model(model, Reply(output_tokens=50_000_000))
    start_worker()
    budget = 20 * _reservation(settings)
    api_key, secret = keys.create("greedy", budget_usd=budget)
    with client(secret) as c:
        record = poll(c, c.post("/v1/jobs", json={"request": QUESTION, "options": {"cache": False}}).json()["id"])
        assert record["status"] == "succeeded" and record["usage"]["output_tokens"] == 50_000_000
        assert record["cost_usd"] > budget > record["billing"]["reserved_usd"]
        assert keys.spent(api_key) == pytest.approx(record["cost_usd"])  # the ledger says what it cost
        refused = c.post("/v1/jobs", json={"request": QUESTION})
    assert refused.status_code == 429 and refused.json()["code"] == "budget_exhausted"
    assert keys.spent(api_key) == pytest.approx(record["cost_usd"])  # the refusal reserved nothing


@pytest.mark.distributed
def test_a_cancelled_queued_job_is_released_at_once(secured):
    settings, keys, client = secured
    api_key, secret = keys.create("patient", budget_usd=10 * _reservation(settings))
    with client(secret) as c:
        job = c.post("/v1/jobs", json={"request": QUESTION}).json()["id"]
        assert keys.spent(api_key) > 0  # reserved while queued (no worker runs)
        assert c.delete(f"/v1/jobs/{job}").json()["status"] == "cancelled"
    assert keys.spent(api_key) == 0.0 and keys.unsettled(0) == []


def test_a_reservation_left_by_a_process_that_died_between_finish_and_settle_is_reconciled(
    secured, start_worker, monkeypatch
):
    """The state such a crash leaves, a finished job whose reservation is still held, is made with the store's own
    calls; a real worker's sweep must then settle it at the job's recorded cost."""
    settings, keys, client = secured
    api_key, secret = keys.create("crashed", budget_usd=10 * _reservation(settings))
    with client(secret) as c:
        job = c.post("/v1/jobs", json={"request": QUESTION}).json()["id"]
    reserved = keys.spent(api_key)
    assert reserved > 0 and [r.job_id for r in keys.unsettled(0)] == [job]
    JobStore(settings).finish(job, status=JobStatus.succeeded, result="an answer", cost_usd=0.000123)
    monkeypatch.setenv("ORCH_LOST_MESSAGE_SWEEP_SECONDS", "1")
    start_worker()
    deadline = time.monotonic() + 30
    while keys.unsettled(0) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert keys.unsettled(0) == []
    assert keys.spent(api_key) == pytest.approx(0.000123)


def test_a_batch_counts_one_request_per_item_against_the_rate(secured):
    settings, keys, client = secured
    api_key, secret = keys.create("batcher", rate_per_minute=5)
    items = [{"request": f"Define word {i}"} for i in range(100)]
    with client(secret) as c:
        refused = c.post("/v1/batches", json={"items": items})
        fits = c.post("/v1/batches", json={"items": items[:3]})  # the refused request counted one, no more
        over = c.post("/v1/batches", json={"items": items[:3]})
    assert refused.status_code == 429 and refused.json()["code"] == "rate_limited"
    assert "100 items counts 100 requests" in refused.json()["detail"] and "at most 5 items" in refused.json()["detail"]
    assert fits.status_code == 202 and fits.json()["accepted"] == 3
    assert over.status_code == 429 and "1 fit now" in over.json()["detail"]
    assert 12 < int(over.headers["retry-after"]) <= 25  # two more units at one per 12 s
    assert len(keys.unsettled(0)) == 3  # three jobs reserved, none from the refused batches


def test_a_job_whose_record_cannot_be_read_fails_with_the_reason_and_releases_its_reservation(secured, start_worker):
    settings, keys, client = secured
    api_key, secret = keys.create("unlucky", budget_usd=10 * _reservation(settings))
    with client(secret) as c:
        job = c.post("/v1/jobs", json={"request": QUESTION}).json()["id"]
        # a record the worker cannot load, as one written by an incompatible release or damaged in the store
        JobStore(settings).redis.hset(JobStore(settings).keys.job(job), "plan", '{"model": 5}')
        assert keys.spent(api_key) > 0
        start_worker()
        deadline = time.monotonic() + 20
        while JobStore(settings).status(job) != JobStatus.failed and time.monotonic() < deadline:
            time.sleep(0.1)
        error = JobStore(settings).redis.hget(JobStore(settings).keys.job(job), "error")
        unreadable = c.get(f"/v1/jobs/{job}")
    assert JobStore(settings).status(job) == JobStatus.failed
    assert unreadable.status_code == 404  # never a 500
    assert error.startswith("\"the job's record cannot be read: plan.")
    assert keys.spent(api_key) == 0.0 and keys.unsettled(0) == []


def test_a_job_cancelled_while_its_worker_died_mid_call_is_settled_at_its_reservation(secured):
    """Cancelled while running, its call never billed: while a worker holds its message it keeps its reservation;
    once none does, the reservation is what the cut-off call is charged, never nothing."""
    settings, keys, client = secured
    api_key, secret = keys.create("abandoned", budget_usd=10 * _reservation(settings))
    with client(secret) as c:
        job = c.post("/v1/jobs", json={"request": QUESTION}).json()["id"]
    store = JobStore(settings)
    store.claim(job, "llm.simple", status=JobStatus.running, started_at=time.time())
    assert store.finish(job, status=JobStatus.cancelled, finished_at=time.time()) == JobStatus.running
    reserved = keys.spent(api_key)
    assert keys.reconcile(0, lookup=store.get, held=lambda ids: set(ids)) == []  # a worker still runs it
    assert keys.spent(api_key) == pytest.approx(reserved)
    assert keys.reconcile(0, lookup=store.get, held=lambda ids: set()) == [job]
    assert keys.spent(api_key) == pytest.approx(reserved) and keys.unsettled(0) == []
