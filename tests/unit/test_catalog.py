"""The catalog and its prices: genai-prices computes them, the catalog says only what the library cannot know."""

import json
import random
import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from shared.catalog import Catalog, ModelSpec, ProviderConfig, Tier
from shared.pricing import LIBRARY, PriceOverride, TokenUsage
from shared.routing import Constraints, RequestOptions, analyze, plan
from shared.settings import ConfigError, load_settings

ROOT = Path(__file__).resolve().parents[2]
ACCOUNTS = {name: ProviderConfig(adapter=name) for name in ("openai", "anthropic", "google")}
TODAY = datetime(2026, 12, 4, 12, tzinfo=UTC)


def catalog(**models: ModelSpec) -> Catalog:
    return Catalog(models, ACCOUNTS)


def spec(provider: str, tier: Tier = Tier.simple, **fields) -> ModelSpec:
    return ModelSpec(provider=provider, tier=tier, **fields)


@pytest.fixture
def product(monkeypatch):
    """The settings of the catalog the product ships (config/), not the tests' pinned one."""
    monkeypatch.setenv("ORCH_CONFIG_DIR", str(ROOT / "config"))
    return load_settings()


def test_a_long_context_request_on_a_tiered_model_is_priced_at_the_higher_tier():
    models = catalog(**{"gemini-2.5-pro": spec("google", Tier.complex, context_window=1_048_576)})
    short = models.cost("gemini-2.5-pro", TokenUsage(input_tokens=100_000, output_tokens=1_000), TODAY)
    long = models.cost("gemini-2.5-pro", TokenUsage(input_tokens=300_000, output_tokens=1_000), TODAY)
    assert short == pytest.approx(100_000 * 1.25e-6 + 1_000 * 10e-6)
    assert long == pytest.approx(300_000 * 2.5e-6 + 1_000 * 15e-6)  # every token at the rate past 200K
    estimate = models.estimate("gemini-2.5-pro", 300_000, 1_000, TODAY.date())
    assert estimate == pytest.approx(long)


def test_cached_input_costs_less_than_the_same_input_uncached():
    models = catalog(**{"gpt-4.1": spec("openai", Tier.complex)})
    plain = models.cost("gpt-4.1", TokenUsage(input_tokens=10_000, output_tokens=100), TODAY)
    cached = models.cost(
        "gpt-4.1", TokenUsage(input_tokens=10_000, cached_input_tokens=8_000, output_tokens=100), TODAY
    )
    assert plain == pytest.approx(10_000 * 2e-6 + 100 * 8e-6)
    assert cached == pytest.approx(2_000 * 2e-6 + 8_000 * 0.5e-6 + 100 * 8e-6)


def test_cache_writes_cost_their_own_rate():
    models = catalog(**{"claude-sonnet-5-5": spec("anthropic", Tier.moderate)})
    written = models.cost(
        "claude-sonnet-5-5", TokenUsage(input_tokens=10_000, cache_write_tokens=10_000, output_tokens=0), TODAY
    )
    plain = models.cost("claude-sonnet-5-5", TokenUsage(input_tokens=10_000, output_tokens=0), TODAY)
    assert written == pytest.approx(10_000 * 2.5e-6) and plain == pytest.approx(10_000 * 2e-6)


def test_an_override_wins_over_the_library_and_says_so():
    override = PriceOverride(input_usd_per_mtok=0.1, output_usd_per_mtok=0.2, note="negotiated rate")
    models = catalog(**{"gpt-4o-mini": spec("openai", price_override=override, context_window=128_000)})
    cost = models.cost("gpt-4o-mini", TokenUsage(input_tokens=1_000_000, output_tokens=1_000_000), TODAY)
    assert cost == pytest.approx(0.3)  # the library says 0.15 + 0.60
    [entry] = models.entries(TODAY.date())
    assert entry.price_source == "override: negotiated rate"
    assert (entry.input_usd_per_mtok, entry.output_usd_per_mtok) == (0.1, 0.2)


def test_a_self_hosted_model_needs_an_override_and_is_free_with_one():
    accounts = {"ollama": ProviderConfig(adapter="openai", base_url="http://127.0.0.1:11434/v1")}
    with pytest.raises(ValueError, match="models.llama3.1:8b: no price: .* has no provider 'ollama'"):
        Catalog({"llama3.1:8b": spec("ollama", context_window=131_072)}, accounts)
    free = PriceOverride(input_usd_per_mtok=0, output_usd_per_mtok=0, note="self-hosted")
    models = Catalog({"llama3.1:8b": spec("ollama", context_window=131_072, price_override=free)}, accounts)
    assert models.cost("llama3.1:8b", TokenUsage(input_tokens=5_000, output_tokens=500)) == 0


def test_a_date_before_a_price_change_gets_the_old_price():
    models = catalog(**{"gemini-4-argon": spec("google", Tier.complex)})
    usage = TokenUsage(input_tokens=1_000_000, output_tokens=1_000_000)
    before = models.cost("gemini-4-argon", usage, datetime(2026, 11, 15, tzinfo=UTC))
    after = models.cost("gemini-4-argon", usage, datetime(2026, 12, 2, tzinfo=UTC))
    assert (before, after) == (pytest.approx(12.0), pytest.approx(24.0))  # $2/$10, then $4/$20 from 1 December
    assert models.estimate("gemini-4-argon", 1_000_000, 1_000_000, date(2026, 11, 15)) == pytest.approx(before)


