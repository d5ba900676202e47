"""OpenAI chat.completions adapter; also serves OpenAI-compatible servers (Ollama, vLLM, gateways) by `base_url`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx2
import openai
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from shared.providers import base
from shared.providers.base import Completion, Message, ProviderError, ProviderRequest, ToolCall, completion
from shared.providers.errors import redact, sdk_transport_error, status_error, transport_error
from shared.providers.http_transport import sdk_transport

# The SDK refuses to build a client without a key, but local OpenAI-compatible servers (Ollama) need none.
_NO_KEY = "no-key"


class OpenAIProvider:
    """One OpenAI-compatible account. The SDK client is built once, with its own retries off.

    Calls go through the client's `post`, the SDK's documented way to send a body as it is: its auth, base URL,
    timeouts, typed errors, response models and streams all apply. `chat.completions.create` would first rewrite the
    body against the SDK's TypedDicts, a no-op for the plain JSON built here that costs as much CPU as all the rest
    of the call (callgrind: 7.9 M instructions per call through `create`, 4.0 M through `post`)."""

    def __init__(self, name: str, api_key: str, base_url: str | None = None) -> None:
        self.name = name
        self._api_key = api_key
        self._client = openai.OpenAI(
            api_key=api_key or _NO_KEY,
            base_url=base_url,
            max_retries=0,
            http_client=openai.DefaultHttpxClient(transport=sdk_transport()),
        )
        # OpenAI's own API rejects `max_tokens` for reasoning models; compatible servers know only `max_tokens`.
        # Judged on the URL the SDK resolved, which may come from OPENAI_BASE_URL.
        official = self._client.base_url.host == "api.openai.com"
        self._max_tokens_param = "max_completion_tokens" if official else "max_tokens"

    def complete(self, request: ProviderRequest) -> Completion:
        # The answer is read from the response's JSON (`cast_to=httpx2.Response`, as the SDK's README shows for
        # custom requests): building the SDK's `ChatCompletion` from it was a sixth of the call's CPU, for the few
        # fields needed here (callgrind: 3.3 M instructions per call with the model).
        params = self._params(request)
        try:
            response = self._client.post(
                "/chat/completions", cast_to=httpx2.Response, body=params, options=self._options(request)
            )
            answer = response.json()
            if not isinstance(answer, dict):
                raise ValueError(f"not a chat completion: {response.text[:200]}")
        except Exception as exc:
            raise self._error(exc, request) from exc
        choice = (answer.get("choices") or [{}])[0]
        message = choice.get("message") or {}
        # Function calls only: this adapter declares no custom tools.
        calls = [_tool_call(c) for c in message.get("tool_calls") or [] if c.get("function")]
        usage = answer.get("usage") or {}
        # The details only name parts of the totals: cached (and written) tokens are inside `prompt_tokens`,
        # reasoning inside `completion_tokens`. Compatible servers may send them as null or not at all.
        prompt_details = usage.get("prompt_tokens_details") or {}
        output_details = usage.get("completion_tokens_details") or {}
        return completion(
            request,
            message.get("content") or "",
            choice.get("finish_reason"),
            usage.get("prompt_tokens"),
            usage.get("completion_tokens"),
            calls,
            cached_input_tokens=prompt_details.get("cached_tokens"),
            cache_write_tokens=prompt_details.get("cache_write_tokens"),
            reasoning_tokens=output_details.get("reasoning_tokens"),
        )

    def stream(self, request: ProviderRequest) -> Iterator[str | Completion]:
        parts: list[str] = []
        finish_reason: str | None = None
        usage: Any = None
        params = self._params(request)
        try:
            chunks = self._client.post(
                "/chat/completions",
                cast_to=ChatCompletion,
                body={**params, "stream": True, "stream_options": {"include_usage": True}},
                options=self._options(request),
                stream=True,
                stream_cls=openai.Stream[ChatCompletionChunk],
            )
            with chunks:
                for chunk in chunks:
                    if chunk.usage is not None:  # the final chunk (choices == []) when the server honours include_usage
                        usage = chunk.usage
                    for choice in chunk.choices:
                        if choice.delta is not None and choice.delta.content:
                            parts.append(choice.delta.content)
                            yield choice.delta.content
                        finish_reason = choice.finish_reason or finish_reason
        except Exception as exc:
            raise self._error(exc, request) from exc
        # An OpenAI-compatible server may report no usage at all, or no details; they name parts of the totals.
        prompt_details = getattr(usage, "prompt_tokens_details", None)
        output_details = getattr(usage, "completion_tokens_details", None)
        yield completion(
            request,
            "".join(parts),
            finish_reason or base.NO_REASON,
            getattr(usage, "prompt_tokens", None),
            getattr(usage, "completion_tokens", None),
            cached_input_tokens=getattr(prompt_details, "cached_tokens", None),
            cache_write_tokens=getattr(prompt_details, "cache_write_tokens", None),
            reasoning_tokens=getattr(output_details, "reasoning_tokens", None),
        )

    def _params(self, request: ProviderRequest) -> dict[str, Any]:
        messages: list[dict[str, Any]] = [{"role": "system", "content": request.system}] if request.system else []
        messages += [_message(m) for m in request.messages]
        params: dict[str, Any] = {
            "model": request.model,
            "messages": messages,
            self._max_tokens_param: request.max_tokens,
        }
        if request.temperature is not None:
            params["temperature"] = request.temperature
        if request.stop:
            params["stop"] = request.stop
        if request.tools:
            params["tools"] = [
                {
                    "type": "function",
                    "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
                }
                for t in request.tools
            ]
        return params

    @staticmethod
    def _options(request: ProviderRequest) -> openai.RequestOptions:
        return {"timeout": request.timeout_s}

    def _error(self, exc: Exception, request: ProviderRequest) -> ProviderError:
        """Map an SDK exception to a classified `ProviderError`."""
        where = {"provider": self.name, "model": request.model}
        failure = sdk_transport_error(exc, openai.APITimeoutError, openai.APIConnectionError, **where)
        if failure is not None:
            return failure
        if isinstance(exc, openai.APIStatusError):
            body = exc.body if isinstance(exc.body, dict) else {}
            message = body.get("message") if isinstance(body.get("message"), str) else exc.message
            return status_error(exc.status_code, redact(message, self._api_key), headers=exc.response.headers, **where)
        # A raw httpx error escaping a stream, or anything else (e.g. an `error` event in the middle of a stream).
        return transport_error(exc, **where) or ProviderError(
            redact(f"{type(exc).__name__}: {exc}", self._api_key), kind="unknown", **where
        )


def _message(m: Message) -> dict[str, Any]:
    """One turn in chat.completions form: tool calls carry their arguments as a JSON string."""
    if m.role == "tool":
        return {"role": "tool", "tool_call_id": m.tool_call_id, "content": m.content}
    if m.role == "assistant" and m.tool_calls:
        calls = []
        for c in m.tool_calls:
            arguments = c.raw_arguments if c.raw_arguments is not None else json.dumps(c.arguments)
            calls.append({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": arguments}})
        return {"role": "assistant", "content": m.content or None, "tool_calls": calls}
    return {"role": m.role, "content": m.content}


def _tool_call(call: dict[str, Any]) -> ToolCall:
    """A function tool call from the response; arguments that are not a JSON object are kept raw."""
    function = call["function"]
    named = {"id": call.get("id") or "", "name": function.get("name") or ""}
    raw = function.get("arguments") or ""
    try:
        arguments = json.loads(raw) if raw else {}
    except ValueError:
        arguments = None
    if isinstance(arguments, dict):
        return ToolCall(**named, arguments=arguments)
    return ToolCall(**named, raw_arguments=raw)
