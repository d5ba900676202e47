"""Prices: what a model's usage costs, from the price data `genai-prices` bundles (works offline), or from a price
the catalog overrides on purpose (a negotiated rate, a self-hosted model at 0).

Bills are computed by genai-prices itself from the usage (input, cached input, cache writes, output) and the date of
the request, so tiered prices past a long-context threshold and prices that change on a date apply. Estimates sit
on the hot path of every request (planning prices a dozen candidates), where a library call costs about 60 µs; they
read the same library's price table for the model once a day into floats and apply genai-prices' own rules (a tier
applies when the request's whole input passes its start; a cached or written token without a price of its own costs
an input token). Tests hold estimates and bills to agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal
from importlib.metadata import version
from typing import Annotated, Any

from pydantic import BaseModel, Field, PlainSerializer

LIBRARY = f"genai-prices {version('genai-prices')}"


#: An amount of money in USD, written to 10 decimal places (a billionth of a cent): sums of float prices carry
#: binary noise (0.00006170000000000001) that nobody should read in a job record.
def usd(value: float) -> float:
    return round(value, 10)


def saved_pct(spent: float, baseline: float) -> float:
    """What was saved against `baseline`, as a percentage (0 when there was no baseline cost)."""
    return 100 * (baseline - spent) / baseline if baseline else 0.0


Usd = Annotated[float, PlainSerializer(usd, return_type=float)]
UsdOrNone = Annotated[float | None, PlainSerializer(lambda v: None if v is None else usd(v), return_type=float | None)]
#: A percentage, written to 2 decimal places.
Percent = Annotated[float, PlainSerializer(lambda value: round(value, 2), return_type=float)]
PercentOrNone = Annotated[
    float | None, PlainSerializer(lambda v: None if v is None else round(v, 2), return_type=float | None)
]
_PER_MTOK = 1_000_000


class TokenUsage(BaseModel):
    """What one call used. `input_tokens` and `output_tokens` are totals; the others say which part of them."""

    input_tokens: int = Field(ge=0)
    output_tokens: int = Field(ge=0)
    cached_input_tokens: int = Field(0, ge=0, description="Of the input, read from the provider's prompt cache.")
    cache_write_tokens: int = Field(0, ge=0, description="Of the input, written to the provider's prompt cache.")
    reasoning_tokens: int = Field(0, ge=0, description="Of the output, hidden reasoning.")


class PriceOverride(BaseModel):
    """A price set in the catalog on purpose, in USD per million tokens."""

    model_config = {"extra": "forbid"}

    input_usd_per_mtok: float = Field(ge=0)
    output_usd_per_mtok: float = Field(ge=0)
    cached_input_usd_per_mtok: float | None = Field(None, ge=0, description="Default: the input price.")
    note: str = Field("", description="Why: a negotiated rate, a self-hosted model...")


@dataclass(frozen=True, slots=True)
class Rate:
    """USD per token, and the higher prices that apply once the request's input passes a threshold."""

    base: float
    tiers: tuple[tuple[int, float], ...] = ()

    def at(self, total_input: int) -> float:
        for start, price in reversed(self.tiers):
            if total_input > start:
                return price
        return self.base

    @property
    def highest(self) -> float:
        return max([self.base, *(price for _, price in self.tiers)])


@dataclass(frozen=True, slots=True)
class RateSheet:
    """A model's prices on one day, ready for arithmetic."""

    input: Rate
    output: Rate
    cached_input: Rate
    cache_write: Rate

    def cost(self, usage: TokenUsage) -> float:
        total = usage.input_tokens
        fresh = max(0, total - usage.cached_input_tokens - usage.cache_write_tokens)
        return (
            fresh * self.input.at(total)
            + usage.cached_input_tokens * self.cached_input.at(total)
            + usage.cache_write_tokens * self.cache_write.at(total)
            + usage.output_tokens * self.output.at(total)
        )

    def estimate(self, input_tokens: int, output_tokens: int) -> float:
        return input_tokens * self.input.at(input_tokens) + output_tokens * self.output.at(input_tokens)


class Pricing:
    """How one catalog model is priced: by the library, or by an override."""

    source: str

    def sheet(self, day: date) -> RateSheet:
        raise NotImplementedError

    def cost(self, usage: TokenUsage, when: datetime | None = None) -> float:
        raise NotImplementedError