def test_an_unpriceable_model_is_a_start_up_error_naming_the_model_and_the_file(tmp_path, monkeypatch):
    for path in (ROOT / "config").glob("*.yaml"):
        (tmp_path / path.name).write_text(path.read_text())
    models = tmp_path / "models.yaml"
    models.write_text(
        models.read_text().replace("models:\n", "models:\n  gpt-imaginary-9: {provider: openai, tier: simple}\n", 1)
    )
    monkeypatch.setenv("ORCH_CONFIG_DIR", str(tmp_path))
    with pytest.raises(ConfigError) as error:
        load_settings()
    message = str(error.value)
    assert str(models) in message and "models.gpt-imaginary-9: no price" in message and LIBRARY in message


@pytest.mark.parametrize("directories", [["config"], ["config", "tests/config"]], ids=["product", "tests"])
def test_bills_agree_with_the_librarys_own_arithmetic_for_every_catalog_model(directories, monkeypatch):
    """Bills come from the day's rate sheet; the library's `calc_price` must give the same figure for every usage a
    provider reports: tiers, cached input, cache writes, on both sides of a dated price change."""
    monkeypatch.setenv("ORCH_CONFIG_DIR", ":".join(str(ROOT / directory) for directory in directories))
    settings = load_settings()
    rng = random.Random(5)
    days = [TODAY, datetime(2026, 11, 15, 23, 30, tzinfo=UTC), datetime(2025, 6, 1, 0, 10, tzinfo=UTC)]
    for name in settings.models:
        pricing = settings.catalog.pricing(name)
        for _ in range(40):
            total = rng.choice([0, 50, 4_000, 150_000, 200_001, 250_000, 300_000, 900_000])
            cached = rng.randint(0, total // 2)
            written = rng.randint(0, (total - cached) // 2)
            usage = TokenUsage(
                input_tokens=total,
                output_tokens=rng.randint(0, 8_000),
                cached_input_tokens=cached,
                cache_write_tokens=written,
            )
            when = rng.choice(days)
            expected = pricing.library_cost(usage, when)
            assert settings.catalog.cost(name, usage, when) == pytest.approx(expected, rel=1e-9, abs=1e-15), name
            assert settings.catalog.sheet(name, when.date()).estimate(total, usage.output_tokens) >= 0


def test_the_shipped_catalog_is_todays_models_priced_by_the_library(product):
    entries = {entry.name: entry for entry in product.catalog.entries(TODAY.date())}
    assert all(entry.price_source == LIBRARY for entry in entries.values())
    assert {"gpt-6-luna", "gpt-5-nano", "claude-haiku-5-5", "claude-opus-5-5", "gemini-4-argon"} <= set(entries)
    assert {e.tier for e in entries.values()} == set(Tier) and {e.provider for e in entries.values()} == set(ACCOUNTS)
    for tier, chain in product.execution.items():
        providers = {product.models[model].provider for model in chain.models}
        assert len(providers) == 3, f"{tier}: the chain falls back across providers"
        assert all(product.models[model].tier.rank >= tier.rank for model in chain.models)
    assert product.models[product.baseline_model].tier == Tier.complex
    assert entries["gemini-4-argon"].input_usd_per_mtok == 4.0  # the price that applies since 1 December 2026
    assert "past 272,000" in entries["gpt-6-luna"].long_context


def test_an_older_model_outside_the_catalog_is_usable_by_name_at_its_library_price(product):
    assert "gpt-4-turbo" not in product.models and product.catalog.knows("gpt-4-turbo")
    options = RequestOptions(preferred_models=["gpt-4-turbo"])
    analysis = analyze("Explain how a hash map works", None, options, product)
    chosen = plan(analysis, Constraints.from_options(options, {"openai"}), product)
    assert chosen.model == "gpt-4-turbo" and chosen.provider == "openai"
    expected = product.catalog.estimate("gpt-4-turbo", chosen.estimated_input_tokens, chosen.estimated_output_tokens)
    assert chosen.estimated_cost_usd == pytest.approx(expected) and expected > 0
    assert not product.catalog.knows("gpt-imaginary-9")


def test_orchestrator_models_prints_the_catalog_with_prices_and_sources(tmp_path):
    env = {"ORCH_CONFIG_DIR": str(ROOT / "config"), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "api.cli", "models", "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    rows = {row["name"]: row for row in json.loads(done.stdout)}
    luna = rows["gpt-6-luna"]
    assert luna["provider"] == "openai" and luna["tier"] == "simple" and luna["context_window"] == 1_050_000
    assert (luna["input_usd_per_mtok"], luna["output_usd_per_mtok"], luna["cached_input_usd_per_mtok"]) == (
        0.1,
        0.5,
        0.01,
    )
    assert luna["price_source"] == LIBRARY and "tools" in luna["capabilities"]
    table = subprocess.run(
        [sys.executable, "-m", "api.cli", "models"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert table.returncode == 0 and "gpt-6-luna" in table.stdout and "pip install -U genai-prices" in table.stdout
