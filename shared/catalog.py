"""The model catalog: what only the orchestrator knows of each model, joined with what genai-prices knows.

`config/models.yaml` says, per model, which provider account serves it, the hardest tier it is trusted with, its
capabilities, and its context window and output limit where the library lacks them. Prices are not written there:
they come from `genai-prices` (`shared/pricing.py`), unless an entry overrides them on purpose. A model the library
cannot price and that has no override stops the start with the model's name, as does a model whose context window
nobody knows.

A model outside the catalog is still usable by name (as a caller's preferred model, or the `model` of the OpenAI
endpoint) when the library prices it at one of the configured accounts: older models keep working with their
library price and window.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, Field, SecretStr

from shared.pricing import (
    LIBRARY,
    LibraryPricing,
    OverridePricing,
    PriceOverride,
    Pricing,
    RateSheet,
    TokenUsage,
    find_in_library,
    library_providers,
)


class Tier(StrEnum):
    simple = "simple"
    moderate = "moderate"
    complex = "complex"

    @property
    def rank(self) -> int:
        """0, 1, 2 from simple up: a model serves requests of its own tier and below."""
        return _TIER_RANK[self]


_TIER_RANK = {tier: rank for rank, tier in enumerate(Tier)}

Capability = Literal["tools", "vision", "json", "streaming"]
_OLDER_MODEL_WINDOW = 32_768  # for a model outside the catalog whose window the library does not know either


class ModelSpec(BaseModel):
    model_config = {"extra": "forbid"}

    provider: str = Field(description="The provider account (providers:) that serves it.")
    tier: Tier = Field(description="The hardest tier it is trusted with; it serves that tier and the ones below.")
    context_window: int | None = Field(None, gt=0, description="Default: genai-prices' figure.")
    max_output_tokens: int = Field(8192, gt=0)
    capabilities: list[Capability] = Field(default_factory=lambda: ["streaming"])
    provider_model: str | None = Field(None, description="The id sent to the provider, when it differs from the name.")
    price_model: str | None = Field(None, description="The model's name in genai-prices, when it differs.")
    price_override: PriceOverride | None = Field(None, description="A price set on purpose instead of the library's.")
    max_in_flight: int | None = Field(
        None, gt=0, description="Calls to this model in flight at once, across every worker (a local server's slots)."
    )


class TierChain(BaseModel):
    preferred: str
    fallback: list[str] = []

    @property
    def models(self) -> list[str]:
        return [self.preferred, *self.fallback]


class ProviderConfig(BaseModel):
    adapter: Literal["openai", "anthropic", "google"]
    base_url: str | None = None
    api_key: SecretStr | None = None
    api_key_env: str | None = Field(None, description="Environment variable holding this account's key.")
    api_key_required: bool = True
    max_in_flight: int | None = Field(
        None, gt=0, description="Calls to this account in flight at once, across every worker (a local server's slots)."
    )
    price_provider: str | None = Field(
        None,
        description="The genai-prices provider whose prices this account pays (default: the account's name, when "
        "the library knows it; a self-hosted account has none and its models need a price_override).",
    )


class CatalogEntry(BaseModel):
    """One model as `orchestrator models` and `GET /v1/models` show it."""

    name: str
    provider: str
    tier: Tier
    context_window: int
    max_output_tokens: int
    input_usd_per_mtok: float
    output_usd_per_mtok: float
    cached_input_usd_per_mtok: float
    long_context: str | None = Field(None, description="The higher prices past a threshold, when there are any.")
    price_source: str
    capabilities: list[Capability]


class Catalog:
    """Specs and prices of every configured model, and of older models the library knows, by name."""

    def __init__(self, models: dict[str, ModelSpec], providers: dict[str, ProviderConfig]) -> None:
        known = library_providers()
        self._providers = providers
        self._price_providers = {
            account: config.price_provider or (account if account in known else None)
            for account, config in providers.items()
        }
        self._pricing: dict[str, Pricing] = {}
        self.specs: dict[str, ModelSpec] = {}
        problems = []
        for name, spec in models.items():
            try:
                self._pricing[name] = self._price(name, spec)
                self.specs[name] = self._with_window(name, spec)
            except ValueError as error:
                problems.append(f"models.{name}: {error}")
        if problems:
            raise ValueError("; ".join(problems))
        self._older: dict[str, tuple[ModelSpec, Pricing] | None] = {}
        self._by_price: dict[tuple[Tier, date], list[str]] = {}

    def knows(self, name: str) -> bool:
        return name in self.specs or self._older_model(name) is not None

    def spec(self, name: str) -> ModelSpec:
        if name in self.specs:
            return self.specs[name]
        older = self._older_model(name)
        if older is None:
            raise KeyError(name)
        return older[0]

    def pricing(self, name: str) -> Pricing:
        if name in self._pricing:
            return self._pricing[name]
        older = self._older_model(name)
        if older is None:
            raise KeyError(name)
        return older[1]

    def sheet(self, name: str, day: date | None = None) -> RateSheet:
        return self.pricing(name).sheet(day or datetime.now(tz=UTC).date())

    def estimate(self, name: str, input_tokens: int, output_tokens: int, day: date | None = None) -> float:
        """What a call is expected to cost today: the library's prices for the day, read once a day."""
        return self.sheet(name, day).estimate(input_tokens, output_tokens)

    def cost(self, name: str, usage: TokenUsage, when: datetime | None = None) -> float:
        """What a call cost, priced by the library at the date of the request (or by the override)."""
        return self.pricing(name).cost(usage, when)

    def cheapest_first(self, tier: Tier, day: date) -> list[str]:
        """The catalog models trusted with `tier`, cheapest first at a typical request's size (once a day)."""
        key = (tier, day)
        if key not in self._by_price:
            capable = [name for name, spec in self.specs.items() if spec.tier.rank >= tier.rank]
            self._by_price[key] = sorted(capable, key=lambda name: self.estimate(name, 1000, 300, day))
        return self._by_price[key]

    def entries(self, day: date | None = None) -> list[CatalogEntry]:
        day = day or datetime.now(tz=UTC).date()
        rows = []
        for name, spec in self.specs.items():
            sheet = self.sheet(name, day)
            past = [
                f"past {start:,} input tokens: ${sheet.input.at(start + 1) * 1e6:g} in, "
                f"${sheet.output.at(start + 1) * 1e6:g} out"
                for start in sorted({start for start, _ in (*sheet.input.tiers, *sheet.output.tiers)})
            ]
            rows.append(
                CatalogEntry(
                    name=name,
                    provider=spec.provider,
                    tier=spec.tier,
                    context_window=spec.context_window or 0,
                    max_output_tokens=spec.max_output_tokens,
                    input_usd_per_mtok=round(sheet.input.base * 1e6, 6),
                    output_usd_per_mtok=round(sheet.output.base * 1e6, 6),
                    cached_input_usd_per_mtok=round(sheet.cached_input.base * 1e6, 6),
                    long_context="; ".join(past) or None,
                    price_source=self._pricing[name].source,
                    capabilities=spec.capabilities,
                )
            )
        return rows

    def _price(self, name: str, spec: ModelSpec) -> Pricing:
        if spec.price_override is not None:
            return OverridePricing(spec.price_override)
        if spec.provider not in self._providers:
            raise ValueError(f"unknown provider account {spec.provider!r}")
        price_provider = self._price_providers[spec.provider]
        if price_provider is None:
            raise ValueError(
                f"no price: {LIBRARY} has no provider {spec.provider!r}; give the account a price_provider, or the "
                "model a price_override (0 for a self-hosted model)"
            )
        reference = spec.price_model or name
        found = find_in_library(reference, price_provider)
        if found is None:
            raise ValueError(
                f"no price: {LIBRARY} does not know {reference!r} at {price_provider!r}; name it with price_model, "
                "add a price_override, or update the library (pip install -U genai-prices)"
            )
        return found

    def _with_window(self, name: str, spec: ModelSpec) -> ModelSpec:
        if spec.context_window is not None:
            return spec
        pricing = self._pricing[name]
        window = pricing.context_window if isinstance(pricing, LibraryPricing) else None
        if window is None:
            raise ValueError(f"no context window: {LIBRARY} does not give one; set context_window")
        return spec.model_copy(update={"context_window": window})

    def _older_model(self, name: str) -> tuple[ModelSpec, Pricing] | None:
        """A model outside the catalog that the library prices at one of the accounts (cached, misses too)."""
        if name not in self._older:
            self._older[name] = None
            for account, price_provider in self._price_providers.items():
                found = find_in_library(name, price_provider) if price_provider else None
                if found is not None:
                    spec = ModelSpec(
                        provider=account,
                        tier=Tier.complex,
                        context_window=found.context_window or _OLDER_MODEL_WINDOW,
                        max_output_tokens=4096,
                    )
                    self._older[name] = (spec, found)
                    break
        return self._older[name]
