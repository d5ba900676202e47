"""Request analysis: what a request is (intent), how hard it is (tier), and how big it is (tokens).

Deterministic and local: a lexicon of weighted cue words and a handful of structural features, so analysis costs
microseconds and gives the same answer on every machine. The features behind each score are returned with it,
because a routing decision nobody can explain is a routing decision nobody trusts.
"""

from __future__ import annotations

import math
import re
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from shared.prompts import NAIVE_SYSTEM_PROMPT, naive_user_prompt, render_context
from shared.settings import Settings, Tier
from shared.tokens import count_tokens


class Intent(StrEnum):
    read = "read"
    write = "write"
    search = "search"
    analyze = "analyze"
    manage = "manage"


class RequestOptions(BaseModel):
    """Caller's options, as in the original `orchestrate` tool."""

    model_config = {"extra": "forbid"}

    preferred_models: list[str] = Field(default_factory=list, description="Models to try first, in order.")
    max_cost: float | None = Field(None, gt=0, description="Maximum estimated cost of this request in USD.")
    max_tokens: int | None = Field(None, gt=0, le=200_000, description="Maximum output tokens asked of the model.")
    min_context_window: int | None = Field(None, gt=0, description="Only models with at least this window.")
    tier: Tier | None = Field(None, description="Force a complexity tier instead of the analysed one.")
    temperature: float | None = Field(None, ge=0, le=2)
    stop: list[Annotated[str, Field(min_length=1)]] = Field(
        default_factory=list, max_length=4, description="Up to 4 sequences that end the answer where they appear."
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


class Analysis(BaseModel):
    intent: Intent
    intent_scores: dict[Intent, float]
    tier: Tier
    complexity_score: float = Field(ge=0, le=1)
    features: dict[str, float]
    tokens: TokenCounts
    needs_preprocessing: bool


# Cue words per intent with weights. The first word (the imperative verb or question word) counts three times and
# the next two one and a half: "find the bug and fix it" is a search that leads to a write, "fix the bug you find"
# is a write.
_INTENT_CUES: dict[Intent, dict[str, float]] = {
    Intent.read: {
        "read": 2,
        "show": 2,
        "display": 2,
        "get": 1,
        "fetch": 1.5,
        "open": 1.5,
        "print": 1,
        "view": 1.5,
        "summarize": 2,
        "summarise": 2,
        "summary": 1.5,
        "tldr": 2,
        "what": 1,
        "who": 1,
        "when": 1,
        "define": 2,
        "definition": 1.5,
        "meaning": 1,
        "tell": 1,
        "describe": 1.5,
        "explain": 1,
        "translate": 1.5,
        "recall": 1,
        "content": 0.5,
        "contents": 1,
        "load": 1,
    },
    Intent.write: {
        "write": 2.5,
        "create": 2.5,
        "generate": 2,
        "implement": 2.5,
        "build": 2,
        "draft": 2,
        "compose": 2,
        "add": 1.5,
        "fix": 2,
        "refactor": 2.5,
        "rewrite": 2.5,
        "convert": 1.5,
        "edit": 2,
        "update": 1.5,
        "modify": 2,
        "change": 1,
        "code": 1,
        "function": 1,
        "class": 1,
        "endpoint": 1,
        "api": 0.5,
        "script": 1,
        "test": 1,
        "tests": 1,
        "email": 1,
        "letter": 1,
        "essay": 1.5,
        "poem": 2,
        "story": 1.5,
        "design": 2.5,
        "make": 1,
        "develop": 2,
        "crud": 1.5,
        "rest": 0.5,
        "append": 1.5,
        "insert": 1.5,
        "save": 1,
        "document": 0.5,
        "port": 1,
    },
    Intent.search: {
        "find": 2.5,
        "search": 3,
        "locate": 2.5,
        "lookup": 2,
        "look": 1,
        "where": 2,
        "which": 1,
        "grep": 3,
        "list": 1.5,
        "occurrences": 2,
        "occurrence": 2,
        "query": 1,
        "filter": 1.5,
        "match": 1,
        "matching": 1.5,
        "discover": 1.5,
        "retrieve": 1.5,
        "index": 0.5,
        "contains": 1,
        "containing": 1.5,
        "mentions": 1.5,
    },
    Intent.analyze: {
        "analyze": 3,
        "analyse": 3,
        "analysis": 2.5,
        "review": 2.5,
        "compare": 2.5,
        "comparison": 2,
        "evaluate": 2.5,
        "assess": 2.5,
        "audit": 2.5,
        "why": 2,
        "debug": 2,
        "diagnose": 2.5,
        "investigate": 2.5,
        "explain": 1.5,
        "critique": 2.5,
        "benchmark": 1.5,
        "profile": 1.5,
        "trade-offs": 2,
        "tradeoffs": 2,
        "pros": 1.5,
        "cons": 1.5,
        "root": 1,
        "cause": 1,
        "vulnerabilities": 2,
        "vulnerability": 2,
        "risk": 1.5,
        "risks": 1.5,
        "performance": 1,
        "bottleneck": 2,
        "bottlenecks": 2,
        "improve": 1,
        "improvements": 1.5,
        "quality": 1,
        "insights": 1.5,
        "patterns": 1,
        "trend": 1.5,
        "trends": 1.5,
        "metrics": 0.5,
        "reason": 1,
    },
    Intent.manage: {
        "deploy": 3,
        "deployment": 2,
        "restart": 3,
        "configure": 2.5,
        "install": 2.5,
        "schedule": 2,
        "delete": 2,
        "remove": 1.5,
        "migrate": 2,
        "migration": 1,
        "scale": 1,
        "monitor": 2,
        "provision": 3,
        "backup": 2.5,
        "restore": 2.5,
        "rollback": 3,
        "roll": 1,
        "manage": 3,
        "upgrade": 2,
        "start": 1,
        "stop": 1.5,
        "kill": 1.5,
        "cron": 1,
        "kubernetes": 1.5,
        "k8s": 1.5,
        "docker": 1,
        "cluster": 1,
        "server": 0.5,
        "service": 0.5,
        "permissions": 1.5,
        "rotate": 2,
        "archive": 1.5,
        "move": 1,
        "rename": 1.5,
        "setup": 2,
        "enable": 1.5,
        "disable": 1.5,
        "grant": 2,
        "revoke": 2,
        "pod": 1,
        "pods": 1,
        "nginx": 1,
    },
}
_CUES: dict[str, tuple[tuple[Intent, float], ...]] = {}
for _intent, _words in _INTENT_CUES.items():
    for _word, _weight in _words.items():
        _CUES[_word] = (*_CUES.get(_word, ()), (_intent, _weight))

# Words that signal depth: design, distributed systems, correctness under load, security, formal reasoning.
_DEPTH_CUES = frozenset(
    "architecture architect distributed concurrency concurrent scalable scalability scale security secure "
    "authentication authorization oauth encryption consistency transaction transactions idempotent race "
    "algorithm algorithms optimize optimization complexity proof prove formal invariant invariants "
    "migration microservices microservice fault tolerant tolerance replication sharding kubernetes "
    "production multi-tenant tenant compliance gdpr hipaa threat latency throughput benchmark pipeline "
    "tradeoffs trade-offs strategy roadmap refactor refactoring legacy backward compatibility protocol "
    "end-to-end e2e async asynchronous parallel streaming cache caching observability resilience".split()
)
_CONSTRAINT_CUES = frozenset(
    "must should ensure without including include support supports handle handles avoid only exactly "
    "require requires required never always within under least most constraint constraints".split()
)
_STEP_CUES = frozenset("then after afterwards finally next also additionally first second third step steps".split())
_SIMPLE_OPENERS = frozenset("what who when where define translate is are does do how".split())
_CODE_LANGS = frozenset(
    "api rest endpoint endpoints crud schema database python javascript typescript java golang rust sql bash "
    "shell c++ c# kotlin swift ruby php scala "
    "fastapi django flask react vue postgresql postgres mysql redis celery terraform yaml json graphql".split()
)

_WORD = re.compile(r"[a-z0-9][a-z0-9+#_-]*")
_CODE_MARK = re.compile(r"```|\bdef |\bclass |\bimport |=>|\(\)|\w+\(\w*\)|\{\s*\}|;\s*$|</?\w+>", re.MULTILINE)
_LIST_ITEM = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+", re.MULTILINE)

# How the features weigh into a complexity score in [0, 1].
_INTENT_BASE = {Intent.read: 0.0, Intent.search: 0.05, Intent.manage: 0.15, Intent.write: 0.2, Intent.analyze: 0.25}
_TIER_BOUNDS = (0.3, 0.6)  # below the first: simple; below the second: moderate; else complex
_SCAN_CHARS = 4000  # cue words are read from the head of a request; token counts always cover all of it


_NAIVE_SYSTEM_TOKENS = count_tokens(NAIVE_SYSTEM_PROMPT)


def analyze(
    request: str,
    context: dict[str, Any] | None,
    options: RequestOptions | None,
    settings: Settings,
    document: str | None = None,
    document_tokens: int | None = None,
) -> Analysis:
    """Classify and size a request. `document_tokens` skips recounting a stored document whose size is known."""
    options = options or RequestOptions()
    context = context or {}
    head = request[:_SCAN_CHARS].lower()
    words = _WORD.findall(head)

    intent_scores = _intent_scores(words)
    intent = max(intent_scores, key=intent_scores.__getitem__) if any(intent_scores.values()) else Intent.read

    rendered_context = render_context(context) if context else ""
    tokens = TokenCounts(
        request=count_tokens(request),
        context=count_tokens(rendered_context),
        document=document_tokens if document_tokens is not None else count_tokens(document or ""),
        naive_prompt=_NAIVE_SYSTEM_TOKENS + count_tokens(naive_user_prompt(request, context)),
    )
    context_words = _WORD.findall(rendered_context[:_SCAN_CHARS].lower())
    features = _complexity_features(head, words, context_words, tokens)
    score = _score(intent, features)
    tier = options.tier or (
        Tier.simple if score < _TIER_BOUNDS[0] else Tier.moderate if score < _TIER_BOUNDS[1] else Tier.complex
    )
    return Analysis(
        intent=intent,
        intent_scores=intent_scores,
        tier=tier,
        complexity_score=round(score, 4),
        features=features,
        tokens=tokens,
        needs_preprocessing=tokens.document > settings.document_processing.max_direct_tokens,
    )


def _intent_scores(words: list[str]) -> dict[Intent, float]:
    scores = dict.fromkeys(Intent, 0.0)
    for position, word in enumerate(words):
        cues = _CUES.get(word)
        if cues:
            boost = 3.0 if position == 0 else 1.5 if position < 3 else 1.0
            for intent, weight in cues:
                scores[intent] += weight * boost
    return {intent: round(value, 2) for intent, value in scores.items()}


def _complexity_features(
    head: str, words: list[str], context_words: list[str], tokens: TokenCounts
) -> dict[str, float]:
    word_set = set(words).union(context_words)
    sentences = head.count(". ") + head.count("? ") + head.count("\n") + 1
    return {
        "request_tokens": float(tokens.request),
        "context_tokens": float(tokens.context + tokens.document),
        "depth_terms": float(len(word_set & _DEPTH_CUES)),
        "constraints": float(sum(1 for w in words if w in _CONSTRAINT_CUES) + len(_LIST_ITEM.findall(head))),
        "steps": float(sum(1 for w in words if w in _STEP_CUES)),
        "code": float(len(_CODE_MARK.findall(head)) + len(word_set & _CODE_LANGS)),
        "sentences": float(sentences),
        "simple_question": float(bool(words) and words[0] in _SIMPLE_OPENERS and tokens.request <= 20),
    }


def _saturate(value: float, half: float) -> float:
    """0 at 0, 0.5 at `half`, approaching 1: diminishing returns for every extra cue."""
    return value / (value + half) if value > 0 else 0.0


def _score(intent: Intent, f: dict[str, float]) -> float:
    size = _saturate(math.log1p(f["request_tokens"]) - math.log1p(12), 2.0) if f["request_tokens"] > 12 else 0.0
    score = (
        _INTENT_BASE[intent]
        + 0.20 * size
        + 0.10 * _saturate(f["context_tokens"], 4000)
        + 0.30 * _saturate(f["depth_terms"], 2)
        + 0.20 * _saturate(f["constraints"], 3)
        + 0.10 * _saturate(f["steps"], 2)
        + 0.15 * _saturate(f["code"], 1.5)
        - 0.15 * f["simple_question"]
    )
    return min(1.0, max(0.0, score))
