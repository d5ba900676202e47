"""What a finished request cost, and what it would have cost without the orchestrator.

The actual cost is the provider-reported usage (cached input and cache writes at their own rates) priced by the
catalog at the date of the request. The baseline is the configured baseline model reading the naive full-context
prompt (counted at planning) and writing the same answer, priced the same way on the same date.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

from shared.pricing import Percent, TokenUsage, Usd, saved_pct
from shared.providers.base import Completion
from shared.routing import Plan
from shared.settings import Settings


class Bill(BaseModel):
    input_tokens: int
    output_tokens: int
    cost_usd: Usd
    baseline_input_tokens: int
    baseline_cost_usd: Usd
    savings_usd: Usd
    savings_pct: Percent
    tokens_saved: int


def usage_of(completion: Completion) -> TokenUsage:
    """A provider's answer as the price library reads it."""
    return TokenUsage(
        input_tokens=completion.input_tokens,
        output_tokens=completion.output_tokens,
        cached_input_tokens=completion.cached_input_tokens,
        cache_write_tokens=completion.cache_write_tokens,
        reasoning_tokens=completion.reasoning_tokens,
    )


def bill(
    plan: Plan, model: str, usage: TokenUsage, settings: Settings, when: datetime, answer_tokens: int | None = None
) -> Bill:
    """Price what was used, as of `when` (the request's time). `answer_tokens` is the answer's length when it
    differs from what was paid for (a cache hit pays for nothing, but the baseline would still have had to generate
    the answer)."""
    cost = settings.catalog.cost(model, usage, when)
    baseline_input = plan.baseline.input_tokens
    answer = usage.output_tokens if answer_tokens is None else answer_tokens
    baseline = settings.catalog.cost(
        plan.baseline.model, TokenUsage(input_tokens=baseline_input, output_tokens=answer), when
    )
    savings = baseline - cost
    return Bill(
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cost_usd=cost,
        baseline_input_tokens=baseline_input,
        baseline_cost_usd=baseline,
        savings_usd=savings,
        savings_pct=saved_pct(cost, baseline),
        tokens_saved=baseline_input - usage.input_tokens,
    )
