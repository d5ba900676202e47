"""Anthropic Messages API adapter (system prompt in the top-level `system` parameter, not in `messages`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic

from shared.providers import base
from shared.providers.base import Completion, Message, ProviderError, ProviderRequest, ToolCall, completion
from shared.providers.errors import redact, sdk_transport_error, status_error, transport_error
from shared.providers.http_transport import sdk_transport

# An `error` event inside a 200 stream carries no HTTP status; these are the statuses its types stand for.
_STREAM_ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 529,
}
# The input side of usage: the uncached input, and the cache reads and writes reported beside it.
_INPUT_COUNTS = ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")


class AnthropicProvider:
    """One Anthropic account. The SDK client is built once, with its own retries off."""

    def __init__(self, name: str, api_key: str, base_url: str | None = None) -> None:
        self.name = name
        self._api_key = api_key
        self._client = anthropic.Anthropic(
            api_key=api_key,
            base_url=base_url,
            max_retries=0,
            http_client=anthropic.DefaultHttpxClient(transport=sdk_transport()),
        )

    def complete(self, request: ProviderRequest) -> Completion:
        params = self._params(request)
        try:
            message = self._client.messages.create(**params)
        except Exception as exc:
            raise self._error(exc, request) from exc
        text = "".join(block.text for block in message.content if block.type == "text")
        calls = [
            ToolCall(id=block.id, name=block.name, arguments=block.input if isinstance(block.input, dict) else {})
            for block in message.content
            if block.type == "tool_use"
        ]
        counts: dict[str, int] = {}
        _take_counts(counts, getattr(message, "usage", None), (*_INPUT_COUNTS, "output_tokens"))
        return _completion(request, text, message.stop_reason, counts, calls)

    def stream(self, request: ProviderRequest) -> Iterator[str | Completion]:
        parts: list[str] = []
        stop_reason: str | None = None
        counts: dict[str, int] = {}
        params = self._params(request)
        try:
            events = self._client.messages.create(**params, stream=True)
            with events:
                for event in events:
                    if event.type == "message_start":  # its output count is a placeholder: only the input side
                        _take_counts(counts, getattr(event.message, "usage", None), _INPUT_COUNTS)
                    elif event.type == "content_block_delta" and event.delta.type == "text_delta":
                        parts.append(event.delta.text)
                        yield event.delta.text
                    elif event.type == "message_delta":
                        stop_reason = event.delta.stop_reason or stop_reason
                        # cumulative counts for the whole message: the output, and maybe the input side again
                        _take_counts(counts, getattr(event, "usage", None), (*_INPUT_COUNTS, "output_tokens"))
        except Exception as exc:
            raise self._error(exc, request) from exc
        yield _completion(request, "".join(parts), stop_reason or base.NO_REASON, counts)

    def _params(self, request: ProviderRequest) -> dict[str, Any]:
        params: dict[str, Any] = {
            "model": request.model,
            "max_tokens": request.max_tokens,
            "messages": _messages(request.messages),
            "timeout": request.timeout_s,
        }
        if request.system:
            params["system"] = request.system
        if request.stop:
            params["stop_sequences"] = request.stop
        if request.temperature is not None:
            # anthropic 2.x dropped `temperature` from the typed signature; the API still accepts it.
            params["extra_body"] = {"temperature": request.temperature}
        if request.tools:
            params["tools"] = [
                {"name": t.name, "description": t.description, "input_schema": t.parameters} for t in request.tools
            ]
        return params

    def _error(self, exc: Exception, request: ProviderRequest) -> ProviderError:
        """Map an SDK exception to a classified `ProviderError`."""
        where = {"provider": self.name, "model": request.model}
        failure = sdk_transport_error(exc, anthropic.APITimeoutError, anthropic.APIConnectionError, **where)
        if failure is not None:
            return failure
        if isinstance(exc, anthropic.APIStatusError):
            status = exc.status_code
            if status < 400:  # an `error` event inside a streamed 200 response
                status = _STREAM_ERROR_STATUS.get(exc.type or "", 500)
            message = redact(exc.api_message or exc.message, self._api_key)
            return status_error(status, message, headers=exc.response.headers, **where)
        # A raw httpx error: the SDK does not wrap failures while a streamed body is being read.
        return transport_error(exc, **where) or ProviderError(
            redact(f"{type(exc).__name__}: {exc}", self._api_key), kind="unknown", **where
        )


def _take_counts(counts: dict[str, int], usage: Any, names: tuple[str, ...]) -> None:
    """Keep the counts `usage` gives of `names` (and of thinking, when output is among them) over earlier ones. The
    SDK does not validate, so a missing field is simply absent."""
    for name in names:
        value = getattr(usage, name, None)
        if value is not None:
            counts[name] = value
    thinking = getattr(getattr(usage, "output_tokens_details", None), "thinking_tokens", None)
    if "output_tokens" in names and thinking is not None:
        counts["thinking_tokens"] = thinking


def _completion(
    request: ProviderRequest,
    text: str,
    stop_reason: str | None,
    counts: dict[str, int],
    calls: list[ToolCall] | None = None,
) -> Completion:
    """`input_tokens` counts only the uncached input: cache reads and writes are billed too but reported beside it.
    `output_tokens` already includes thinking, which `output_tokens_details` names."""
    cached = counts.get("cache_read_input_tokens", 0)
    written = counts.get("cache_creation_input_tokens", 0)
    fresh = counts.get("input_tokens")
    return completion(
        request,
        text,
        stop_reason,
        None if fresh is None else fresh + cached + written,
        counts.get("output_tokens"),
        calls,
        cached_input_tokens=cached,
        cache_write_tokens=written,
        reasoning_tokens=counts.get("thinking_tokens"),
    )


def _messages(messages: list[Message]) -> list[dict[str, Any]]:
    """Messages API turns: an assistant's tool calls become `tool_use` blocks, and each run of tool turns becomes
    one user message of `tool_result` blocks (the API wants all results of one assistant turn together)."""
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "tool":
            result = {
                "type": "tool_result",
                "tool_use_id": m.tool_call_id,
                "content": m.content,
                "is_error": m.is_error,
            }
            if out and out[-1]["role"] == "user" and isinstance(out[-1]["content"], list):  # only results are lists
                out[-1]["content"].append(result)
            else:
                out.append({"role": "user", "content": [result]})
        elif m.role == "assistant" and m.tool_calls:
            text = [{"type": "text", "text": m.content}] if m.content else []  # the API rejects empty text blocks
            calls = [{"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments} for c in m.tool_calls]
            out.append({"role": "assistant", "content": text + calls})
        else:
            out.append({"role": m.role, "content": m.content})
    return out
