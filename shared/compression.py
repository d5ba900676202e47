"""Document compression: which strategy, what the result is, and the cache that makes a repeated query free.

Strategies:
- `extractive`: the passages most relevant to the request, in order, with their source offsets. No LLM.
- `semantic`: the same statistics, taken round-robin across topic segments, so every topic keeps a voice. No LLM.
- `hierarchical`: each chunk summarised by the cheap long-context model, summaries reduced level by level until
  they fit the budget.
- `hybrid`: the most relevant passages verbatim (half the budget), then summaries of the chunks they leave out.

`auto` takes extractive for questions that look something up, hierarchical for summaries and overviews, hybrid
for the rest; anything needing an LLM falls back to extractive when no provider key can serve the preprocessor.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from enum import StrEnum

import redis
from pydantic import BaseModel

from shared.execution import Executor, Served
from shared.extractive import SEPARATOR, ChunkStats, query_terms, select
from shared.providers import Message, ProviderRequest
from shared.routing import Analysis, Intent
from shared.settings import ChunkingSettings, Settings, Tier
from shared.store import key
from shared.tokens import TOKENIZER_MARGIN_PCT, count_tokens, with_margin


class Strategy(StrEnum):
    extractive = "extractive"
    hierarchical = "hierarchical"
    semantic = "semantic"
    hybrid = "hybrid"

    @property
    def needs_llm(self) -> bool:
        return self in (Strategy.hierarchical, Strategy.hybrid)


_SUMMARY_WORDS = re.compile(r"\b(summar\w*|overview|tl;?dr|gist|outline|recap|digest)\b", re.IGNORECASE)


def choose_strategy(
    requested: str | None, analysis: Analysis, request: str, llm_available: bool
) -> tuple[Strategy, str]:
    """The strategy to run and why; never one that needs an LLM when none can be called."""
    if requested and requested != "auto":
        strategy = Strategy(requested)
        if strategy.needs_llm and not llm_available:
            return Strategy.extractive, f"{strategy} needs an LLM and no preprocessor model is usable"
        return strategy, "requested"
    if _SUMMARY_WORDS.search(request):
        wanted, why = Strategy.hierarchical, "the request asks for a summary"
    elif analysis.intent in (Intent.search, Intent.read):
        wanted, why = Strategy.extractive, f"a {analysis.intent} request looks passages up"
    else:
        wanted, why = Strategy.hybrid, f"an {analysis.intent} request needs detail and coverage"
    if wanted.needs_llm and not llm_available:
        return Strategy.extractive, f"{why}, but no preprocessor model is usable"
    return wanted, why


class Preprocessing(BaseModel):
    """What the preprocessing tasks carry: references and numbers, never the document."""

    document_id: str
    strategy: Strategy
    query: str
    budget: int
    cache_key: str
    llm_chain: list[str] = []
    job_id: str | None = None
    tier: str | None = None
    tenant: str | None = None  # whose summaries these are: cached and reused within the tenant only

    @property
    def run_id(self) -> str:
        """What the map/reduce's chunk results are kept under: the job's id, or for work without a job (a warm-up
        of the summary cache) its cache key's digest."""
        return self.job_id or self.cache_key.rsplit(":", 1)[-1]


class Compressed(BaseModel):
    """A document reduced to fit a budget: the text the model reads, and where it came from."""

    document_id: str
    strategy: Strategy
    text: str
    tokens: int
    original_tokens: int
    chunks: int
    passages: list[tuple[int, int]] = []  # source byte ranges of verbatim passages, in document order
    cost_usd: float = 0.0  # what the chunk summaries cost
    note: str = ""  # why the strategy fell back, if it did
    problems: list[str] = []  # chunks (or reduce groups) not summarised, or summarised only in part, and why


def summary_key(
    settings: Settings,
    document_id: str,
    strategy: Strategy,
    query: str,
    budget: int,
    tenant: str | None = None,
    summariser: str | None = None,
) -> str:
    """The key of a compression, per tenant (a hit would tell another tenant what was asked of the document). It
    names the chunking settings and, for the LLM strategies, the summarising model: a compression made otherwise is
    not the one asked for."""
    normalised = " ".join(query.lower().split())
    chunking = settings.document_processing.chunking.model_dump()
    made_by = summariser if strategy.needs_llm else None
    parts = [document_id, strategy, normalised, budget, chunking, made_by]
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
    return key(settings, "summary", digest) if tenant is None else key(settings, "summary", tenant, digest)


