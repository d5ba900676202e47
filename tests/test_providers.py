"""The three provider adapters, through their real SDKs, against local servers that speak each wire format.

Nothing is mocked: the SDK builds and sends real HTTP requests, parses real JSON/SSE answers and raises its own
exceptions, and the adapters must turn all of that into `Completion`s and classified `ProviderError`s.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from email.utils import formatdate
from typing import Any

import pytest

from shared.providers.base import Completion, Message, ProviderError, ProviderRequest
from shared.settings import load_settings
from shared.tokens import count_tokens
from tests.wire.adapters import STOP, WireCase, adapter, serving, wire_fixtures
from tests.wire.servers import Fail, OpenAIWireServer, Reply

API_KEY = "sk-test-5ecr3t-k3y-0123456789"
SYSTEM = "You are terse."


class Wire(WireCase):
    def request(self, **overrides: Any) -> ProviderRequest:
        fields: dict[str, Any] = {
            "model": self.model,
            "system": SYSTEM,
            "messages": [
                Message(role="user", content="What is two plus two?"),
                Message(role="assistant", content="Four."),
                Message(role="user", content="And three plus three?"),
            ],
            "max_tokens": 123,
            "temperature": 0.25,
            "timeout_s": 5.0,
        }
        return ProviderRequest(**{**fields, **overrides})


_running, wire = wire_fixtures(Wire, API_KEY)


def _fail(wire: Wire, request: ProviderRequest | None = None, *, stream: bool = False) -> ProviderError:
    request = request or wire.request()
    with pytest.raises(ProviderError) as caught:
        if stream:
            list(wire.provider.stream(request))
        else:
            wire.provider.complete(request)
    assert API_KEY not in str(caught.value)
    assert caught.value.provider == f"test-{wire.kind}" and caught.value.model == request.model
    return caught.value


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# success ---------------------------------------------------------------------------------------------------------


def test_complete_takes_usage_from_the_response(wire: Wire) -> None:
    wire.server.push(Reply(text="Six, obviously.", input_tokens=41, output_tokens=7))
    completion = wire.provider.complete(wire.request())
    assert completion == Completion(
        text="Six, obviously.",
        input_tokens=41,
        output_tokens=7,
        model=wire.model,
        finish_reason=STOP[wire.kind],
        usage_reported=True,
    )
    assert len(wire.server.requests) == 1


def test_default_reply_echoes_the_last_user_message_and_counts_words(wire: Wire) -> None:
    completion = wire.provider.complete(wire.request())
    assert completion.text == f"[{wire.model}] And three plus three?"
    # words of system + all messages: 3 + 5 + 1 + 4; of the answer: 1 + 4
    assert (completion.input_tokens, completion.output_tokens) == (13, 5)


def test_request_on_the_wire(wire: Wire) -> None:
    wire.provider.complete(wire.request())
    [sent] = wire.server.requests
    body = sent.body
    assert sent.method == "POST" and sent.model == wire.model
    if wire.kind == "openai":
        assert sent.path == "/v1/chat/completions"
        assert sent.headers["authorization"] == f"Bearer {API_KEY}"
        assert body["model"] == wire.model
        assert body["messages"] == [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": "What is two plus two?"},
            {"role": "assistant", "content": "Four."},
            {"role": "user", "content": "And three plus three?"},
        ]
        assert body["max_tokens"] == 123 and body["temperature"] == 0.25
        assert "stream" not in body
    elif wire.kind == "anthropic":
        assert sent.path == "/v1/messages"
        # anthropic 2.x sends the API key as a bearer token (1.x used x-api-key)
        assert sent.headers["authorization"] == f"Bearer {API_KEY}"
        assert "anthropic-version" in sent.headers
        assert body["model"] == wire.model
        assert body["system"] == SYSTEM
        assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
        assert body["messages"][0]["content"] == "What is two plus two?"
        assert body["max_tokens"] == 123 and body["temperature"] == 0.25
    else:
        assert sent.path == f"/v1beta/models/{wire.model}:generateContent"
        assert sent.headers["x-goog-api-key"] == API_KEY
        assert body["systemInstruction"]["parts"] == [{"text": SYSTEM}]
        assert [c["role"] for c in body["contents"]] == ["user", "model", "user"]
        assert body["contents"][2]["parts"] == [{"text": "And three plus three?"}]
        assert body["generationConfig"] == {"maxOutputTokens": 123, "temperature": 0.25}


def test_a_lone_user_turn_goes_on_the_wire_as_that_turn(wire: Wire) -> None:
    request = wire.request(messages=[Message(role="user", content="Capital of France?")])
    wire.provider.complete(request)
    body = wire.server.requests[-1].body
    if wire.kind == "openai":
        assert body["messages"][1:] == [{"role": "user", "content": "Capital of France?"}]
    elif wire.kind == "anthropic":
        assert body["messages"] == [{"role": "user", "content": "Capital of France?"}]
    else:
        assert body["contents"] == [{"role": "user", "parts": [{"text": "Capital of France?"}]}]
        assert body["systemInstruction"]["parts"] == [{"text": SYSTEM}]


@pytest.mark.parametrize("stream", [False, True])
def test_gemini_thoughts_are_billed_as_output_but_left_out_of_the_answer(stream: bool) -> None:
    with serving("google", API_KEY) as (server, provider):
        server.thinking = "Three and three make six, so"
        server.push(Reply(text="Six.", input_tokens=20, output_tokens=1))
        request = Wire("google", server, provider).request()
        answer = list(provider.stream(request))[-1] if stream else provider.complete(request)
    assert answer.text == "Six." and answer.finish_reason == "STOP"
    assert (answer.input_tokens, answer.output_tokens, answer.usage_reported) == (20, 1 + 6, True)


def test_missing_usage_is_estimated_locally(wire: Wire) -> None:
    wire.server.push(Reply(text="Six, as it happens.", usage=False))
    completion = wire.provider.complete(wire.request())
    assert completion.text == "Six, as it happens."
    assert completion.usage_reported is False
    assert completion.output_tokens == count_tokens("Six, as it happens.") > 0
    assert completion.input_tokens > count_tokens(SYSTEM) > 0


# streaming -------------------------------------------------------------------------------------------------------


def test_stream_yields_deltas_in_order_then_one_completion(wire: Wire) -> None:
    wire.server.push(Reply(text="alpha beta gamma delta", input_tokens=30, output_tokens=9))
    items = list(wire.provider.stream(wire.request()))
    assert items[:-1] == ["alpha ", "beta ", "gamma ", "delta"]
    assert items[-1] == Completion(
        text="alpha beta gamma delta",
        input_tokens=30,
        output_tokens=9,
        model=wire.model,
        finish_reason=STOP[wire.kind],
        usage_reported=True,
    )
    [sent] = wire.server.requests
    if wire.kind == "openai":
        assert sent.body["stream"] is True and sent.body["stream_options"] == {"include_usage": True}
    elif wire.kind == "anthropic":
        assert sent.body["stream"] is True and sent.body["system"] == SYSTEM
    else:
        assert sent.path == f"/v1beta/models/{wire.model}:streamGenerateContent?alt=sse"


def test_stream_without_usage_estimates(wire: Wire) -> None:
    wire.server.push(Reply(text="one two three", usage=False))
    items = list(wire.provider.stream(wire.request()))
    final = items[-1]
    assert isinstance(final, Completion) and sum(isinstance(i, Completion) for i in items) == 1
    assert final.text == "one two three" and final.usage_reported is False
    assert final.output_tokens == count_tokens("one two three") and final.input_tokens > 0


def test_a_stream_that_ends_without_a_reason_is_incomplete_not_stop() -> None:
    """An OpenAI-compatible server that ends its stream with `[DONE]` and no `finish_reason` (some local servers,
    and one cut off mid-answer) gave an answer nobody can call whole."""
    with serving("openai", API_KEY) as (server, provider):
        server.push(Reply(text="part of an answer", gives_reason=False))
        request = ProviderRequest(model="gpt-4.1-nano", messages=[Message(role="user", content="hi")])
        final = list(provider.stream(request))[-1]
    assert final.text == "part of an answer"
    assert final.finish_reason == "incomplete" and final.stop_reason == "incomplete"


# errors ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
def test_rate_limit_is_retryable_with_retry_after_and_not_retried_by_the_sdk(wire: Wire, stream: bool) -> None:
    wire.server.push(Fail(429, "Slow down there.", headers={"Retry-After": "2"}))
    error = _fail(wire, stream=stream)
    assert (error.kind, error.retryable, error.status, error.retry_after_s) == ("rate_limit", True, 429, 2.0)
    assert len(wire.server.requests) == 1


def test_retry_after_ms_and_http_date(wire: Wire) -> None:
    wire.server.push(Fail(429, headers={"retry-after-ms": "1500"}))
    assert _fail(wire).retry_after_s == 1.5
    wire.server.push(Fail(429, headers={"Retry-After": formatdate(time.time() + 30, usegmt=True)}))
    retry_after = _fail(wire).retry_after_s
    assert retry_after is not None and 25 < retry_after <= 30
    assert len(wire.server.requests) == 2


def test_server_error_is_retryable_and_not_retried_by_the_sdk(wire: Wire) -> None:
    wire.server.push(Fail(500, "Internal trouble."))
    error = _fail(wire)
    assert (error.kind, error.retryable, error.status) == ("server", True, 500)
    assert len(wire.server.requests) == 1


def test_bad_request_is_a_client_error_with_the_providers_message(wire: Wire) -> None:
    wire.server.push(Fail(400, "max_tokens: must be at most 8192"))
    error = _fail(wire)
    assert (error.kind, error.retryable, error.status) == ("client", False, 400)
    assert "max_tokens: must be at most 8192" in error.message


@pytest.mark.parametrize(
    ("status", "kind", "retryable"),
    [
        (401, "auth", False),
        (403, "auth", False),
        (404, "client", False),
        (422, "client", False),
        (408, "timeout", True),
        (502, "server", True),
        (503, "server", True),
        (529, "server", True),
    ],
)
def test_status_classification(wire: Wire, status: int, kind: str, retryable: bool) -> None:
    wire.server.push(Fail(status, f"status {status} from the wire"))
    error = _fail(wire)
    assert (error.status, error.kind, error.retryable) == (status, kind, retryable)
    assert f"status {status} from the wire" in error.message
    assert len(wire.server.requests) == 1


def test_an_echoed_api_key_never_reaches_the_error(wire: Wire) -> None:
    wire.server.push(Fail(401, f"Incorrect API key provided: {API_KEY}."))
    error = _fail(wire)  # asserts the key is absent
    assert error.kind == "auth" and "Incorrect API key provided" in error.message


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
def test_a_reply_slower_than_timeout_s_times_out(wire: Wire, stream: bool) -> None:
    wire.server.push(Reply(text="too late", delay_s=2.0))
    started = time.monotonic()
    error = _fail(wire, wire.request(timeout_s=0.5), stream=stream)
    elapsed = time.monotonic() - started
    assert (error.kind, error.retryable) == ("timeout", True)
    assert 0.4 < elapsed < 1.5
    assert len(wire.server.requests) == 1


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
def test_a_closed_port_is_a_connection_error(_running: Wire, stream: bool) -> None:
    kind = _running.kind
    base = f"http://127.0.0.1:{_closed_port()}" + _running.server.api_prefix
    dead = Wire(kind, _running.server, adapter(kind, API_KEY, base))
    started = time.monotonic()
    error = _fail(dead, stream=stream)
    assert (error.kind, error.retryable, error.status) == ("connection", True, None)
    assert time.monotonic() - started < 1.0


# the wire servers' scripting, which other test suites rely on ---------------------------------------------------


def test_fifo_comes_before_the_per_model_behaviour_which_comes_before_the_default(wire: Wire) -> None:
    wire.server.set_model(wire.model, Reply(text="pinned"))
    wire.server.push(Reply(text="first"), Fail(503, "second"))
    assert wire.provider.complete(wire.request()).text == "first"
    assert _fail(wire).kind == "server"
    assert wire.provider.complete(wire.request()).text == "pinned"
    assert wire.provider.complete(wire.request(model="other-model")).text.startswith("[other-model] ")
    wire.server.reset()
    assert wire.server.requests == []
    assert wire.provider.complete(wire.request()).text.startswith(f"[{wire.model}] ")


def test_failure_rate_is_seeded(wire: Wire) -> None:
    def outcomes() -> list[bool]:
        wire.server.failure_rate(wire.model, 0.5, seed=11)
        results = []
        for _ in range(12):
            try:
                wire.provider.complete(wire.request())
                results.append(True)
            except ProviderError as error:
                assert (error.status, error.kind) == (500, "server")
                results.append(False)
        return results

    first, second = outcomes(), outcomes()
    assert first == second and True in first and False in first


def test_a_server_answers_other_processes() -> None:
    """Worker subprocesses call the servers over TCP."""
    script = (
        "import json, sys, urllib.request\n"
        "body = json.dumps({'model': 'm', 'messages': [{'role': 'user', 'content': 'from a child'}]}).encode()\n"
        "req = urllib.request.Request(sys.argv[1] + '/chat/completions', body, {'Content-Type': 'application/json'})\n"
        "print(urllib.request.urlopen(req, timeout=5).read().decode())\n"
    )
    with OpenAIWireServer() as server:
        out = subprocess.run([sys.executable, "-c", script, server.url], capture_output=True, text=True, timeout=20)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["choices"][0]["message"]["content"] == "[m] from a child"
        assert [r.model for r in server.requests] == ["m"]


def test_a_worker_prepares_the_adapters_of_callable_providers_only():
    """`prepare_adapters` (run at worker start) loads the SDKs that jobs will call and builds their clients, and
    no other."""
    code = (
        "import sys; from shared.settings import load_settings; from shared.providers import _build, "
        "prepare_adapters; prepare_adapters(load_settings()); "
        "print(sorted(m for m in sys.modules if m.startswith('shared.providers.') and m.endswith('_provider'))); "
        "print(_build.cache_info().currsize)"
    )
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and not k.startswith("ORCH_")}
    shown = subprocess.run(
        [sys.executable, "-c", code], env=env | {"ANTHROPIC_API_KEY": "k"}, capture_output=True, text=True, check=True
    ).stdout
    # anthropic has a key; the catalog's keyless OpenAI-compatible servers (Ollama) use the openai adapter
    keyless = [p.adapter for p in load_settings().providers.values() if not p.api_key_required]
    expected = sorted({"shared.providers.anthropic_provider"} | {f"shared.providers.{a}_provider" for a in keyless})
    modules, clients = shown.splitlines()
    assert modules == str(expected)
    assert int(clients) == 1 + len(keyless)


def test_gemini_sdk_models_answer_membership_as_pydantic_does() -> None:
    """The Gemini adapter answers google-genai's `key in model` without walking the model; the answers must stay
    pydantic's own, whose iteration yields (name, value) pairs, or the SDK would index a model like a dict."""
    from google.genai import types

    import shared.providers.google_provider  # noqa: F401

    part = types.Part(text="x")
    assert "text" not in part and "thought" not in part
    assert ("text", "x") in part and ("text", "y") not in part and ("thought", None) in part
    config = types.GenerateContentConfig.model_validate({"max_output_tokens": 5})
    assert "max_output_tokens" not in config and ("max_output_tokens", 5) in config


def test_a_workers_first_concurrent_calls_share_one_client_per_account(monkeypatch: pytest.MonkeyPatch) -> None:
    """Threads that all ask for an account's adapter at once get one adapter, built once, not one each."""
    from concurrent.futures import ThreadPoolExecutor

    from shared.providers import _build, provider_for

    monkeypatch.setenv("GOOGLE_API_KEY", "first-calls")
    settings = load_settings()
    _build.cache_clear()
    with ThreadPoolExecutor(16) as pool:
        adapters = list(pool.map(lambda _: provider_for("google", settings), range(16)))
    assert len({id(a) for a in adapters}) == 1
    assert _build.cache_info().misses == 1
