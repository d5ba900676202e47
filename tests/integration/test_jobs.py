"""The whole path: HTTP → analysis and plan → Redis record → Celery queue → worker process → provider SDK →
wire server → result, tokens and cost on the job record."""

from __future__ import annotations

import pytest
import redis

from shared.pricing import TokenUsage
from shared.prompts import system_prompt
from shared.settings import load_settings
from tests.integration.conftest import poll
from tests.wire.servers import Fail, Reply

SETTINGS = load_settings()
SIMPLE = "What is a noun?"
MODERATE = "Who wrote Hamlet?"
COMPLEX = (
    "Design a distributed, fault-tolerant job scheduler in Python that must support exactly-once execution, "
    "handle worker crashes without losing jobs, scale to 10k jobs per second, and include tests. Then write a "
    "migration plan from our legacy cron setup, ensuring backward compatibility and zero downtime."
)


@pytest.mark.distributed
def test_job_runs_on_a_worker_and_reports_result_tokens_and_cost(api, start_worker, wire_servers):
    start_worker()
    wire_servers["google"].push(Reply(text="Paris.", input_tokens=31, output_tokens=2))
    accepted = api.post("/v1/jobs", json={"request": SIMPLE})
    assert accepted.status_code == 202
    body = accepted.json()
    assert body["queue"] == "llm.simple" and body["model"] == "gemini-2.0-flash"

    record = poll(api, body["id"])
    assert record["status"] == "succeeded", record
    assert record["result"] == "Paris."
    assert record["model_used"] == "gemini-2.0-flash" and record["provider_used"] == "google"
    assert record["usage"] == {
        "input_tokens": 31,
        "output_tokens": 2,
        "cached_input_tokens": 0,
        "cache_write_tokens": 0,
        "reasoning_tokens": 0,
        "reported_by_provider": True,
    }
    catalog = SETTINGS.catalog
    assert record["cost_usd"] == pytest.approx(
        catalog.cost("gemini-2.0-flash", TokenUsage(input_tokens=31, output_tokens=2))
    )
    baseline = TokenUsage(input_tokens=record["plan"]["baseline"]["input_tokens"], output_tokens=2)
    assert record["baseline_cost_usd"] == pytest.approx(catalog.cost(SETTINGS.baseline_model, baseline))
    assert record["savings_usd"] == pytest.approx(record["baseline_cost_usd"] - record["cost_usd"])
    assert record["savings_pct"] > 90
    assert record["deliveries"] == 1 and "llm.simple" in record["worker"]

    sent = wire_servers["google"].requests[-1]
    assert sent.model == "gemini-2.0-flash"
    assert sent.body["systemInstruction"]["parts"][0]["text"] == system_prompt("read", "simple")
    assert sent.body["contents"][-1]["parts"][0]["text"] == SIMPLE


@pytest.mark.distributed
def test_orchestrate_waits_for_the_result(api, start_worker, wire_servers):
    start_worker()
    response = api.post("/v1/orchestrate", json={"request": MODERATE, "context": {"language": "Python"}})
    assert response.status_code == 200
    record = response.json()
    assert record["status"] == "succeeded"
    assert record["model_used"] == "gpt-4o-mini"
    assert record["result"].startswith("[gpt-4o-mini] Who wrote Hamlet?")
    sent = wire_servers["openai"].requests[-1]
    assert sent.body["messages"][-1]["content"].endswith("Context:\nlanguage: Python")
    # the wire server counts words; the record carries what the provider reported
    assert record["usage"]["input_tokens"] == len(" ".join(m["content"] for m in sent.body["messages"]).split())


def test_orchestrate_answers_202_with_the_job_to_poll_when_no_result_in_time(api):
    response = api.post("/v1/orchestrate", params={"wait": 0.3}, json={"request": SIMPLE})
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "queued" and body["poll"] == f"/v1/jobs/{body['id']}"