class SummaryCache:
    def __init__(self, settings: Settings, client: redis.Redis) -> None:
        self.settings = settings
        self.redis = client

    def get(self, cache_key: str) -> Compressed | None:
        raw = self.redis.get(cache_key)
        return Compressed.model_validate_json(raw) if raw else None

    def put(self, cache_key: str, compressed: Compressed) -> None:
        ttl = self.settings.document_processing.cache_ttl_seconds
        self.redis.set(cache_key, compressed.model_dump_json(), ex=ttl)


def preprocessor_chain(settings: Settings, usable_providers: set[str], open_breakers: set[str]) -> list[str]:
    """Models that may summarise chunks: the configured preprocessor first, then the simple tier's chain."""
    preferred = settings.document_processing.preprocessor_model
    candidates = [*([preferred] if preferred else []), *settings.execution[Tier.simple].models]
    return [
        model
        for model in dict.fromkeys(candidates)
        if settings.catalog.spec(model).provider in usable_providers and model not in open_breakers
    ]


_SUMMARY_SYSTEM = (
    "Summarise the given part of a larger document faithfully and densely. Keep names, numbers, dates, "
    "identifiers and anything relevant to the focus. No preamble."
)


#: The longest summary a chunk is asked for.
MAX_SUMMARY_TOKENS = 1024
#: Tokens of the instructions around a chunk (system prompt, focus, part label), with room to spare.
SUMMARY_PROMPT_TOKENS = 160


class PromptTooLong(ValueError):
    """A prompt that leaves no room in the model's window for the answer asked of it: refused before the call."""


