"""Success rate and added latency of the resilience layer as the primary model fails more often.

Each request runs through the real execution path (SDK → local wire server, breakers and retries in a real Redis,
default retry and breaker settings) with the primary model of the simple tier failing with HTTP 500 at 0%, 10%,
30% and 100% of calls; every provider answers in 20 ms. Added latency is the mean request time at each rate minus
the mean at 0%.

Run: python tests/bench/resilience.py [--requests N]. Target: 100% success while any fallback is healthy.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

from rich.console import Console
from rich.table import Table
from support import bench_redis, percentile, provider_env, use_test_catalog  # noqa: I001

use_test_catalog()  # the wire servers answer as the test catalog's models

RATES = (0.0, 0.1, 0.3, 1.0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()

    from tests.wire.servers import AnthropicWireServer, GeminiWireServer, OpenAIWireServer, Reply

    servers = {"openai": OpenAIWireServer(), "anthropic": AnthropicWireServer(), "google": GeminiWireServer()}
    for server in servers.values():
        server.start()
    with bench_redis() as url:
        os.environ.update(provider_env(url, servers))
        import redis

        from shared.breaker import CircuitBreakers
        from shared.execution import ChainExhausted, Executor
        from shared.jobs import JobInput, JobRecord, JobStatus, new_job_id
        from shared.planning import Planner
        from shared.requests import JobRequest
        from shared.settings import load_settings

        settings = load_settings()
        client = redis.Redis.from_url(url, decode_responses=True)
        breakers = CircuitBreakers(settings, client)
        executor = Executor(settings, breakers, cache=None)
        for server in servers.values():
            for model in ("gemini-2.0-flash", "gpt-4.1-nano", "claude-3-haiku-20240307"):
                server.set_model(model, Reply(delay_s=0.02))

        results: dict[float, dict[str, float]] = {}
        for rate in RATES:
            client.flushdb()  # every rate starts with closed breakers
            servers["google"].failure_rate("gemini-2.0-flash", rate, seed=11)
            latencies, successes, primary = [], 0, 0
            for i in range(args.requests):
                body = JobRequest(request=f"What is the capital of country {i}?")
                proposal = Planner(settings).propose(body, open_breakers=breakers.unavailable())
                record = JobRecord(
                    id=new_job_id(),
                    status=JobStatus.running,
                    queue="llm.simple",
                    created_at=time.time(),
                    input=JobInput(request=body.request),
                    **proposal.model_dump(),
                )
                started = time.perf_counter()
                try:
                    served = executor.serve(record)
                    successes += 1
                    primary += served.model == "gemini-2.0-flash"
                except ChainExhausted:
                    pass
                latencies.append((time.perf_counter() - started) * 1000)
            latencies.sort()
            results[rate] = {
                "success_rate": successes / args.requests,
                "mean_ms": statistics.fmean(latencies),
                "p50_ms": percentile(latencies, 0.5),
                "p95_ms": percentile(latencies, 0.95),
                "primary_share": primary / args.requests,
            }
    for server in servers.values():
        server.stop()

    base = results[0.0]["mean_ms"]
    table = Table(title=f"resilience: {args.requests} requests per failure rate of the primary model")
    for column in ("primary failure", "success", "served by primary", "mean ms", "p50 ms", "p95 ms", "added ms"):
        table.add_column(column, justify="right")
    for rate, r in results.items():
        table.add_row(
            f"{rate:.0%}",
            f"{r['success_rate']:.1%}",
            f"{r['primary_share']:.1%}",
            f"{r['mean_ms']:.1f}",
            f"{r['p50_ms']:.1f}",
            f"{r['p95_ms']:.1f}",
            f"{r['mean_ms'] - base:+.1f}",
        )
    Console().print(table)
    key = lambda rate: f"{rate:g}" if rate != 1.0 else "1.0"  # noqa: E731
    print(
        json.dumps(
            {
                "success_rate": {key(rate): r["success_rate"] for rate, r in results.items()},
                "added_latency_ms": {key(rate): round(r["mean_ms"] - base, 2) for rate, r in results.items()},
            }
        )
    )


if __name__ == "__main__":
    main()
