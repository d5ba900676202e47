"""Prompt generation: a compact system prompt per intent and tier, and the request with its context.

Every token of the prompt is paid for on every call, so the prompt says what the model needs and nothing else:
one line of role and format per intent, one line of depth per tier, the caller's context flattened to
`key: value` lines (no JSON braces, quotes or indentation), and the document last, fenced once.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shared.routing.intent import Intent
    from shared.settings import Tier

_INTENT_LINES = {
    "read": "Answer from the given material or your knowledge; be accurate.",
    "write": "Produce the requested artifact; code in fenced blocks; no preamble.",
    "search": "Find what is asked; list each match with where it is.",
    "analyze": "Analyse and reason from evidence; give conclusions first, then support.",
    "manage": "Give exact, safe operational steps or commands; note risks and rollback.",
}
_TIER_LINES = {
    "simple": "Be brief.",
    "moderate": "Be complete but concise.",
    "complex": "Cover requirements and edge cases; state assumptions.",
}

#: What a naive integration sends: a generic preamble and everything pretty-printed. The baseline is priced on it.
NAIVE_SYSTEM_PROMPT = (
    "You are a helpful, knowledgeable and highly capable AI assistant. Your goal is to provide accurate, "
    "thorough, well-structured and helpful responses to the user's requests. Always think carefully about the "
    "request, consider all of the provided context, explain your reasoning clearly, and format your answer "
    "in a readable way using headings, lists and code blocks where appropriate."
)


def system_prompt(intent: Intent | str, tier: Tier | str) -> str:
    return f"{_INTENT_LINES[str(intent)]} {_TIER_LINES[str(tier)]}"


def render_context(context: dict[str, Any]) -> str:
    """Flatten a context mapping to `key: value` lines; nested keys are joined with dots."""
    lines: list[str] = []
    _flatten(context, "", lines)
    return "\n".join(lines)


def _flatten(value: Any, prefix: str, lines: list[str]) -> None:
    if isinstance(value, dict) and value:
        for key, item in value.items():
            _flatten(item, f"{prefix}.{key}" if prefix else str(key), lines)
    elif isinstance(value, list) and all(isinstance(item, str | int | float | bool) for item in value):
        lines.append(f"{prefix}: {', '.join(str(item) for item in value)}")
    elif isinstance(value, str | int | float | bool) or value is None:
        lines.append(f"{prefix}: {value}")
    else:
        lines.append(f"{prefix}: {json.dumps(value, separators=(',', ':'), ensure_ascii=False, default=str)}")


def user_prompt(request: str, context: dict[str, Any] | None, document: str | None = None) -> str:
    parts = [request.strip()]
    if context:
        parts.append(f"Context:\n{render_context(context)}")
    if document:
        parts.append(f"Document:\n<<<\n{document}\n>>>")
    return "\n\n".join(parts)


def naive_user_prompt(request: str, context: dict[str, Any] | None, document: str | None = None) -> str:
    """The "dump everything" prompt a direct integration typically sends, for baseline pricing and comparison."""
    payload: dict[str, Any] = {"request": request, "context": context or {}}
    if document:
        payload["document"] = document
    return "Please help me with the following request. Here is all of the information:\n\n" + json.dumps(
        payload, indent=2, ensure_ascii=False, default=str
    )