def summary_tokens_per_chunk(budget: int, chunks: int) -> int:
    """How long each chunk's summary may be: together, about half the budget."""
    return max(64, min(MAX_SUMMARY_TOKENS, budget // (2 * chunks)))


def summariser_window(settings: Settings, chain: list[str]) -> int:
    """The context window every model of the summariser chain has: the smallest of theirs."""
    return min(settings.catalog.spec(model).context_window for model in chain)


def chunk_room(window: int) -> int:
    """The longest chunk (by our count) that a window of `window` tokens takes with the instructions, the longest
    summary asked for and the tokenizer margin."""
    return (window - SUMMARY_PROMPT_TOKENS - MAX_SUMMARY_TOKENS) * 100 // (100 + TOKENIZER_MARGIN_PCT)


def fitted_chunking(chunking: ChunkingSettings, window: int) -> ChunkingSettings:
    """`chunking` with chunks no longer than a summariser of `window` tokens takes (`chunk_room`)."""
    room = chunk_room(window)
    if room >= chunking.max_chunk_size:
        return chunking
    if room < 64:
        raise PromptTooLong(
            f"a summariser with a {window:,}-token window has no room for a chunk: it needs "
            f"{SUMMARY_PROMPT_TOKENS} tokens of instructions and up to {MAX_SUMMARY_TOKENS} of summary"
        )
    size = min(chunking.default_chunk_size, room)
    return ChunkingSettings(
        default_chunk_size=size,
        max_chunk_size=room,
        min_chunk_size=min(chunking.min_chunk_size, size // 2),
        overlap_size=min(chunking.overlap_size, size // 10),
    )


def output_room(window: int, prompt_tokens: int, wanted: int) -> int:
    """`wanted` output tokens, clamped to what a window of `window` leaves after a prompt of `prompt_tokens` (by
    our count, with the tokenizer margin); a prompt that leaves fewer than 16 is `PromptTooLong`, with the numbers."""
    room = window - with_margin(prompt_tokens)
    if room < 16:
        raise PromptTooLong(
            f"the prompt is {prompt_tokens:,} tokens ({with_margin(prompt_tokens):,} with a {TOKENIZER_MARGIN_PCT}% "
            f"margin for the model's own tokenizer) and the window {window:,}: no room for an answer"
        )
    return min(wanted, room)


def summaries_cost_usd(work: Preprocessing, document_tokens: int, settings: Settings, worst_case: bool) -> float:
    """What the LLM strategies' summaries cost: every chunk read (with its overlap) and summarised, plus one reduce
    level writing the whole budget. `worst_case` prices it all at the summariser chain's dearest rates (what a
    budget must reserve); otherwise at its first model's (what to expect)."""
    if not work.strategy.needs_llm or not work.llm_chain:
        return 0.0
    chunking = settings.document_processing.chunking
    chunks = max(1, -(-document_tokens // (chunking.default_chunk_size - chunking.overlap_size)))
    read = document_tokens + chunks * (chunking.overlap_size + 100)
    written = chunks * summary_tokens_per_chunk(work.budget, chunks) + work.budget
    if not worst_case:
        return settings.catalog.estimate(work.llm_chain[0], read, written)
    sheets = [settings.catalog.sheet(model) for model in work.llm_chain]
    return read * max(s.input.highest for s in sheets) + written * max(s.output.highest for s in sheets)


def summarize(
    executor: Executor, chain: list[str], text: str, focus: str, max_tokens: int, part: str, tenant: str | None = None
) -> Served:
    """One summary by the first model of `chain` that answers (retries, breakers and `tenant`'s cache included). Its
    `max_tokens` is clamped to what the chain's smallest window leaves after the prompt; a prompt that leaves no room
    is `PromptTooLong` before any call."""
    content = f"Focus: {focus}\nPart {part}, at most {max_tokens} tokens:\n<<<\n{text}\n>>>"
    window = summariser_window(executor.settings, chain)
    max_tokens = output_room(window, count_tokens(_SUMMARY_SYSTEM) + count_tokens(content) + 8, max_tokens)

    def request_for(model: str) -> ProviderRequest:
        return ProviderRequest(
            model=executor.settings.catalog.spec(model).provider_model or model,
            system=_SUMMARY_SYSTEM,
            messages=[Message(role="user", content=content)],
            max_tokens=max_tokens,
            timeout_s=executor.settings.provider_timeout_seconds,
        )

    return executor.complete(chain, request_for, tenant=tenant)


def compose(
    strategy: Strategy,
    stats: list[ChunkStats],
    summaries: dict[int, str],
    query: str,
    budget: int,
    read: Callable[[int, int], str],
) -> tuple[str, list[tuple[int, int]], str]:
    """The compressed text, the verbatim source ranges it keeps, and a note when a strategy had to fall back."""
    terms = query_terms(query)
    note = ""
    if strategy.needs_llm and len(summaries) < len(stats):
        note = f"{len(stats) - len(summaries)} of {len(stats)} chunk summaries failed; fell back to extractive"
        strategy = Strategy.extractive
    if strategy is Strategy.hierarchical:
        parts = [f"[part {chunk + 1}/{len(stats)}] {summaries[chunk]}" for chunk in sorted(summaries)]
        return "\n\n".join(parts), [], note
    share = budget // 2 if strategy is Strategy.hybrid else budget
    selected = select(stats, terms, share, by_topic=strategy is Strategy.semantic)
    ranges = _merge([(p.start_byte, p.end_byte) for p in selected])
    text = SEPARATOR.join(read(start, end) for start, end in ranges)
    if strategy is Strategy.hybrid:
        covered = {s.chunk for s in stats for p in s.passages if any(a <= p[0] < b for a, b in ranges)}
        room = budget - count_tokens(text)
        extra = []
        for chunk in sorted(summaries):
            if chunk not in covered:
                line = f"[summary of part {chunk + 1}/{len(stats)}] {summaries[chunk]}"
                cost = count_tokens(line) + 2
                if cost <= room:
                    extra.append(line)
                    room -= cost
        if extra:
            text = text + "\n\n" + "\n\n".join(extra)
    return text, ranges, note


def _merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Adjacent passages become one range, so the model reads them as the continuous text they are."""
    merged: list[tuple[int, int]] = []
    for start, end in ranges:
        if merged and merged[-1][1] == start:
            merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged
