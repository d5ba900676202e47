"""Request analysis: what a request asks (intent), what it exercises (skill), how likely a cheap model falls short
(difficulty), which tier that calls for at the quality target, and how big it is (tokens).

Deterministic and local: cue words, structure and a small learned model loaded once, so analysis costs
microseconds and gives the same answer on every machine. The evidence behind each decision is returned with it,
because a routing decision nobody can explain is a routing decision nobody trusts.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from shared.prompts import NAIVE_SYSTEM_PROMPT, naive_user_prompt, render_context
from shared.routing.difficulty import DifficultyModel, model_in
from shared.routing.features import focus, structure
from shared.routing.intent import WORD, Intent, classify_intent, intent_scores
from shared.routing.skills import Skill, read_skill
from shared.settings import Settings, Tier
from shared.tokens import count_tokens, encode

#: The longest stop sequence passed on to a provider.
MAX_STOP_CHARS = 256


class RequestOptions(BaseModel):
    """Caller's options, as in the original `orchestrate` tool."""

    model_config = {"extra": "forbid"}

    preferred_models: list[Annotated[str, Field(max_length=128)]] = Field(
        default_factory=list, max_length=32, description="Models to try first, in order."
    )
    max_cost: float | None = Field(None, gt=0, description="Maximum estimated cost of this request in USD.")
    max_tokens: int | None = Field(None, gt=0, le=200_000, description="Maximum output tokens asked of the model.")
    min_context_window: int | None = Field(None, gt=0, description="Only models with at least this window.")
    quality_target: float | None = Field(
        None,
        ge=0.5,
        le=1.0,
        description="Share of the strongest tier's quality to keep (default: routing.quality_target, 0.95). Higher "
        "sends more requests to stronger tiers.",
    )
    tier: Tier | None = Field(None, description="Force a tier instead of the one the quality target calls for.")
    temperature: float | None = Field(None, ge=0, le=2)
    stop: list[Annotated[str, Field(min_length=1, max_length=MAX_STOP_CHARS)]] = Field(
        default_factory=list,
        max_length=4,
        description=f"Up to 4 sequences of at most {MAX_STOP_CHARS} characters that end the answer where they appear.",
    )
    cache: bool = Field(True, description="Answer from the exact-match response cache when possible.")
    strategy: Literal["auto", "extractive", "hierarchical", "semantic", "hybrid"] | None = Field(
        None, description="How to compress a document that does not fit the model (default: configured, auto)."
    )


class TokenCounts(BaseModel):
    request: int
    context: int
    document: int
    naive_prompt: int = Field(description="System and user prompt of a naive integration, without the document.")

    @property
    def total(self) -> int:
        return self.request + self.context + self.document


class TierDecision(BaseModel):
    quality_target: float
    thresholds: dict[Tier, float] = Field(
        default_factory=dict,
        description="Per cheaper tier, the largest difficulty it takes at this target (-1: none); not kept on a "
        "finished job's record.",
    )
    expected_quality: float = Field(description="What routing at this target kept of the strong tier's quality.")
    reason: str


class Analysis(BaseModel):
    intent: Intent
    intent_scores: dict[Intent, float] = Field(default_factory=dict, description="Not kept on a finished record.")
    skill: Skill
    skill_evidence: list[str]
    complexity_score: float = Field(
        ge=0, le=1, description="Difficulty: the learned chance that a cheap model falls short of the strong one."
    )
    difficulty_evidence: list[str]
    tier: Tier
    decision: TierDecision
    features: dict[str, float] = Field(default_factory=dict, description="Not kept on a finished record.")
    tokens: TokenCounts
    needs_preprocessing: bool


_SCAN_CHARS = 4000  # cue words are read from the head of a request; token counts always cover all of it
_NAIVE_SYSTEM_TOKENS = count_tokens(NAIVE_SYSTEM_PROMPT)


def analyze(
    request: str,
    context: dict[str, Any] | None,
    options: RequestOptions | None,
    settings: Settings,
    document: str | None = None,
    document_tokens: int | None = None,
    model: DifficultyModel | None = None,
) -> Analysis:
    """Classify, score and size a request. `document_tokens` skips recounting a stored document of known size."""
    options = options or RequestOptions()
    context = context or {}
    model = model or model_in(settings.routing.model_dir)
    scores = intent_scores(WORD.findall(request[:_SCAN_CHARS].lower()))

    request_ids = encode(request)
    question = focus(request)
    question_ids = request_ids if question == request else encode(question)
    question_words = WORD.findall(question.lower())
    shape = structure(question, question_words)
    skill = read_skill(question, question_words, shape)
    features = shape.features
    difficulty = model.estimate(features, skill.skill, question_ids)
    decision = _decide(model, difficulty.probability, skill.skill, options, settings)

    rendered_context = render_context(context) if context else ""
    tokens = TokenCounts(
        request=len(request_ids),
        context=count_tokens(rendered_context),
        document=document_tokens if document_tokens is not None else count_tokens(document or ""),
        naive_prompt=_NAIVE_SYSTEM_TOKENS + count_tokens(naive_user_prompt(request, context)),
    )
    return Analysis(
        intent=classify_intent(scores),
        intent_scores=scores,
        skill=skill.skill,
        skill_evidence=skill.evidence,
        complexity_score=difficulty.probability,
        difficulty_evidence=difficulty.evidence,
        tier=options.tier or decision[0],
        decision=decision[1],
        features=features,
        tokens=tokens,
        needs_preprocessing=tokens.document > settings.document_processing.max_direct_tokens,
    )


def _decide(
    model: DifficultyModel, difficulty: float, skill: Skill, options: RequestOptions, settings: Settings
) -> tuple[Tier, TierDecision]:
    """The cheapest tier whose threshold at the quality target admits this difficulty."""
    target = options.quality_target or settings.routing.quality_target
    row = model.calibration.row(target)
    chosen = model.calibration.tier_for(difficulty, target)
    tier = Tier(chosen) if chosen else Tier.complex
    admitted = ", ".join(f"{name} up to {value:.3f}" for name, value in row.thresholds.items() if value >= 0)
    if options.tier:
        reason = f"tier {options.tier} forced by the caller (the quality target would pick {tier})"
    else:
        reason = (
            f"{skill} request of difficulty {difficulty:.3f}; at quality target {target:.2f} the cheaper tiers take "
            f"{admitted or 'nothing'}, so {tier}"
        )
    thresholds = {Tier(name): value for name, value in row.thresholds.items()}
    return tier, TierDecision(quality_target=target, thresholds=thresholds, expected_quality=row.quality, reason=reason)
