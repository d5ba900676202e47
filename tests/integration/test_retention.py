"""Retention by kind: a request answered in its own call keeps its record an hour, an async job a week, and the
metrics keep both's figures."""

from __future__ import annotations

import pytest

from shared.job_store import JobStore
from shared.settings import get_settings
from tests.integration.conftest import poll

QUESTION = "What is a noun?"
HOUR, WEEK = 3600, 7 * 86_400


@pytest.fixture
def ttl_of(redis_env):
    store = JobStore(get_settings())
    return lambda job_id: store.redis.ttl(store.keys.job(job_id))


def test_synchronous_records_are_kept_an_hour_async_jobs_a_week(api, start_worker, ttl_of):
    start_worker()
    body = {"request": QUESTION, "options": {"cache": False}}
    answered = api.post("/v1/orchestrate", json=body, params={"wait": 20}).json()
    stored = api.post("/v1/orchestrate", json=body, params={"wait": 20, "store": True}).json()
    chat = api.post("/v1/chat/completions", json={"model": "auto", "messages": [{"role": "user", "content": QUESTION}]})
    chat_stored = api.post(
        "/v1/chat/completions",
        json={"model": "auto", "messages": [{"role": "user", "content": QUESTION}], "store": True},
    )
    polled = poll(api, api.post("/v1/jobs", json=body).json()["id"])
    chat_id, chat_stored_id = (r.json()["id"].removeprefix("chatcmpl-") for r in (chat, chat_stored))
    assert answered["sync"] and not stored["sync"] and not polled["sync"]
    assert HOUR - 60 < ttl_of(answered["id"]) <= HOUR
    assert HOUR - 60 < ttl_of(chat_id) <= HOUR
    for job_id in (stored["id"], chat_stored_id, polled["id"]):
        assert WEEK - 60 < ttl_of(job_id) <= WEEK
    assert api.get("/v1/metrics", params={"period": "1h"}).json()["successful_requests"] == 5
