"""Metrics on the real Redis: per-minute buckets, merged periods, percentiles, expiry, endpoints, CLI, Prometheus."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from shared.job_store import JobStore
from shared.jobs import JobInput, JobRecord, JobStatus, new_job_id
from shared.metrics import (
    LATENCY_STEPS_PER_DECADE,
    RETENTION_SECONDS,
    MetricsRecorder,
    RequestOutcome,
    bucket_key,
    read_metrics,
)
from shared.planning import Planner
from shared.requests import JobRequest
from shared.settings import get_settings
from tests.integration.conftest import poll

ROOT = Path(__file__).resolve().parents[2]
NOW = 1_800_000_030.0  # 30 s into a minute
BUCKET_FACTOR = 10 ** (1 / LATENCY_STEPS_PER_DECADE)


@pytest.fixture
def recorder(redis_env):
    settings = get_settings()
    client = redis.Redis.from_url(redis_env, decode_responses=True)
    return settings, client, MetricsRecorder(settings, client)


def outcome(i: int, **fields) -> RequestOutcome:
    defaults = dict(
        job_id=f"job-{i}",
        succeeded=True,
        model="gpt-4o-mini",
        provider="openai",
        intent="write",
        tier="moderate",
        input_tokens=100,
        output_tokens=50,
        baseline_tokens=400,
        cost_usd=0.0001,
        baseline_cost_usd=0.002,
        cache_hit=False,
        latency_ms=200.0,
    )
    return RequestOutcome(**(defaults | fields))


def test_percentiles_are_within_one_histogram_bucket(recorder):
    settings, client, metrics = recorder
    rng = random.Random(9)
    sample = [rng.lognormvariate(5.5, 0.8) for _ in range(2000)]  # median about 245 ms, long tail
    for i, latency in enumerate(sample):
        metrics.record(outcome(i, latency_ms=latency), at=NOW)
    report = read_metrics(settings, client, "1m", now=NOW)
    sample.sort()
    for q, estimate in ((0.50, report.p50_duration_ms), (0.95, report.p95_duration_ms), (0.99, report.p99_duration_ms)):
        true = sample[int(q * len(sample))]
        assert true / BUCKET_FACTOR <= estimate <= true * BUCKET_FACTOR, (q, true, estimate)
    assert report.avg_duration_ms == pytest.approx(sum(round(x) for x in sample) / len(sample), abs=0.1)


def test_periods_merge_whole_minutes_back_from_now(recorder):
    settings, client, metrics = recorder
    ages = {"now": 0, "previous minute": 50, "3 min ago": 180, "20 min ago": 1200, "3 h ago": 10_800}
    for i, age in enumerate(ages.values()):
        metrics.record(outcome(i), at=NOW - age)
    counts = {
        period: read_metrics(settings, client, period, now=NOW).total_requests for period in ("1m", "5m", "1h", "1d")
    }
    assert counts == {"1m": 2, "5m": 3, "1h": 4, "1d": 5}
    assert read_metrics(settings, client, "5m", now=NOW).requests_per_minute == pytest.approx(3 / 5)


def test_totals_distributions_savings_and_cache(recorder):
    settings, client, metrics = recorder
    metrics.record(outcome(1), at=NOW)
    metrics.record(
        outcome(
            2,
            model="gemini-2.0-flash",
            provider="google",
            intent="read",
            tier="simple",
            cost_usd=0.00002,
            cache_hit=True,
        ),
        at=NOW,
    )
    metrics.record(outcome(3, succeeded=False, model=None, provider=None, cache_hit=None, latency_ms=900), at=NOW)
    metrics.record(RequestOutcome(succeeded=False, rejected=True), at=NOW)
    r = read_metrics(settings, client, "5m", now=NOW)
    assert (r.total_requests, r.successful_requests, r.failed_requests, r.rejected_requests) == (4, 2, 2, 1)
    assert r.success_rate == 0.5
    assert r.model_distribution == {"gpt-4o-mini": 1, "gemini-2.0-flash": 1}
    assert r.intent_distribution == {"write": 2, "read": 1}
    assert r.tier_distribution == {"moderate": 2, "simple": 1}
    assert r.provider_distribution == {"openai": 1, "google": 1}
    assert (r.input_tokens, r.output_tokens, r.total_tokens) == (200, 100, 300)
    assert r.baseline_tokens == 2 * (400 + 50) and r.total_tokens_saved == 2 * 300
    assert r.total_cost_usd == pytest.approx(0.00012) and r.baseline_cost_usd == pytest.approx(0.004)
    assert r.savings_pct == pytest.approx(97.0)
    assert r.cache_hit_rate == 0.5 and (r.cache_hits, r.cache_misses) == (1, 1)


def test_buckets_expire(recorder):
    settings, client, metrics = recorder
    assert metrics.record(outcome(7), at=NOW) is True
    assert read_metrics(settings, client, "1m", now=NOW).total_requests == 1
    ttl = client.ttl(bucket_key(metrics.keys, 0, int(NOW // 60)))  # one server: one shard
    assert RETENTION_SECONDS - 5 <= ttl <= RETENTION_SECONDS


def test_finishing_a_job_counts_it_in_the_same_step_and_only_once(recorder):
    settings, client, metrics = recorder
    store = JobStore(settings, client)
    proposal = Planner(settings).propose(JobRequest(request="What is a noun?"))
    records = [
        JobRecord(
            id=new_job_id(),
            status=JobStatus.running,
            queue="llm.simple",
            created_at=time.time(),
            input=JobInput(request="What is a noun?"),
            **proposal.model_dump(),
        )
        for _ in range(2)
    ]
    for record in records:
        store.create(record)
    done, cancelled = records
    assert store.finish(done.id, counted=outcome(0, job_id=done.id), status=JobStatus.succeeded, result="Paris")
    assert store.get(done.id).result == "Paris"
    assert read_metrics(settings, client, "1m").total_requests == 1
    # a second finish (another delivery) changes and counts nothing
    assert not store.finish(done.id, counted=outcome(0, job_id=done.id), status=JobStatus.failed)
    assert store.update(cancelled.id, status=JobStatus.cancelled)
    assert not store.finish(cancelled.id, counted=outcome(1, job_id=cancelled.id), status=JobStatus.succeeded)
    report = read_metrics(settings, client, "1m")
    assert (report.total_requests, report.successful_requests, report.input_tokens) == (1, 1, 100)
    assert store.get(done.id).status == JobStatus.succeeded
    assert store.get(cancelled.id).status == JobStatus.cancelled


def test_recording_never_raises_when_redis_is_unreachable(redis_env):
    settings = get_settings()
    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2, decode_responses=True)
    assert MetricsRecorder(settings, dead).record(outcome(1)) is False


def test_http_endpoint_cli_and_prometheus_report_a_real_job(api, start_worker, redis_env):
    start_worker()
    job = poll(api, api.post("/v1/jobs", json={"request": "What is a noun?"}).json()["id"])
    assert job["status"] == "succeeded"
    assert api.post("/v1/jobs", json={"request": "hi", "options": {"max_cost": 1e-12}}).status_code == 422

    body = api.get("/v1/metrics", params={"period": "5m"}).json()
    assert body["period"] == "5m"
    assert (body["total_requests"], body["successful_requests"], body["rejected_requests"]) == (2, 1, 1)
    assert body["model_distribution"] == {"gemini-2.0-flash": 1}
    assert body["total_cost_usd"] == pytest.approx(job["cost_usd"])
    assert body["baseline_cost_usd"] == pytest.approx(job["baseline_cost_usd"])
    assert body["total_tokens"] == job["usage"]["input_tokens"] + job["usage"]["output_tokens"]
    assert api.get("/v1/metrics", params={"period": "2w"}).status_code == 422

    env = {**os.environ, "ORCH_REDIS_URL": redis_env}
    cli = subprocess.run(
        [sys.executable, "-m", "api.cli", "metrics", "--period", "1h", "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode == 0, cli.stderr
    assert {k: v for k, v in json.loads(cli.stdout).items() if k not in ("period", "requests_per_minute")} == {
        k: v for k, v in body.items() if k not in ("period", "requests_per_minute")
    }
    table = subprocess.run(
        [sys.executable, "-m", "api.cli", "metrics", "--period", "1h"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "2 (1 ok, 1 failed, 1 refused)" in table.stdout and "gemini-2.0-flash 1" in table.stdout

    scrape = api.get("/metrics").text
    assert "orchestrator_requests_total 2.0" in scrape
    assert 'orchestrator_requests_by_model_total{model="gemini-2.0-flash"} 1.0' in scrape
    assert "orchestrator_request_duration_seconds_count 1.0" in scrape
    assert 'orchestrator_request_duration_seconds_bucket{le="+Inf"} 1.0' in scrape
