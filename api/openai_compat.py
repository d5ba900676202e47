"""An OpenAI-compatible front door: `POST /v1/chat/completions`, `GET /v1/models` and `GET /v1/models/{name}`.

Any OpenAI client works by pointing its base URL here. `model: "auto"` lets the orchestrator choose; a catalog
model name is honoured (or refused with the reason). The conversation maps onto the orchestrator's request: the
last user message is the request, system messages and earlier turns become context. With `stream: true` the
worker streams the provider's answer and relays each piece through Redis; the pieces go out as OpenAI chunks.
The chosen model, the job and the cost and savings are in `x-orchestrator-*` response headers. An answer cut at
the output cap finishes with `length`, as OpenAI's do. What one plain-text answer to the text cannot give (`n` > 1,
the caller's `tools`, `logprobs`, a JSON `response_format`, audio, image or file parts) is refused by name; errors
come in OpenAI's format, so its clients raise their typed exceptions.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping, Sequence
from os.path import commonprefix
from typing import Any, Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from api.deps import Caller, OrchestratorDep
from shared.catalog import CatalogEntry
from shared.job_store import JobStore
from shared.jobs import JobRecord, JobStatus
from shared.requests import JobRequest

AUTO = "auto"
CHAT_COMPLETIONS = "/v1/chat/completions"
MODELS = "/v1/models"
CHAT_WAIT_SECONDS = 600
READABLE_PARTS = frozenset({"text", "refusal"})  # a replayed assistant turn may hold its refusal as a part


def is_openai_path(path: str) -> bool:
    """The routes whose clients read OpenAI's error format."""
    return path in (CHAT_COMPLETIONS, MODELS) or path.startswith(f"{MODELS}/")


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = None
    refusal: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None

    @property
    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text or part.refusal or "" for part in self.content if part.type in READABLE_PARTS)
        return self.content or ""


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # OpenAI parameters the orchestrator does not use are accepted

    model: str = Field(AUTO, description='"auto", or a model of GET /v1/models')
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, gt=0)
    max_completion_tokens: int | None = Field(None, gt=0)
    temperature: float | None = Field(None, ge=0, le=2)
    stop: str | list[str] | None = None
    store: bool | None = Field(None, description="Keep the job's record as long as an async job's, not an hour.")
    n: int | None = Field(None, ge=1)
    logprobs: bool | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    functions: list[dict[str, Any]] | None = None
    response_format: dict[str, Any] | None = None
    modalities: list[str] | None = None
    audio: dict[str, Any] | None = None


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class OpenAIErrorResponse(BaseModel):
    """OpenAI's error body, which its clients turn into typed exceptions."""

    error: OpenAIErrorDetail


ERRORS: dict[int | str, str] = {
    400: "Invalid or unsupported request, or model not available",
    401: "Missing or invalid API key",
    403: "Revoked API key",
    404: "No such model",
    405: "Method not allowed",
    413: "Too large",
    429: "Rate limit or budget reached",
    502: "The provider failed",
    503: "Redis unreachable or no provider configured",
    504: "No answer in time",
    "4XX": "Any other client error",
}


def _errors(*codes: int | str) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": OpenAIErrorResponse, "description": ERRORS[code]} for code in codes}


# What the API-key middleware and the app's handlers may answer on any of these routes, in OpenAI's format
router = APIRouter(tags=["openai"], responses=_errors(401, 403, 405, 413, 429, 503, "4XX"))


class OpenAIError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        kind: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.kind, self.code, self.param = status, message, kind, code, param

    @classmethod
    def invalid(cls, errors: Sequence[Mapping[str, Any]], param: str | None = None) -> OpenAIError:
        """Validation errors as OpenAI reports them: a 400 saying where the request went wrong. pydantic reports a
        value that fits no member of a union once per member, each under the member's name: they are one error, at
        the place they share."""
        first = errors[0]
        if first["type"] == "json_invalid":
            return cls(400, f"the body is not valid JSON: {first.get('ctx', {}).get('error', first['msg'])}")
        places = [_place(error) for error in errors]
        parent = places[0][:-1]
        together = [i for i, place in enumerate(places) if parent and place[: len(parent)] == parent] or [0]
        shared = commonprefix([places[i] for i in together])
        where = ".".join(map(str, shared))
        why = "; ".join(dict.fromkeys(_reason(errors[i]["msg"], places[i][len(shared) :]) for i in together))
        return cls(400, f"{where}: {why}" if where else why, param=param or where or None)

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}

    def response(self, headers: Mapping[str, str] | None = None) -> JSONResponse:
        return JSONResponse(self.body(), self.status, headers=headers)


def _reason(message: str, below: tuple[str | int, ...]) -> str:
    return f"{message} ({'.'.join(map(str, below))})" if below else message


