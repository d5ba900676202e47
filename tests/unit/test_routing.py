import pytest

from shared.pricing import TokenUsage
from shared.routing import Constraints, PlanningError, RequestOptions, analyze, plan
from shared.settings import Tier, load_settings

SETTINGS = load_settings()
ALL = {"openai", "anthropic", "google"}


def make_plan(text="Define photosynthesis.", options=None, usable=ALL, breakers=(), document=None, **kw):
    options = options or RequestOptions()
    analysis = analyze(text, None, options, SETTINGS, **kw)
    return plan(analysis, Constraints.from_options(options, usable, set(breakers)), SETTINGS, options.max_tokens)


def test_tier_chain_is_followed_and_costs_are_estimated_against_the_baseline():
    p = make_plan()
    assert p.tier == Tier.simple
    assert p.model == "gemini-2.0-flash"
    assert p.fallbacks[:2] == ["gpt-4.1-nano", "claude-3-haiku-20240307"]
    usage = TokenUsage(input_tokens=p.estimated_input_tokens, output_tokens=p.estimated_output_tokens)
    assert p.estimated_cost_usd == pytest.approx(SETTINGS.catalog.cost("gemini-2.0-flash", usage))
    assert p.baseline.model == SETTINGS.baseline_model
    assert p.baseline.input_tokens > p.estimated_input_tokens
    assert p.estimated_savings_usd == pytest.approx(p.baseline.cost_usd - p.estimated_cost_usd)
    assert p.estimated_cost_usd < p.baseline.cost_usd / 10


def test_preferred_model_is_honoured():
    p = make_plan(options=RequestOptions(preferred_models=["claude-3-5-haiku-20241022"]))
    assert p.model == "claude-3-5-haiku-20241022"
    assert p.reason.startswith("caller's preferred model")


def test_providers_without_keys_are_skipped_with_a_reason():
    p = make_plan(usable={"anthropic"})
    assert p.model == "claude-3-haiku-20240307"
    assert p.rejected["gemini-2.0-flash"] == "no API key for provider google"
    assert all(SETTINGS.models[m].provider == "anthropic" for m in p.chain)


def test_open_breaker_skips_a_model():
    p = make_plan(breakers={"gemini-2.0-flash"})
    assert p.model == "gpt-4.1-nano"
    assert p.rejected["gemini-2.0-flash"] == "circuit breaker open"


def test_max_cost_rejects_expensive_models_and_impossible_cost_is_a_clear_error():
    options = RequestOptions(preferred_models=["claude-opus-4-20250514"], max_cost=0.001)
    p = make_plan(options=options)
    assert p.model != "claude-opus-4-20250514"
    assert "exceeds max_cost" in p.rejected["claude-opus-4-20250514"]
    assert p.estimated_cost_usd <= 0.001
    with pytest.raises(PlanningError) as error:
        make_plan(options=RequestOptions(max_cost=0.000_000_1))
    assert "no model satisfies the constraints" in str(error.value)
    assert set(error.value.reasons) >= {"gemini-2.0-flash", "gpt-4.1-nano"}


def test_unknown_preferred_model_is_an_error_listing_known_models():
    with pytest.raises(PlanningError, match="unknown model.*gpt-9.*catalog models: .*gpt-4o-mini"):
        make_plan(options=RequestOptions(preferred_models=["gpt-9"]))


def test_no_usable_provider_is_an_error():
    with pytest.raises(PlanningError, match="no API key"):
        make_plan(usable=set())


def test_context_window_requirement():
    p = make_plan(options=RequestOptions(min_context_window=500_000))
    assert all(SETTINGS.models[m].context_window >= 500_000 for m in p.chain)
    assert p.rejected["claude-3-haiku-20240307"].startswith("window 200,000 below")


def test_large_document_is_compressed_for_a_small_window_model():
    options = RequestOptions(preferred_models=["gpt-4o-mini"])
    p = make_plan("Analyze the security vulnerabilities", options=options, document_tokens=500_000)
    assert p.model == "gpt-4o-mini"
    assert p.preprocess
    assert p.document_budget_tokens == SETTINGS.document_processing.max_direct_tokens
    assert p.estimated_input_tokens < 128_000
    assert p.baseline.input_tokens > 500_000


def test_max_tokens_bounds_the_output_estimate():
    p = make_plan(options=RequestOptions(max_tokens=50))
    assert p.max_output_tokens == 50
    assert p.estimated_output_tokens == 50
