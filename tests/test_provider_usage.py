"""Cached input, cache writes and reasoning: each adapter reads them from its SDK's answer, streamed or not.

Every provider counts them differently (OpenAI and Gemini count cache reads inside the prompt, Anthropic beside it;
OpenAI and Anthropic count reasoning inside the output, Gemini beside it), and every `Completion` must come out the
same: `input_tokens` and `output_tokens` the billed totals, the other counts the parts of them. Nothing is mocked:
the real SDKs parse what the wire servers send in each provider's own format.
"""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import pytest

from shared.providers.base import Completion, Message, ProviderRequest
from tests.wire.adapters import STOP, WireCase, serving, wire_fixtures
from tests.wire.servers import AnthropicWireServer, Reply, WireServer

API_KEY = "sk-test-usage-0123456789"
# A 100-token prompt of which 60 were read from the cache and 25 written to it; a 4-token answer after 30 of
# reasoning.
CACHED_AND_REASONING = Reply(
    text="Six, after some thought.",
    input_tokens=100,
    cached_tokens=60,
    cache_write_tokens=25,
    output_tokens=4,
    reasoning_tokens=30,
)


class Usage(WireCase):
    def request(self) -> ProviderRequest:
        return ProviderRequest(
            model=self.model,
            system="You are terse.",
            messages=[Message(role="user", content="And three plus three?")],
            max_tokens=64,
            timeout_s=5.0,
        )

    def answer(self, *, stream: bool) -> Completion:
        if not stream:
            return self.provider.complete(self.request())
        items = list(self.provider.stream(self.request()))
        assert sum(isinstance(item, Completion) for item in items) == 1
        assert isinstance(items[-1], Completion)
        return items[-1]


_running, wire = wire_fixtures(Usage, API_KEY)
STREAM = pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])


@STREAM
def test_cached_written_and_reasoning_tokens_are_parts_of_the_billed_totals(wire: Usage, stream: bool) -> None:
    wire.server.push(CACHED_AND_REASONING)
    answer = wire.answer(stream=stream)
    assert answer == Completion(
        text="Six, after some thought.",
        input_tokens=100,  # cache reads and writes included, whether the provider counts them inside or beside
        output_tokens=4 + 30,  # reasoning included, whether the provider counts it inside or beside
        cached_input_tokens=60,
        # Gemini reports no cache writes: its 25 went out as uncached prompt, still inside the 100
        cache_write_tokens=0 if wire.kind == "google" else 25,
        reasoning_tokens=30,
        model=wire.model,
        finish_reason=STOP[wire.kind],
        usage_reported=True,
    )


@STREAM
def test_cache_reads_alone(wire: Usage, stream: bool) -> None:
    wire.server.push(Reply(text="Six.", input_tokens=50, cached_tokens=50, output_tokens=1))
    answer = wire.answer(stream=stream)
    assert (answer.input_tokens, answer.cached_input_tokens, answer.cache_write_tokens) == (50, 50, 0)
    assert (answer.output_tokens, answer.reasoning_tokens) == (1, 0)


@STREAM
def test_reasoning_alone(wire: Usage, stream: bool) -> None:
    wire.server.push(Reply(text="Six.", input_tokens=12, output_tokens=1, reasoning_tokens=200))
    answer = wire.answer(stream=stream)
    assert (answer.input_tokens, answer.cached_input_tokens, answer.cache_write_tokens) == (12, 0, 0)
    assert (answer.output_tokens, answer.reasoning_tokens) == (201, 200)


@STREAM
def test_a_reply_without_cache_or_reasoning_reports_zeros(wire: Usage, stream: bool) -> None:
    wire.server.push(Reply(text="Six.", input_tokens=41, output_tokens=7))
    answer = wire.answer(stream=stream)
    assert answer == Completion(
        text="Six.",
        input_tokens=41,
        output_tokens=7,
        cached_input_tokens=0,
        cache_write_tokens=0,
        reasoning_tokens=0,
        model=wire.model,
        finish_reason=STOP[wire.kind],
        usage_reported=True,
    )


