"""What one request leaves in Redis, and jobs per second as the deployment grows past one Redis.

1. Bytes retained per request: requests answered in their own call (`/v1/orchestrate?wait`, the OpenAI-compatible
   route) and async jobs (`/v1/jobs`, polled), each through the API and one worker; then, for each job, the `MEMORY
   USAGE` of every key named after it that outlives the answer (its record, and anything else keyed by its id; the
   wake-up list and answer stream expire within 10 minutes and are not counted), less the request's and the
   answer's text.
2. Jobs per second and the latency of a job (created to finished, p50 / p99) with 1 and 2 worker processes, in each
   configuration this machine can run: one Redis as broker and store; RabbitMQ as the broker beside one Redis;
   RabbitMQ beside a 3-node Valkey cluster (tests/valkey_cluster.py) as the store.

Run: python tests/bench/scale.py
Targets: at most 1,024 bytes per synchronous request and 2,048 per async job; the cluster at 0.8 of one Redis's jobs
per second or more.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import redis
from rich.console import Console
from rich.table import Table
from support import stop
from throughput import (
    deployment,
    free_port,
    job_body,
    p99,
    reset_successes,
    spawn,
    submit_all,
    wait_log,
    wait_successes,
    worker,
)

SAMPLES = 200
JOBS = 1000
SHORT_LIVED_S = 600  # wake-up lists and answer streams: gone within 10 minutes of the answer


def retained_bytes(client: redis.Redis, job_id: str, texts: int) -> int:
    """Bytes Redis keeps for one job once its short-lived keys have expired, less `texts` bytes of request and
    answer text."""
    total = 0
    for name in client.scan_iter(match=f"*{job_id}*", count=1000):
        if client.ttl(name) > SHORT_LIVED_S:
            total += client.memory_usage(name, samples=0) or 0
    return total - texts


def per_request_bytes(base: str, client: redis.Redis) -> dict[str, float]:
    """Median bytes retained per synchronous request and per async job."""
    http = httpx.Client(base_url=base, timeout=60)
    measured: dict[str, list[int]] = {"sync": [], "chat": [], "async": []}
    for i in range(SAMPLES):
        request = f"Translate 'the road to sample {i}' into French"
        body = {"request": request, "options": {"cache": False}}
        done = http.post("/v1/orchestrate", params={"wait": 30}, json=body).raise_for_status().json()
        measured["sync"].append(retained_bytes(client, done["id"], len(request) + len(done["result"] or "")))
        chat = http.post(
            "/v1/chat/completions", json={"model": "auto", "messages": [{"role": "user", "content": request}]}
        ).raise_for_status()
        answer = chat.json()["choices"][0]["message"]["content"]
        chat_id = chat.json()["id"].removeprefix("chatcmpl-")
        measured["chat"].append(retained_bytes(client, chat_id, len(request) + len(answer)))
        job_id = http.post("/v1/jobs", json=body).raise_for_status().json()["id"]
        while (job := http.get(f"/v1/jobs/{job_id}").json())["status"] not in ("succeeded", "failed"):
            time.sleep(0.01)
        measured["async"].append(retained_bytes(client, job_id, len(request) + len(job["result"] or "")))
    return {kind: statistics.median(values) for kind, values in measured.items()}


def run_jobs(base: str, client: redis.Redis, env: dict[str, str], workers: int, tag: str) -> dict[str, float]:
    """Jobs per second through `workers` worker processes, and each job's latency from created to finished."""
    processes = [worker(f"{tag}-w{n}", env, 32) for n in range(workers)]
    try:
        reset_successes(client)
        bodies = [job_body(f"{tag}-{i}") for i in range(JOBS)]
        started = time.perf_counter()
        ids = submit_all(base, bodies)
        wait_successes(client, JOBS)
        rate = JOBS / (time.perf_counter() - started)
    finally:
        stop(*processes)
    with httpx.Client(base_url=base, timeout=30) as http, ThreadPoolExecutor(8) as pool:
        records = list(pool.map(lambda job_id: http.get(f"/v1/jobs/{job_id}").json(), ids))
    latencies = sorted((r["finished_at"] - r["created_at"]) * 1000 for r in records)
    return {"jobs_per_s": rate, "p50_ms": statistics.median(latencies), "p99_ms": p99(latencies)}


