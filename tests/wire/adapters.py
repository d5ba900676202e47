"""Each provider's wire server beside the adapter that speaks to it, for the tests that run both in one process."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from shared.providers.anthropic_provider import AnthropicProvider
from shared.providers.base import Provider
from shared.providers.google_provider import GoogleProvider
from shared.providers.openai_provider import OpenAIProvider
from tests.wire.servers import AnthropicWireServer, GeminiWireServer, OpenAIWireServer, WireServer

MODELS = {"openai": "gpt-4o-mini", "anthropic": "claude-3-5-haiku-latest", "google": "gemini-2.0-flash"}
CASES: dict[str, tuple[type[WireServer], type[Any]]] = {
    "openai": (OpenAIWireServer, OpenAIProvider),
    "anthropic": (AnthropicWireServer, AnthropicProvider),
    "google": (GeminiWireServer, GoogleProvider),
}


def adapter(kind: str, api_key: str, base_url: str) -> Provider:
    return CASES[kind][1](f"test-{kind}", api_key, base_url)


@contextmanager
def serving(kind: str, api_key: str) -> Iterator[tuple[WireServer, Provider]]:
    """A running wire server for `kind` and the adapter pointed at it."""
    with CASES[kind][0]() as server:
        yield server, adapter(kind, api_key, server.url)
