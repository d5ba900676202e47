"""The Redis connection every component shares: one pool per URL per process, keys under one prefix.

The URL may name one server or any node of a Redis Cluster: the first connection asks the server (`INFO cluster`)
and a cluster gets a cluster client, which sends each command to the node owning its keys (shared/keyspace.py).
"""

from __future__ import annotations

import functools
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.commands.core import Script

from shared.errors import StoreUnavailable
from shared.keyspace import Keyspace
from shared.settings import ConfigError, Settings

__all__ = ["StoreUnavailable", "key", "redis_client", "script", "shown_url"]


#: Connections per process. A worker runs hundreds of threads; redis-py's default pool (100, then an error) would
#: fail jobs under load, so the pool is larger and a thread that finds it exhausted waits for a connection instead.
MAX_CONNECTIONS = 1024


@functools.lru_cache(maxsize=8)
def _server_client(url: str, decode: bool) -> redis.Redis:
    pool = redis.BlockingConnectionPool.from_url(
        url,
        max_connections=MAX_CONNECTIONS,
        timeout=20,
        decode_responses=decode,
        health_check_interval=30,
        socket_connect_timeout=2,
    )
    return redis.Redis(connection_pool=pool)


@functools.lru_cache(maxsize=8)
def _cluster_client(url: str, decode: bool) -> redis.RedisCluster:
    return redis.RedisCluster.from_url(
        url, decode_responses=decode, max_connections=MAX_CONNECTIONS, socket_connect_timeout=2
    )


@functools.lru_cache(maxsize=8)
def is_cluster(url: str) -> bool:
    """Whether `url` names a node of a Redis Cluster (raises redis's `ConnectionError` if it cannot be reached; the
    question is then asked again next time)."""
    with redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5) as probe:
        return bool(probe.info("cluster").get("cluster_enabled"))


def redis_client(settings: Settings, decode: bool = True) -> redis.Redis | redis.RedisCluster:
    """The process's client for the configured Redis; `decode=False` returns bytes (document contents). A server
    that cannot be reached yet is taken for a single one: its client connects when first used, and the process
    starts (its requests answer 503 until the server is back); a cluster must be reachable when processes start."""
    url = settings.redis_url
    if not url:
        raise StoreUnavailable(
            "no Redis configured: set ORCH_REDIS_URL, or start through `orchestrator serve` / `orchestrator run`, "
            "which start the embedded server"
        )
    try:
        cluster = is_cluster(url)
    except redis.ConnectionError:
        return _server_client(url, decode)
    if cluster and settings.broker_is_store:
        raise ConfigError(
            f"ORCH_REDIS_URL ({shown_url(url)}) is a node of a Redis Cluster, which can hold the orchestrator's state "
            "but not its task queues: set ORCH_BROKER_URL to a RabbitMQ server (amqp://...)"
        )
    return _cluster_client(url, decode) if cluster else _server_client(url, decode)


@functools.lru_cache(maxsize=64)
def script(client: redis.Redis, source: str) -> Script:
    """The Lua script `source`, registered on `client` once per process. Registering hashes the source (SHA-1), and
    the stores that the front ends build per request would otherwise do it again on every request."""
    return client.register_script(source)


def key(settings: Settings, *parts: str) -> str:
    """A key under the prefix with no hash tag: state a script touches alone, or that lives on one server only
    (the Redis transport's delivery notes). Tagged keys come from `shared.keyspace.Keyspace`."""
    return Keyspace(settings.redis_prefix).name(*parts)


def shown_url(url: str) -> str:
    """A Redis URL fit for a message or a log: its password replaced by `***`."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))