def test_each_tier_lands_on_its_own_queue(api, start_worker, redis_env):
    start_worker(queues="llm.simple")
    ids = {text: api.post("/v1/jobs", json={"request": text}).json()["id"] for text in (SIMPLE, MODERATE, COMPLEX)}
    assert poll(api, ids[SIMPLE])["status"] == "succeeded"
    broker = redis.Redis.from_url(redis_env)
    assert broker.llen("orch:llm.moderate") == 1 and broker.llen("orch:llm.complex") == 1
    assert api.get(f"/v1/jobs/{ids[COMPLEX]}").json()["status"] == "queued"

    start_worker(queues="llm.moderate,llm.complex")
    moderate, complex_ = poll(api, ids[MODERATE]), poll(api, ids[COMPLEX])
    assert moderate["status"] == complex_["status"] == "succeeded"
    assert "llm.moderate" in moderate["worker"] and moderate["model_used"] == "gpt-4o-mini"
    assert "llm.complex" in complex_["worker"] and complex_["model_used"] == "gpt-4.1"


@pytest.mark.distributed
def test_failing_provider_falls_back_along_the_chain(api, start_worker, wire_servers):
    start_worker()
    wire_servers["google"].set_model("gemini-2.0-flash", Fail(503, "overloaded"))
    record = poll(api, api.post("/v1/jobs", json={"request": SIMPLE}).json()["id"])
    assert record["status"] == "succeeded"
    assert record["model_used"] == "gpt-4.1-nano"
    assert [(a["model"], a["number"], a["ok"], a["error_kind"]) for a in record["attempts"]] == [
        ("gemini-2.0-flash", 1, False, "server"),
        ("gemini-2.0-flash", 2, False, "server"),
        ("gemini-2.0-flash", 3, False, "server"),
        ("gpt-4.1-nano", 1, True, None),
    ]
    usage = TokenUsage(input_tokens=record["usage"]["input_tokens"], output_tokens=record["usage"]["output_tokens"])
    assert record["cost_usd"] == pytest.approx(SETTINGS.catalog.cost("gpt-4.1-nano", usage))


def test_a_rejected_request_fails_fast_with_the_providers_message(api, start_worker, wire_servers):
    start_worker()
    wire_servers["google"].push(Fail(400, "max_output_tokens is too large"))
    record = poll(api, api.post("/v1/jobs", json={"request": SIMPLE}).json()["id"])
    assert record["status"] == "failed"
    assert "max_output_tokens is too large" in record["error"]
    assert len(record["attempts"]) == 1
    assert wire_servers["openai"].requests == []


@pytest.mark.parametrize(
    ("provider", "model", "write_tokens"),
    [("openai", "gpt-4o-mini", 0), ("anthropic", "claude-3-5-haiku-20241022", 300), ("google", "gemini-2.5-flash", 0)],
)
def test_cached_and_reasoning_tokens_reach_the_record_and_the_bill(
    api, start_worker, wire_servers, provider, model, write_tokens
):
    """Through each provider's SDK: the parts of the usage it reports apart are kept, and priced at their own rates."""
    start_worker()
    reply = Reply(
        text="A noun names a thing.",
        input_tokens=2_000,
        output_tokens=40,
        cached_tokens=1_500,
        cache_write_tokens=write_tokens,
        reasoning_tokens=60,
    )
    wire_servers[provider].push(reply)
    body = {"request": SIMPLE, "options": {"preferred_models": [model], "cache": False}}
    record = poll(api, api.post("/v1/jobs", json=body).json()["id"])
    assert record["status"] == "succeeded" and record["model_used"] == model, record
    usage = record["usage"]
    assert (usage["input_tokens"], usage["cached_input_tokens"], usage["cache_write_tokens"]) == (
        2_000,
        1_500,
        write_tokens,
    )
    assert (usage["output_tokens"], usage["reasoning_tokens"]) == (100, 60)  # reasoning is billed as output
    used = TokenUsage(**{name: usage[name] for name in TokenUsage.model_fields})
    expected = SETTINGS.catalog.cost(model, used)
    assert record["cost_usd"] == pytest.approx(expected)
    uncached = SETTINGS.catalog.cost(model, TokenUsage(input_tokens=2_000, output_tokens=100))
    assert record["cost_usd"] < uncached
