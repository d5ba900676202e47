"""End-to-end throughput and overhead of the orchestrator on this machine.

1. Jobs per second through the HTTP API, Redis, one LLM worker process (32 threads) and a provider that answers at
   once, side by side with bare Celery no-op tasks on the same Redis with the same worker process shape, the two
   measured in turn, four times each, in the order ABBA ABBA so a steady drift of the machine's speed cancels.
2. Jobs one LLM worker process keeps in flight when the provider takes 1 s per call.
3. The latency a chat completion through the orchestrator adds over calling the provider server directly
   (sequential, the official openai client both ways, each pair back to back; the median of the differences).
   For reference, a bare Celery no-op task's round trip, one at a time: every call through the orchestrator makes
   one Celery round trip.

Everything (client, API, worker, Redis, provider) shares this machine's cores. The worker's CPU per job beside the
no-op worker's CPU per task shows where the ratio comes from on a machine whose speed drifts between runs.
Run: python tests/bench/throughput.py
Targets: at least 50% of bare Celery's throughput; 200 jobs in flight per worker; added latency under 5 ms.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import redis
from rich.console import Console
from rich.table import Table
from support import ROOT, bench_redis, provider_env, stop, use_test_catalog

use_test_catalog()  # the wire servers answer as the test catalog's models

JOBS = 1500
ROUNDS = 4
CLIENT_THREADS = 16
LOGS = Path(tempfile.mkdtemp(prefix="throughput-"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def spawn(name: str, command: list[str], env: dict[str, str], cwd: Path = ROOT) -> subprocess.Popen:
    return subprocess.Popen(
        command, cwd=cwd, env=env, stdout=(LOGS / f"{name}.log").open("wb"), stderr=subprocess.STDOUT
    )


def wait_log(process: subprocess.Popen, name: str, marker: bytes, timeout: float = 60) -> subprocess.Popen:
    """`process`, once its log shows `marker`; stopped, and an error raised, if that takes over `timeout`."""
    deadline = time.monotonic() + timeout
    while marker not in (LOGS / f"{name}.log").read_bytes():
        if time.monotonic() > deadline:
            stop(process)
            raise TimeoutError(f"{name} did not start: {(LOGS / f'{name}.log').read_text()[-2000:]}")
        time.sleep(0.05)
    return process


def worker(name: str, env: dict[str, str], concurrency: int) -> subprocess.Popen:
    process = spawn(
        name,
        [
            sys.executable,
            "-m",
            "api.cli",
            "worker",
            "--queues",
            "llm.simple,llm.moderate,llm.complex",
            "--pool",
            "threads",
            "--concurrency",
            str(concurrency),
            "--loglevel",
            "INFO",
        ],
        env,
    )
    return wait_log(process, name, b"ready.")


def cpu_seconds(process: subprocess.Popen) -> float:
    """User + system CPU a live process has used so far, from /proc (Linux; 0.0 elsewhere)."""
    try:
        fields = Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def submit_all(base: str, bodies: list[dict]) -> list[str]:
    """The ids of the jobs `bodies` submitted, CLIENT_THREADS at a time."""
    local = threading.local()

    def post(body: dict) -> str:
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=base, timeout=30)
        response = local.client.post("/v1/jobs", json=body)
        response.raise_for_status()
        return response.json()["id"]

    with ThreadPoolExecutor(CLIENT_THREADS) as pool:
        return list(pool.map(post, bodies))


def totals_keys(client: redis.Redis) -> list[str]:
    """The all-time metrics hashes: one per shard (`orch:metrics:{N}:total`), or the one of a release before the
    shards (`orch:metrics:total`), so that an A/B run against it reads its figures too."""
    return ["orch:metrics:total", *client.scan_iter(match="orch:metrics:{*}:total", count=10_000)]


def successes(client: redis.Redis) -> int:
    return sum(int(client.hget(name, "successes") or 0) for name in totals_keys(client))


def reset_successes(client: redis.Redis) -> None:
    for name in totals_keys(client):
        client.hdel(name, "successes")


def wait_successes(client: redis.Redis, count: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while successes(client) < count:
        if time.monotonic() > deadline:
            raise TimeoutError("jobs did not finish")
        time.sleep(0.01)


#: The model the benchmark's jobs are planned to: a simple request, on the test catalog's simple tier.
MODEL = "gemini-2.0-flash"


def job_body(tag: str) -> dict:
    return {"request": f"Translate 'the road to {tag}' into French"}


def check_route(base: str) -> None:
    """The jobs go where the measures expect: to `MODEL` at Google (the in-flight measure slows that model)."""
    plan = httpx.post(f"{base}/v1/analyze", json=job_body("check"), timeout=30).json()["plan"]
    if plan["model"] != MODEL:
        raise SystemExit(f"the benchmark's jobs are planned to {plan['model']}, not {MODEL}: {plan['reason']}")


def jobs_per_second(base: str, client: redis.Redis, env: dict[str, str], tag: str) -> tuple[float, float]:
    """Jobs per second, and the worker's CPU milliseconds per job."""
    process = worker(f"llm-{tag}", env, 32)
    try:
        reset_successes(client)
        bodies = [job_body(f"{tag}-{i}") for i in range(JOBS)]
        cpu, started = cpu_seconds(process), time.perf_counter()
        submit_all(base, bodies)
        wait_successes(client, JOBS)
        return JOBS / (time.perf_counter() - started), (cpu_seconds(process) - cpu) * 1000 / JOBS
    finally:
        stop(process)


