"""Function calling through the three adapters' real SDKs, against local servers that speak each wire format.

Each test checks what went out on the wire in the provider's own format, and what the adapter made of the answer;
scripted `respond` echoes prove the server found the tool results where that provider looks for them.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from shared.providers.base import Completion, Message, ProviderRequest, ToolSpec
from shared.providers.google_provider import GoogleProvider
from shared.providers.openai_provider import OpenAIProvider
from shared.tokens import count_tokens
from tests.wire.adapters import TOOL_FINISH, WireCase, wire_fixtures
from tests.wire.servers import (
    GeminiWireServer,
    OpenAIWireServer,
    Reply,
    ToolResult,
)

API_KEY = "sk-test-tools-0123456789"

WEATHER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1}},
    "required": ["city"],
}
WEATHER = ToolSpec(name="get_weather", description="The forecast for a city.", parameters=WEATHER_SCHEMA)
TIME = ToolSpec(name="get_time", description="The current time.")
QUESTION = Message(role="user", content="Weather in Oslo for two days, and the time?")


class Wire(WireCase):
    def request(self, messages: list[Message] | None = None, **overrides: Any) -> ProviderRequest:
        fields: dict[str, Any] = {
            "model": self.model,
            "system": "Use the tools.",
            "messages": messages or [QUESTION],
            "max_tokens": 200,
            "timeout_s": 5.0,
            "tools": [WEATHER, TIME],
        }
        return ProviderRequest(**{**fields, **overrides})


_running, wire = wire_fixtures(Wire, API_KEY)


def _echo(results: list[ToolResult]) -> str:
    """The scripted answer of a second turn: every tool result the server found, as it found it."""
    return " | ".join(f"{r.name}={r.text}{' (error)' if r.is_error else ''}" for r in results)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(word.title() for word in rest)


def _call_tools(wire: Wire, text: str | None = None) -> Completion:
    wire.server.push(Reply(text=text, tool_calls=[("get_weather", {"city": "Oslo", "days": 2}), ("get_time", {})]))
    return wire.provider.complete(wire.request())


# the tools ---------------------------------------------------------------------------------------------------------


def test_tools_are_sent_in_the_providers_format(wire: Wire) -> None:
    wire.provider.complete(wire.request())
    body = wire.server.requests[-1].body
    if wire.kind == "openai":
        assert body["tools"] == [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": "The forecast for a city.",
                    "parameters": WEATHER_SCHEMA,
                },
            },
            {
                "type": "function",
                "function": {
                    "name": "get_time",
                    "description": "The current time.",
                    "parameters": {"type": "object", "properties": {}},
                },
            },
        ]
    elif wire.kind == "anthropic":
        assert body["tools"] == [
            {"name": "get_weather", "description": "The forecast for a city.", "input_schema": WEATHER_SCHEMA},
            {
                "name": "get_time",
                "description": "The current time.",
                "input_schema": {"type": "object", "properties": {}},
            },
        ]
    else:
        [tool] = body["tools"]
        # google-genai 3.x writes the declarations with their Python field names (`parameters_json_schema`); the
        # API reads proto JSON, which takes a field's proto name as well as its camelCase JSON name.
        assert [{_camel(key): value for key, value in d.items()} for d in tool["functionDeclarations"]] == [
            {"name": "get_weather", "description": "The forecast for a city.", "parametersJsonSchema": WEATHER_SCHEMA},
            {
                "name": "get_time",
                "description": "The current time.",
                "parametersJsonSchema": {"type": "object", "properties": {}},
            },
        ]
        assert "toolConfig" not in body


def test_no_tools_key_without_tools(wire: Wire) -> None:
    completion = wire.provider.complete(wire.request(tools=[]))
    assert completion.tool_calls == [] and completion.text.startswith(f"[{wire.model}] Weather in Oslo")
    assert "tools" not in wire.server.requests[-1].body


# the calls -------------------------------------------------------------------------------------------------------


def test_a_tool_call_comes_back_as_tool_calls(wire: Wire) -> None:
    completion = _call_tools(wire)
    assert completion.text == ""
    assert completion.finish_reason == TOOL_FINISH[wire.kind]
    assert [(c.name, c.arguments, c.raw_arguments) for c in completion.tool_calls] == [
        ("get_weather", {"city": "Oslo", "days": 2}, None),
        ("get_time", {}, None),
    ]
    ids = [c.id for c in completion.tool_calls]
    if wire.kind == "openai":
        assert all(i.startswith("call_wire") for i in ids)
    elif wire.kind == "anthropic":
        assert all(i.startswith("toolu_wire") for i in ids)
    else:  # Gemini 2.x gives no id: the adapter numbers the calls
        assert ids == ["call_0", "call_1"]
    assert len(set(ids)) == 2
    # the server's usage counts the words of each call's name and JSON arguments
    assert completion.usage_reported and completion.output_tokens == 5 + 2


def test_text_alongside_the_calls(wire: Wire) -> None:
    completion = _call_tools(wire, text="Let me look that up.")
    assert completion.text == "Let me look that up."
    assert [c.name for c in completion.tool_calls] == ["get_weather", "get_time"]


def test_local_estimate_counts_the_calls_when_usage_is_missing(wire: Wire) -> None:
    wire.server.push(Reply(tool_calls=[("get_weather", {"city": "Oslo"})], usage=False))
    completion = wire.provider.complete(wire.request())
    assert completion.usage_reported is False and completion.text == ""
    assert completion.output_tokens == count_tokens('\nget_weather {"city": "Oslo"}') > 0
    without_tools = wire.provider.complete(wire.request(tools=[]))
    assert completion.input_tokens > without_tools.input_tokens  # the tool definitions are part of the prompt


# the results -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "Let me look that up."], ids=["calls-only", "with-text"])
def test_tool_results_go_back_in_the_providers_format(wire: Wire, text: str) -> None:
    first = _call_tools(wire, text=text or None)
    weather, clock = first.tool_calls
    messages = [
        QUESTION,
        Message(role="assistant", content=first.text, tool_calls=first.tool_calls),
        Message(role="tool", tool_call_id=weather.id, tool_name="get_weather", content="Rain, 8 C"),
        # no tool_name: the Gemini adapter finds it by the call id
        Message(role="tool", tool_call_id=clock.id, content="clock offline", is_error=True),
    ]
    wire.server.push(Reply(respond=_echo))
    second = wire.provider.complete(wire.request(messages))

    # the server found both results in the provider's own format, errors flagged where the format can say so
    flagged = " (error)" if wire.kind != "openai" else ""
    assert second.text == f"get_weather=Rain, 8 C | get_time=clock offline{flagged}"
    assert second.tool_calls == [] and second.finish_reason in ("stop", "end_turn", "STOP")

    body = wire.server.requests[-1].body
    if wire.kind == "openai":
        *_, assistant, result_1, result_2 = body["messages"]
        assert assistant["role"] == "assistant" and assistant["content"] == (text or None)
        assert [(c["id"], c["type"], c["function"]["name"]) for c in assistant["tool_calls"]] == [
            (weather.id, "function", "get_weather"),
            (clock.id, "function", "get_time"),
        ]
        arguments = [c["function"]["arguments"] for c in assistant["tool_calls"]]
        assert all(isinstance(a, str) for a in arguments)
        assert [json.loads(a) for a in arguments] == [{"city": "Oslo", "days": 2}, {}]
        assert [result_1, result_2] == [
            {"role": "tool", "tool_call_id": weather.id, "content": "Rain, 8 C"},
            {"role": "tool", "tool_call_id": clock.id, "content": "clock offline"},
        ]
    elif wire.kind == "anthropic":
        assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]  # results in ONE user turn
        assistant, results = body["messages"][1:]
        assert assistant["content"] == [
            *([{"type": "text", "text": text}] if text else []),
            {"type": "tool_use", "id": weather.id, "name": "get_weather", "input": {"city": "Oslo", "days": 2}},
            {"type": "tool_use", "id": clock.id, "name": "get_time", "input": {}},
        ]
        assert results["content"] == [
            {"type": "tool_result", "tool_use_id": weather.id, "content": "Rain, 8 C", "is_error": False},
            {"type": "tool_result", "tool_use_id": clock.id, "content": "clock offline", "is_error": True},
        ]
    else:
        assert [c["role"] for c in body["contents"]] == ["user", "model", "user"]  # results in ONE user turn
        model_turn, results = body["contents"][1:]
        assert model_turn["parts"] == [
            *([{"text": text}] if text else []),
            {"functionCall": {"id": "call_0", "name": "get_weather", "args": {"city": "Oslo", "days": 2}}},
            {"functionCall": {"id": "call_1", "name": "get_time", "args": {}}},
        ]
        assert results["parts"] == [
            {"functionResponse": {"id": "call_0", "name": "get_weather", "response": {"result": "Rain, 8 C"}}},
            {"functionResponse": {"id": "call_1", "name": "get_time", "response": {"error": "clock offline"}}},
        ]


def test_a_conversation_goes_on_after_the_results(wire: Wire) -> None:
    """Results, then the model's answer, then a new user turn: only the results are grouped."""
    first = _call_tools(wire)
    weather, clock = first.tool_calls
    messages = [
        QUESTION,
        Message(role="assistant", tool_calls=first.tool_calls),
        Message(role="tool", tool_call_id=weather.id, tool_name="get_weather", content="Rain"),
        Message(role="tool", tool_call_id=clock.id, tool_name="get_time", content="10:00"),
        Message(role="assistant", content="Rain; it is ten."),
        Message(role="user", content="Thanks. Tomorrow?"),
    ]
    wire.server.push(Reply(respond=_echo))
    assert wire.provider.complete(wire.request(messages)).text == "get_weather=Rain | get_time=10:00"
    body = wire.server.requests[-1].body
    if wire.kind == "openai":
        assert [m["role"] for m in body["messages"]] == [
            "system",
            "user",
            "assistant",
            "tool",
            "tool",
            "assistant",
            "user",
        ]
        assert body["messages"][-1] == {"role": "user", "content": "Thanks. Tomorrow?"}
    elif wire.kind == "anthropic":
        assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user", "assistant", "user"]
        assert body["messages"][-1] == {"role": "user", "content": "Thanks. Tomorrow?"}
    else:
        assert [c["role"] for c in body["contents"]] == ["user", "model", "user", "model", "user"]
        assert body["contents"][-1]["parts"] == [{"text": "Thanks. Tomorrow?"}]


