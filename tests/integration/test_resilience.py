"""Retries, fallbacks, breakers and the cache, through the real SDKs against the wire servers and the real Redis."""

from __future__ import annotations

import threading
import time

import pytest

from shared.breaker import CircuitBreakers, Gate
from shared.cache import ResponseCache
from shared.execution import ChainExhausted, Executor
from shared.jobs import JobInput, JobRecord, JobStatus, new_job_id
from shared.planning import Planner
from shared.requests import JobRequest
from shared.settings import get_settings, load_settings
from shared.store import redis_client
from tests.wire.servers import Fail, Reply

QUESTION = "What is a noun?"  # simple tier: gemini-2.0-flash, then gpt-4.1-nano


@pytest.fixture
def settings(redis_env, provider_env, monkeypatch):
    monkeypatch.setenv("ORCH_RESILIENCE__BREAKER_FAILURE_THRESHOLD", "3")
    monkeypatch.setenv("ORCH_RESILIENCE__BREAKER_COOLDOWN_SECONDS", "1")
    monkeypatch.setenv("ORCH_PROVIDER_TIMEOUT_SECONDS", "0.5")
    get_settings.cache_clear()
    return load_settings()


@pytest.fixture
def client(settings):
    return redis_client(settings)


@pytest.fixture
def executor(settings, client):
    return Executor(settings, CircuitBreakers(settings, client), ResponseCache(settings, client))


def record_for(settings, text=QUESTION, breakers: CircuitBreakers | None = None, **options) -> JobRecord:
    body = JobRequest(request=text, options=options)
    proposal = Planner(settings).propose(body, open_breakers=breakers.unavailable() if breakers else set())
    return JobRecord(
        id=new_job_id(),
        status=JobStatus.running,
        queue="llm.simple",
        created_at=time.time(),
        input=JobInput(request=text, options=body.options),
        **proposal.model_dump(),
    )


def kinds(served_or_error) -> list[tuple[str, str | None]]:
    return [(a.model, a.error_kind) for a in served_or_error.attempts]


def test_rate_limit_is_retried_after_the_retry_after_delay(settings, executor, wire_servers):
    wire_servers["google"].push(Fail(429, "slow down", headers={"Retry-After": "1"}))
    served = executor.serve(record_for(settings))
    assert served.model == "gemini-2.0-flash"
    assert kinds(served) == [("gemini-2.0-flash", "rate_limit"), ("gemini-2.0-flash", None)]
    first, second = served.attempts
    waited = second.started_at - (first.started_at + first.duration_ms / 1000)  # from the 429's arrival
    assert 1.0 <= waited < 1.6
    assert served.attempts[0].status == 429


def test_retry_after_beyond_the_limit_moves_to_the_next_model_at_once(settings, executor, wire_servers):
    wire_servers["google"].push(Fail(429, "quota", headers={"Retry-After": "3600"}))
    started = time.monotonic()
    served = executor.serve(record_for(settings))
    assert time.monotonic() - started < 1
    assert served.model == "gpt-4.1-nano"
    assert kinds(served) == [("gemini-2.0-flash", "rate_limit"), ("gpt-4.1-nano", None)]


def test_timeout_is_retried(settings, executor, wire_servers):
    wire_servers["google"].push(Reply(delay_s=2))
    started = time.monotonic()
    served = executor.serve(record_for(settings))
    assert kinds(served) == [("gemini-2.0-flash", "timeout"), ("gemini-2.0-flash", None)]
    assert served.attempts[0].duration_ms < 1000
    assert time.monotonic() - started < 2


def test_client_error_fails_fast_without_fallback(settings, executor, wire_servers):
    wire_servers["google"].push(Fail(400, "Invalid value at 'contents'"))
    with pytest.raises(ChainExhausted) as error:
        executor.serve(record_for(settings))
    assert "Invalid value at 'contents'" in str(error.value)
    assert kinds(error.value) == [("gemini-2.0-flash", "client")]
    assert wire_servers["openai"].requests == []


@pytest.mark.distributed
def test_server_error_storm_opens_the_breaker_and_a_probe_closes_it(settings, executor, client, wire_servers):
    breakers = executor.breakers
    google = wire_servers["google"]
    google.set_model("gemini-2.0-flash", Fail(500, "internal"))

    first = executor.serve(record_for(settings, breakers=breakers, cache=False))
    assert first.model == "gpt-4.1-nano"
    assert kinds(first) == [("gemini-2.0-flash", "server")] * 3 + [("gpt-4.1-nano", None)]
    state = {s.model: s for s in breakers.states()}["gemini-2.0-flash"]
    assert state.state == "open" and 0 < state.reopens_in_s <= 1

    # every worker now skips the model, and planning leaves it out
    calls = len(google.requests)
    second = executor.serve(record_for(settings, cache=False))
    assert kinds(second) == [("gemini-2.0-flash", "breaker_open"), ("gpt-4.1-nano", None)]
    assert len(google.requests) == calls
    assert record_for(settings, breakers=breakers, cache=False).plan.model == "gpt-4.1-nano"

    # after the cool-down a single probe goes through; the provider has recovered, so it closes the breaker
    time.sleep(1.05)
    google.set_model("gemini-2.0-flash", None)
    third = executor.serve(record_for(settings, breakers=breakers, cache=False))
    assert third.model == "gemini-2.0-flash" and kinds(third) == [("gemini-2.0-flash", None)]
    assert {s.model: s.state for s in breakers.states()}["gemini-2.0-flash"] == "closed"