def noop_worker(url: str, env: dict[str, str]) -> subprocess.Popen:
    os.environ["BENCH_REDIS_URL"] = url  # for this process's `noop_app`, imported from this script's folder
    process = spawn(
        "noop",
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "noop_app",
            "worker",
            "-Q",
            "noop",
            "-P",
            "threads",
            "-c",
            "32",
            "-E",
            "--loglevel",
            "INFO",
        ],
        env | {"BENCH_REDIS_URL": url},
        cwd=ROOT / "tests" / "bench",
    )
    return wait_log(process, "noop", b"ready.")


def celery_noop_per_second(url: str, env: dict[str, str]) -> tuple[float, float]:
    """No-op tasks per second, and the worker's CPU milliseconds per task."""
    process = noop_worker(url, env)
    try:
        from noop_app import noop

        cpu, started = cpu_seconds(process), time.perf_counter()
        with ThreadPoolExecutor(CLIENT_THREADS) as pool:
            results = list(pool.map(lambda _: noop.apply_async(queue="noop"), range(JOBS)))
        for result in results:
            result.get(timeout=120)
        return JOBS / (time.perf_counter() - started), (cpu_seconds(process) - cpu) * 1000 / JOBS
    finally:
        stop(process)


def celery_noop_round_trip(url: str, env: dict[str, str]) -> float:
    """Median milliseconds of a bare Celery no-op task sent and its result read, one at a time: a reference for the
    added latency, since every call through the orchestrator makes one Celery round trip (its answer read from the
    job record rather than Celery's result backend)."""
    process = noop_worker(url, env)
    try:
        from noop_app import noop

        samples = []
        for i in range(530):
            started = time.perf_counter()
            noop.apply_async(queue="noop").get(timeout=10)
            if i >= 30:  # warm-up
                samples.append((time.perf_counter() - started) * 1000)
        return statistics.median(samples)
    finally:
        stop(process)


def in_flight(base: str, client: redis.Redis, env: dict[str, str], wire) -> int:
    from tests.wire.servers import Reply

    wire["google"].set_model(MODEL, Reply(delay_s=1.0))
    wire["google"].peak_in_flight = 0
    reset_successes(client)
    # the queue is full before the worker starts, so the measure is the worker's capacity, not the submit rate
    submit_all(base, [job_body(f"slow-{i}") for i in range(600)])
    process = worker("llm-slow", env, 256)
    try:
        wait_successes(client, 600)
        return wire["google"].peak_in_flight
    finally:
        stop(process)
        wire["google"].set_model(MODEL, None)


def p99(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=100)[98]


def added_latency(base: str, env: dict[str, str], wire) -> dict[str, float]:
    """Medians of the direct call, of the call through the orchestrator, and of their difference pair by pair (each
    pair runs back to back, so the machine's drift weighs on both of its calls alike); the two calls' 99th
    percentiles."""
    import openai

    process = worker("llm-latency", env, 32)
    try:
        direct = openai.OpenAI(base_url=wire["openai"].url, api_key="bench", max_retries=0)
        routed = openai.OpenAI(base_url=f"{base}/v1", api_key="bench", max_retries=0)
        samples: dict[str, list[float]] = {"direct": [], "routed": []}
        for i in range(1030):
            for name, client in (("direct", direct), ("routed", routed)):
                started = time.perf_counter()
                client.chat.completions.create(
                    model="gpt-4o-mini", messages=[{"role": "user", "content": f"Define term {name} {i}"}]
                )
                if i >= 30:  # warm-up
                    samples[name].append((time.perf_counter() - started) * 1000)
        added = [routed - direct for direct, routed in zip(samples["direct"], samples["routed"], strict=True)]
        return {
            "direct_ms_p50": statistics.median(samples["direct"]),
            "routed_ms_p50": statistics.median(samples["routed"]),
            "added_latency_ms_p50": statistics.median(added),
            "direct_ms_p99": p99(samples["direct"]),
            "routed_ms_p99": p99(samples["routed"]),
        }
    finally:
        stop(process)


