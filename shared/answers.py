"""The pieces of a job's answer as they arrive, for callers that stream it (`stream: true`).

One Redis stream per job: the worker appends each piece ({"d": text}) and closes it with the job's status
({"end": status}); readers follow it from any point. It expires ten minutes after it is closed.
"""

from __future__ import annotations

from collections.abc import Iterator

import redis

from shared.keyspace import Keyspace

CLOSED_STREAM_TTL_S = 600


class AnswerStream:
    def __init__(self, keys: Keyspace, client: redis.Redis) -> None:
        self.keys = keys
        self.redis = client

    def key(self, job_id: str) -> str:
        return self.keys.job(job_id, "stream")

    def append(self, job_id: str, text: str) -> None:
        self.redis.xadd(self.key(job_id), {"d": text})

    def close(self, job_id: str, status: str) -> None:
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.xadd(self.key(job_id), {"end": status})
            pipe.expire(self.key(job_id), CLOSED_STREAM_TTL_S)
            pipe.execute()

    def read(self, job_id: str, after: str, block_ms: int = 1000) -> Iterator[tuple[str, str | None, str | None]]:
        """The entries after entry id `after`, waiting up to `block_ms` for the first: (entry id, piece, end)."""
        for _, entries in self.redis.xread({self.key(job_id): after}, block=block_ms, count=100) or []:
            for entry_id, fields in entries:
                yield entry_id, fields.get("d"), fields.get("end")
