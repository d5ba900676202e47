"""Scriptable local servers that speak the OpenAI, Anthropic and Gemini HTTP wire formats.

Tests point the real SDKs at these instead of mocking them, so what is exercised is the SDK's own request building,
response parsing, streaming and error mapping. Each server is a stdlib `ThreadingHTTPServer` on 127.0.0.1 (port 0 =
any free port) in a daemon thread; it is plain TCP, so worker subprocesses can call it too.

Scripting (all thread-safe):
    server.push(Reply(...), Fail(429, headers={"Retry-After": "2"}))   # one-shot, FIFO, any model
    server.set_model("gpt-4o-mini", Fail(500))                          # persistent, once the FIFO is empty
    server.failure_rate("gpt-4o-mini", 0.3, seed=7)                     # seeded random 500s
    server.requests                                                     # what the SDKs sent
    server.reset()

Tool calling (non-streaming answers; a streamed answer carries only the text):
    Reply(tool_calls=[("get_weather", {"city": "Oslo"}), ("get_time", {})])  # ids are made by the server
    Reply(text="Let me look.", tool_calls=[...])                            # text alongside the calls
    Reply(tool_calls=[("get_weather", "not json")])                         # a str goes out verbatim (OpenAI's raw
                                                                            # `arguments`; malformed elsewhere)
    Reply(respond=lambda results: results[-1].text)                         # text computed from the request

Each server answers calls in its own format: OpenAI `message.tool_calls` (arguments as a JSON string,
`finish_reason: "tool_calls"`), Anthropic `tool_use` blocks (`stop_reason: "tool_use"`), Gemini `functionCall` parts
(no `id`, like Gemini 2.x, unless built with `GeminiWireServer(call_ids=True)`; `finishReason: "STOP"`). With
tool calls and no `text`, the answer has no text at all.

`respond` receives every tool result of the request, in order, as `ToolResult(call_id, name, text, is_error)`, read
from that provider's own format: OpenAI `role: "tool"` messages (is_error is always False: the format has no flag),
Anthropic `tool_result` blocks, Gemini `functionResponse` parts (`{"error": ...}` sets is_error). The callable sees
results only as the server parsed them, so an echo proves the adapter wrote them where the provider looks. Names are
taken from the function response (Gemini) or from the assistant turn that made the call (OpenAI, Anthropic).

Cached input and reasoning (streamed or not; all zero by default):
    Reply(input_tokens=100, cached_tokens=60, cache_write_tokens=30, output_tokens=5, reasoning_tokens=12)

`input_tokens` is the whole prompt, cache reads and writes included (`cached_tokens` + `cache_write_tokens` may not
exceed it); `output_tokens` is the answer's own tokens, and `reasoning_tokens` is hidden reasoning billed on top of
them. Each server reports them with its provider's semantics:
    OpenAI     `prompt_tokens` includes the cached and written tokens, named in `prompt_tokens_details.cached_tokens`
               and `.cache_write_tokens`; `completion_tokens` includes reasoning, named in
               `completion_tokens_details.reasoning_tokens`. The details are left out when all three are zero, as
               OpenAI-compatible servers do. Streamed: in the final usage chunk.
    Anthropic  `input_tokens` EXCLUDES the cached and written tokens, reported beside it as `cache_read_input_tokens`
               and `cache_creation_input_tokens` (always present, 0 when unused); `output_tokens` includes thinking,
               named in `output_tokens_details.thinking_tokens` (only when non-zero). Streamed: the input side in
               `message_start`, the cumulative output in `message_delta` (and the input side again when
               `server.delta_input = True`).
    Gemini     `promptTokenCount` includes `cachedContentTokenCount`; `thoughtsTokenCount` is beside, not inside,
               `candidatesTokenCount` (each only when non-zero). No cache-write count: `cache_write_tokens` goes out
               as uncached prompt. A server's `thinking` text counts as its words of thoughts unless
               `reasoning_tokens` is given. Streamed: in the last chunk.

Output cap (text answers, streamed or not): a text longer than the request's cap in words (OpenAI
`max_completion_tokens` or `max_tokens`, Anthropic `max_tokens`, Gemini `generationConfig.maxOutputTokens`) is cut to
its first `cap` words and ends with the provider's length reason (`"length"`, `"max_tokens"`, `"MAX_TOKENS"`).

Standalone: `python -m tests.wire.servers openai --port 8900` serves until killed.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import re
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, Self
from urllib.parse import parse_qs, urlsplit


@dataclass(frozen=True)
class ToolResult:
    """A tool result found in a request, in provider-neutral form (see the module docstring)."""

    call_id: str | None
    name: str | None
    text: str
    is_error: bool = False


#: (function name, arguments): a dict is sent as the arguments object, a str verbatim.
ScriptedCall = tuple[str, dict[str, Any] | str]


@dataclass(frozen=True)
class Reply:
    """Answer successfully. `text=None` answers `"[{model}] " + <first 80 chars of the last user message>`, or no
    text when there are `tool_calls`; `respond`, when given, computes the text from the request's tool results.

    Default usage is deterministic so tests can assert exact values: input = whitespace-separated words of all
    request text (system + messages), output = words of the answer (and of each tool call's name and JSON
    arguments). `usage=False` leaves usage out entirely. `cached_tokens` and `cache_write_tokens` are parts of the
    input; `reasoning_tokens` are billed as output on top of `output_tokens` (see the module docstring).
    """

    text: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    usage: bool = True
    delay_s: float = 0.0
    tool_calls: Sequence[ScriptedCall] = ()
    respond: Callable[[list[ToolResult]], str] | None = None
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    delta_interval_s: float = 0.0  # streamed: the pause before each piece of the answer (OpenAI's wire format)
    gives_reason: bool = True  # False: a stream whose last chunk has no finish_reason, ended by [DONE] alone (OpenAI)

    def __post_init__(self) -> None:
        if self.respond is not None and self.text is not None:
            raise ValueError("give a Reply either `text` or `respond`, not both")
        if min(self.cached_tokens, self.cache_write_tokens, self.reasoning_tokens) < 0:
            raise ValueError("token counts cannot be negative")
        if self.input_tokens is not None and self.cached_tokens + self.cache_write_tokens > self.input_tokens:
            raise ValueError("cached_tokens + cache_write_tokens are part of input_tokens and cannot exceed it")


@dataclass(frozen=True)
class Fail:
    """Answer with an HTTP error in the provider's own error-body format, after `delay_s`."""

    status: int
    message: str = "simulated failure"
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


