"""Gemini Developer API adapter through google-genai (`models.generate_content` / `generate_content_stream`)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx2
from google import genai
from google.genai import _common, errors, types

from shared.providers import base
from shared.providers.base import Completion, Message, ProviderError, ProviderRequest, ToolCall, completion
from shared.providers.errors import redact, status_error, transport_error
from shared.providers.http_transport import sdk_transport


def _pairs_contain(model: object, item: object) -> bool:
    """`item in model` for a pydantic model, which iterates as (name, value) pairs: never true of a bare name."""
    return not isinstance(item, str) and any(pair == item for pair in model)  # type: ignore[attr-defined]


# google-genai turns each call into its wire format by reading fields through `key in model`
# (`_common.get_value_by_path`), and pydantic answers `in` by walking every (name, value) pair: about 120 walks of up
# to 60 fields per call, nearly half its CPU (callgrind: 10.1 M instructions per `generate_content`, 5.5 M with
# this). A field name is never one of those pairs, so the answer is the same, only found without the walk. Left
# alone if the SDK or pydantic ever answer `in` themselves.
if not hasattr(_common.BaseModel, "__contains__"):
    _common.BaseModel.__contains__ = _pairs_contain  # type: ignore[attr-defined]


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
                # whatever GOOGLE_GENAI_HTTP_CLIENT says; httpx2's default pool would cap calls in flight at 100
                httpx_client=httpx2.Client(transport=sdk_transport(), limits=httpx2.Limits(max_connections=1000)),
            ),
        )

    def complete(self, request: ProviderRequest) -> Completion:
        # The answer is read from the response's JSON: the SDK's conversion into its models is a fifth of the call's
        # CPU (callgrind: 5.6 M instructions per call, 4.5 M without), and only a few fields are needed.
        contents, config = self._params(request, raw_answer=True)
        try:
            response = self._client.models.generate_content(model=request.model, contents=contents, config=config)
            answer = json.loads(response.sdk_http_response.body or "{}") if response.sdk_http_response else {}
        except Exception as exc:
            raise self._error(exc, request) from exc
        blocked = (answer.get("promptFeedback") or {}).get("blockReason")  # a refused prompt gets no candidate
        candidates = answer.get("candidates") or [{"finishReason": blocked}]
        parts = (candidates[0].get("content") or {}).get("parts") or []
        text = "".join(part["text"] for part in parts if part.get("text") and not part.get("thought"))
        usage = answer.get("usageMetadata") or {}
        return self._completion(
            request,
            text,
            candidates[0].get("finishReason"),
            usage.get("promptTokenCount"),
            usage.get("cachedContentTokenCount"),
            usage.get("candidatesTokenCount"),
            usage.get("thoughtsTokenCount"),
            _tool_calls(parts),
        )

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
        yield self._completion(
            request,
            "".join(parts),
            finish_reason or base.NO_REASON,
            getattr(usage, "prompt_token_count", None),
            getattr(usage, "cached_content_token_count", None),
            getattr(usage, "candidates_token_count", None),
            getattr(usage, "thoughts_token_count", None),
        )

    def _params(
        self, request: ProviderRequest, *, raw_answer: bool = False
    ) -> tuple[str | list[types.ContentDict], types.GenerateContentConfig]:
        """The call's contents and config in the forms the SDK turns into the wire format with the least CPU.

        The config goes as the SDK's model: it validates a config dict into its model three times over a call
        (callgrind: 4.5 M instructions per call with a dict, 4.25 M with the model). A lone user turn goes as its
        text, which the SDK sends as that same user turn: a turn given as a dict is first tried as a `Part` and as a
        `FileData`, two failed validations, before it is read as a `Content` (4.3 M instructions per call, 3.95 M
        as text). A conversation goes as the SDK's TypedDicts."""
        config: types.GenerateContentConfigDict = {
            "max_output_tokens": request.max_tokens,
            # one call = one HTTP request, so the layer above counts attempts right; the caller runs the tools
            "automatic_continuation": False,
            "automatic_function_calling": {"disable": True},
            # Per-call timeout; HttpOptions wants whole milliseconds.
            "http_options": {"timeout": max(1, round(request.timeout_s * 1000))},
            "should_return_http_response": raw_answer,  # the response's JSON instead of the SDK's models
        }
        if request.system:
            config["system_instruction"] = request.system
        if request.temperature is not None:
            config["temperature"] = request.temperature
        if request.stop:
            config["stop_sequences"] = request.stop
        if request.tools:
            config["tools"] = [
                {
                    "function_declarations": [
                        {"name": t.name, "description": t.description, "parameters_json_schema": t.parameters}
                        for t in request.tools
                    ]
                }
            ]
        turns = request.messages
        lone_turn = len(turns) == 1 and turns[0].role == "user" and turns[0].content and not turns[0].tool_calls
        return turns[0].content if lone_turn else _contents(turns), types.GenerateContentConfig(**config)

    @staticmethod
    def _completion(
        request: ProviderRequest,
        text: str,
        finish_reason: str | None,
        prompt_tokens: int | None,
        cached_tokens: int | None,
        answer_tokens: int | None,
        thought_tokens: int | None,
        calls: list[ToolCall] | None = None,
    ) -> Completion:
        # Thinking tokens are billed as output but reported apart from the answer's own tokens. Cached tokens are
        # already counted in the prompt's; Gemini reports no cache writes (creating a cache is a call of its own).
        output_tokens = None if prompt_tokens is None else (answer_tokens or 0) + (thought_tokens or 0)
        return completion(
            request,
            text,
            finish_reason,
            prompt_tokens,
            output_tokens,
            calls,
            cached_input_tokens=cached_tokens,
            reasoning_tokens=thought_tokens,
        )

    def _error(self, exc: Exception, request: ProviderRequest) -> ProviderError:
        """google-genai wraps only HTTP errors (`APIError`); timeouts and refused connections surface as the raw
        httpx2 exceptions the transport raises."""
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
    if not response.candidates:  # a blocked prompt: no candidate, only the reason
        reason = response.prompt_feedback.block_reason if response.prompt_feedback else None
        return "", (str(getattr(reason, "value", reason)) if reason is not None else None)
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


def _tool_calls(parts: list[dict[str, Any]]) -> list[ToolCall]:
    """The `functionCall` parts of an answer; Gemini 2.x gives them no id, so one is made from their position."""
    calls = [part["functionCall"] for part in parts if part.get("functionCall")]
    return [
        ToolCall(id=call.get("id") or f"call_{index}", name=call.get("name") or "", arguments=call.get("args") or {})
        for index, call in enumerate(calls)
    ]
