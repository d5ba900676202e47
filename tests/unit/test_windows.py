"""Calls sized to the model's window: chunks and summaries for the summariser, the output cap of any request; and
summary cache keys that name how they were made."""

from __future__ import annotations

import os
import re

import pytest

from shared.compression import (
    MAX_SUMMARY_TOKENS,
    SUMMARY_PROMPT_TOKENS,
    PromptTooLong,
    Strategy,
    chunk_room,
    fitted_chunking,
    output_room,
    summary_key,
)
from shared.errors import PlanningError
from shared.planning import Planner
from shared.requests import JobRequest
from shared.settings import ChunkingSettings, load_settings
from shared.tokens import count_tokens, with_margin

LOCAL_MODEL = "smollm2-135m"


def test_a_4k_window_gets_chunks_that_fit_with_the_instructions_the_summary_and_a_margin():
    chunking = fitted_chunking(ChunkingSettings(), 4096)
    assert chunking.default_chunk_size == chunking.max_chunk_size == chunk_room(4096) == 2532
    worst = with_margin(chunking.max_chunk_size) + SUMMARY_PROMPT_TOKENS + MAX_SUMMARY_TOKENS
    assert worst <= 4096
    assert chunking.overlap_size <= chunking.default_chunk_size // 10
    assert chunking.min_chunk_size <= chunking.default_chunk_size


def test_a_long_window_keeps_the_configured_chunking():
    assert fitted_chunking(ChunkingSettings(), 1_000_000) == ChunkingSettings()


def test_a_window_too_small_for_any_chunk_is_refused_with_the_numbers():
    with pytest.raises(PromptTooLong, match="1,200-token window"):
        fitted_chunking(ChunkingSettings(), 1200)


def test_the_output_is_clamped_to_what_the_window_leaves_and_a_prompt_that_fills_it_is_refused():
    assert output_room(4096, 1000, 1024) == 1024
    assert output_room(4096, 3000, 1024) == 4096 - 3450  # 3,000 by our count, 3,450 with the margin
    with pytest.raises(PromptTooLong, match=r"3,600 tokens \(4,140 with a 15% margin.*window 4,096"):
        output_room(4096, 3600, 1024)


def test_the_summary_key_names_the_chunking_and_the_summariser(monkeypatch):
    settings = load_settings()
    key = summary_key(settings, "doc", Strategy.hierarchical, "q", 1000, summariser="model-a")
    assert key != summary_key(settings, "doc", Strategy.hierarchical, "q", 1000, summariser="model-b")
    extractive = summary_key(settings, "doc", Strategy.extractive, "q", 1000, summariser="model-a")
    assert extractive == summary_key(settings, "doc", Strategy.extractive, "q", 1000, summariser="model-b")
    monkeypatch.setenv("ORCH_DOCUMENT_PROCESSING__CHUNKING__DEFAULT_CHUNK_SIZE", "5000")
    assert summary_key(load_settings(), "doc", Strategy.extractive, "q", 1000) != extractive


LOCAL = """
providers:
  local: {adapter: openai, base_url: "http://127.0.0.1:9/v1", api_key_required: false}
models:
  smollm2-135m: {provider: local, tier: simple, context_window: 4096, max_output_tokens: 4096,
                 price_override: {input_usd_per_mtok: 0, output_usd_per_mtok: 0}}
"""


@pytest.fixture
def small_window(tmp_path, monkeypatch):
    from tests.catalog import TEST_CONFIG_DIRS

    (tmp_path / "local.yaml").write_text(LOCAL)
    monkeypatch.setenv("ORCH_CONFIG_DIR", os.pathsep.join([TEST_CONFIG_DIRS, str(tmp_path)]))
    return load_settings()


def test_a_prompt_that_fits_a_small_window_is_not_refused_for_the_default_output(small_window):
    request = "Summarise: " + "the quarterly figures rose " * 700  # about 2,800 tokens
    prompt = count_tokens(request)
    proposal = Planner(small_window).propose(JobRequest(request=request, options={"preferred_models": [LOCAL_MODEL]}))
    assert proposal.plan.model == LOCAL_MODEL
    assert with_margin(proposal.plan.estimated_input_tokens) + proposal.plan.max_output_tokens <= 4096
    assert 150 <= proposal.plan.max_output_tokens < 1024 and prompt < proposal.plan.estimated_input_tokens
    asked = JobRequest(request=request, options={"preferred_models": [LOCAL_MODEL], "max_tokens": 1024})
    with pytest.raises(PlanningError) as refused:  # an explicit cap is the caller's: the model cannot take it
        Planner(small_window).propose(asked)
    reason = r"smollm2-135m: needs 3,\d{3} tokens of prompt .* and 1,024 of output, window is 4,096"
    assert re.search(reason, str(refused.value))


def test_a_document_compressed_for_the_model_keeps_the_default_output_cap():
    settings = load_settings()
    document = "The quarterly figures rose in every region. " * 30_000  # about 270K tokens: compressed for any model
    body = JobRequest(request="Summarise this report", document=document, options={"preferred_models": ["gpt-4o"]})
    plan = Planner(settings).propose(body).plan
    assert plan.model == "gpt-4o" and plan.preprocess  # a 128K window: the document is compressed
    assert plan.max_output_tokens == settings.default_max_output_tokens  # not the tier's expected answer
