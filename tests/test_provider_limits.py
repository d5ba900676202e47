"""Where an answer ends (the output-token cap, stop sequences, a refusal), through the three adapters' real SDKs,
against local servers that speak each wire format.

A real provider cuts an answer that reaches the request's cap and says so in its own words; the wire servers do the
same (counting words as tokens), so what is checked is that each adapter sends the cap where its provider reads it
and passes the cut text, the usage and the provider's own length reason through, streamed or not.
"""

from __future__ import annotations

import openai
import pytest

from shared.providers.base import Completion, Message, ProviderRequest, stop_reason
from tests.test_provider_tools import WEATHER
from tests.test_providers import API_KEY, Wire
from tests.wire.adapters import LENGTH, MODELS, STOP, TOOL_FINISH, serving, wire_fixtures
from tests.wire.servers import OpenAIWireServer, Reply

SEVEN = "one two three four five six seven"
INPUT_WORDS = 13  # system + messages of `Wire.request()`: 3 + 5 + 1 + 4

_running, wire = wire_fixtures(Wire, API_KEY)


def _answer(wire: Wire, request: ProviderRequest, stream: bool) -> tuple[list[str], Completion]:
    """The streamed deltas (none when not streaming) and the completion."""
    if not stream:
        return [], wire.provider.complete(request)
    *deltas, final = wire.provider.stream(request)
    assert all(isinstance(delta, str) for delta in deltas) and isinstance(final, Completion)
    return deltas, final


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
def test_an_answer_longer_than_max_tokens_is_cut_with_the_providers_length_reason(wire: Wire, stream: bool) -> None:
    wire.server.push(Reply(text=SEVEN))
    deltas, completion = _answer(wire, wire.request(max_tokens=3), stream)
    assert completion == Completion(
        text="one two three",
        input_tokens=INPUT_WORDS,
        output_tokens=3,
        model=wire.model,
        finish_reason=LENGTH[wire.kind],
        usage_reported=True,
    )
    assert completion.stop_reason == "length"  # in the same words whichever provider cut it
    assert deltas == (["one ", "two ", "three"] if stream else [])
    [sent] = wire.server.requests
    if wire.kind == "google":
        assert sent.body["generationConfig"]["maxOutputTokens"] == 3
    else:
        assert sent.body["max_tokens"] == 3


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
@pytest.mark.parametrize("max_tokens", [7, 8, 1024])
def test_an_answer_within_max_tokens_is_whole(wire: Wire, stream: bool, max_tokens: int) -> None:
    wire.server.push(Reply(text=SEVEN))
    deltas, completion = _answer(wire, wire.request(max_tokens=max_tokens), stream)
    assert (completion.text, completion.output_tokens, completion.finish_reason) == (SEVEN, 7, STOP[wire.kind])
    assert completion.stop_reason == "stop"
    assert deltas == ([f"{word} " for word in SEVEN.split()[:-1]] + ["seven"] if stream else [])


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
def test_a_cut_answer_keeps_a_scripted_usage_and_single_spaces(wire: Wire, stream: bool) -> None:
    wire.server.push(Reply(text="  one\ntwo \t three  four", input_tokens=40, output_tokens=50))
    _, completion = _answer(wire, wire.request(max_tokens=2), stream)
    assert (completion.text, completion.input_tokens, completion.output_tokens) == ("one two", 40, 50)
    assert completion.finish_reason == LENGTH[wire.kind]


def test_a_cut_answer_without_usage_still_says_why(wire: Wire) -> None:
    wire.server.push(Reply(text=SEVEN, usage=False))
    completion = wire.provider.complete(wire.request(max_tokens=4))
    assert (completion.text, completion.finish_reason) == ("one two three four", LENGTH[wire.kind])
    assert completion.usage_reported is False


