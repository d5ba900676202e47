"""The one interface every provider adapter implements.

Adapters are thin: they translate a `ProviderRequest` into one SDK call and the SDK's answer (or exception) back
into a `Completion` (or a `ProviderError`). Retries, fallbacks and breakers live above them, so every adapter
builds its SDK client with the SDK's own retries switched off.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, Literal, Protocol

from pydantic import BaseModel, Field

from shared.tokens import count_tokens


class ToolSpec(BaseModel):
    """A function the model may call, in provider-neutral form (each adapter writes its own format)."""

    name: str = Field(description="Unique within one request; letters, digits, `_` and `-`, at most 64.")
    description: str = ""
    parameters: dict[str, Any] = Field(
        default_factory=lambda: {"type": "object", "properties": {}},
        description="JSON Schema of the arguments (an object).",
    )


class ToolCall(BaseModel):
    """The model asking for one function call."""

    id: str = Field(description="The provider's call id; a tool message answers it by this id.")
    name: str
    arguments: dict[str, Any] = {}
    raw_arguments: str | None = Field(None, description="The arguments as sent, when they were not a JSON object.")


class Message(BaseModel):
    """One conversation turn. `assistant` turns may carry tool calls; a `tool` turn answers one of them."""

    role: Literal["user", "assistant", "tool"]
    content: str = ""
    tool_calls: list[ToolCall] = []
    tool_call_id: str | None = None
    tool_name: str | None = Field(None, description="On a tool turn: the function's name (Gemini needs it).")
    is_error: bool = Field(False, description="On a tool turn: the call failed and `content` says why.")


class ProviderRequest(BaseModel):
    """What a worker asks of one model, in provider-neutral form."""

    model: str = Field(description="The provider's own model id.")
    system: str = ""
    messages: list[Message]
    max_tokens: int = 1024
    temperature: float | None = None
    stop: list[str] = Field(default_factory=list, description="Sequences that end the answer.")
    timeout_s: float = 60.0
    tools: list[ToolSpec] = []


#: Why an answer ended, in the words OpenAI's clients check: a whole answer, one cut at the output cap, one withheld;
#: and one whose stream ended without saying why (`incomplete`: never cached, and cut short to an OpenAI client).
StopReason = Literal["stop", "length", "content_filter", "incomplete"]
#: The reason a stream adapter gives a stream that ended (`[DONE]`, its last event) without a reason of its own.
NO_REASON = "incomplete"
_CUT_AT_CAP = frozenset({"length", "max_tokens", "MAX_TOKENS", "maxTokens", "model_context_window_exceeded"})
_WITHHELD = frozenset(
    {
        "content_filter",
        "refusal",
        "SAFETY",
        "RECITATION",
        "BLOCKLIST",
        "PROHIBITED_CONTENT",
        "SPII",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "IMAGE_RECITATION",
        "MODEL_ARMOR",
        "JAILBREAK",
    }
)


def stop_reason(finish_reason: str | None) -> StopReason:
    """A provider's (or an MCP host's) own reason in every provider's same words, so a client learns that an answer
    was cut short whoever wrote it."""
    if finish_reason in _CUT_AT_CAP:
        return "length"
    if finish_reason in _WITHHELD:
        return "content_filter"
    if finish_reason == NO_REASON:
        return "incomplete"
    return "stop"


class Completion(BaseModel):
    text: str
    input_tokens: int = Field(description="Every input token the call was billed for, cache reads and writes included.")
    output_tokens: int = Field(description="Every output token billed, reasoning included.")
    cached_input_tokens: int = Field(0, description="Of the input, tokens read from the provider's prompt cache.")
    cache_write_tokens: int = Field(0, description="Of the input, tokens written to the provider's prompt cache.")
    reasoning_tokens: int = Field(0, description="Of the output, tokens of hidden reasoning (thinking).")
    model: str
    finish_reason: str | None = Field(None, description="The provider's own reason, as it gave it.")
    tool_calls: list[ToolCall] = []
    usage_reported: bool = Field(
        True, description="False when the provider gave no usage and the counts are local estimates."
    )

    @property
    def stop_reason(self) -> StopReason:
        return stop_reason(self.finish_reason)


def completion(
    request: ProviderRequest,
    text: str,
    finish_reason: str | None,
    input_tokens: int | None,
    output_tokens: int | None,
    tool_calls: list[ToolCall] | None = None,
    *,
    cached_input_tokens: int | None = None,
    cache_write_tokens: int | None = None,
    reasoning_tokens: int | None = None,
) -> Completion:
    """The answer with the provider's usage, or with tokens counted here when the provider reported none.

    `input_tokens` and `output_tokens` are totals as billed (an adapter adds what its provider reports apart, such as
    Anthropic's cache reads or Gemini's thoughts); the other counts say which part of them was cached or reasoning.
    """
    tool_calls = tool_calls or []
    reported = input_tokens is not None and output_tokens is not None
    if not reported:
        tools = (f"{tool.name} {tool.description} {json.dumps(tool.parameters)}" for tool in request.tools)
        turns = ("\n".join([message.content, *map(_call_text, message.tool_calls)]) for message in request.messages)
        input_tokens = count_tokens("\n".join([request.system, *tools, *turns]))
        output_tokens = count_tokens("\n".join([text, *map(_call_text, tool_calls)]))
    return Completion(
        text=text,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        model=request.model,
        finish_reason=finish_reason,
        tool_calls=tool_calls,
        usage_reported=reported,
        cached_input_tokens=(cached_input_tokens or 0) if reported else 0,
        cache_write_tokens=(cache_write_tokens or 0) if reported else 0,
        reasoning_tokens=(reasoning_tokens or 0) if reported else 0,
    )


def _call_text(call: ToolCall) -> str:
    """A tool call as the model wrote it, for local token estimates."""
    arguments = call.raw_arguments if call.raw_arguments is not None else json.dumps(call.arguments)
    return f"{call.name} {arguments}"


class ProviderError(Exception):
    """A failed provider call, classified for the resilience layer."""

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        model: str,
        status: int | None = None,
        retryable: bool = False,
        retry_after_s: float | None = None,
        kind: Literal["rate_limit", "server", "timeout", "connection", "client", "auth", "unknown"] = "unknown",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.provider = provider
        self.model = model
        self.status = status
        self.retryable = retryable
        self.retry_after_s = retry_after_s
        self.kind = kind

    def __str__(self) -> str:
        status = f" {self.status}" if self.status else ""
        return f"{self.provider}/{self.model}{status} ({self.kind}): {self.message}"


class Provider(Protocol):
    """One provider account: an SDK client bound to a key and a base URL."""

    name: str

    def complete(self, request: ProviderRequest) -> Completion: ...

    def stream(self, request: ProviderRequest) -> Iterator[str | Completion]:
        """Yield text deltas as they arrive, then one final `Completion` with the whole text and the usage."""
        ...
