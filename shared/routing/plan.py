"""Routing: the cheapest capable model for an analysed request, under the caller's constraints.

Candidates are the tier's configured chain (preferred, then fallbacks), then every other catalog model trusted with
the tier or a harder one, cheapest first, so an outage or a tight budget degrades to another capable model rather
than to a failure. A caller's `preferred_models` go first. Each candidate is kept or rejected with a reason; when
none is left, the error lists every reason, because "no model available" alone helps nobody.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

from pydantic import BaseModel, Field

from shared.errors import PlanningError
from shared.pricing import Usd
from shared.prompts import system_prompt
from shared.routing.analysis import Analysis, RequestOptions
from shared.settings import ModelSpec, Settings, Tier
from shared.tokens import TOKENIZER_MARGIN_PCT, count_tokens, with_margin

#: Expected answer length per tier, for estimates before the call (the real usage replaces it afterwards).
EXPECTED_OUTPUT_TOKENS = {Tier.simple: 150, Tier.moderate: 500, Tier.complex: 1200}


class Constraints(BaseModel):
    preferred_models: list[str] = []
    max_cost_usd: float | None = None
    min_context_window: int | None = None
    usable_providers: set[str] | None = Field(None, description="None: plan as if every provider had a key.")
    open_breakers: set[str] = set()

    @classmethod
    def from_options(
        cls, options: RequestOptions | None, usable_providers: set[str] | None, open_breakers: set[str] = frozenset()
    ) -> Constraints:
        options = options or RequestOptions()
        return cls(
            preferred_models=options.preferred_models,
            max_cost_usd=options.max_cost,
            min_context_window=options.min_context_window,
            usable_providers=usable_providers,
            open_breakers=set(open_breakers),
        )


class Estimate(BaseModel):
    model: str
    input_tokens: int
    output_tokens: int
    cost_usd: Usd


class Plan(BaseModel):
    model: str
    provider: str
    fallbacks: list[str]
    reason: str
    tier: Tier
    max_output_tokens: int
    estimated_input_tokens: int
    estimated_output_tokens: int
    estimated_cost_usd: Usd
    baseline: Estimate
    estimated_savings_usd: Usd
    preprocess: bool = Field(description="The document must be compressed to fit the chosen model.")
    document_cost_usd: Usd = Field(
        0.0, description="Expected cost of compressing the document (chunk summaries), in estimated_cost_usd."
    )
    document_budget_tokens: int | None = None
    rejected: dict[str, str] = {}

    @property
    def chain(self) -> list[str]:
        return [self.model, *self.fallbacks]


def plan(analysis: Analysis, constraints: Constraints, settings: Settings, max_tokens: int | None = None) -> Plan:
    catalog = settings.catalog
    day = datetime.now(tz=UTC).date()
    unknown = [name for name in constraints.preferred_models if not catalog.knows(name)]
    if unknown:
        raise PlanningError(
            f"unknown model(s) {', '.join(unknown)}: not in the catalog and not priced by the price library at any "
            f"configured account; catalog models: {', '.join(sorted(settings.models))}"
        )

    output_tokens = min(max_tokens or settings.default_max_output_tokens, EXPECTED_OUTPUT_TOKENS[analysis.tier])
    max_output = max_tokens or settings.default_max_output_tokens
    direct_input = _prompt_tokens(analysis)
    docs = settings.document_processing

    accepted: list[tuple[str, int, float, bool, int | None, int]] = []  # name, input, cost, preprocess, budget, output
    rejected: dict[str, str] = {}
    for name in _candidates(analysis.tier, constraints, settings, day):
        spec = catalog.spec(name)
        reason = _unusable(name, spec, constraints)
        if reason:
            rejected[name] = reason
            continue
        # the most the model may read: the whole prompt, or with the document compressed to the direct limit
        sent = (
            direct_input
            if not analysis.tokens.document
            else min(direct_input, direct_input - analysis.tokens.document + docs.max_direct_tokens)
        )
        output = _output_for(spec, sent, max_tokens, max_output, output_tokens)
        input_tokens, preprocess, budget = _fit(
            analysis, spec, direct_input, output, docs.max_direct_tokens, docs.enable_preprocessing
        )
        if input_tokens is None:
            rejected[name] = (
                f"needs {with_margin(direct_input):,} tokens of prompt (ours, with a {TOKENIZER_MARGIN_PCT}% margin "
                f"for the model's tokenizer) and {output:,} of output, window is {spec.context_window:,}"
            )
            continue
        cost = catalog.estimate(name, input_tokens, output_tokens, day)
        if constraints.max_cost_usd is not None and cost > constraints.max_cost_usd:
            rejected[name] = f"estimated ${cost:.6f} exceeds max_cost ${constraints.max_cost_usd:.6f}"
            continue
        accepted.append((name, input_tokens, cost, preprocess, budget, output))

    if not accepted:
        detail = "; ".join(f"{name}: {why}" for name, why in rejected.items())
        raise PlanningError(f"no model satisfies the constraints ({detail})", rejected)

    chosen, input_tokens, cost, preprocess, budget, chosen_output = accepted[0]
    baseline = baseline_estimate(analysis, settings, output_tokens)
    # Fallbacks beyond the configured chain must still beat the baseline, or "falling back" would cost more
    # than not using the orchestrator at all.
    chain = set(constraints.preferred_models) | set(settings.execution[analysis.tier].models)
    fallbacks = [
        name for name, _, fallback_cost, *_ in accepted[1:] if name in chain or fallback_cost < baseline.cost_usd
    ][: settings.max_fallbacks]
    return Plan(
        model=chosen,
        provider=catalog.spec(chosen).provider,
        fallbacks=fallbacks,
        reason=_reason(chosen, analysis, constraints, rejected),
        tier=analysis.tier,
        max_output_tokens=chosen_output,
        estimated_input_tokens=input_tokens,
        estimated_output_tokens=output_tokens,
        estimated_cost_usd=cost,
        baseline=baseline,
        estimated_savings_usd=baseline.cost_usd - cost,
        preprocess=preprocess,
        document_budget_tokens=budget,
        rejected=rejected,
    )


def baseline_estimate(analysis: Analysis, settings: Settings, output_tokens: int) -> Estimate:
    """The configured baseline model answering the naive prompt with the full, uncompressed context."""
    input_tokens = analysis.tokens.naive_prompt + analysis.tokens.document
    return Estimate(
        model=settings.baseline_model,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cost_usd=settings.catalog.estimate(settings.baseline_model, input_tokens, output_tokens),
    )


def _candidates(tier: Tier, constraints: Constraints, settings: Settings, day: date) -> list[str]:
    ordered = [*constraints.preferred_models, *settings.execution[tier].models]
    return list(dict.fromkeys([*ordered, *settings.catalog.cheapest_first(tier, day)]))


def _unusable(name: str, spec: ModelSpec, constraints: Constraints) -> str | None:
    if constraints.usable_providers is not None and spec.provider not in constraints.usable_providers:
        return f"no API key for provider {spec.provider}"
    if name in constraints.open_breakers:
        return "circuit breaker open"
    if constraints.min_context_window and spec.context_window < constraints.min_context_window:
        return f"window {spec.context_window:,} below required {constraints.min_context_window:,}"
    return None


def _prompt_tokens(analysis: Analysis) -> int:
    system = count_tokens(system_prompt(analysis.intent, analysis.tier))
    framing = 6 if analysis.tokens.context else 0
    framing += 8 if analysis.tokens.document else 0
    return system + analysis.tokens.total + framing


def _output_for(spec: ModelSpec, input_tokens: int, asked: int | None, default: int, expected: int) -> int:
    """The most output `spec` is asked for: what the caller asked (or the default), within the model's limit. The
    default, never an explicit ask, shrinks to what the window leaves after the prompt (counted with the margin for
    the model's own tokenizer), though not below the answer expected of the tier: a prompt that fits a small window
    is not refused for an output cap the caller never set."""
    wanted = min(asked or default, spec.max_output_tokens)
    if asked is not None:
        return wanted
    return max(min(wanted, spec.context_window - with_margin(input_tokens)), min(wanted, expected))


def _fit(
    analysis: Analysis,
    spec: ModelSpec,
    direct_input: int,
    max_output: int,
    max_direct_tokens: int,
    preprocessing_enabled: bool,
) -> tuple[int | None, bool, int | None]:
    """Input tokens the model would receive, whether the document must be compressed, and its token budget. The
    input must fit beside the output with the margin for the model's own tokenizer, which may count more than ours."""
    window_room = spec.context_window - max_output
    document = analysis.tokens.document
    if with_margin(direct_input) <= window_room and document <= max_direct_tokens:
        return direct_input, False, None
    if not document or not preprocessing_enabled:
        return None, False, None
    without_document = direct_input - document
    budget = min(max_direct_tokens, window_room * 100 // (100 + TOKENIZER_MARGIN_PCT) - without_document)
    if budget <= 0:
        return None, False, None
    return without_document + budget, True, budget


def _reason(chosen: str, analysis: Analysis, constraints: Constraints, rejected: dict[str, str]) -> str:
    if chosen in constraints.preferred_models:
        why = "caller's preferred model"
    else:
        why = f"first usable model of the {analysis.tier} chain for a {analysis.intent} request"
    skipped = [name for name in rejected if name in constraints.preferred_models]
    if skipped:
        why += f" (preferred {', '.join(skipped)} rejected: {'; '.join(rejected[name] for name in skipped)})"
    return why