Behaviour = Reply | Fail


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str  # as sent, query string included
    headers: dict[str, str]  # names lower-cased
    body: Any  # parsed JSON, or None
    model: str | None


@dataclass(frozen=True)
class Answer:
    """A resolved `Reply`: the text, its streaming deltas, usage (None = leave usage out), tool calls, and whether
    the text was cut at the request's output cap. `input_tokens` includes the cached and written tokens;
    `output_tokens` excludes the reasoning tokens."""

    text: str
    input_tokens: int | None
    output_tokens: int | None
    tool_calls: Sequence[ScriptedCall] = ()
    truncated: bool = False
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    delta_interval_s: float = 0.0
    gives_reason: bool = True

    @property
    def billed_output(self) -> int:
        """The answer's tokens and the reasoning behind it, as OpenAI and Anthropic count output."""
        return (self.output_tokens or 0) + self.reasoning_tokens

    @property
    def deltas(self) -> list[str]:
        """Word-sized chunks, each carrying its trailing whitespace, e.g. "a b" → ["a ", "b"]."""
        return re.findall(r"\S+\s*", self.text) or ([self.text] if self.text else [])


def words(text: str) -> int:
    return len(text.split())


def _texts(content: Any) -> list[str]:
    """Text of a message content that is either a string or a list of typed parts/blocks."""
    if isinstance(content, str):
        return [content]
    if isinstance(content, list):
        return [part["text"] for part in content if isinstance(part, dict) and isinstance(part.get("text"), str)]
    return []


def _dicts(items: Any) -> list[dict[str, Any]]:
    """The dict items of what should be a list of objects (anything else in a request body is skipped)."""
    return [item for item in items if isinstance(item, dict)] if isinstance(items, list) else []


def _arguments_json(arguments: dict[str, Any] | str) -> str:
    return arguments if isinstance(arguments, str) else json.dumps(arguments)


def _cap(*values: Any) -> int | None:
    """The first integer among a request's output-cap fields; None (no cap, no truncation) when there is none."""
    return next((v for v in values if isinstance(v, int) and not isinstance(v, bool)), None)


