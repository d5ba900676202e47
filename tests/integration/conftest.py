from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn

from shared.auth import KeyStore
from shared.settings import get_settings
from shared.store import redis_client


@pytest.fixture
def api(redis_env, provider_env) -> Iterator[httpx.Client]:
    """The real API on a real port (uvicorn in a thread), and an HTTP client for it."""
    from api.app import create_app

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(create_app(get_settings()), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        yield client
    server.should_exit = True
    thread.join(timeout=10)


def poll(client: httpx.Client, job_id: str, timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        record = client.get(f"/v1/jobs/{job_id}").json()
        if record["status"] in ("succeeded", "failed", "cancelled") or time.monotonic() > deadline:
            return record
        time.sleep(0.05)


@pytest.fixture
def secured(redis_env, provider_env, monkeypatch):
    """The API with authentication on, a key store, and a client factory."""
    monkeypatch.setenv("ORCH_AUTH__ENABLED", "true")
    get_settings.cache_clear()
    settings = get_settings()
    from api.app import create_app

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    keys = KeyStore(settings, redis_client(settings))
    base = f"http://127.0.0.1:{port}"
    yield (
        settings,
        keys,
        lambda secret=None: httpx.Client(
            base_url=base, timeout=30, headers={"authorization": f"Bearer {secret}"} if secret else {}
        ),
    )
    server.should_exit = True
    thread.join(timeout=10)
