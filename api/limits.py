"""Hard limits on a request body, enforced while it arrives rather than after it has been read.

A `Content-Length` header alone proves nothing: a chunked body declares no length, so the bytes are counted as they
come and reading stops at the first chunk past the limit. A JSON body is also measured for nesting before any parser
sees it, since a recursive decoder meets a few hundred levels as a `RecursionError` and millions of tiny arrays as
seconds of work and hundreds of megabytes of objects. The check runs on bytes at C speed and never builds the document.
A pure ASGI middleware, so streamed responses pass through untouched.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable

import numpy as np
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.errors import TooLarge

#: Writes an error response: `(scope, send, status, detail, headers)`, as `api.security` answers its own errors.
Reply = Callable[[Scope, Send, int, str, dict[str, str] | None], Awaitable[None]]

_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")  # an opening bracket is +1, a closing one -1 (as int8)
_NOT_STEPS = bytes(set(range(256)) - set(b'[]{}"'))  # everything else goes, quotes stay until strings are dropped
_STRING = re.compile(rb'"[^"]*"?')  # an unterminated string runs to the end, as it does for a parser
_BLOCK = 1 << 18  # levels summed per numpy call: a bounded temporary array, whatever the body's size


def json_depth(data: bytes) -> int:
    """The deepest nesting of arrays and objects in a JSON text; brackets inside strings do not count.

    It does not validate: for valid JSON it is exact, for anything else it never counts fewer levels than a parser
    would descend before failing. Escapes go first (an escaped backslash, then an escaped quote: neither ends a
    string), then every byte but brackets and quotes, then the strings, so the work past the first pass is on a
    fraction of the body."""
    data = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    steps = data.translate(_STEPS, _NOT_STEPS)
    if b'"' in steps:
        steps = _STRING.sub(b"", steps)
    depth = level = 0
    for start in range(0, len(steps), _BLOCK):
        count = min(_BLOCK, len(steps) - start)
        levels = np.frombuffer(steps, np.int8, count, start).cumsum(dtype=np.int64) + level
        depth = max(depth, int(levels.max()))
        level = int(levels[-1])
    return depth


def too_deep(data: bytes, limit: int) -> bool:
    """Whether `data` nests deeper than `limit`; a body with no more opening brackets than that is not even scanned."""
    return _opening(data) > limit and json_depth(data) > limit


def _opening(data: bytes) -> int:
    return data.count(b"[") + data.count(b"{")


async def json_reply(scope: Scope, send: Send, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
    """`{"detail": ...}` with `status`: the default `Reply`, so the middleware stands alone."""
    body = json.dumps({"detail": detail}).encode()
    raw: list[tuple[bytes, bytes]] = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    raw += [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class _BodyTooLarge(TooLarge):
    """Raised from `receive` past the limit; a `TooLarge`, so an app's error table also answers it with 413."""


class _CountedReceive:
    """The request's `receive`, counting body bytes: past the limit it raises instead of reading on."""

    def __init__(self, receive: Receive, limit: int) -> None:
        self.receive = receive
        self.limit = limit
        self.received = 0
        self.exceeded = False

    def error(self) -> _BodyTooLarge:
        return _BodyTooLarge(f"request body is larger than the limit of {self.limit:,} bytes")

    async def __call__(self) -> Message:
        if self.exceeded:
            raise self.error()
        message = await self.receive()
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self.limit:
                self.exceeded = True
                raise self.error()
        return message


def _is_json(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"content-type":
            media = value.partition(b";")[0].strip().lower()
            return media == b"application/json" or (media.startswith(b"application/") and media.endswith(b"+json"))
    return False


class RequestLimits:
    """413 for a body past `max_bytes`, chunked or not, and 422 for JSON nested deeper than `max_json_depth`.

    Memory stays bounded by the limit: a body is counted as it arrives, and only a JSON body is held (to measure it
    and hand it on), never past `max_bytes` and one chunk. A JSON body is measured whatever the method, since FastAPI
    parses a declared body on any. Once the limit is passed no further chunk is asked for; whatever the app answers
    after that (FastAPI's 400 for a body it could not read, a 500, its own 413) is replaced by the 413, unless its
    response had already started."""

    def __init__(self, app: ASGIApp, max_bytes: int, max_json_depth: int = 32, reply: Reply = json_reply) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_json_depth = max_json_depth
        self.reply = reply

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            detail = f"request body of {int(declared):,} bytes is larger than the limit of {self.max_bytes:,} bytes"
            await self.reply(scope, send, 413, detail)
            return
        counted = _CountedReceive(receive, self.max_bytes)
        started = replied = False

        async def guarded_send(message: Message) -> None:
            nonlocal started, replied
            if replied:
                return  # the rest of an answer the 413 replaced
            if message["type"] == "http.response.start" and not started:
                if counted.exceeded:
                    replied = True
                    await self.reply(scope, send, 413, counted.error().message)
                    return
                started = True
            await send(message)

        try:
            app_receive: Receive = counted
            if _is_json(scope):
                body, disconnected = await _read_body(counted)
                if disconnected:
                    return
                depth = json_depth(body) if _opening(body) > self.max_json_depth else 0
                if depth > self.max_json_depth:
                    await self.reply(scope, send, 422, f"JSON nested {depth} deep; the limit is {self.max_json_depth}")
                    return
                app_receive = _replay(body, counted)
            await self.app(scope, app_receive, guarded_send)
        except _BodyTooLarge:
            if started:
                raise
        if counted.exceeded and not started and not replied:
            await self.reply(scope, send, 413, counted.error().message)


async def _read_body(receive: Receive) -> tuple[bytes, bool]:
    """The whole body, and whether the client left before sending it."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"", True
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks), False


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that hands the app the body already read, then the request's own messages (`http.disconnect`)."""
    pending = [body]

    async def replayed() -> Message:
        if pending:
            return {"type": "http.request", "body": pending.pop(), "more_body": False}
        return await receive()

    return replayed