class OverridePricing(Pricing):
    def __init__(self, override: PriceOverride) -> None:
        self.source = f"override: {override.note}" if override.note else "override"
        cached = override.cached_input_usd_per_mtok
        self._sheet = RateSheet(
            input=Rate(override.input_usd_per_mtok / _PER_MTOK),
            output=Rate(override.output_usd_per_mtok / _PER_MTOK),
            cached_input=Rate((override.input_usd_per_mtok if cached is None else cached) / _PER_MTOK),
            cache_write=Rate(override.input_usd_per_mtok / _PER_MTOK),
        )

    def sheet(self, day: date) -> RateSheet:
        return self._sheet

    def cost(self, usage: TokenUsage, when: datetime | None = None) -> float:
        return self._sheet.cost(usage)


class LibraryPricing(Pricing):
    """A model genai-prices knows: `reference` is the name it was found by, `provider_id` the library's provider."""

    source = LIBRARY

    def __init__(self, provider: Any, model: Any, reference: str) -> None:
        from genai_prices.types import TimeOfDateConstraint

        self.provider_id: str = provider.id
        self.reference = reference
        self.context_window: int | None = model.context_window
        self._provider = provider
        self._model = model
        self._sheets: dict[date, RateSheet] = {}
        # Prices that change within a day (off-peak hours) are not one sheet a day: those bills ask the library.
        self._by_the_hour = isinstance(model.prices, list) and any(
            isinstance(price.constraint, TimeOfDateConstraint) for price in model.prices
        )

    def sheet(self, day: date) -> RateSheet:
        """The day's prices (a dated price change applies from its day), read once a day."""
        sheet = self._sheets.get(day)
        if sheet is None:
            sheet = self._sheets[day] = _sheet_of(self._model, day)
        return sheet

    def cost(self, usage: TokenUsage, when: datetime | None = None) -> float:
        """The bill, from the day's sheet: the library's own arithmetic (`library_cost`) gives the same figure at a
        hundred times the cost, which every job would pay in its worker (tests/unit/test_catalog.py compares them
        over the catalog). Prices by the hour are asked of the library."""
        when = when or datetime.now(tz=UTC)
        if self._by_the_hour:
            return self.library_cost(usage, when)
        return self.sheet(when.astimezone(UTC).date()).cost(usage)

    def library_cost(self, usage: TokenUsage, when: datetime) -> float:
        from genai_prices import Usage

        counts = Usage(
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cache_read_tokens=usage.cached_input_tokens or None,
            cache_write_tokens=usage.cache_write_tokens or None,
        )
        price = self._model.calc_price(counts, self._provider, genai_request_timestamp=when)
        return float(price.total_price)


def find_in_library(name: str, provider_id: str) -> LibraryPricing | None:
    """The library's price for `name` at `provider_id`, or None when it has none."""
    from genai_prices import data_snapshot

    try:
        provider, model = data_snapshot.get_snapshot().find_provider_model(name, None, provider_id, None)
    except LookupError:
        return None
    if provider is None or model is None or provider.id != provider_id:
        return None
    return LibraryPricing(provider, model, name)


def library_providers() -> frozenset[str]:
    from genai_prices import data_snapshot

    return frozenset(provider.id for provider in data_snapshot.get_snapshot().providers)


def _sheet_of(model: Any, day: date) -> RateSheet:
    prices = model.get_prices(datetime.combine(day, time(12), tzinfo=UTC))
    base_input = _rate(getattr(prices, "input_mtok", None))
    return RateSheet(
        input=base_input,
        output=_rate(getattr(prices, "output_mtok", None)),
        cached_input=_rate(getattr(prices, "cache_read_mtok", None), base_input),
        cache_write=_rate(getattr(prices, "cache_write_mtok", None), base_input),
    )


def _rate(value: Any, missing: Rate | None = None) -> Rate:
    """A library price (a Decimal per million, or tiers of them) as USD per token."""
    if value is None:
        return missing or Rate(0.0)
    if isinstance(value, Decimal | int | float):
        return Rate(float(value) / _PER_MTOK)
    return Rate(
        float(value.base) / _PER_MTOK,
        tuple((int(tier.start), float(tier.price) / _PER_MTOK) for tier in value.tiers),
    )