def test_a_failed_probe_reopens_the_breaker(settings, executor, wire_servers):
    wire_servers["google"].set_model("gemini-2.0-flash", Fail(503, "down"))
    executor.serve(record_for(settings, cache=False))
    time.sleep(1.05)
    probed = executor.serve(record_for(settings, cache=False))
    assert kinds(probed) == [("gemini-2.0-flash", "server"), ("gpt-4.1-nano", None)]  # one probe, no retries
    assert {s.model: s.state for s in executor.breakers.states()}["gemini-2.0-flash"] == "open"


def test_only_one_caller_wins_the_half_open_probe(settings, client):
    breakers = CircuitBreakers(settings, client)
    for _ in range(3):
        breakers.failure("gpt-4o")
    assert breakers.acquire("gpt-4o") is Gate.open
    time.sleep(1.05)
    gates: list[Gate] = []
    threads = [threading.Thread(target=lambda: gates.append(breakers.acquire("gpt-4o"))) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert gates.count(Gate.probe) == 1 and gates.count(Gate.open) == 19


def test_failures_outside_the_window_do_not_open_the_breaker(settings, client, monkeypatch):
    monkeypatch.setenv("ORCH_RESILIENCE__BREAKER_WINDOW_SECONDS", "0.3")
    breakers = CircuitBreakers(load_settings(), client)
    for _ in range(2):
        breakers.failure("gpt-4o")
    time.sleep(0.35)
    assert breakers.failure("gpt-4o") == "closed"
    assert breakers.acquire("gpt-4o") is Gate.closed


def test_successes_are_tallied_and_never_close_a_breaker_that_opened_since(settings, client):
    worker_a, worker_b = CircuitBreakers(settings, client), CircuitBreakers(settings, client)
    counts = worker_a._counts("gpt-4o")
    for _ in range(5):
        worker_a.success("gpt-4o")
    assert not client.exists(counts)  # tallied in the process, no round trip per success
    for _ in range(3):
        worker_b.failure("gpt-4o")  # another process sees 3 of 3 calls fail
    assert worker_b.acquire("gpt-4o") is Gate.open
    time.sleep(1.05)
    worker_a.success("gpt-4.1-nano")  # a second on: this writes the tally, gpt-4o's five included
    # older successes do not close it (after the 1 s cooldown it is due for a probe, still not closed)
    assert {s.model: s.state for s in worker_b.states()}["gpt-4o"] == "half_open"
    assert sum(int(v) for f, v in client.hgetall(worker_a._counts("gpt-4.1-nano")).items() if f.startswith("o:")) == 1


def test_a_success_while_the_breaker_is_open_closes_it_at_once(settings, client):
    breakers = CircuitBreakers(settings, client)
    for _ in range(3):
        breakers.failure("gpt-4o")
    time.sleep(1.05)
    assert breakers.acquire("gpt-4o") is Gate.probe
    breakers.success("gpt-4o")
    assert breakers.acquire("gpt-4o") is Gate.closed
    assert {s.model: s.state for s in CircuitBreakers(settings, client).states()}["gpt-4o"] == "closed"


def test_identical_requests_are_served_from_the_cache(settings, executor, wire_servers):
    first = executor.serve(record_for(settings))
    second = executor.serve(record_for(settings))
    assert not first.cache_hit and second.cache_hit
    assert second.completion == first.completion
    assert len(wire_servers["google"].requests) == 1
    assert kinds(second) == [("gemini-2.0-flash", "cache_hit")]
    # opting out calls the provider again
    third = executor.serve(record_for(settings, cache=False))
    assert not third.cache_hit and len(wire_servers["google"].requests) == 2


def test_a_streamed_answer_that_ended_without_a_reason_is_never_cached(settings, executor, wire_servers):
    record = record_for(settings, preferred_models=["gpt-4.1-nano"])
    wire_servers["openai"].set_model("gpt-4.1-nano", Reply(text="half an", gives_reason=False))
    pieces: list[str] = []
    first = executor.serve(record, on_delta=pieces.append)
    assert first.completion.stop_reason == "incomplete" and "".join(pieces) == "half an"
    again = executor.serve(record, on_delta=pieces.append)
    assert not again.cache_hit and len(wire_servers["openai"].requests) == 2


def test_occasional_failures_of_a_busy_model_do_not_open_its_breaker(settings, client):
    breakers = CircuitBreakers(settings, client)  # threshold 3, ratio 0.5
    for _ in range(10):
        breakers.success("gpt-4o")
    for _ in range(4):
        assert breakers.failure("gpt-4o") == "closed"  # 4 of 14 calls failed: under half
    assert breakers.acquire("gpt-4o") is Gate.closed
    assert {s.model: s.recent_failures for s in breakers.states()}["gpt-4o"] == 4
    for _ in range(6):
        outcome = breakers.failure("gpt-4o")
    assert outcome == "opened"  # 10 of 20
    assert breakers.acquire("gpt-4o") is Gate.open
