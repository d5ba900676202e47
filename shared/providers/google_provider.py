"""Gemini Developer API adapter through google-genai (`models.generate_content` / `generate_content_stream`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx2
from google import genai
from google.genai import errors, types

from shared.providers.base import Completion, Message, ProviderError, ProviderRequest, ToolCall, completion
from shared.providers.errors import redact, status_error, transport_error


class GoogleProvider:
    """One Gemini API key. The SDK client is built once and kept: dropping a `genai.Client` closes its HTTP pool."""

    def __init__(self, name: str, api_key: str, base_url: str | None = None) -> None:
        self.name = name
        self._api_key = api_key
        self._client = genai.Client(
            api_key=api_key,
            vertexai=False,  # never let GOOGLE_GENAI_USE_VERTEXAI switch the endpoint under us
            http_options=types.HttpOptions(
                base_url=base_url,
                # google-genai 3.x defaults to "v1"; v1beta is where the Gemini API ships features first.
                api_version="v1beta",
                retry_options=types.HttpRetryOptions(attempts=1),  # one attempt: retries live above the adapter
                # httpx's default pool (100 connections) would cap a worker's calls in flight at 100
                client_args={"limits": httpx2.Limits(max_connections=1000, max_keepalive_connections=100)},
            ),
        )

    def complete(self, request: ProviderRequest) -> Completion:
        contents, config = self._params(request)
        try:
            response = self._client.models.generate_content(model=request.model, contents=contents, config=config)
        except Exception as exc:
            raise self._error(exc, request) from exc
        text, finish_reason = _text_and_finish(response)
        usage = response.usage_metadata
        return self._completion(request, text, finish_reason, usage, _tool_calls(response))

    def stream(self, request: ProviderRequest) -> Iterator[str | Completion]:
        parts: list[str] = []
        finish_reason: str | None = None
        usage: Any = None
        contents, config = self._params(request)
        try:
            for chunk in self._client.models.generate_content_stream(
                model=request.model, contents=contents, config=config
            ):
                text, chunk_finish = _text_and_finish(chunk)
                if text:
                    parts.append(text)
                    yield text
                finish_reason = chunk_finish or finish_reason
                if chunk.usage_metadata is not None:  # cumulative; the last chunk's is the total
                    usage = chunk.usage_metadata
        except Exception as exc:
            raise self._error(exc, request) from exc
        yield self._completion(request, "".join(parts), finish_reason, usage)

    def _params(self, request: ProviderRequest) -> tuple[list[types.ContentDict], types.GenerateContentConfigDict]:
        """The call's contents and config as the SDK's TypedDicts: it converts them to the wire format with a sixth
        less CPU than its pydantic objects (measured by instruction count), and a worker makes thousands of calls."""
        config: types.GenerateContentConfigDict = {
            "max_output_tokens": request.max_tokens,
            # one call = one HTTP request, so the layer above counts attempts right; the caller runs the tools
            "automatic_continuation": False,
            "automatic_function_calling": {"disable": True},
            # Per-call timeout; HttpOptions wants whole milliseconds.
            "http_options": {"timeout": max(1, round(request.timeout_s * 1000))},
        }
        if request.system:
            config["system_instruction"] = request.system
        if request.temperature is not None:
            config["temperature"] = request.temperature
        if request.tools:
            config["tools"] = [{"function_declarations": [
                {"name": t.name, "description": t.description, "parameters_json_schema": t.parameters}
                for t in request.tools
            ]}]
        return _contents(request.messages), config

    @staticmethod
    def _completion(
        request: ProviderRequest, text: str, finish_reason: str | None, usage: Any, calls: list[ToolCall] | None = None
    ) -> Completion:
        prompt_tokens = getattr(usage, "prompt_token_count", None)
        # Thinking tokens are billed as output but reported apart from the answer's own tokens.
        output_tokens = None
        if prompt_tokens is not None:
            output_tokens = (usage.candidates_token_count or 0) + (usage.thoughts_token_count or 0)
        return completion(request, text, finish_reason, prompt_tokens, output_tokens, calls)

    def _error(self, exc: Exception, request: ProviderRequest) -> ProviderError:
        """google-genai wraps only HTTP errors (`APIError`); timeouts and refused connections surface as the raw
        httpx2 (or httpx, per GOOGLE_GENAI_HTTP_CLIENT) exceptions."""
        where = {"provider": self.name, "model": request.model}
        if isinstance(exc, errors.APIError):
            message = redact(str(exc.message or exc.status or exc), self._api_key)
            headers = getattr(exc.response, "headers", None)
            return status_error(exc.code, message, headers=headers, **where)
        return transport_error(exc, **where) or ProviderError(
            redact(f"{type(exc).__name__}: {exc}", self._api_key), kind="unknown", **where
        )


def _text_and_finish(response: types.GenerateContentResponse) -> tuple[str, str | None]:
    """The answer text of the first candidate (thought parts excluded) and its finish reason."""
    if not response.candidates:
        return "", None
    candidate = response.candidates[0]
    parts = candidate.content.parts if candidate.content and candidate.content.parts else []
    text = "".join(part.text for part in parts if part.text and not part.thought)
    reason = candidate.finish_reason
    return text, (str(getattr(reason, "value", reason)) if reason is not None else None)


def _contents(messages: list[Message]) -> list[types.ContentDict]:
    """Gemini turns: an assistant's tool calls become `function_call` parts of its model turn, and each run of tool
    turns one user turn of `function_response` parts, which name the function (looked up by call id if need be)."""
    names = {call.id: call.name for m in messages for call in m.tool_calls}
    contents: list[types.ContentDict] = []
    for m in messages:
        if m.role == "tool":
            response = {"error": m.content} if m.is_error else {"result": m.content}
            name = m.tool_name or names.get(m.tool_call_id or "", "")
            part: types.PartDict = {"function_response": {"id": m.tool_call_id, "name": name, "response": response}}
            last = contents[-1] if contents else None
            if last is not None and last["role"] == "user" and "function_response" in last["parts"][0]:
                last["parts"].append(part)
            else:
                contents.append({"role": "user", "parts": [part]})
            continue
        parts: list[types.PartDict] = [{"text": m.content}] if m.content or not m.tool_calls else []
        parts += [{"function_call": {"id": c.id, "name": c.name, "args": c.arguments}} for c in m.tool_calls]
        contents.append({"role": "user" if m.role == "user" else "model", "parts": parts})
    return contents


def _tool_calls(response: types.GenerateContentResponse) -> list[ToolCall]:
    """The first candidate's function calls; Gemini 2.x gives them no id, so one is made from their position."""
    content = response.candidates[0].content if response.candidates else None
    calls = [part.function_call for part in (content.parts if content and content.parts else []) if part.function_call]
    return [
        ToolCall(id=call.id or f"call_{index}", name=call.name or "", arguments=call.args or {})
        for index, call in enumerate(calls)
    ]
