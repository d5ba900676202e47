"""Each provider's wire server beside the adapter that speaks to it, for the tests that run both in one process."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest

from shared.providers.anthropic_provider import AnthropicProvider
from shared.providers.base import Provider
from shared.providers.google_provider import GoogleProvider
from shared.providers.openai_provider import OpenAIProvider
from tests.wire.servers import AnthropicWireServer, GeminiWireServer, OpenAIWireServer, WireServer

MODELS = {"openai": "gpt-4o-mini", "anthropic": "claude-3-5-haiku-latest", "google": "gemini-2.0-flash"}
# Each provider's own words for why an answer ended: a whole answer, one cut at the output cap, a call of tools.
STOP = {"openai": "stop", "anthropic": "end_turn", "google": "STOP"}
LENGTH = {"openai": "length", "anthropic": "max_tokens", "google": "MAX_TOKENS"}
TOOL_FINISH = {"openai": "tool_calls", "anthropic": "tool_use", "google": "STOP"}
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


@dataclass
class WireCase:
    """One provider's running wire server and the adapter pointed at it."""

    kind: str
    server: WireServer
    provider: Provider

    @property
    def model(self) -> str:
        return MODELS[self.kind]


def wire_fixtures(case: type[WireCase], api_key: str) -> tuple[Any, Any]:
    """A test module's fixtures `_running` (each provider's server and adapter, started once per module) and
    `wire` (the same, its server's script and log reset for each test), built as `case`."""

    @pytest.fixture(scope="module", params=list(CASES), name="_running")
    def running(request: pytest.FixtureRequest) -> Iterator[WireCase]:
        with serving(request.param, api_key) as (server, provider):
            yield case(request.param, server, provider)

    @pytest.fixture(name="wire")
    def wire(_running: WireCase) -> WireCase:
        _running.server.reset()
        return _running

    return running, wire