@STREAM
def test_no_usage_at_all_is_estimated_with_zero_parts(wire: Usage, stream: bool) -> None:
    wire.server.push(Reply(text="Six.", usage=False, cached_tokens=5, reasoning_tokens=9))
    answer = wire.answer(stream=stream)
    assert answer.usage_reported is False and answer.input_tokens > 0 and answer.output_tokens > 0
    assert (answer.cached_input_tokens, answer.cache_write_tokens, answer.reasoning_tokens) == (0, 0, 0)


@STREAM
def test_anthropic_counts_repeated_in_message_delta_are_taken_once(stream: bool) -> None:
    """The Messages API may repeat the cumulative input-side counts in `message_delta`: the adapter keeps the latest
    of each, and never adds them to those of `message_start`."""
    with serving("anthropic", API_KEY) as (server, provider):
        assert isinstance(server, AnthropicWireServer)
        server.delta_input = True
        server.push(CACHED_AND_REASONING)
        answer = Usage("anthropic", server, provider).answer(stream=stream)
    assert (answer.input_tokens, answer.cached_input_tokens, answer.cache_write_tokens) == (100, 60, 25)
    assert (answer.output_tokens, answer.reasoning_tokens) == (34, 30)


@STREAM
def test_gemini_thought_text_counts_as_reasoning(stream: bool) -> None:
    with serving("google", API_KEY) as (server, provider):
        server.thinking = "Three and three make six, so"  # type: ignore[attr-defined]
        server.push(Reply(text="Six.", input_tokens=20, output_tokens=1))
        answer = Usage("google", server, provider).answer(stream=stream)
    assert answer.text == "Six."
    assert (answer.input_tokens, answer.output_tokens, answer.reasoning_tokens) == (20, 1 + 6, 6)


# the wire servers' usage formats, which the tests above rely on ----------------------------------------------------


def _post(server: WireServer, path: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        server.base_url + path, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


def _usage_on_the_wire(kind: str, reply: Reply) -> dict[str, Any]:
    with serving(kind, API_KEY) as (server, _):
        server.push(reply)
        user = [{"role": "user", "content": "hi"}]
        if kind == "openai":
            return _post(server, "/v1/chat/completions", {"model": "m", "messages": user})["usage"]
        if kind == "anthropic":
            return _post(server, "/v1/messages", {"model": "m", "max_tokens": 9, "messages": user})["usage"]
        contents = [{"role": "user", "parts": [{"text": "hi"}]}]
        return _post(server, "/v1beta/models/m:generateContent", {"contents": contents})["usageMetadata"]


def test_wire_servers_report_cache_and_reasoning_in_their_providers_format() -> None:
    assert _usage_on_the_wire("openai", CACHED_AND_REASONING) == {
        "prompt_tokens": 100,
        "completion_tokens": 34,
        "total_tokens": 134,
        "prompt_tokens_details": {"cached_tokens": 60, "audio_tokens": 0, "cache_write_tokens": 25},
        "completion_tokens_details": {
            "reasoning_tokens": 30,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }
    assert _usage_on_the_wire("anthropic", CACHED_AND_REASONING) == {
        "input_tokens": 15,
        "cache_creation_input_tokens": 25,
        "cache_read_input_tokens": 60,
        "output_tokens": 34,
        "output_tokens_details": {"thinking_tokens": 30},
    }
    assert _usage_on_the_wire("google", CACHED_AND_REASONING) == {
        "promptTokenCount": 100,
        "candidatesTokenCount": 4,
        "totalTokenCount": 134,
        "cachedContentTokenCount": 60,
        "thoughtsTokenCount": 30,
    }


def test_wire_servers_report_no_cache_or_reasoning_as_the_apis_do() -> None:
    plain = Reply(text="Six.", input_tokens=41, output_tokens=7)
    assert _usage_on_the_wire("openai", plain) == {"prompt_tokens": 41, "completion_tokens": 7, "total_tokens": 48}
    assert _usage_on_the_wire("anthropic", plain) == {
        "input_tokens": 41,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": 7,
    }
    assert _usage_on_the_wire("google", plain) == {
        "promptTokenCount": 41,
        "candidatesTokenCount": 7,
        "totalTokenCount": 48,
    }


def test_a_reply_cannot_cache_more_than_its_input() -> None:
    with pytest.raises(ValueError, match="part of input_tokens"):
        Reply(input_tokens=10, cached_tokens=6, cache_write_tokens=5)
    with pytest.raises(ValueError, match="negative"):
        Reply(reasoning_tokens=-1)