def overall(runs: list[tuple[float, float]]) -> tuple[float, float]:
    """Rate and CPU per item over equal-sized runs: all items over all the time they took."""
    return len(runs) / sum(1 / rate for rate, _ in runs), statistics.mean(cpu for _, cpu in runs)


@contextmanager
def deployment() -> Iterator[tuple[str, redis.Redis, dict[str, str], dict]]:
    """The bench Redis (its URL and a client), wire servers standing in for every provider, and the environment of
    an orchestrator process that uses them, without response cache or API keys."""
    from tests.wire.servers import AnthropicWireServer, GeminiWireServer, OpenAIWireServer

    wire = {"openai": OpenAIWireServer(), "anthropic": AnthropicWireServer(), "google": GeminiWireServer()}
    for server in wire.values():
        server.start()
    try:
        with bench_redis() as url:
            env = {
                **os.environ,
                **provider_env(url, wire),
                "PYTHONPATH": str(ROOT),
                "ORCH_RESPONSE_CACHE__ENABLED": "false",
                "ORCH_AUTH__ENABLED": "false",
            }
            yield url, redis.Redis.from_url(url), env, wire
    finally:
        for server in wire.values():
            server.stop()


def main() -> None:
    with deployment() as (url, client, env, wire):
        port = free_port()
        api = spawn("api", [sys.executable, "-m", "api.cli", "serve", "--port", str(port)], env)
        base = f"http://127.0.0.1:{port}"
        try:
            wait_log(api, "api", b"Uvicorn running")
            check_route(base)
            noop_runs, job_runs = [], []
            for round_ in range(ROUNDS):  # alternated (ABBA...), so the machine's drift weighs on both alike
                if round_ % 2 == 0:
                    noop_runs.append(celery_noop_per_second(url, env))
                job_runs.append(jobs_per_second(base, client, env, f"r{round_}"))
                if round_ % 2 == 1:
                    noop_runs.append(celery_noop_per_second(url, env))
            (noop, noop_cpu_ms), (jobs, job_cpu_ms) = overall(noop_runs), overall(job_runs)
            peak = in_flight(base, client, env, wire)
            latency = added_latency(base, env, wire)
            noop_round_trip_ms = celery_noop_round_trip(url, env)
        finally:
            stop(api)

    table = Table(title=f"throughput on this machine ({os.cpu_count()} cores shared by client, API, worker, Redis)")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row(f"jobs/s end to end ({ROUNDS} x {JOBS} jobs, HTTP + queue + 32-thread worker)", f"{jobs:.0f}")
    table.add_row("bare Celery no-op tasks/s (same Redis, same worker shape)", f"{noop:.0f}")
    table.add_row("ratio", f"{jobs / noop:.2f}")
    table.add_row("worker CPU per job / per no-op task (ms)", f"{job_cpu_ms:.2f} / {noop_cpu_ms:.2f}")
    table.add_row("jobs in flight in one worker process (provider takes 1 s)", str(peak))
    table.add_row(
        "chat completion, provider directly (median / p99 ms)",
        f"{latency['direct_ms_p50']:.2f} / {latency['direct_ms_p99']:.2f}",
    )
    table.add_row(
        "chat completion through the orchestrator (median / p99 ms)",
        f"{latency['routed_ms_p50']:.2f} / {latency['routed_ms_p99']:.2f}",
    )
    table.add_row("added latency (median of the pairs' differences, ms)", f"{latency['added_latency_ms_p50']:.2f}")
    table.add_row("bare Celery no-op round trip, for reference (median ms)", f"{noop_round_trip_ms:.2f}")
    Console().print(table)
    print(
        json.dumps(
            {
                "jobs_per_s": round(jobs, 1),
                "celery_noop_per_s": round(noop, 1),
                "ratio": round(jobs / noop, 3),
                "in_flight_per_worker": peak,
                **{key: round(value, 2) for key, value in latency.items()},
                "celery_noop_round_trip_ms_p50": round(noop_round_trip_ms, 2),
                "worker_cpu_ms_per_job": round(job_cpu_ms, 2),
                "noop_worker_cpu_ms_per_task": round(noop_cpu_ms, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