def test_gemini_call_ids_are_kept_when_the_model_gives_them() -> None:
    with GeminiWireServer(call_ids=True) as server:
        provider = GoogleProvider("test-google", API_KEY, server.url)
        wire = Wire("google", server, provider)
        first = _call_tools(wire)
        ids = [c.id for c in first.tool_calls]
        assert all(i.startswith("fc-wire-") for i in ids) and len(set(ids)) == 2
        messages = [
            QUESTION,
            Message(role="assistant", tool_calls=first.tool_calls),
            *(Message(role="tool", tool_call_id=c.id, tool_name=c.name, content="ok") for c in first.tool_calls),
        ]
        server.push(Reply(respond=lambda results: " ".join(str(r.call_id) for r in results)))
        assert provider.complete(wire.request(messages)).text == " ".join(ids)
        model_turn = server.requests[-1].body["contents"][1]
        assert [p["functionCall"]["id"] for p in model_turn["parts"]] == ids


# OpenAI's arguments are a string the model wrote ------------------------------------------------------------------


def test_openai_arguments_that_are_not_a_json_object_land_in_raw_arguments() -> None:
    with OpenAIWireServer() as server:
        wire = Wire("openai", server, OpenAIProvider("test-openai", API_KEY, server.url))
        server.push(
            Reply(
                tool_calls=[
                    ("get_weather", '{"city": "Oslo"'),
                    ("get_time", "[1, 2]"),
                    ("get_weather", '{"city": "Bergen"}'),
                ]
            )
        )
        completion = wire.provider.complete(wire.request())
        assert [(c.name, c.arguments, c.raw_arguments) for c in completion.tool_calls] == [
            ("get_weather", {}, '{"city": "Oslo"'),
            ("get_time", {}, "[1, 2]"),
            ("get_weather", {"city": "Bergen"}, None),
        ]
        # replayed as they were sent, not as the `{}` they parsed to
        messages = [QUESTION, Message(role="assistant", tool_calls=completion.tool_calls)]
        messages += [
            Message(role="tool", tool_call_id=c.id, content="bad arguments", is_error=True)
            for c in completion.tool_calls
        ]
        wire.provider.complete(wire.request(messages))
        sent = server.requests[-1].body["messages"][2]["tool_calls"]
        assert [c["function"]["arguments"] for c in sent] == ['{"city": "Oslo"', "[1, 2]", '{"city": "Bergen"}']
