"""Documents: upload, whole or compressed on the preprocess queue by real worker processes, cached summaries."""

from __future__ import annotations

import os
import random
import time

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.demo import standard_library_source
from shared.compression import Strategy, summary_key
from shared.documents import DocumentStore
from shared.job_store import JobStore
from shared.metrics import read_metrics
from shared.settings import get_settings
from shared.tokens import count_tokens
from tests.catalog import TEST_CONFIG_DIRS
from tests.integration.conftest import poll
from tests.wire.servers import Fail, Reply

NEEDLE = "The launch code for the cobalt lighthouse is 7391-ALPHA."
QUESTION = "Find the launch code for the cobalt lighthouse"


def corpus(min_tokens: int) -> str:
    """Real text: the standard library's own source, concatenated, with one needle planted in the middle."""
    parts = standard_library_source(min_tokens)
    parts.insert(len(parts) // 2, f"\n\n{NEEDLE}\n\n")
    return "\n\n".join(parts)


@pytest.fixture(scope="module")
def big_document() -> str:
    return corpus(210_000)


@pytest.fixture
def small_budget(monkeypatch):
    monkeypatch.setenv("ORCH_DOCUMENT_PROCESSING__MAX_DIRECT_TOKENS", "20000")
    get_settings.cache_clear()


def test_upload_as_raw_text_multipart_or_json_returns_the_content_hash(api):
    text = "Quarterly revenue grew 12%.\n\nCosts fell 3%."
    raw = api.post("/v1/documents", content=text.encode(), headers={"content-type": "text/plain"})
    assert raw.status_code == 201
    info = raw.json()
    assert info["tokens"] == count_tokens(text) and info["bytes"] == len(text.encode()) and len(info["id"]) == 64
    multipart = api.post("/v1/documents", files={"file": ("report.txt", text.encode(), "text/plain")})
    as_json = api.post("/v1/documents", json={"text": text})
    assert multipart.json()["id"] == as_json.json()["id"] == info["id"]
    assert api.get(f"/v1/documents/{info['id']}").json() == info


@pytest.mark.parametrize(
    ("payload", "status", "fragment"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", 415, "binary, not text"),
        (b"caf\xe9 latin-1", 415, "not UTF-8 text (invalid byte at offset 3)"),
        (b"   \n ", 422, "document is empty"),
    ],
)
def test_what_is_not_text_is_refused(api, payload, status, fragment):
    response = api.post("/v1/documents", content=payload, headers={"content-type": "application/octet-stream"})
    assert response.status_code == status and fragment in response.json()["detail"]


def test_oversized_document_is_413(redis_env, provider_env, monkeypatch):
    monkeypatch.setenv("ORCH_DOCUMENT_PROCESSING__MAX_DOCUMENT_BYTES", "1000")
    get_settings.cache_clear()
    client = TestClient(create_app(get_settings()))
    response = client.post("/v1/documents", content=b"x" * 2000, headers={"content-type": "text/plain"})
    assert response.status_code == 413 and "limit of 1,000 bytes" in response.json()["detail"]


def test_unknown_document_id_is_404(api):
    response = api.post("/v1/jobs", json={"request": "Summarize", "document_id": "0" * 64})
    assert response.status_code == 404 and "no document 000" in response.json()["detail"]


def test_a_small_document_is_sent_whole(api, start_worker, wire_servers):
    start_worker()
    text = "Clause 7: either party may terminate with 30 days notice.\n\nClause 8: governing law is Ontario."
    record = poll(
        api, api.post("/v1/jobs", json={"request": "Summarize the termination clause", "document": text}).json()["id"]
    )
    assert record["status"] == "succeeded"
    assert record["document"]["strategy"] is None
    assert record["document"]["sent_tokens"] == record["document"]["original_tokens"] == count_tokens(text)
    prompt = wire_servers["google"].requests[-1].body["contents"][-1]["parts"][0]["text"]
    assert prompt.endswith(f"Document:\n<<<\n{text}\n>>>")


@pytest.mark.distributed
def test_a_large_document_is_compressed_by_preprocess_workers_in_parallel(
    small_budget, api, start_worker, wire_servers, big_document
):
    start_worker()
    start_worker(queues="preprocess", concurrency=1, pool="solo")
    start_worker(queues="preprocess", concurrency=1, pool="solo")
    document = api.post("/v1/documents", content=big_document.encode(), headers={"content-type": "text/plain"}).json()
    assert document["tokens"] >= 200_000

    job = api.post(
        "/v1/jobs",
        json={"request": QUESTION, "document_id": document["id"], "options": {"preferred_models": ["gpt-4o-mini"]}},
    ).json()
    assert job["queue"] == "preprocess"
    seen_progress = set()
    deadline = time.monotonic() + 60
    while (record := api.get(f"/v1/jobs/{job['id']}").json())["status"] not in ("succeeded", "failed"):
        if record["stage"].startswith("preprocessing chunk"):
            seen_progress.add(record["chunks_done"])
        assert time.monotonic() < deadline, record
        time.sleep(0.01)
    assert record["status"] == "succeeded", record["error"]
    use = record["document"]
    assert use["strategy"] == "extractive" and use["summary_cache_hit"] is False
    assert use["chunks"] == record["chunks_total"] == record["chunks_done"] >= 20
    assert any(0 < done < use["chunks"] for done in seen_progress), seen_progress
    assert use["sent_tokens"] <= 20_000 and use["budget_tokens"] == 20_000
    assert use["tokens_saved"] == use["original_tokens"] - use["sent_tokens"] > 180_000
    assert record["model_used"] == "gpt-4o-mini"
    prompt = wire_servers["openai"].requests[-1].body["messages"][-1]["content"]
    assert NEEDLE in prompt
    assert count_tokens(prompt) < 21_000
    assert len(use["workers"]) == 2  # both preprocess workers took chunks

    again = poll(
        api,
        api.post(
            "/v1/jobs",
            json={"request": QUESTION, "document_id": document["id"], "options": {"preferred_models": ["gpt-4o-mini"]}},
        ).json()["id"],
    )
    assert again["status"] == "succeeded"
    assert again["document"]["summary_cache_hit"] is True and again["chunks_done"] == 0
    assert again["document"]["sent_tokens"] == use["sent_tokens"]


def test_a_document_that_expires_before_preprocessing_fails_its_job_wakes_waiters_and_counts_once(
    small_budget, api, start_worker, big_document
):
    document = api.post("/v1/documents", content=big_document.encode(), headers={"content-type": "text/plain"}).json()
    job = api.post("/v1/jobs", json={"request": QUESTION, "document_id": document["id"]}).json()
    assert job["queue"] == "preprocess"
    settings = get_settings()
    store = JobStore(settings)
    documents = DocumentStore(settings)
    store.redis.delete(documents._key(document["id"]), documents._meta_key(document["id"]))
    start_worker(queues="preprocess", concurrency=1, pool="solo")
    record = store.wait(job["id"], 60)
    assert record.status == "failed" and record.stage == "failed"
    assert "expired before it could be preprocessed" in record.error
    assert store.redis.llen(store.keys.job(job["id"], "done")) == 1  # the waiters' wake-up token
    report = read_metrics(settings, store.redis, "1m")
    assert (report.total_requests, report.failed_requests) == (1, 1)


def test_hierarchical_summaries_and_the_fallback_to_extractive(small_budget, api, start_worker, wire_servers):
    start_worker()
    start_worker(queues="preprocess", concurrency=2, pool="threads")
    rng = random.Random(5)
    words = "revenue cost margin growth region product churn forecast hiring budget".split()
    text = "\n\n".join(" ".join(rng.choice(words) for _ in range(80)) + "." for _ in range(1500))
    document = api.post("/v1/documents", json={"text": text}).json()
    assert document["tokens"] > 100_000

    summary = poll(
        api,
        api.post(
            "/v1/jobs",
            json={
                "request": "Summarize this report",
                "document_id": document["id"],
                "options": {"preferred_models": ["gpt-4o-mini"]},
            },
        ).json()["id"],
        timeout=60,
    )
    assert summary["status"] == "succeeded", summary["error"]
    use = summary["document"]
    assert use["strategy"] == "hierarchical" and use["note"] == ""
    assert use["preprocessing_cost_usd"] > 0 and summary["cost_usd"] > use["preprocessing_cost_usd"]
    assert "[part 1/" in wire_servers["openai"].requests[-1].body["messages"][-1]["content"]
    chunk_calls = [r for r in wire_servers["google"].requests if r.model == "gemini-2.0-flash"]
    assert len(chunk_calls) == use["chunks"]

    # every summariser down: the chunks are still compressed, extractively, and the job says so
    for name in ("google", "openai", "anthropic"):
        for model in ("gemini-2.0-flash", "gpt-4.1-nano", "claude-3-haiku-20240307"):
            wire_servers[name].set_model(model, Fail(500, "down"))
    fallback = poll(
        api,
        api.post(
            "/v1/jobs",
            json={
                "request": "Summarize this report briefly",
                "document_id": document["id"],
                "options": {"preferred_models": ["gpt-4o-mini"], "cache": False},
            },
        ).json()["id"],
        timeout=90,
    )
    assert fallback["status"] == "succeeded", fallback["error"]
    degraded = fallback["document"]
    assert degraded["strategy"] == "extractive" and degraded["fell_back_from"] == "hierarchical"
    assert "fell back to extractive" in degraded["note"] and degraded["sent_tokens"] <= 20_000
    assert len(degraded["problems"]) == degraded["chunks"]  # each chunk, and why
    assert all("not summarised" in problem for problem in degraded["problems"])
    store, settings, asked = JobStore(get_settings()), get_settings(), "Summarize this report briefly"
    hierarchical = summary_key(settings, document["id"], Strategy.hierarchical, asked, 20_000, None, "gemini-2.0-flash")
    extractive = summary_key(settings, document["id"], Strategy.extractive, asked, 20_000)
    assert degraded["summary_key"] == extractive and store.redis.exists(extractive)  # kept as what it is
    assert not store.redis.exists(hierarchical)  # and never as the hierarchical summary it is not


LOCAL_MODEL = "smollm2-135m"


@pytest.fixture
def local_summariser(small_budget, wire_servers, tmp_path, monkeypatch):
    """A local model with a 4K window and one slot, on a server that refuses what does not fit in the window and a
    second call at once, as the summariser; its account (limited to one call in flight) on the OpenAI-compatible
    wire server, at no price."""
    wire_servers["openai"].serve_locally(LOCAL_MODEL, 4096, slots=1)
    site = tmp_path / "site"
    site.mkdir()
    (site / "local.yaml").write_text(
        f"""
providers:
  local: {{adapter: openai, base_url: "{wire_servers["openai"].url}", api_key_required: false, max_in_flight: 1}}
models:
  {LOCAL_MODEL}: {{provider: local, tier: simple, context_window: 4096, max_output_tokens: 4096,
                  price_override: {{input_usd_per_mtok: 0, output_usd_per_mtok: 0, note: self-hosted}}}}
document_processing: {{preprocessor_model: {LOCAL_MODEL}}}
"""
    )
    monkeypatch.setenv("ORCH_CONFIG_DIR", os.pathsep.join([TEST_CONFIG_DIRS, str(site)]))
    get_settings.cache_clear()


def summarised(api, document: str, request: str = "Summarize this", timeout: float = 180) -> dict:
    stored = api.post("/v1/documents", content=document.encode(), headers={"content-type": "text/plain"}).json()
    options = {"strategy": "hierarchical", "preferred_models": ["gpt-4o-mini"], "cache": False}
    job = api.post("/v1/jobs", json={"request": request, "document_id": stored["id"], "options": options}).json()
    return poll(api, job["id"], timeout=timeout)


def test_a_local_summariser_with_a_4k_window_gets_chunks_that_fit_it(
    local_summariser, api, start_worker, wire_servers, big_document
):
    wire_servers["openai"].set_model(LOCAL_MODEL, Reply(delay_s=0.02))
    start_worker()
    start_worker(queues="preprocess", concurrency=2, pool="threads")
    start_worker(queues="preprocess", concurrency=2, pool="threads")
    job = summarised(api, big_document)
    assert job["status"] == "succeeded", job["error"]
    use = job["document"]
    assert use["strategy"] == "hierarchical" and use["note"] == "" and use["problems"] == []
    assert wire_servers["openai"].refused == []  # no prompt, with its summary, past the server's window
    assert wire_servers["openai"].refused_busy == 0  # four map threads, one call at a time at its one slot
    summaries = [r for r in wire_servers["openai"].requests if r.model == LOCAL_MODEL]
    assert len(summaries) >= use["chunks"] >= 200_000 // 2_600  # every chunk, small enough for 4K
    assert all(r.body["max_tokens"] <= 1024 for r in summaries)
    assert use["preprocessing_cost_usd"] == 0.0  # the local model is free


def test_a_summary_cut_off_at_its_limit_is_recorded_as_such(local_summariser, api, start_worker, wire_servers):
    wire_servers["openai"].set_model(LOCAL_MODEL, Reply(text="detail " * 5000))  # longer than any cap
    start_worker()
    start_worker(queues="preprocess", concurrency=2, pool="threads")
    job = summarised(api, corpus(30_000))
    assert job["status"] == "succeeded", job["error"]
    use = job["document"]
    assert use["chunks"] > 1 and len(use["problems"]) >= use["chunks"]
    assert all("cut off at its output limit" in problem for problem in use["problems"])


def test_summaries_that_fail_fail_the_job_when_so_configured(
    local_summariser, api, start_worker, wire_servers, monkeypatch
):
    monkeypatch.setenv("ORCH_DOCUMENT_PROCESSING__ON_SUMMARY_FAILURE", "fail")
    get_settings.cache_clear()
    for name, models in (("openai", [LOCAL_MODEL, "gpt-4.1-nano"]), ("google", ["gemini-2.0-flash"])):
        for model in models:
            wire_servers[name].set_model(model, Fail(500, "down"))
    wire_servers["anthropic"].set_model("claude-3-haiku-20240307", Fail(500, "down"))
    start_worker(queues="preprocess", concurrency=2, pool="threads")
    job = summarised(api, corpus(30_000), timeout=120)
    assert job["status"] == "failed"
    assert "fell back to extractive" in job["error"] and "not summarised" in job["error"]