@contextmanager
def configurations(client: redis.Redis) -> Iterator[dict[str, tuple[dict[str, str], redis.Redis]]]:
    """The deployments this machine can run: environment overrides, and a client of the store they use."""
    found: dict[str, tuple[dict[str, str], redis.Redis]] = {"one Redis": ({}, client)}
    amqp = os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
    try:
        from kombu import Connection

        with Connection(amqp, connect_timeout=2) as connection:
            connection.ensure_connection(max_retries=1)
    except Exception as error:  # noqa: BLE001 - any failure means: not on this machine
        print(f"RabbitMQ not measured (nor the cluster, which needs it): {error}", file=sys.stderr)
        yield found
        return
    found["RabbitMQ + one Redis"] = ({"ORCH_BROKER_URL": amqp}, client)
    from tests.valkey_cluster import valkey_cluster

    with ExitStack() as stack:
        urls = stack.enter_context(valkey_cluster(Path(stack.enter_context(tempfile.TemporaryDirectory()))))
        cluster = stack.enter_context(redis.RedisCluster.from_url(urls[0]))
        found["RabbitMQ + Valkey cluster"] = ({"ORCH_BROKER_URL": amqp, "ORCH_REDIS_URL": urls[0]}, cluster)
        yield found


def main() -> None:
    results: dict[str, dict[int, dict[str, float]]] = {}
    with deployment() as (url, single, env, _), configurations(single) as deployments:
        sizes: dict[str, float] = {}
        for name, (overrides, client) in deployments.items():
            client.flushdb(**({"target_nodes": redis.RedisCluster.PRIMARIES} if client is not single else {}))
            config_env = env | overrides
            port = free_port()
            api = spawn("api", [sys.executable, "-m", "api.cli", "serve", "--port", str(port)], config_env)
            base = f"http://127.0.0.1:{port}"
            try:
                wait_log(api, "api", b"Uvicorn running")
                if not sizes:
                    one = worker("sizes", config_env, 8)
                    try:
                        sizes = per_request_bytes(base, client)
                    finally:
                        stop(one)
                results[name] = {n: run_jobs(base, client, config_env, n, f"{name[:3]}{n}") for n in (1, 2)}
            finally:
                stop(api)

    table = Table(title=f"past one Redis, on this machine ({os.cpu_count()} cores shared by everything)")
    for column in ("configuration", "workers", "jobs/s", "p50 ms", "p99 ms"):
        table.add_column(column, justify="right" if column != "configuration" else "left")
    for name, by_workers in results.items():
        for n, figures in by_workers.items():
            table.add_row(
                name, str(n), f"{figures['jobs_per_s']:.0f}", f"{figures['p50_ms']:.1f}", f"{figures['p99_ms']:.1f}"
            )
    Console().print(table)
    sizes_table = Table(title="Redis bytes retained per request (median, request and answer text aside)")
    sizes_table.add_column("request")
    sizes_table.add_column("bytes", justify="right")
    for kind, label in (("sync", "/v1/orchestrate, answered in the call"), ("chat", "/v1/chat/completions")):
        sizes_table.add_row(label, f"{sizes[kind]:.0f}")
    sizes_table.add_row("/v1/jobs, polled", f"{sizes['async']:.0f}")
    Console().print(sizes_table)

    figures = {
        "bytes_per_sync_record": max(sizes["sync"], sizes["chat"]),
        "bytes_per_async_record": sizes["async"],
        **{
            f"{name.lower().replace(' + ', '_').replace(' ', '_')}_{n}w_{measure}": round(value, 1)
            for name, by_workers in results.items()
            for n, row in by_workers.items()
            for measure, value in row.items()
        },
    }
    # Each configuration at its best (1 or 2 workers): what a deployment of it is sized by.
    best = {name: max(row["jobs_per_s"] for row in by_workers.values()) for name, by_workers in results.items()}
    for name, label in (("RabbitMQ + one Redis", "rabbitmq"), ("RabbitMQ + Valkey cluster", "cluster")):
        if name in best:
            figures[f"{label}_vs_single_jobs_per_s"] = round(best[name] / best["one Redis"], 3)
    if "RabbitMQ + Valkey cluster" in best:  # the same broker: what the cluster as the store costs on its own
        ratio = best["RabbitMQ + Valkey cluster"] / best["RabbitMQ + one Redis"]
        figures["cluster_vs_rabbitmq_one_redis_jobs_per_s"] = round(ratio, 3)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
