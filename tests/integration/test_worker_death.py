"""A dead worker's jobs run again on another worker within 90 s, with the default settings; a live worker's long job
is never redelivered (workers/lease.py). Real worker processes, the real Redis, SIGKILL."""

from __future__ import annotations

import signal
import time

import pytest
import redis

from shared.settings import get_settings
from tests.integration.conftest import poll
from tests.wire.servers import Reply

QUESTION = "Define word number {}"  # simple tier: gemini-2.0-flash
MODEL = "gemini-2.0-flash"
INDEX, UNACKED = "orch:unacked_index", "orch:unacked"


def record_of(api, job_id: str) -> dict:
    response = api.get(f"/v1/jobs/{job_id}")
    assert response.status_code == 200, response.text
    return response.json()


def records(api, ids: list[str]) -> list[dict]:
    return [record_of(api, job_id) for job_id in ids]


def submit(api, text: str) -> dict:
    response = api.post("/v1/jobs", json={"request": text})
    assert response.status_code in (200, 201, 202), response.text
    return response.json()


def calls_for(server, text: str) -> int:
    """Provider requests whose prompt carries `text`."""
    return sum(text in str(request.body) for request in server.requests)


def test_the_jobs_of_a_killed_worker_finish_once_on_another_worker_within_90_s(
    api, start_worker, wire_servers, redis_env, monkeypatch
):
    monkeypatch.delenv("ORCH_VISIBILITY_TIMEOUT_SECONDS", raising=False)
    get_settings.cache_clear()
    assert get_settings().visibility_timeout_seconds == 60  # the defaults, as deployed
    client = redis.Redis.from_url(redis_env, decode_responses=True)
    google = wire_servers["google"]
    google.set_model(MODEL, Reply(delay_s=600))  # the victim's calls never come back
    victim = start_worker(concurrency=4)
    jobs = 4
    texts = [QUESTION.format(i) for i in range(jobs)]
    ids = [submit(api, text)["id"] for text in texts]

    victim_name = f"llm-{victim.process.pid}@"
    deadline = time.monotonic() + 30
    while not all(r["status"] == "running" and r["worker"].startswith(victim_name) for r in records(api, ids)):
        assert time.monotonic() < deadline, records(api, ids)
        time.sleep(0.1)
    assert client.hlen(UNACKED) == jobs
    delivered = dict(client.zrange(INDEX, 0, -1, withscores=True))
    assert len(delivered) == jobs

    survivor = start_worker(concurrency=4)
    google.set_model(MODEL, Reply(delay_s=0.2))
    # the victim renews its leases while it lives (every 10 s by default)
    deadline = time.monotonic() + 15
    while not all(score > delivered[tag] for tag, score in client.zrange(INDEX, 0, -1, withscores=True)):
        assert time.monotonic() < deadline, "the victim never renewed the leases of the messages it held"
        time.sleep(0.2)
    assert all(r["status"] == "running" and r["deliveries"] == 1 for r in records(api, ids))

    victim.process.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    victim.process.wait()
    while sum(r["status"] == "succeeded" for r in records(api, ids)) < jobs:
        assert time.monotonic() - killed_at < 90, {r["id"]: r["status"] for r in records(api, ids)}
        time.sleep(0.2)
    elapsed = time.monotonic() - killed_at
    print(f"\nkill to all {jobs} jobs finished on the survivor: {elapsed:.1f} s")
    assert elapsed < 90
    assert survivor.process.poll() is None

    survivor_name = f"llm-{survivor.process.pid}@"
    for record in records(api, ids):
        assert record["status"] == "succeeded"
        assert record["worker"].startswith(survivor_name)
        assert record["deliveries"] == 2  # the victim's delivery and the survivor's, no third
        assert record["model_used"] == MODEL
        assert record["cost_usd"] > 0
        assert len(record["attempts"]) == 1 and record["attempts"][0]["ok"]  # the survivor's run, once
    for text in texts:  # one call cut short by the kill, one answered
        assert calls_for(google, text) == 2
    assert len(google.requests) == 2 * jobs

    # counted once each in the metrics, and nothing left unacknowledged
    buckets = [client.hgetall(k) for k in client.scan_iter("orch:metrics:{*}:[0-9]*")]
    assert sum(int(b.get("requests", 0)) for b in buckets) == jobs
    assert sum(int(b.get("successes", 0)) for b in buckets) == jobs
    assert sum(int(b.get(f"model:{MODEL}", 0)) for b in buckets) == jobs
    deadline = time.monotonic() + 5
    while client.hlen(UNACKED) or client.zcard(INDEX):
        assert time.monotonic() < deadline, client.hgetall(UNACKED)
        time.sleep(0.1)


@pytest.mark.parametrize("pool", ["threads", "prefork"])
def test_a_job_longer_than_the_visibility_timeout_is_not_redelivered_while_its_worker_lives(
    api, start_worker, wire_servers, redis_env, monkeypatch, pool
):
    monkeypatch.setenv("ORCH_VISIBILITY_TIMEOUT_SECONDS", "3")  # renewed every 0.5 s; restore scans every 1 s
    client = redis.Redis.from_url(redis_env, decode_responses=True)
    google = wire_servers["google"]
    google.set_model(MODEL, Reply(delay_s=12))  # four visibility timeouts
    workers = [start_worker(concurrency=2, pool=pool), start_worker(concurrency=2, pool=pool)]  # free slots to spare

    job = submit(api, QUESTION.format(1))
    deadline = time.monotonic() + 15
    while record_of(api, job["id"])["status"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    time.sleep(7)  # more than twice the timeout into the call: its message is held, its lease fresh
    held = client.zrange(INDEX, 0, -1, withscores=True)
    assert len(held) == 1 and client.hlen(UNACKED) == 1
    assert time.time() - held[0][1] < 2
    assert client.llen(f"orch:{job['queue']}") == 0  # not restored to its queue

    record = poll(api, job["id"], timeout=20)
    assert record["status"] == "succeeded"
    assert record["deliveries"] == 1
    assert len(record["attempts"]) == 1
    assert len(google.requests) == 1
    assert all(worker.process.poll() is None for worker in workers)
    buckets = [client.hgetall(k) for k in client.scan_iter("orch:metrics:{*}:[0-9]*")]
    assert sum(int(b.get("requests", 0)) for b in buckets) == 1
