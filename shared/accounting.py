"""What a finished request cost, and what it would have cost without the orchestrator.

The actual cost uses the provider-reported usage at the serving model's catalog prices. The baseline is the
configured baseline model reading the naive full-context prompt (counted at planning) and writing the same answer.
"""

from __future__ import annotations

from pydantic import BaseModel

from shared.routing import Plan
from shared.settings import Settings


class Bill(BaseModel):
    input_tokens: int
    output_tokens: int
    cost_usd: float
    baseline_input_tokens: int
    baseline_cost_usd: float
    savings_usd: float
    savings_pct: float
    tokens_saved: int


def bill(
    plan: Plan, model: str, input_tokens: int, output_tokens: int, settings: Settings, answer_tokens: int | None = None
) -> Bill:
    """Price what was sent. `answer_tokens` is the answer's length when it differs from what was paid for (a cache
    hit pays for nothing, but the baseline would still have had to generate the answer)."""
    cost = settings.models[model].cost_usd(input_tokens, output_tokens)
    baseline_input = plan.baseline.input_tokens
    answer = output_tokens if answer_tokens is None else answer_tokens
    baseline = settings.models[plan.baseline.model].cost_usd(baseline_input, answer)
    savings = baseline - cost
    return Bill(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cost_usd=cost,
        baseline_input_tokens=baseline_input,
        baseline_cost_usd=baseline,
        savings_usd=savings,
        savings_pct=100 * savings / baseline if baseline else 0.0,
        tokens_saved=baseline_input - input_tokens,
    )
