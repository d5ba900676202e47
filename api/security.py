"""API-key authentication for everything the HTTP server offers (REST, OpenAI-compatible, MCP over HTTP).

A pure ASGI middleware, so streamed responses pass through untouched. It reads the one key a request carries
(`Authorization: Bearer <key>`, or `x-api-key` as Anthropic's clients send it), checks it against the hashed keys
in Redis and the key's rate, and hands it to the endpoints in `request.state.api_key`: the key checked is the key
whose budget is reserved and whose tenant's work the request sees, on every front end (REST, OpenAI-compatible,
MCP). Health, readiness and the API docs stay open. Authentication is on unless `auth.enabled` is explicitly false.
"""

from __future__ import annotations

import json
import math
from typing import Any

import redis
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from starlette.types import ASGIApp, Receive, Scope, Send

from api.openai_compat import OpenAIError, is_openai_path
from shared.auth import KeyStore
from shared.settings import Settings
from shared.store import StoreUnavailable, redis_client

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
OPENAI_CODES = {
    400: "ambiguous_credentials",
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
        try:
            secret = credentials(scope["headers"])
        except ValueError as error:
            await reply(scope, send, 400, str(error))
            return
        if secret is None:
            await reply(
                scope,
                send,
                401,
                "missing API key: send `Authorization: Bearer <key>` (create one with `orchestrator keys create`)",
                {"www-authenticate": "Bearer"},
            )
            return
        try:
            keys = KeyStore(self.settings, redis_client(self.settings))
            api_key = keys.authenticate(secret)
            rate = keys.take(api_key) if api_key and not api_key.revoked else None
        except (redis.RedisError, StoreUnavailable) as error:
            await reply(
                scope, send, 503, f"the key store (Redis) is unavailable, retry shortly: {error}", {"retry-after": "2"}
            )
            return
        if api_key is None:
            await reply(scope, send, 401, "invalid API key", {"www-authenticate": "Bearer"})
        elif api_key.revoked:
            await reply(scope, send, 403, f"API key {api_key.name!r} has been revoked")
        elif rate is not None and not rate.allowed:
            await reply(
                scope,
                send,
                429,
                f"rate limit of {api_key.rate_per_minute} requests per minute reached "
                f"for key {api_key.name!r}; retry in {rate.retry_after:.1f}s",
                {"retry-after": str(math.ceil(rate.retry_after))},
            )
        else:
            scope["state"]["api_key"] = api_key
            # The MCP session manager binds a session to the principal that opened it: another key that learns the
            # session's id is answered as if it did not exist.
            scope["user"] = AuthenticatedUser(AccessToken(token="", client_id=api_key.id, scopes=[]))
            await self.app(scope, receive, send)


def credentials(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The one API key a request carries, or None. Two `Authorization` headers, two `x-api-key` headers, or both
    kinds naming different keys are a ValueError: whichever one a component read, another might bill."""
    bearer = [value for name, value in headers if name == b"authorization"]
    plain = [value for name, value in headers if name == b"x-api-key"]
    if len(bearer) > 1 or len(plain) > 1:
        raise ValueError("more than one Authorization or x-api-key header: send one key")
    found = set()
    if bearer:
        scheme, _, secret = bearer[0].decode("latin-1").partition(" ")
        if scheme.lower() == "bearer" and secret.strip():
            found.add(secret.strip())
    if plain and plain[0].strip():
        found.add(plain[0].decode("latin-1").strip())
    if len(found) > 1:
        raise ValueError("the Authorization and x-api-key headers name different keys: send one key")
    return found.pop() if found else None


async def reply(scope: Scope, send: Send, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
    reply: dict[str, Any] = {"detail": detail}
    if is_openai_path(scope["path"]):  # OpenAI's clients read OpenAI's error format
        kind = "api_error" if status >= 500 else "invalid_request_error"
        reply = OpenAIError(status, detail, kind, OPENAI_CODES.get(status)).body()
    body = json.dumps(reply).encode()
    raw: list[Any] = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(name.encode(), value.encode()) for name, value in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
