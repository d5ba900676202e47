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
from collections.abc import Iterator, Mapping
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from api.submission import JobRequest, NoProviderConfigured, cancel, submit
from shared.auth import BudgetExhausted
from shared.jobs import JobRecord, JobStatus, JobStore
from shared.routing import PlanningError

router = APIRouter(tags=["openai"])
AUTO = "auto"
CHAT_COMPLETIONS = "/v1/chat/completions"
CHAT_WAIT_SECONDS = 600


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None

    @property
    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.get("text", "") for part in self.content if part.get("type") == "text")
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


OPENAI_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": OpenAIErrorResponse, "description": description}
    for code, description in {
        400: "Invalid or unsupported request, or model not available", 429: "Rate limit or budget reached",
        502: "The provider failed", 503: "No provider configured", 504: "No answer in time",
    }.items()
}


class OpenAIError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.code, self.param = status, message, kind, code, param

    @classmethod
    def invalid(cls, error: Mapping[str, Any], param: str | None = None) -> OpenAIError:
        """A validation error as OpenAI reports one: a 400 saying where the request went wrong."""
        where = ".".join(str(part) for part in error["loc"] if part != "body")
        return cls(400, f"{where}: {error['msg']}" if where else error["msg"], param=param or where or None)

    def response(self) -> JSONResponse:
        body = {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}
        return JSONResponse(body, self.status)


def refusal(chat: ChatCompletionRequest) -> OpenAIError | None:
    """What the request asks that one plain-text answer to its text cannot give: several choices, calls of the
    caller's tools, log-probabilities, a JSON format, audio, or a look at images and files. Refused by name rather
    than dropped: a client relying on it would otherwise take the answer for what it asked for."""
    asked = {"n": (chat.n or 1) > 1, "tools": bool(chat.tools) and chat.tool_choice != "none",
             "functions": bool(chat.functions), "logprobs": bool(chat.logprobs),
             "response_format": ((chat.response_format or {}).get("type") or "text") != "text",
             "modalities": any(modality != "text" for modality in chat.modalities or ()),
             "audio": chat.audio is not None}
    if param := next((name for name, given in asked.items() if given), None):
        return OpenAIError(400, f"{param} is not supported: the orchestrator answers with one plain-text choice",
                           code="unsupported_parameter", param=param)
    for i, message in enumerate(chat.messages):
        parts = message.content if isinstance(message.content, list) else []
        if kinds := sorted({str(part.get("type")) for part in parts} - {"text"}):
            return OpenAIError(400, f"messages.{i}.content: only text parts are read, not {', '.join(kinds)}",
                               code="unsupported_content", param=f"messages.{i}.content")
    return None


def invalid_chat_request(error: RequestValidationError) -> JSONResponse:
    """A chat body that does not validate, as OpenAI answers one, so that OpenAI's clients raise `BadRequestError`
    with the parameter instead of a bare 422 with FastAPI's `detail`."""
    return OpenAIError.invalid(error.errors()[0]).response()


def job_request(chat: ChatCompletionRequest) -> JobRequest:
    users = [i for i, message in enumerate(chat.messages) if message.role == "user"]
    if not users:
        raise OpenAIError(400, "messages must contain a user message")
    last = users[-1]
    context: dict[str, Any] = {}
    instructions = [m.text for m in chat.messages if m.role in ("system", "developer") and m.text]
    if instructions:
        context["instructions"] = "\n".join(instructions)
    history = [f"{m.role}: {m.text}" for m in chat.messages[:last] if m.role in ("user", "assistant") and m.text]
    if history:
        context["conversation"] = "\n".join(history)
    options: dict[str, Any] = {"max_tokens": chat.max_completion_tokens or chat.max_tokens,
                               "temperature": chat.temperature,
                               "stop": [chat.stop] if isinstance(chat.stop, str) else chat.stop or []}
    if chat.model != AUTO:
        options["preferred_models"] = [chat.model]
    try:
        return JobRequest(request=chat.messages[last].text or " ", context=context, options=options)
    except ValidationError as error:  # the orchestrator's own limits, on options the chat body named otherwise
        first = error.errors()[0]
        raise OpenAIError.invalid(first, param=str(first["loc"][-1]) if first["loc"] else None) from None


def _headers(record: JobRecord) -> dict[str, str]:
    headers = {"x-orchestrator-job-id": record.id, "x-orchestrator-model": record.model_used or record.plan.model}
    if record.cost_usd is not None:
        headers |= {"x-orchestrator-cost-usd": f"{record.cost_usd:.8f}",
                    "x-orchestrator-baseline-cost-usd": f"{record.baseline_cost_usd:.8f}",
                    "x-orchestrator-savings-usd": f"{record.savings_usd:.8f}"}
    else:
        headers |= {"x-orchestrator-estimated-cost-usd": f"{record.plan.estimated_cost_usd:.8f}",
                    "x-orchestrator-baseline-cost-usd": f"{record.plan.baseline.cost_usd:.8f}",
                    "x-orchestrator-estimated-savings-usd": f"{record.plan.estimated_savings_usd:.8f}"}
    return headers


