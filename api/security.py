"""API-key authentication for everything the HTTP server offers (REST, OpenAI-compatible, MCP over HTTP).

A pure ASGI middleware, so streamed responses pass through untouched. It checks `Authorization: Bearer <key>`
against the hashed keys in Redis and the key's rate, and hands the key to the endpoints in `request.state.api_key`
(they reserve the key's budget when they enqueue). Health, readiness, Prometheus and the API docs stay open.
Authentication is on unless `auth.enabled` is explicitly false.
"""

from __future__ import annotations

import json
from typing import Any

import redis
from starlette.types import ASGIApp, Receive, Scope, Send

from api.openai_compat import OpenAIError, is_openai_path
from shared.auth import KeyStore
from shared.settings import Settings
from shared.store import StoreUnavailable, redis_client

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
OPENAI_CODES = {
    401: "invalid_api_key",
    403: "revoked_api_key",
    413: "request_too_large",
    429: "rate_limit_exceeded",
    503: "store_unavailable",
}


class ApiKeyMiddleware:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope.setdefault("state", {})["api_key"] = None
        if not self.settings.auth.enabled or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        scheme, _, secret = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            await _reply(
                scope,
                send,
                401,
                "missing API key: send `Authorization: Bearer <key>` (create one with `orchestrator keys create`)",
                {"www-authenticate": "Bearer"},
            )
            return
        try:
            keys = KeyStore(self.settings, redis_client(self.settings))
            api_key = keys.authenticate(secret.strip())
            wait = keys.rate_limited(api_key) if api_key and not api_key.revoked else None
        except (redis.RedisError, StoreUnavailable) as error:
            await _reply(
                scope, send, 503, f"the key store (Redis) is unavailable, retry shortly: {error}", {"retry-after": "2"}
            )
            return
        if api_key is None:
            await _reply(scope, send, 401, "invalid API key", {"www-authenticate": "Bearer"})
        elif api_key.revoked:
            await _reply(scope, send, 403, f"API key {api_key.name!r} has been revoked")
        elif wait is not None:
            await _reply(
                scope,
                send,
                429,
                f"rate limit of {api_key.rate_per_minute} requests per minute reached "
                f"for key {api_key.name!r}; retry in {wait:.0f}s",
                {"retry-after": str(int(wait) + 1)},
            )
        else:
            scope["state"]["api_key"] = api_key
            await self.app(scope, receive, send)


async def _reply(scope: Scope, send: Send, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
    reply: dict[str, Any] = {"detail": detail}
    if is_openai_path(scope["path"]):  # OpenAI's clients read OpenAI's error format
        kind = "api_error" if status >= 500 else "invalid_request_error"
        reply = OpenAIError(status, detail, kind, OPENAI_CODES.get(status)).body()
    body = json.dumps(reply).encode()
    raw: list[Any] = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(name.encode(), value.encode()) for name, value in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class BodySizeLimit:
    """413 for a request whose declared body is larger than `max_request_bytes`, before any of it is read."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            declared = dict(scope["headers"]).get(b"content-length", b"")
            if declared.isdigit() and int(declared) > self.limit:
                await _reply(
                    scope,
                    send,
                    413,
                    f"request body of {int(declared):,} bytes is larger than the limit of {self.limit:,} bytes",
                )
                return
        await self.app(scope, receive, send)
