"""`json_depth` against a parser's own view of nesting and on the bodies that used to exhaust the API; `RequestLimits`
driven message by message, as a server drives it."""

from __future__ import annotations

import asyncio
import json
import random
import time
from typing import Any

import pytest

from api.limits import RequestLimits, json_depth, too_deep
from shared.errors import TooLarge


def reference_depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max(map(reference_depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(reference_depth, value.values()), default=0)
    return 0


STRING_PIECES = ["a", "[", "]", "{", "}", '"', "\\", "\\\\", '\\"', "é", "\n", "\u2028", ":", ",", " "]


def random_string(rng: random.Random) -> str:
    return "".join(rng.choice(STRING_PIECES) for _ in range(rng.randrange(6)))


def random_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(8) if depth < 12 else rng.randrange(5)
    if kind == 0:
        return None
    if kind == 1:
        return rng.random() < 0.5
    if kind == 2:
        return rng.randrange(-1000, 1000)
    if kind in (3, 4):
        return random_string(rng)
    if kind in (5, 6):
        return [random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {random_string(rng): random_value(rng, depth + 1) for _ in range(rng.randrange(4))}


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        (b"", 0),
        (b"42", 0),
        (b'"text"', 0),
        (b"[]", 1),
        (b"{}", 1),
        (b"[1, 2, 3]", 1),
        (b'{"a": [1, {"b": [[]]}]}', 5),
        (b"[[], [[]], []]", 3),
        (b'["]]]", "[[[[[[", "{{{"]', 1),
        (b'{"[": "{", "}": "]"}', 1),
        (rb'["\"[[[[", "\\", [[]]]', 3),
        (rb'["\\\"[[[[\\", [[]]]', 3),
        (rb'["\\\\", ["\\\\\\\"]]]"]]', 2),
        (rb'"\u005b\u005b"', 0),
    ],
)
def test_depth_of_small_documents(text: bytes, depth: int) -> None:
    if text:
        assert reference_depth(json.loads(text)) == depth  # the case itself is right
    assert json_depth(text) == depth


def test_depth_matches_the_parsed_document() -> None:
    rng = random.Random(20240611)
    depths = set()
    for _ in range(400):
        document = random_value(rng)
        expected = reference_depth(document)
        depths.add(expected)
        for text in (json.dumps(document), json.dumps(document, ensure_ascii=False, indent=rng.choice([None, 1]))):
            assert json_depth(text.encode()) == expected, text
    assert len(depths) > 8  # the documents really vary in depth


def test_millions_of_empty_arrays_are_two_deep_and_quick() -> None:
    body = b"[" + b"[]," * 2_600_000 + b"[]]"
    started = time.perf_counter()
    assert json_depth(body) == 2
    assert not too_deep(body, 32)
    assert time.perf_counter() - started < 1.0


def test_deep_nesting_is_counted() -> None:
    body = b'{"a": ' * 150 + b"[" * 150 + b"1" + b"]" * 150 + b"}" * 150
    assert json_depth(body) == 300
    assert json_depth(b"[" * 300 + b"]" * 300) == 300
    assert too_deep(body, 32) and too_deep(body, 299) and not too_deep(body, 300)


def test_unclosed_brackets_and_strings_are_not_undercounted() -> None:
    assert json_depth(b"[" * 50) == 50  # a parser descends 50 levels before it finds the text cut short
    assert json_depth(b'[[["abc') == 3
    assert json_depth(b'[[["ab\\') == 3


def test_too_deep_skips_bodies_with_few_brackets() -> None:
    assert not too_deep(b"[" * 32, 32)
    assert too_deep(b"[" * 33, 32)
    assert not too_deep(b'["[[[[[[[[[["]', 3)  # many brackets, but in a string


class Client:
    """One request as an ASGI server hands it over: body chunks on `receive`, the answer collected from `send`."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.pulled = 0
        self.sent: list[dict[str, Any]] = []

    async def receive(self) -> dict[str, Any]:
        if self.pulled < len(self.chunks):
            self.pulled += 1
            return {
                "type": "http.request",
                "body": self.chunks[self.pulled - 1],
                "more_body": self.pulled < len(self.chunks),
            }
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    @property
    def status(self) -> int:
        return next(m["status"] for m in self.sent if m["type"] == "http.response.start")

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")


def http_scope(content_type: str | None = None, length: int | None = None) -> dict[str, Any]:
    headers = [(b"content-type", content_type.encode())] if content_type else []
    headers += [(b"content-length", str(length).encode())] if length is not None else []
    return {"type": "http", "method": "POST", "path": "/", "headers": headers}


class EchoApp:
    """Reads the whole body, then answers its length; remembers every message it received."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.calls = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.calls += 1
        size, more = 0, True
        while more:
            message = await receive()
            self.messages.append(message)
            size += len(message.get("body", b""))
            more = message.get("more_body", False)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(size).encode()})