class Exchange:
    """One HTTP request and the ways to answer it."""

    def __init__(self, handler: _Handler, body: Any) -> None:
        self._h = handler
        self.method = handler.command
        self.path = handler.path
        split = urlsplit(handler.path)
        self.route = split.path
        self.query = {key: values[-1] for key, values in parse_qs(split.query).items()}
        self.headers = {name.lower(): value for name, value in handler.headers.items()}
        self.body = body

    def json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self._h.send_response(status)
        self._h.send_header("Content-Type", "application/json")
        self._h.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self._h.send_header(name, value)
        self._h.end_headers()
        self._h.wfile.write(data)
        self._h.wfile.flush()

    def sse(self, events: Iterable[str]) -> None:
        """Stream pre-formatted SSE events; the body ends when the connection closes, as no length is known."""
        self._h.send_response(200)
        self._h.send_header("Content-Type", "text/event-stream")
        self._h.send_header("Cache-Control", "no-cache")
        self._h.send_header("Connection", "close")
        self._h.end_headers()
        self._h.close_connection = True
        for event in events:
            self._h.wfile.write(event.encode())
            self._h.wfile.flush()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the real APIs; the SDKs pool connections
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; without NODELAY, Nagle + delayed ACK add ~40 ms per answer.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.wire._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.wire._track(self.connection, add=False)

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        try:
            self.server.wire._dispatch(Exchange(self, body))
        except (BrokenPipeError, ConnectionResetError, OSError):
            self.close_connection = True  # the client gave up (e.g. timed out) while we slept

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # never wait for handlers that are sleeping out a delay
    request_queue_size = 1024  # many workers connect at once in throughput tests
    wire: WireServer


class WireServer:
    """Base: lifecycle, scripting and request recording. Subclasses implement `_model_of` and `_serve`."""

    kind: ClassVar[str] = ""
    api_prefix: ClassVar[str] = ""  # what the SDK's base_url needs after host:port

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._address = (host, port)
        self._lock = threading.Lock()
        self._in_flight = 0
        self.peak_in_flight = 0  # most requests being answered at once, for throughput benchmarks
        self._fifo: deque[Behaviour] = deque()
        self._per_model: dict[str, Behaviour] = {}
        self._chaos: dict[str, tuple[float, random.Random]] = {}
        self._requests: list[RecordedRequest] = []
        self._connections: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._ids = itertools.count(1)

    # lifecycle -------------------------------------------------------------------------------------------------

    def start(self) -> Self:
        if self._httpd is not None:
            return self
        self._stopping.clear()
        httpd = _HTTPServer(self._address, _Handler)
        httpd.wire = self
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, name=f"{self.kind}-wire", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; wakes sleeping handlers and cuts open keep-alive connections so pooled clients notice."""
        if self._httpd is None:
            return
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("server not started")
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        """http://127.0.0.1:<port>, without the API prefix."""
        host = "127.0.0.1" if self._address[0] in ("", "0.0.0.0") else self._address[0]
        return f"http://{host}:{self.port}"

    @property
    def url(self) -> str:
        """The base URL to hand to the SDK (OpenAI's includes /v1)."""
        return self.base_url + self.api_prefix

    # scripting -------------------------------------------------------------------------------------------------

    def push(self, *behaviours: Behaviour) -> None:
        with self._lock:
            self._fifo.extend(behaviours)

    def set_model(self, model: str, behaviour: Behaviour | None) -> None:
        """Persistent behaviour for one model (None clears it)."""
        with self._lock:
            if behaviour is None:
                self._per_model.pop(model, None)
            else:
                self._per_model[model] = behaviour

    def failure_rate(self, model: str, rate: float, seed: int = 0) -> None:
        """`model` answers 500 with probability `rate`, drawn from its own seeded generator."""
        with self._lock:
            self._chaos[model] = (rate, random.Random(seed))

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def reset(self) -> None:
        with self._lock:
            self._fifo.clear()
            self._per_model.clear()
            self._chaos.clear()
            self._requests.clear()
            self.peak_in_flight = 0

    # plumbing for subclasses -----------------------------------------------------------------------------------

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            (self._connections.add if add else self._connections.discard)(conn)

    def _dispatch(self, ex: Exchange) -> None:
        model = self._model_of(ex)
        with self._lock:
            self._requests.append(RecordedRequest(ex.method, ex.path, ex.headers, ex.body, model))
            self._in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self._in_flight)
        try:
            self._serve(ex, model)
        finally:
            with self._lock:
                self._in_flight -= 1

    def _take(self, model: str) -> Behaviour:
        """The behaviour for this call (FIFO, then chaos, then per-model, then Reply()), after its delay."""
        with self._lock:
            if self._fifo:
                behaviour: Behaviour = self._fifo.popleft()
            else:
                chaos = self._chaos.get(model)
                if chaos is not None and chaos[1].random() < chaos[0]:
                    behaviour = Fail(500, f"injected failure for {model}")
                else:
                    behaviour = self._per_model.get(model, Reply())
        if behaviour.delay_s > 0:
            self._stopping.wait(behaviour.delay_s)
        return behaviour

    @staticmethod
    def _answer(
        reply: Reply,
        model: str,
        texts: list[str],
        last_user: str,
        results: Sequence[ToolResult] = (),
        cap: int | None = None,
    ) -> Answer:
        """`cap` cuts a text answer to its first `cap` words, so the default output usage is the cap itself."""
        if reply.respond is not None:
            text = reply.respond(list(results))
        elif reply.text is not None:
            text = reply.text
        else:
            text = "" if reply.tool_calls else f"[{model}] " + last_user[:80]
        calls = tuple(reply.tool_calls)
        truncated = cap is not None and not calls and words(text) > cap
        if truncated:
            text = " ".join(text.split()[:cap])
        if not reply.usage:
            return Answer(
                text,
                None,
                None,
                calls,
                truncated,
                delta_interval_s=reply.delta_interval_s,
                gives_reason=reply.gives_reason,
            )
        input_tokens = reply.input_tokens if reply.input_tokens is not None else sum(words(t) for t in texts)
        if reply.cached_tokens + reply.cache_write_tokens > input_tokens:
            raise ValueError(
                f"{reply.cached_tokens} cached + {reply.cache_write_tokens} written > {input_tokens} input"
            )
        output_tokens = reply.output_tokens
        if output_tokens is None:
            output_tokens = words(text) + sum(words(f"{name} {_arguments_json(args)}") for name, args in calls)
        return Answer(
            text,
            input_tokens,
            output_tokens,
            calls,
            truncated,
            reply.cached_tokens,
            reply.cache_write_tokens,
            reply.reasoning_tokens,
            reply.delta_interval_s,
            reply.gives_reason,
        )

    def _next_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids):06d}"

    def _model_of(self, ex: Exchange) -> str | None:
        raise NotImplementedError

    def _serve(self, ex: Exchange, model: str | None) -> None:
        raise NotImplementedError