def _place(error: Mapping[str, Any]) -> tuple[str | int, ...]:
    """An error's location in the request body."""
    loc = tuple(error["loc"])
    return loc[1:] if loc[:1] == ("body",) else loc


def refusal(chat: ChatCompletionRequest) -> OpenAIError | None:
    """What the request asks that one plain-text answer to its text cannot give: several choices, calls of the
    caller's tools, log-probabilities, a JSON format, audio, or a look at images and files. Refused by name rather
    than dropped: a client relying on it would otherwise take the answer for what it asked for."""
    asked = {
        "n": (chat.n or 1) > 1,
        "tools": bool(chat.tools) and chat.tool_choice != "none",
        "functions": bool(chat.functions),
        "logprobs": bool(chat.logprobs),
        "response_format": ((chat.response_format or {}).get("type") or "text") != "text",
        "modalities": any(modality != "text" for modality in chat.modalities or ()),
        "audio": chat.audio is not None,
    }
    if param := next((name for name, given in asked.items() if given), None):
        return OpenAIError(
            400,
            f"{param} is not supported: the orchestrator answers with one plain-text choice",
            code="unsupported_parameter",
            param=param,
        )
    for i, message in enumerate(chat.messages):
        parts = message.content if isinstance(message.content, list) else []
        if kinds := sorted({part.type for part in parts} - READABLE_PARTS):
            return OpenAIError(
                400,
                f"messages.{i}.content: only text parts are read, not {', '.join(kinds)}",
                code="unsupported_content",
                param=f"messages.{i}.content",
            )
    return None


def job_request(chat: ChatCompletionRequest) -> JobRequest:
    users = [i for i, message in enumerate(chat.messages) if message.role == "user"]
    if not users:
        raise OpenAIError(400, "messages must contain a user message")
    last = users[-1]
    if not chat.messages[last].text.strip():
        raise OpenAIError(400, f"messages.{last}.content: the last user message is empty", param=f"messages.{last}")
    context: dict[str, Any] = {}
    instructions = [m.text for m in chat.messages if m.role in ("system", "developer") and m.text]
    if instructions:
        context["instructions"] = "\n".join(instructions)
    history = [f"{m.role}: {m.text}" for m in chat.messages[:last] if m.role in ("user", "assistant") and m.text]
    if history:
        context["conversation"] = "\n".join(history)
    options: dict[str, Any] = {
        "max_tokens": chat.max_completion_tokens or chat.max_tokens,
        "temperature": chat.temperature,
        "stop": [chat.stop] if isinstance(chat.stop, str) else chat.stop or [],
    }
    if chat.model != AUTO:
        options["preferred_models"] = [chat.model]
    try:
        return JobRequest(request=chat.messages[last].text, context=context, options=options)
    except ValidationError as error:  # the orchestrator's own limits, on options the chat body named otherwise
        named = [part for part in error.errors()[0]["loc"] if isinstance(part, str)]  # ("options", "stop", 0): stop
        raise OpenAIError.invalid(error.errors(), param=named[-1] if named else None) from None


def _headers(record: JobRecord) -> dict[str, str]:
    headers = {"x-orchestrator-job-id": record.id, "x-orchestrator-model": record.model_used or record.plan.model}
    if record.cost_usd is not None:
        headers |= {
            "x-orchestrator-cost-usd": f"{record.cost_usd:.8f}",
            "x-orchestrator-baseline-cost-usd": f"{record.baseline_cost_usd:.8f}",
            "x-orchestrator-savings-usd": f"{record.savings_usd:.8f}",
        }
    else:
        headers |= {
            "x-orchestrator-estimated-cost-usd": f"{record.plan.estimated_cost_usd:.8f}",
            "x-orchestrator-baseline-cost-usd": f"{record.plan.baseline.cost_usd:.8f}",
            "x-orchestrator-estimated-savings-usd": f"{record.plan.estimated_savings_usd:.8f}",
        }
    return headers