def run(limits: RequestLimits, scope: dict[str, Any], client: Client) -> Client:
    asyncio.run(limits(scope, client.receive, client.send))
    return client


def test_a_long_body_is_cut_at_the_first_chunk_past_the_limit() -> None:
    app = EchoApp()
    client = run(RequestLimits(app, max_bytes=1_000_000), http_scope(), Client([b"x" * 100_000] * 100))
    assert client.pulled == 11  # ten chunks reach the limit, the eleventh passes it: none is asked for after
    assert client.status == 413
    assert json.loads(client.body) == {"detail": "request body is larger than the limit of 1,000,000 bytes"}


def test_a_declared_length_past_the_limit_is_refused_unread() -> None:
    app = EchoApp()
    client = run(RequestLimits(app, max_bytes=1000), http_scope(length=1001), Client([b"x" * 1001]))
    assert (client.status, client.pulled, app.calls) == (413, 0, 0)
    assert b"1,001 bytes" in client.body and b"1,000 bytes" in client.body


def test_a_body_at_the_limit_reaches_the_app_whole() -> None:
    app = EchoApp()
    client = run(RequestLimits(app, max_bytes=1000), http_scope(), Client([b"x" * 400, b"x" * 600]))
    assert (client.status, client.body) == (200, b"1000")


def test_what_the_app_answers_past_the_limit_becomes_the_413() -> None:
    async def forgiving(scope: Any, receive: Any, send: Any) -> None:
        try:
            await receive()
        except TooLarge:
            pass
        await send({"type": "http.response.start", "status": 400, "headers": []})
        await send({"type": "http.response.body", "body": b"could not parse the body"})

    client = run(RequestLimits(forgiving, max_bytes=10), http_scope(), Client([b"x" * 11]))
    assert client.status == 413 and b"limit of 10 bytes" in client.body
    assert len(client.sent) == 2  # the app's own answer went nowhere


def test_a_started_response_is_not_replaced() -> None:
    async def streaming(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await receive()

    with pytest.raises(TooLarge):
        run(RequestLimits(streaming, max_bytes=10), http_scope(), Client([b"x" * 11]))


def test_deep_json_is_refused_before_the_app_and_shallow_json_is_replayed() -> None:
    app = EchoApp()
    limits = RequestLimits(app, max_bytes=100_000, max_json_depth=32)
    deep = b"[" * 300 + b"]" * 300
    refused = run(limits, http_scope("application/json"), Client([deep[:250], deep[250:]]))
    assert refused.status == 422 and app.calls == 0
    assert json.loads(refused.body) == {"detail": "JSON nested 300 deep; the limit is 32"}
    assert run(limits, http_scope("application/vnd.api+json; charset=utf-8"), Client([deep])).status == 422
    assert run(limits, http_scope("text/plain"), Client([deep])).status == 200  # not JSON: not measured

    shallow = b"[" * 20 + b"]" * 20
    accepted = run(limits, http_scope("application/json"), Client([shallow[:7], shallow[7:]]))
    assert (accepted.status, accepted.body) == (200, b"40")
    body = {"type": "http.request", "body": shallow, "more_body": False}
    assert app.messages[-1] == body  # one message with the whole body


def test_the_reply_is_injected() -> None:
    replies = []

    async def reply(scope: Any, send: Any, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        replies.append((scope["path"], status, detail))

    run(RequestLimits(EchoApp(), max_bytes=10, reply=reply), http_scope(), Client([b"x" * 20]))
    assert replies == [("/", 413, "request body is larger than the limit of 10 bytes")]


def test_other_scopes_pass_through_untouched() -> None:
    seen = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append((scope["type"], receive, send))

    client = Client([b"x" * 20])
    for kind in ("websocket", "lifespan"):
        asyncio.run(RequestLimits(app, max_bytes=10)({"type": kind}, client.receive, client.send))
    assert seen == [(kind, client.receive, client.send) for kind in ("websocket", "lifespan")]