def _usage(record: JobRecord) -> dict[str, int]:
    usage = record.usage
    prompt, completion = (usage.input_tokens, usage.output_tokens) if usage else (0, 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _failure(record: JobRecord) -> OpenAIError:
    if record.status == JobStatus.failed:
        return OpenAIError(502, record.error or "the request failed", "api_error", "upstream_error")
    return OpenAIError(504, f"no answer within {CHAT_WAIT_SECONDS}s; job {record.id} is {record.status}",
                       "api_error", "timeout")


@router.post(CHAT_COMPLETIONS, responses=OPENAI_ERRORS)
def chat_completions(chat: ChatCompletionRequest, request: Request) -> Any:
    """OpenAI chat completions, served by the orchestrator's choice of model (or the one named).

    A plain def: submitting and waiting run in one worker thread, one hop from the event loop instead of two."""
    if (refused := refusal(chat)) is not None:
        return refused.response()
    state = request.app.state
    settings, celery = state.settings, state.celery
    store = JobStore(settings)
    try:
        record = submit(job_request(chat), settings, store, celery, None, chat.stream, request.state.api_key,
                        state.tools, state.tools.breakers)
    except OpenAIError as error:
        return error.response()
    except PlanningError as error:
        return OpenAIError(400, str(error), code="model_not_available").response()
    except NoProviderConfigured as error:
        return OpenAIError(503, str(error), "api_error", "no_provider").response()
    except BudgetExhausted as error:
        return OpenAIError(429, str(error), "insufficient_quota", "budget_exhausted").response()
    if chat.model != AUTO and record.plan.model != chat.model:
        cancel(record, "requested model unavailable", settings, store, celery)
        why = record.plan.rejected.get(chat.model, "not usable")
        return OpenAIError(400, f"model {chat.model} is not available: {why}", code="model_not_available").response()
    if chat.stream:
        include_usage = bool(chat.stream_options and chat.stream_options.include_usage)
        return StreamingResponse(_chunks(store, record, include_usage), media_type="text/event-stream",
                                 headers=_headers(record))
    finished = store.wait(record.id, CHAT_WAIT_SECONDS)
    if finished is None or finished.status != JobStatus.succeeded:
        return _failure(finished or record).response()
    return JSONResponse({
        "id": f"chatcmpl-{finished.id}",
        "object": "chat.completion",
        "created": int(finished.created_at),
        "model": finished.model_used,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": finished.result},
                     "finish_reason": finished.stop_reason or "stop", "logprobs": None}],
        "usage": _usage(finished),
    }, headers=_headers(finished))


def _chunks(store: JobStore, record: JobRecord, include_usage: bool) -> Iterator[str]:
    """SSE chunks: the role, each relayed piece as it arrives, the finish, the usage, then [DONE]."""
    base = {"id": f"chatcmpl-{record.id}", "object": "chat.completion.chunk", "created": int(record.created_at),
            "model": record.plan.model}

    def event(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        return f"data: {json.dumps(base | {'choices': [choice]} | extra)}\n\n"

    yield event({"role": "assistant", "content": ""})
    stream_key, last_id, sent = store.stream_key(record.id), "0-0", False
    deadline = time.monotonic() + CHAT_WAIT_SECONDS
    ended = False
    while not ended and time.monotonic() < deadline:
        replies = store.redis.xread({stream_key: last_id}, block=1000, count=100)
        for _, entries in replies or []:
            for entry_id, fields in entries:
                last_id = entry_id
                if "d" in fields:
                    sent = True
                    yield event({"content": fields["d"]})
                if "end" in fields:
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
    yield event({}, final.stop_reason or "stop")
    if include_usage:
        yield f"data: {json.dumps(base | {'choices': [], 'usage': _usage(final)})}\n\n"
    yield "data: [DONE]\n\n"


@router.get("/v1/models")
def list_models(request: Request) -> dict[str, Any]:
    """`auto` and every catalog model, in OpenAI's list format."""
    settings = request.app.state.settings
    data = [{"id": AUTO, "object": "model", "created": 0, "owned_by": "orchestrator"}]
    data += [{"id": name, "object": "model", "created": 0, "owned_by": spec.provider}
             for name, spec in settings.models.items()]
    return {"object": "list", "data": data}


@router.get("/v1/models/{model:path}", responses={404: {"model": OpenAIErrorResponse, "description": "No such model"}})
def retrieve_model(model: str, request: Request) -> Any:
    """One model of the list, as OpenAI's `models.retrieve` reads it."""
    spec = request.app.state.settings.models.get(model)
    if model != AUTO and spec is None:
        return OpenAIError(404, f"The model {model!r} does not exist; GET /v1/models lists them",
                           code="model_not_found", param="model").response()
    return {"id": model, "object": "model", "created": 0, "owned_by": spec.provider if spec else "orchestrator"}
