"""The Redis connection every component shares: one pool per URL per process, keys under one prefix."""

from __future__ import annotations

import functools
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.commands.core import Script

from shared.errors import StoreUnavailable
from shared.settings import Settings

__all__ = ["StoreUnavailable", "key", "redis_client", "script", "shown_url"]


#: Connections per process. A worker runs hundreds of threads; redis-py's default pool (100, then an error) would
#: fail jobs under load, so the pool is larger and a thread that finds it exhausted waits for a connection instead.
MAX_CONNECTIONS = 1024


@functools.lru_cache(maxsize=8)
def _client(url: str, decode: bool) -> redis.Redis:
    pool = redis.BlockingConnectionPool.from_url(
        url,
        max_connections=MAX_CONNECTIONS,
        timeout=20,
        decode_responses=decode,
        health_check_interval=30,
        socket_connect_timeout=2,
    )
    return redis.Redis(connection_pool=pool)


def redis_client(settings: Settings, decode: bool = True) -> redis.Redis:
    """The process's client for the configured Redis; `decode=False` returns bytes (document contents)."""
    if not settings.redis_url:
        raise StoreUnavailable(
            "no Redis configured: set ORCH_REDIS_URL, or start through `orchestrator serve` / `orchestrator run`, "
            "which start the embedded server"
        )
    return _client(settings.redis_url, decode)


@functools.lru_cache(maxsize=64)
def script(client: redis.Redis, source: str) -> Script:
    """The Lua script `source`, registered on `client` once per process. Registering hashes the source (SHA-1), and
    the stores that the front ends build per request would otherwise do it again on every request."""
    return client.register_script(source)


def key(settings: Settings, *parts: str) -> str:
    return settings.redis_prefix + ":".join(parts)


def shown_url(url: str) -> str:
    """A Redis URL fit for a message or a log: its password replaced by `***`."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))
