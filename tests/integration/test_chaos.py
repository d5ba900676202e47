"""Chaos: real worker processes, the real Redis, a flaky primary provider and a worker killed mid-run."""

from __future__ import annotations

import signal
import time

import pytest

from tests.wire.servers import Reply

JOBS = 200


@pytest.mark.distributed
def test_every_job_succeeds_once_through_a_killed_worker_and_a_flaky_provider(
    api, start_worker, wire_servers, redis_env, monkeypatch
):
    # an unacknowledged message comes back after 5 s instead of an hour
    monkeypatch.setenv("ORCH_VISIBILITY_TIMEOUT_SECONDS", "5")
    # calls take 1 s until the kill, so the victim surely holds running jobs when it dies
    wire_servers["google"].set_model("gemini-2.0-flash", Reply(delay_s=1.0))
    wire_servers["google"].failure_rate("gemini-2.0-flash", 0.3, seed=3)
    wire_servers["openai"].set_model("gpt-4.1-nano", Reply(delay_s=0.1))
    victim = start_worker(concurrency=8)
    survivor = start_worker(concurrency=8)

    ids = [api.post("/v1/jobs", json={"request": f"Define word number {i}"}).json()["id"] for i in range(JOBS)]
    statuses = lambda: [api.get(f"/v1/jobs/{job_id}").json()["status"] for job_id in ids]  # noqa: E731
    # killed while it runs jobs: some have succeeded, and one of those still waiting is running on the victim
    victim_name = f"llm-{victim.process.pid}@"
    deadline = time.monotonic() + 60
    while True:
        records = [api.get(f"/v1/jobs/{job_id}").json() for job_id in ids]
        running = [r for r in records if r["status"] == "running" and (r["worker"] or "").startswith(victim_name)]
        if running and sum(r["status"] == "succeeded" for r in records) >= JOBS // 20:
            break
        assert time.monotonic() < deadline, "the victim never ran a job"
    victim.process.send_signal(signal.SIGKILL)
    victim.process.wait()
    wire_servers["google"].set_model("gemini-2.0-flash", Reply(delay_s=0.1))

    deadline = time.monotonic() + 120
    while (current := statuses()).count("succeeded") < JOBS:
        assert time.monotonic() < deadline, {s: current.count(s) for s in set(current)}
        time.sleep(0.5)
    assert survivor.process.poll() is None

    records = [api.get(f"/v1/jobs/{job_id}").json() for job_id in ids]
    redelivered = [r for r in records if r["deliveries"] >= 2]
    assert redelivered, "the killed worker had jobs in flight; they must have run again elsewhere"
    assert any(a["error_kind"] == "server" for r in records for a in r["attempts"])  # the provider did fail

    # each job exactly once in the metrics, however often it ran
    metrics = api.get("/v1/metrics", params={"period": "1h"}).json()  # every shard's buckets, merged
    assert metrics["total_requests"] == metrics["successful_requests"] == JOBS
    served = sum(metrics["model_distribution"].get(m, 0) for m in ("gemini-2.0-flash", "gpt-4.1-nano"))
    assert served == JOBS
