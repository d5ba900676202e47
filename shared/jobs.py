"""Job records: what was asked, how it was planned, what happened, what it cost. Kept in Redis with a TTL.

A record is a Redis hash with one JSON value per top-level field, so the front end, the preprocess chord and the
LLM worker can each write their own fields without reading and rewriting the whole record. Updates only touch a
record that still exists: a late write never resurrects an expired or deleted job as a partial hash.
"""

from __future__ import annotations

import json
import time
import uuid
from enum import StrEnum
from typing import Any

import redis
from pydantic import BaseModel, Field

from shared.analysis import Analysis, RequestOptions
from shared.routing import Plan
from shared.settings import Settings
from shared.store import key, redis_client


class JobStatus(StrEnum):
    queued = "queued"
    preprocessing = "preprocessing"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled)


class JobInput(BaseModel):
    request: str
    context: dict[str, Any] = {}
    options: RequestOptions = RequestOptions()


class Attempt(BaseModel):
    model: str
    provider: str
    ok: bool
    error: str | None = None
    error_kind: str | None = None
    duration_ms: float


class Usage(BaseModel):
    input_tokens: int
    output_tokens: int
    reported_by_provider: bool = True


class JobRecord(BaseModel):
    id: str
    status: JobStatus
    progress: float = Field(0.0, ge=0, le=1)
    stage: str = "queued"
    queue: str
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    input: JobInput
    analysis: Analysis
    plan: Plan
    result: str | None = None
    model_used: str | None = None
    provider_used: str | None = None
    usage: Usage | None = None
    cost_usd: float | None = None
    baseline_cost_usd: float | None = None
    savings_usd: float | None = None
    savings_pct: float | None = None
    attempts: list[Attempt] = []
    deliveries: int = 0
    worker: str | None = None
    error: str | None = None

    @property
    def duration_ms(self) -> float | None:
        if self.finished_at is None:
            return None
        return (self.finished_at - self.created_at) * 1000


def new_job_id() -> str:
    return uuid.uuid4().hex


# Set fields only on a record that exists, and refresh its TTL: KEYS[1] the record, ARGV[1] the TTL, then pairs.
_UPDATE_IF_EXISTS = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 1
"""


class JobStore:
    def __init__(self, settings: Settings, client: redis.Redis | None = None) -> None:
        self.settings = settings
        self.redis = client or redis_client(settings)
        self._update = self.redis.register_script(_UPDATE_IF_EXISTS)

    def _key(self, job_id: str) -> str:
        return key(self.settings, "job", job_id)

    def _done_key(self, job_id: str) -> str:
        return key(self.settings, "job", job_id, "done")

    def create(self, record: JobRecord) -> None:
        fields = {name: json.dumps(value) for name, value in record.model_dump(mode="json").items()}
        with self.redis.pipeline() as pipe:
            pipe.hset(self._key(record.id), mapping=fields)
            pipe.expire(self._key(record.id), self.settings.job_ttl_seconds)
            pipe.execute()

    def get(self, job_id: str) -> JobRecord | None:
        raw = self.redis.hgetall(self._key(job_id))
        if not raw:
            return None
        return JobRecord.model_validate({name: json.loads(value) for name, value in raw.items()})

    def update(self, job_id: str, **fields: Any) -> bool:
        """Set some fields; False if the record no longer exists."""
        pairs: list[str] = []
        for name, value in fields.items():
            if isinstance(value, BaseModel):
                value = value.model_dump(mode="json")
            elif isinstance(value, list):
                value = [item.model_dump(mode="json") if isinstance(item, BaseModel) else item for item in value]
            pairs += [name, json.dumps(value)]
        return bool(self._update(keys=[self._key(job_id)], args=[self.settings.job_ttl_seconds, *pairs]))

    def mark_done(self, job_id: str) -> None:
        """Wake whoever waits on this job (`wait`); the token outlives any reasonable wait."""
        with self.redis.pipeline() as pipe:
            pipe.rpush(self._done_key(job_id), "1")
            pipe.expire(self._done_key(job_id), 600)
            pipe.execute()

    def wait(self, job_id: str, timeout_s: float) -> JobRecord | None:
        """Block until the job is terminal or the timeout passes; return the record as it then is."""
        deadline = time.monotonic() + timeout_s
        while True:
            record = self.get(job_id)
            remaining = deadline - time.monotonic()
            if record is None or record.status.terminal or remaining <= 0:
                return record
            if self.redis.blpop([self._done_key(job_id)], timeout=max(0.01, min(remaining, 5.0))):
                self.mark_done(job_id)  # leave the token for any other waiter
