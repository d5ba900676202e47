"""Cost of recording one request (one round trip) and of `get_metrics('1d')` over a full day of buckets.

Run: python tests/bench/metrics.py. Targets: recording under 300 µs on loopback; a 1d query under 50 ms.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import time

from rich.console import Console
from rich.table import Table
from support import bench_redis, percentile


def main() -> None:
    with bench_redis() as url:
        os.environ["ORCH_REDIS_URL"] = url
        import redis

        from shared.metrics import MetricsRecorder, RequestOutcome, read_metrics
        from shared.settings import load_settings

        settings = load_settings()
        client = redis.Redis.from_url(url, decode_responses=True)
        recorder = MetricsRecorder(settings, client)
        rng = random.Random(1)
        models = list(settings.models)
        now = time.time()

        def outcome(i: int) -> RequestOutcome:
            return RequestOutcome(
                job_id=f"bench-{i}",
                succeeded=rng.random() > 0.02,
                model=rng.choice(models),
                provider=rng.choice(["openai", "anthropic", "google"]),
                intent=rng.choice(["read", "write", "search", "analyze", "manage"]),
                tier=rng.choice(["simple", "moderate", "complex"]),
                input_tokens=rng.randint(50, 5000),
                output_tokens=rng.randint(20, 1500),
                baseline_tokens=rng.randint(500, 20000),
                cost_usd=rng.random() / 1000,
                baseline_cost_usd=rng.random() / 50,
                cache_hit=rng.random() < 0.2,
                latency_ms=rng.lognormvariate(6, 1),
            )

        # a full day: every minute bucket holds a realistic mix of fields
        for minute in range(1441):
            for j in range(4):
                recorder.record(outcome(minute * 10 + j), at=now - minute * 60)
        samples = [outcome(100_000 + i) for i in range(2000)]
        record_us = []
        for sample in samples:
            started = time.perf_counter_ns()
            recorder.record(sample, at=now)
            record_us.append((time.perf_counter_ns() - started) / 1000)
        query_ms = []
        for _ in range(30):
            started = time.perf_counter_ns()
            report = read_metrics(settings, client, "1d", now=now)
            query_ms.append((time.perf_counter_ns() - started) / 1e6)
        assert report.total_requests == 1441 * 4 + len(samples)

    record_us.sort()
    query_ms.sort()
    table = Table(title="metrics on Redis (loopback)")
    for column in ("operation", "median", "p95", "samples"):
        table.add_column(column, justify="right")
    table.add_row(
        "record one request (µs)",
        f"{statistics.median(record_us):.0f}",
        f"{percentile(record_us, 0.95):.0f}",
        str(len(record_us)),
    )
    table.add_row(
        "get_metrics('1d'), 1,441 buckets (ms)",
        f"{statistics.median(query_ms):.1f}",
        f"{percentile(query_ms, 0.95):.1f}",
        str(len(query_ms)),
    )
    Console().print(table)
    print(
        json.dumps(
            {"record_us": round(statistics.median(record_us), 1), "query_1d_ms": round(statistics.median(query_ms), 2)}
        )
    )


if __name__ == "__main__":
    main()
