"""What a newcomer meets at the front door: clear refusals before any work, honest statuses, money that adds up."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import openai
import pytest
import redis

from shared.requests import JobRequest
from shared.settings import get_settings, load_settings
from tests.wire.servers import Fail, Reply

ROOT = Path(__file__).resolve().parents[2]
BIG_DOCUMENT = "\n\n".join(
    f"Section {i}. The retention period for archive {i} is {i % 9 + 1} years." for i in range(9000)
)


def _settled(keys, api_key, expected: float) -> float:
    """What the key spent once the worker has settled the job (it settles just after marking it finished)."""
    deadline = time.monotonic() + 5
    while abs(keys.spent(api_key) - expected) > 1e-12 and time.monotonic() < deadline:
        time.sleep(0.02)
    return keys.spent(api_key)


def _jobs(redis_url: str) -> list[bytes]:
    return [k for k in redis.Redis.from_url(redis_url).keys("orch:job:*") if k.count(b":") == 3]


def test_a_blank_request_is_refused_before_it_is_queued(api, redis_env):
    response = api.post("/v1/jobs", json={"request": "   \n\t "})
    assert response.status_code == 422
    assert "the request is blank" in response.text
    assert _jobs(redis_env) == []


def test_orchestrate_answers_a_failed_job_with_502_and_its_record(api, start_worker, wire_servers):
    start_worker()
    wire_servers["google"].push(Fail(400, "no such thing"))  # a client error fails the job without a fallback
    response = api.post("/v1/orchestrate", json={"request": "Define entropy"})
    assert response.status_code == 502
    body = response.json()
    assert body["status"] == "failed" and body["code"] == "job_failed" and body["id"]
    assert body["detail"].startswith(f"job {body['id']} failed")


def test_an_empty_chat_message_is_refused_and_nothing_runs(api, redis_env):
    client = openai.OpenAI(base_url=f"{api.base_url}/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "  "}])
    assert "the last user message is empty" in error.value.message
    assert _jobs(redis_env) == []


def test_a_model_the_openai_route_cannot_serve_is_refused_before_anything_is_stored(api, redis_env):
    client = openai.OpenAI(base_url=f"{api.base_url}/v1", api_key="unused", max_retries=0)
    earlier = "Noted. " * 160_000  # a conversation longer than gpt-4o-mini's window of 128K tokens
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[
                {"role": "user", "content": "Remember this."},
                {"role": "assistant", "content": earlier},
                {"role": "user", "content": "Define entropy"},
            ],
        )
    assert error.value.code == "model_not_available" and "gpt-4o-mini" in error.value.message
    assert _jobs(redis_env) == []


def test_analyze_reads_a_stored_document_and_prices_its_compression(api):
    document = api.post("/v1/documents", content=BIG_DOCUMENT.encode(), headers={"content-type": "text/plain"}).json()
    assert document["tokens"] > 100_000
    body = {"request": "Give an overview of the retention rules", "document_id": document["id"]}
    proposal = api.post("/v1/analyze", json=body).json()
    assert proposal["analysis"]["tokens"]["document"] == document["tokens"]
    plan, compression = proposal["plan"], proposal["document"]
    assert plan["preprocess"] and compression["strategy"] == "hierarchical"
    assert compression["estimated_cost_usd"] > 0 and plan["document_cost_usd"] == compression["estimated_cost_usd"]
    call_only = plan["estimated_cost_usd"] - plan["document_cost_usd"]
    assert call_only > 0

    # a max_cost between the call alone and the call with summaries: `auto` compresses without an LLM instead
    limited = body | {"options": {"max_cost": call_only + compression["estimated_cost_usd"] / 2}}
    cheaper = api.post("/v1/analyze", json=limited).json()
    assert cheaper["document"]["strategy"] == "extractive" and "max_cost" in cheaper["document"]["reason"]
    assert cheaper["plan"]["document_cost_usd"] == 0
    # ... and one that asks for summaries explicitly is refused with the reason, before anything runs
    explicit = body | {"options": {"max_cost": limited["options"]["max_cost"], "strategy": "hierarchical"}}
    refused = api.post("/v1/analyze", json=explicit)
    assert refused.status_code == 422 and "compression" in refused.json()["detail"]
    unknown = api.post("/v1/analyze", json={"request": "x", "document_id": "0" * 64})
    assert unknown.status_code == 404 and unknown.json()["code"] == "not_found"


def test_money_is_written_rounded():
    record = JobRequest(request="x")  # a request holds no money; the models that do round it
    from shared.accounting import Bill

    bill = Bill(
        input_tokens=1,
        output_tokens=1,
        cost_usd=0.00006170000000000001,
        baseline_input_tokens=1,
        baseline_cost_usd=0.1,
        savings_usd=0.0999383,
        savings_pct=99.93829999,
        tokens_saved=0,
    )
    written = json.loads(bill.model_dump_json())
    assert (written["cost_usd"], written["savings_pct"]) == (0.0000617, 99.94)
    assert record.request == "x"


def test_an_openai_compatible_server_alone_is_a_usable_provider(monkeypatch):
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GOOGLE_API_KEY", "GEMINI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:11434/v1")
    assert load_settings().usable_providers() == {"openai"}


def test_models_lists_only_models_whose_provider_can_be_called(redis_env, wire_servers, monkeypatch):
    from fastapi.testclient import TestClient

    from api.app import create_app

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    for name in ("ANTHROPIC_API_KEY", "GOOGLE_API_KEY", "GEMINI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    models = TestClient(create_app(get_settings())).get("/v1/models").json()["data"]
    owners = {model["owned_by"] for model in models}
    assert owners == {"orchestrator", "openai"}
    get_settings.cache_clear()


def test_keys_without_a_budget_show_what_they_spent(redis_env, provider_env, start_worker, monkeypatch):
    from shared.auth import KeyStore

    settings = get_settings()
    keys = KeyStore(settings, redis.Redis.from_url(redis_env, decode_responses=True))
    unlimited, _ = keys.create("unlimited")
    from api.app import build_orchestrator

    orchestrator = build_orchestrator(settings)
    start_worker()
    record = orchestrator.wait(orchestrator.submit(JobRequest(request="Define entropy"), api_key=unlimited), 20)
    assert record.status == "succeeded" and record.cost_usd > 0
    assert _settled(keys, unlimited, record.cost_usd) == pytest.approx(record.cost_usd)


def test_a_small_budget_caps_the_answer_instead_of_refusing(redis_env, provider_env, start_worker, wire_servers):
    from shared.auth import KeyStore

    settings = get_settings()
    keys = KeyStore(settings, redis.Redis.from_url(redis_env, decode_responses=True))
    small, _ = keys.create("small", budget_usd=0.0005)
    from api.app import build_orchestrator

    orchestrator = build_orchestrator(settings)
    start_worker()
    wire_servers["google"].push(Reply(text="Entropy measures disorder.", input_tokens=40, output_tokens=5))
    record = orchestrator.submit(JobRequest(request="Define entropy"), api_key=small)
    assert record.plan.max_output_tokens < settings.default_max_output_tokens  # capped to what fits
    assert record.billing.reserved_usd <= 0.0005
    finished = orchestrator.wait(record, 20)
    assert finished.status == "succeeded" and _settled(keys, small, finished.cost_usd) == pytest.approx(
        finished.cost_usd
    )


def test_analyze_jsonl_of_a_missing_file_is_a_message(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "api.cli", "analyze", "--jsonl", str(tmp_path / "missing.jsonl")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "cannot read" in done.stderr and "Traceback" not in done.stderr


def test_the_error_body_names_the_error(api):
    response = api.get("/v1/jobs/nope")
    assert response.status_code == 404
    assert response.json() == {"detail": "no job nope (unknown or expired)", "code": "not_found"}