def _usage(record: JobRecord) -> dict[str, int]:
    usage = record.usage
    prompt, completion = (usage.input_tokens, usage.output_tokens) if usage else (0, 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _failure(record: JobRecord) -> OpenAIError:
    if record.status == JobStatus.failed:
        return OpenAIError(502, record.error or "the request failed", "api_error", "upstream_error")
    return OpenAIError(
        504, f"no answer within {CHAT_WAIT_SECONDS}s; job {record.id} is {record.status}", "api_error", "timeout"
    )


@router.post(CHAT_COMPLETIONS, responses=_errors(400, 429, 502, 503, 504))
def chat_completions(chat: ChatCompletionRequest, orchestrator: OrchestratorDep, caller: Caller) -> Any:
    """OpenAI chat completions, served by the orchestrator's choice of model (or the one named, refused with the
    reason before anything runs when it cannot serve).

    A plain def: submitting and waiting run in one worker thread, one hop from the event loop instead of two."""
    if (refused := refusal(chat)) is not None:
        return refused.response()
    try:
        body = job_request(chat)
    except OpenAIError as error:
        return error.response()
    exact = None if chat.model == AUTO else chat.model
    record = orchestrator.submit(body, api_key=caller, stream=chat.stream, exact_model=exact, sync=not chat.store)
    store = orchestrator.jobs
    if chat.stream:
        include_usage = bool(chat.stream_options and chat.stream_options.include_usage)
        return StreamingResponse(
            _chunks(store, record, include_usage), media_type="text/event-stream", headers=_headers(record)
        )
    finished = store.wait(record.id, CHAT_WAIT_SECONDS)
    if finished is None or finished.status != JobStatus.succeeded:
        return _failure(finished or record).response()
    return JSONResponse(
        {
            "id": f"chatcmpl-{finished.id}",
            "object": "chat.completion",
            "created": int(finished.created_at),
            "model": finished.model_used,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": finished.result},
                    "finish_reason": _finish_reason(finished.stop_reason),
                    "logprobs": None,
                }
            ],
            "usage": _usage(finished),
        },
        headers=_headers(finished),
    )


def _chunks(store: JobStore, record: JobRecord, include_usage: bool) -> Iterator[str]:
    """SSE chunks: the role, each relayed piece as it arrives, the finish, the usage, then [DONE]."""
    base = {
        "id": f"chatcmpl-{record.id}",
        "object": "chat.completion.chunk",
        "created": int(record.created_at),
        "model": record.plan.model,
    }

    def event(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        return f"data: {json.dumps(base | {'choices': [choice]} | extra)}\n\n"

    yield event({"role": "assistant", "content": ""})
    last_id, sent = "0-0", False
    deadline = time.monotonic() + CHAT_WAIT_SECONDS
    ended = False
    while not ended and time.monotonic() < deadline:
        replies = list(store.answers.read(record.id, after=last_id))
        for entry_id, piece, end in replies:
            last_id = entry_id
            if piece is not None:
                sent = True
                yield event({"content": piece})
            if end is not None:
                ended = True
        if not replies and (store.status(record.id) or JobStatus.failed).terminal:
            ended = True  # cancelled, or finished without a stream (e.g. by another delivery)
    final = store.get(record.id) or record
    base["model"] = final.model_used or final.plan.model
    if final.status != JobStatus.succeeded:
        error = _failure(final)
        yield f"data: {json.dumps({'error': {'message': error.message, 'type': error.kind, 'code': error.code}})}\n\n"
        yield "data: [DONE]\n\n"
        return
    if not sent and final.result:  # answered from the cache: nothing was streamed
        yield event({"content": final.result})
    yield event({}, _finish_reason(final.stop_reason))
    if include_usage:
        yield f"data: {json.dumps(base | {'choices': [], 'usage': _usage(final)})}\n\n"
    yield "data: [DONE]\n\n"


def _model(name: str, owner: str, entry: CatalogEntry | None = None) -> dict[str, Any]:
    """OpenAI's model object; catalog models carry the catalog's fields (tier, window, prices, their source)."""
    details = entry.model_dump(exclude={"name", "provider"}) if entry else {}
    return {"id": name, "object": "model", "created": 0, "owned_by": owner, **details}


@router.get(MODELS)
def list_models(orchestrator: OrchestratorDep) -> dict[str, Any]:
    """`auto` and every catalog model whose provider has a key, in OpenAI's list format with the catalog's fields."""
    entries = orchestrator.models(usable_only=True)
    return {
        "object": "list",
        "data": [_model(AUTO, "orchestrator"), *(_model(e.name, e.provider, e) for e in entries)],
    }


@router.get(f"{MODELS}/{{model:path}}", responses=_errors(404))
def retrieve_model(model: str, orchestrator: OrchestratorDep) -> Any:
    """One model of the list, as OpenAI's `models.retrieve` reads it."""
    if model == AUTO:
        return _model(AUTO, "orchestrator")
    catalog = orchestrator.settings.catalog
    if not catalog.knows(model):
        return OpenAIError(
            404, f"The model {model!r} does not exist; GET /v1/models lists them", code="model_not_found", param="model"
        ).response()
    entry = next((e for e in catalog.entries() if e.name == model), None)
    return _model(model, catalog.spec(model).provider, entry)


def _finish_reason(stop: str | None) -> str:
    """OpenAI's `finish_reason` for a job's stop reason: an answer whose stream ended without a reason was cut
    short, which its clients read as `length`."""
    return "length" if stop == "incomplete" else stop or "stop"