def test_an_answer_with_tool_calls_is_not_cut(wire: Wire) -> None:
    wire.server.push(Reply(text=SEVEN, tool_calls=[("get_weather", {"city": "Oslo"})]))
    completion = wire.provider.complete(wire.request(max_tokens=2, tools=[WEATHER]))
    assert completion.text == SEVEN and completion.finish_reason == TOOL_FINISH[wire.kind]
    assert [(call.name, call.arguments) for call in completion.tool_calls] == [("get_weather", {"city": "Oslo"})]


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
def test_openai_max_completion_tokens_wins_over_max_tokens(stream: bool) -> None:
    """OpenAI's own API takes `max_completion_tokens`, which the adapter sends only to api.openai.com; the official
    SDK sends it here directly."""
    with OpenAIWireServer() as server:
        server.push(Reply(text=SEVEN))
        client = openai.OpenAI(api_key=API_KEY, base_url=server.url, max_retries=0, timeout=5.0)
        question = [{"role": "user", "content": "Count to seven."}]
        if stream:
            chunks = list(
                client.chat.completions.create(
                    model=MODELS["openai"], messages=question, stream=True, max_completion_tokens=2, max_tokens=5
                )
            )
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
            assert (text, finish) == ("one two", ["length"])
        else:
            answer = client.chat.completions.create(
                model=MODELS["openai"], messages=question, max_completion_tokens=2, max_tokens=5
            )
            assert answer.choices[0].message.content == "one two" and answer.choices[0].finish_reason == "length"
            assert answer.usage is not None and answer.usage.completion_tokens == 2
        [sent] = server.requests
        assert (sent.body["max_completion_tokens"], sent.body["max_tokens"]) == (2, 5)


def test_a_request_without_a_cap_is_never_cut() -> None:
    """Anthropic requires `max_tokens` and the adapters always send one; OpenAI's and Gemini's caps are optional."""
    with OpenAIWireServer() as server:
        server.push(Reply(text=SEVEN))
        client = openai.OpenAI(api_key=API_KEY, base_url=server.url, max_retries=0, timeout=5.0)
        answer = client.chat.completions.create(model=MODELS["openai"], messages=[{"role": "user", "content": "Go."}])
        assert (answer.choices[0].message.content, answer.choices[0].finish_reason) == (SEVEN, "stop")
        assert "max_tokens" not in server.requests[0].body


def test_the_request_messages_are_untouched_by_the_cap(wire: Wire) -> None:
    """The cap limits the answer only: the default echo of the last user turn is cut, the input count is not."""
    request = wire.request(messages=[Message(role="user", content="a b c d e f")], max_tokens=2)
    completion = wire.provider.complete(request)
    assert completion.text == f"[{wire.model}] a"
    assert (completion.input_tokens, completion.output_tokens) == (3 + 6, 2)
    assert completion.finish_reason == LENGTH[wire.kind]


@pytest.mark.parametrize(
    ("given", "neutral"),
    [
        ("SAFETY", "content_filter"),
        ("content_filter", "content_filter"),
        ("refusal", "content_filter"),
        ("maxTokens", "length"),
        ("endTurn", "stop"),
        ("tool_use", "stop"),
        (None, "stop"),
    ],
)
def test_other_reasons_in_the_same_words(given: str | None, neutral: str) -> None:
    """Gemini's and OpenAI's withheld answers, and an MCP host's sampling reasons."""
    assert stop_reason(given) == neutral


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
def test_a_prompt_gemini_blocks_is_an_empty_answer_withheld(stream: bool) -> None:
    with serving("google", API_KEY) as (server, provider):
        server.blocked = "SAFETY"
        case = Wire("google", server, provider)
        _, completion = _answer(case, case.request(), stream)
    assert (completion.text, completion.finish_reason, completion.stop_reason) == ("", "SAFETY", "content_filter")


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
def test_stop_sequences_go_where_each_provider_reads_them(wire: Wire, stream: bool) -> None:
    wire.server.push(Reply(text=SEVEN))
    _answer(wire, wire.request(stop=["four", "\n\n"]), stream)
    [sent] = wire.server.requests
    where = {
        "openai": lambda body: body["stop"],
        "anthropic": lambda body: body["stop_sequences"],
        "google": lambda body: body["generationConfig"]["stopSequences"],
    }[wire.kind]
    assert where(sent.body) == ["four", "\n\n"]


def test_no_stop_sequences_send_no_field(wire: Wire) -> None:
    wire.server.push(Reply(text=SEVEN))
    wire.provider.complete(wire.request())
    [sent] = wire.server.requests
    assert not {"stop", "stop_sequences"} & set(sent.body)
    assert "stopSequences" not in sent.body.get("generationConfig", {})