def _sse_data(payload: Any) -> str:
    return f"data: {json.dumps(payload)}\n\n"


def _sse_event(name: str, payload: Any) -> str:
    return f"event: {name}\ndata: {json.dumps(payload)}\n\n"


class OpenAIWireServer(WireServer):
    """`POST /v1/chat/completions` (JSON or SSE) and `GET /v1/models` — also what Ollama and vLLM expose."""

    kind = "openai"
    api_prefix = "/v1"
    _ERROR_TYPES: ClassVar[dict[int, tuple[str, str | None]]] = {
        400: ("invalid_request_error", None),
        401: ("invalid_request_error", "invalid_api_key"),
        403: ("invalid_request_error", "unsupported_country_region_territory"),
        404: ("invalid_request_error", "model_not_found"),
        429: ("requests", "rate_limit_exceeded"),
    }

    #: How much more a served model's own tokenizer counts than tiktoken (a small model's counted 10% more).
    SERVED_TOKENIZER_FACTOR = 1.1

    def __init__(self, host: str = "127.0.0.1", port: int = 0, models: Iterable[str] = ()) -> None:
        super().__init__(host, port)
        self.models = list(models)
        self._windows: dict[str, int] = {}
        self._slots: dict[str, int] = {}
        self._busy: dict[str, int] = {}
        self.refused: list[dict[str, int]] = []  # the over-long requests, with their numbers
        self.refused_busy = 0  # calls refused because every slot was taken

    def serve_locally(self, model: str, context_window: int, slots: int | None = None) -> None:
        """Answer for `model` as a local server with a `context_window` of its own does (llama.cpp's, vLLM's):
        a request whose prompt (counted by the model's tokenizer, `SERVED_TOKENIZER_FACTOR` x tiktoken) and
        `max_tokens` do not fit together is refused with a 400; with `slots`, a call beyond that many at once is
        refused with a 503."""
        with self._lock:
            self._windows[model] = context_window
            if slots is not None:
                self._slots[model] = slots

    def _serve(self, ex: Exchange, model: str | None) -> None:
        with self._lock:
            slots = self._slots.get(model or "")
            busy = slots is not None and self._busy.get(model, 0) >= slots
            if busy:
                self.refused_busy += 1
            elif slots is not None:
                self._busy[model] = self._busy.get(model, 0) + 1
        if busy:
            error = {"code": 503, "message": "no slot available", "type": "unavailable_error"}
            return ex.json(503, {"error": error})
        try:
            return self._serve_chat(ex, model)
        finally:
            if slots is not None:
                with self._lock:
                    self._busy[model] -= 1

    def _over_window(self, model: str, body: dict[str, Any]) -> dict[str, Any] | None:
        window = self._windows.get(model)
        if window is None:
            return None
        from shared.tokens import count_tokens

        texts = [t for m in body["messages"] for t in _texts(m.get("content"))]
        prompt = int(sum(count_tokens(text) for text in texts) * self.SERVED_TOKENIZER_FACTOR)
        wanted = _cap(body.get("max_completion_tokens"), body.get("max_tokens")) or 0
        if prompt + wanted <= window:
            return None
        with self._lock:
            self.refused.append({"prompt": prompt, "max_tokens": wanted, "window": window})
        message = "the request exceeds the available context size, try increasing it"
        return {
            "error": {"code": 400, "message": message, "type": "exceed_context_size_error", "n_prompt_tokens": prompt}
            | {"n_ctx": window}
        }

    def _model_of(self, ex: Exchange) -> str | None:
        return ex.body.get("model") if isinstance(ex.body, dict) else None

    def _error(self, status: int, message: str) -> dict[str, Any]:
        kind, code = self._ERROR_TYPES.get(status, ("server_error" if status >= 500 else "invalid_request_error", None))
        return {"error": {"message": message, "type": kind, "param": None, "code": code}}

    def _serve_chat(self, ex: Exchange, model: str | None) -> None:
        if ex.method == "GET" and ex.route == "/v1/models":
            with self._lock:
                known = dict.fromkeys([*self.models, *self._per_model, *self._chaos])
            data = [{"id": m, "object": "model", "created": 0, "owned_by": "wire"} for m in known]
            return ex.json(200, {"object": "list", "data": data})
        if ex.method != "POST" or ex.route != "/v1/chat/completions":
            return ex.json(404, self._error(404, f"Unknown route {ex.method} {ex.route}"))
        body = ex.body if isinstance(ex.body, dict) else {}
        if not model or not isinstance(body.get("messages"), list):
            return ex.json(400, self._error(400, "'model' and 'messages' are required"))
        if refusal := self._over_window(model, body):
            return ex.json(400, refusal)
        behaviour = self._take(model)
        if isinstance(behaviour, Fail):
            return ex.json(behaviour.status, self._error(behaviour.status, behaviour.message), behaviour.headers)
        messages = body["messages"]
        texts = [t for m in messages for t in _texts(m.get("content"))]
        users = [" ".join(_texts(m.get("content"))) for m in messages if m.get("role") == "user"]
        cap = _cap(body.get("max_completion_tokens"), body.get("max_tokens"))
        answer = self._answer(behaviour, model, texts, users[-1] if users else "", self._tool_results(messages), cap)
        usage = self._usage(answer)
        ident, created = self._next_id("chatcmpl-wire"), int(time.time())
        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": answer.text, "refusal": None}
            if answer.tool_calls:
                message["content"] = answer.text or None  # the API sends null content with tool calls
                message["tool_calls"] = [
                    {
                        "id": self._next_id("call_wire"),
                        "type": "function",
                        "function": {"name": name, "arguments": _arguments_json(args)},
                    }
                    for name, args in answer.tool_calls
                ]
            payload: dict[str, Any] = {
                "id": ident,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "logprobs": None,
                        "finish_reason": "tool_calls" if answer.tool_calls else self._finish(answer),
                    }
                ],
            }
            if usage is not None:
                payload["usage"] = usage
            return ex.json(200, payload)
        include_usage = bool((body.get("stream_options") or {}).get("include_usage")) and usage is not None
        ex.sse(self._stream(ident, created, model, answer, usage if include_usage else None, include_usage))

    @staticmethod
    def _finish(answer: Answer) -> str:
        return "length" if answer.truncated else "stop"

    @staticmethod
    def _usage(answer: Answer) -> dict[str, Any] | None:
        """Cached (and written) tokens are counted inside `prompt_tokens`, reasoning inside `completion_tokens`; the
        details name them."""
        if answer.input_tokens is None:
            return None
        usage: dict[str, Any] = {
            "prompt_tokens": answer.input_tokens,
            "completion_tokens": answer.billed_output,
            "total_tokens": answer.input_tokens + answer.billed_output,
        }
        if answer.cached_tokens or answer.cache_write_tokens or answer.reasoning_tokens:
            prompt_details = {"cached_tokens": answer.cached_tokens, "audio_tokens": 0}
            if answer.cache_write_tokens:
                prompt_details["cache_write_tokens"] = answer.cache_write_tokens
            usage["prompt_tokens_details"] = prompt_details
            usage["completion_tokens_details"] = {
                "reasoning_tokens": answer.reasoning_tokens,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            }
        return usage

    @staticmethod
    def _tool_results(messages: list[Any]) -> list[ToolResult]:
        """`role: "tool"` messages, named after the assistant tool call they answer."""
        messages = _dicts(messages)
        names = {
            call.get("id"): (call.get("function") or {}).get("name")
            for m in messages
            if m.get("role") == "assistant"
            for call in _dicts(m.get("tool_calls"))
        }
        return [
            ToolResult(m.get("tool_call_id"), names.get(m.get("tool_call_id")), " ".join(_texts(m.get("content"))))
            for m in messages
            if m.get("role") == "tool"
        ]

    @classmethod
    def _stream(
        cls, ident: str, created: int, model: str, answer: Answer, usage: dict[str, Any] | None, with_usage_key: bool
    ) -> Iterator[str]:
        def chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
            payload: dict[str, Any] = {
                "id": ident,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            }
            if with_usage_key:
                payload["usage"] = None  # with include_usage every chunk carries the key, null until the last
            return payload

        yield _sse_data(chunk({"role": "assistant", "content": ""}, None))
        for delta in answer.deltas:
            time.sleep(answer.delta_interval_s)
            yield _sse_data(chunk({"content": delta}, None))
        yield _sse_data(chunk({}, cls._finish(answer) if answer.gives_reason else None))
        if usage is not None:
            yield _sse_data(
                {
                    "id": ident,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "choices": [],
                    "usage": usage,
                }
            )
        yield "data: [DONE]\n\n"


class AnthropicWireServer(WireServer):
    """`POST /v1/messages`, JSON or the SSE event sequence of the Messages streaming API."""

    kind = "anthropic"
    _ERROR_TYPES: ClassVar[dict[int, str]] = {
        400: "invalid_request_error",
        401: "authentication_error",
        403: "permission_error",
        404: "not_found_error",
        413: "request_too_large",
        429: "rate_limit_error",
        500: "api_error",
        529: "overloaded_error",
    }

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host, port)
        # `message_delta` repeats the cumulative input-side counts (its usage has the fields), not the output alone
        self.delta_input = False

    def _model_of(self, ex: Exchange) -> str | None:
        return ex.body.get("model") if isinstance(ex.body, dict) else None

    def _error(self, status: int, message: str) -> dict[str, Any]:
        kind = self._ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
        return {"type": "error", "error": {"type": kind, "message": message}, "request_id": self._next_id("req_wire")}

    def _serve(self, ex: Exchange, model: str | None) -> None:
        if ex.method != "POST" or ex.route != "/v1/messages":
            return ex.json(404, self._error(404, f"Unknown route {ex.method} {ex.route}"))
        body = ex.body if isinstance(ex.body, dict) else {}
        if not model or not isinstance(body.get("messages"), list) or "max_tokens" not in body:
            return ex.json(400, self._error(400, "model, messages and max_tokens are required"))
        behaviour = self._take(model)
        if isinstance(behaviour, Fail):
            return ex.json(behaviour.status, self._error(behaviour.status, behaviour.message), behaviour.headers)
        messages = body["messages"]
        texts = _texts(body.get("system")) + [t for m in messages for t in _texts(m.get("content"))]
        users = [" ".join(_texts(m.get("content"))) for m in messages if m.get("role") == "user"]
        cap = _cap(body["max_tokens"])
        answer = self._answer(behaviour, model, texts, users[-1] if users else "", self._tool_results(messages), cap)
        ident = self._next_id("msg_wire")
        content = [{"type": "text", "text": answer.text}] if answer.text or not answer.tool_calls else []
        content += [
            {"type": "tool_use", "id": self._next_id("toolu_wire"), "name": name, "input": args}
            for name, args in answer.tool_calls
        ]
        message: dict[str, Any] = {
            "id": ident,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": "tool_use" if answer.tool_calls else self._finish(answer),
            "stop_sequence": None,
        }
        if answer.input_tokens is not None:
            message["usage"] = {**self._input_usage(answer), "output_tokens": answer.billed_output}
            message["usage"].update(self._output_details(answer))
        if not body.get("stream"):
            return ex.json(200, message)
        ex.sse(self._stream(message, answer))

    @staticmethod
    def _finish(answer: Answer) -> str:
        return "max_tokens" if answer.truncated else "end_turn"

    @staticmethod
    def _input_usage(answer: Answer) -> dict[str, int]:
        """`input_tokens` counts only the uncached input: cache reads and writes are reported beside it."""
        fresh = (answer.input_tokens or 0) - answer.cached_tokens - answer.cache_write_tokens
        return {
            "input_tokens": fresh,
            "cache_creation_input_tokens": answer.cache_write_tokens,
            "cache_read_input_tokens": answer.cached_tokens,
        }

    @staticmethod
    def _output_details(answer: Answer) -> dict[str, Any]:
        """Thinking is counted inside `output_tokens`; the details name it."""
        if not answer.reasoning_tokens:
            return {}
        return {"output_tokens_details": {"thinking_tokens": answer.reasoning_tokens}}

    @staticmethod
    def _tool_results(messages: list[Any]) -> list[ToolResult]:
        """`tool_result` blocks of user messages, named after the `tool_use` block they answer."""
        blocks = [block for m in _dicts(messages) for block in _dicts(m.get("content"))]
        names = {block.get("id"): block.get("name") for block in blocks if block.get("type") == "tool_use"}
        return [
            ToolResult(
                block.get("tool_use_id"),
                names.get(block.get("tool_use_id")),
                " ".join(_texts(block.get("content"))),
                bool(block.get("is_error")),
            )
            for block in blocks
            if block.get("type") == "tool_result"
        ]

    def _stream(self, message: dict[str, Any], answer: Answer) -> Iterator[str]:
        start = {**message, "content": [], "stop_reason": None}
        if answer.input_tokens is not None:
            start["usage"] = {**self._input_usage(answer), "output_tokens": 1}
        yield _sse_event("message_start", {"type": "message_start", "message": start})
        block = {"type": "text", "text": ""}
        yield _sse_event("content_block_start", {"type": "content_block_start", "index": 0, "content_block": block})
        yield _sse_event("ping", {"type": "ping"})
        for delta in answer.deltas:
            yield _sse_event(
                "content_block_delta",
                {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": delta}},
            )
        yield _sse_event("content_block_stop", {"type": "content_block_stop", "index": 0})
        final: dict[str, Any] = {
            "type": "message_delta",
            "delta": {"stop_reason": self._finish(answer), "stop_sequence": None},
        }
        if answer.output_tokens is not None:  # cumulative
            final["usage"] = {"output_tokens": answer.billed_output, **self._output_details(answer)}
            if self.delta_input:
                final["usage"].update(self._input_usage(answer))
        yield _sse_event("message_delta", final)
        yield _sse_event("message_stop", {"type": "message_stop"})


class GeminiWireServer(WireServer):
    """`POST /v1beta/models/{model}:generateContent` and `:streamGenerateContent?alt=sse` (Gemini Developer API)."""

    kind = "gemini"
    # google-genai 3.x defaults to api_version "v1"; the adapter pins "v1beta". Both are served.
    _ROUTE = re.compile(
        r"^/(?:v1|v1beta|v1alpha)/models/(?P<model>[^/:]+):(?P<method>generateContent|streamGenerateContent)$"
    )
    _STATUSES: ClassVar[dict[int, str]] = {
        400: "INVALID_ARGUMENT",
        401: "UNAUTHENTICATED",
        403: "PERMISSION_DENIED",
        404: "NOT_FOUND",
        408: "DEADLINE_EXCEEDED",
        429: "RESOURCE_EXHAUSTED",
        500: "INTERNAL",
        503: "UNAVAILABLE",
        504: "DEADLINE_EXCEEDED",
    }

    def __init__(self, host: str = "127.0.0.1", port: int = 0, call_ids: bool = False) -> None:
        super().__init__(host, port)
        self.call_ids = call_ids  # give `functionCall`s an id, as newer models do; Gemini 2.x gives none
        self.thinking = ""  # a thinking model's thought part, sent before the answer and counted apart from it
        self.blocked = ""  # a prompt-block reason: the answer is no candidate, only `promptFeedback`, as Gemini does

    def _model_of(self, ex: Exchange) -> str | None:
        match = self._ROUTE.match(ex.route)
        return match["model"] if match else None

    def _error(self, status: int, message: str) -> dict[str, Any]:
        code = self._STATUSES.get(status, "INTERNAL" if status >= 500 else "FAILED_PRECONDITION")
        return {"error": {"code": status, "message": message, "status": code}}

    def _serve(self, ex: Exchange, model: str | None) -> None:
        match = self._ROUTE.match(ex.route)
        if ex.method != "POST" or match is None or model is None:
            return ex.json(404, self._error(404, f"Unknown route {ex.method} {ex.route}"))
        body = ex.body if isinstance(ex.body, dict) else {}
        contents = body.get("contents")
        if not isinstance(contents, list):
            return ex.json(400, self._error(400, "* GenerateContentRequest.contents: contents is not specified"))
        behaviour = self._take(model)
        if isinstance(behaviour, Fail):
            return ex.json(behaviour.status, self._error(behaviour.status, behaviour.message), behaviour.headers)
        system = (body.get("systemInstruction") or {}).get("parts")
        texts = _texts(system) + [t for c in contents for t in _texts(c.get("parts"))]
        users = [" ".join(_texts(c.get("parts"))) for c in contents if c.get("role", "user") == "user"]
        cap = _cap((body.get("generationConfig") or {}).get("maxOutputTokens"))
        answer = self._answer(behaviour, model, texts, users[-1] if users else "", self._tool_results(contents), cap)
        usage = self._usage(answer)
        response_id = self._next_id("wire-")
        if self.blocked:
            refusal = {
                "promptFeedback": {"blockReason": self.blocked},
                "modelVersion": model,
                "responseId": response_id,
                "usageMetadata": {"promptTokenCount": answer.input_tokens or 0},
            }
            if match["method"] == "generateContent":
                return ex.json(200, refusal)
            return ex.sse(iter([f"data: {json.dumps(refusal)}\r\n\r\n"]))
        if match["method"] == "generateContent":
            calls = [{"name": name, "args": args} for name, args in answer.tool_calls]
            if self.call_ids:
                calls = [{"id": self._next_id("fc-wire-"), **call} for call in calls]
            payload = self._chunk(answer.text, self._finish(answer), usage, model, response_id, calls, self.thinking)
            return ex.json(200, payload)
        ex.sse(self._stream(answer, usage, model, response_id))

    @staticmethod
    def _finish(answer: Answer) -> str:
        return "MAX_TOKENS" if answer.truncated else "STOP"

    def _usage(self, answer: Answer) -> dict[str, int] | None:
        """Cached tokens are counted inside `promptTokenCount`, thoughts beside `candidatesTokenCount`; Gemini has no
        cache-write count."""
        if answer.input_tokens is None:
            return None
        thoughts = answer.reasoning_tokens or words(self.thinking)
        usage = {
            "promptTokenCount": answer.input_tokens,
            "candidatesTokenCount": answer.output_tokens or 0,
            "totalTokenCount": answer.input_tokens + (answer.output_tokens or 0) + thoughts,
        }
        if answer.cached_tokens:
            usage["cachedContentTokenCount"] = answer.cached_tokens
        if thoughts:
            usage["thoughtsTokenCount"] = thoughts
        return usage

    @staticmethod
    def _tool_results(contents: list[Any]) -> list[ToolResult]:
        """`functionResponse` parts: `{"result": ...}` is a result, `{"error": ...}` a failure, else the whole JSON."""
        results = []
        for part in (part for c in _dicts(contents) for part in _dicts(c.get("parts"))):
            response = part.get("functionResponse", part.get("function_response"))  # proto JSON takes either
            if not isinstance(response, dict):
                continue
            value = response.get("response") if isinstance(response.get("response"), dict) else {}
            is_error = "error" in value
            text = value["error"] if is_error else value.get("result", value)
            text = text if isinstance(text, str) else json.dumps(text)
            results.append(ToolResult(response.get("id"), response.get("name"), text, is_error))
        return results

    @staticmethod
    def _chunk(
        text: str,
        finish: str | None,
        usage: dict[str, int] | None,
        model: str,
        response_id: str,
        calls: list[dict[str, Any]] | None = None,
        thought: str = "",
    ) -> dict[str, Any]:
        parts: list[dict[str, Any]] = [{"text": thought, "thought": True}] if thought else []
        parts += [{"text": text}] if text or not calls else []
        parts += [{"functionCall": call} for call in calls or []]
        candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
        if finish is not None:
            candidate["finishReason"] = finish
        payload: dict[str, Any] = {"candidates": [candidate], "modelVersion": model, "responseId": response_id}
        if usage is not None:
            payload["usageMetadata"] = usage
        return payload

    def _stream(self, answer: Answer, usage: dict[str, int] | None, model: str, response_id: str) -> Iterator[str]:
        deltas = answer.deltas or [""]
        # Like the real API: every chunk has the prompt count, the last one the full usage and the finish reason.
        partial = None if usage is None else {"promptTokenCount": usage["promptTokenCount"]}
        finish = self._finish(answer)
        for i, delta in enumerate(deltas):
            last = i == len(deltas) - 1
            chunk = self._chunk(
                delta,
                finish if last else None,
                usage if last else partial,
                model,
                response_id,
                thought=self.thinking if i == 0 else "",
            )
            yield f"data: {json.dumps(chunk)}\r\n\r\n"


SERVERS: dict[str, type[WireServer]] = {
    "openai": OpenAIWireServer,
    "anthropic": AnthropicWireServer,
    "gemini": GeminiWireServer,
    "google": GeminiWireServer,
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve one provider's wire format until killed.")
    parser.add_argument("kind", choices=sorted(SERVERS))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    server = SERVERS[args.kind](args.host, args.port).start()
    print(f"{args.kind} wire server listening; SDK base_url = {server.url}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()
