"""Job records: what was asked, how it was planned, what happened, what it cost. Kept in Redis with a TTL.

A record is a Redis hash with one JSON value per top-level field, so the front end, the preprocess chord and the
LLM worker can each write their own fields without reading and rewriting the whole record. Updates only touch a
record that still exists: a late write never resurrects an expired or deleted job as a partial hash.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Callable
from enum import StrEnum
from typing import Any

import redis
from pydantic import BaseModel, Field
from pydantic_core import to_json

from shared.metrics import RECORD_FUNCTION, RequestOutcome, recording
from shared.pricing import TokenUsage
from shared.providers.base import StopReason
from shared.routing import Analysis, Plan, RequestOptions
from shared.services.models import ToolCallRecord
from shared.services.selection import ServiceSelection
from shared.settings import Settings
from shared.store import key, redis_client, script


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
    stream: bool = Field(False, description="Relay the answer's pieces as they arrive (see JobStore.stream_key).")


class Attempt(BaseModel):
    """One try of one model, a skipped model (`breaker_open`) or a cache hit (`cache_hit`)."""

    model: str
    provider: str
    number: int = Field(description="Try of this model, from 1; 0 for a skip.")
    ok: bool
    error: str | None = None
    error_kind: str | None = None
    status: int | None = None
    started_at: float
    duration_ms: float


class DocumentUse(BaseModel):
    """The job's document: how big it was, how it was compressed, what the model read."""

    id: str
    original_tokens: int
    strategy: str | None = Field(None, description="None when the document was sent whole.")
    strategy_reason: str | None = None
    budget_tokens: int | None = None
    sent_tokens: int | None = None
    tokens_saved: int | None = None
    chunks: int | None = None
    preprocessing_cost_usd: float = 0.0
    summary_cache_hit: bool | None = None
    summary_key: str | None = None
    workers: list[str] = Field(default_factory=list, description="Workers that processed the chunks.")
    note: str = ""


class Billing(BaseModel):
    """The caller's key and what the job reserved of its budget, settled against the actual cost at the end."""

    api_key_id: str
    spend_key: str | None = None
    reserved_usd: float = 0.0


class Usage(TokenUsage):
    """What the job's calls used, as the providers reported it (or as counted here when they did not)."""

    reported_by_provider: bool = True


class JobRecord(BaseModel):
    id: str
    status: JobStatus
    progress: float = Field(0.0, ge=0, le=1)
    stage: str = "queued"
    chunks_done: int = 0
    chunks_total: int | None = None
    queue: str
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    input: JobInput
    document: DocumentUse | None = None
    analysis: Analysis
    plan: Plan
    result: str | None = None
    stop_reason: StopReason | None = Field(None, description="stop, length (cut at the output cap) or content_filter.")
    model_used: str | None = None
    provider_used: str | None = None
    usage: Usage | None = None
    cache_hit: bool = False
    cost_usd: float | None = None
    baseline_cost_usd: float | None = None
    savings_usd: float | None = None
    savings_pct: float | None = None
    attempts: list[Attempt] = []
    deliveries: int = 0
    worker: str | None = None
    billing: Billing | None = None
    error: str | None = None
    services: ServiceSelection | None = Field(None, description="Downstream MCP services and tools offered.")
    tool_calls: list[ToolCallRecord] = []

    @property
    def duration_ms(self) -> float | None:
        if self.finished_at is None:
            return None
        return (self.finished_at - self.created_at) * 1000

    def outcome(self) -> RequestOutcome:
        """This finished job as the metrics count it."""
        succeeded = self.status == JobStatus.succeeded
        return RequestOutcome(
            job_id=self.id,
            succeeded=succeeded,
            model=self.model_used,
            provider=self.provider_used,
            intent=self.analysis.intent,
            tier=self.plan.tier,
            input_tokens=self.usage.input_tokens if self.usage else 0,
            output_tokens=self.usage.output_tokens if self.usage else 0,
            baseline_tokens=self.plan.baseline.input_tokens,
            cost_usd=self.cost_usd or 0.0,
            baseline_cost_usd=self.baseline_cost_usd or 0.0,
            cache_hit=self.cache_hit if succeeded else None,
            latency_ms=self.duration_ms,
            service_calls=dict(Counter(call.service for call in self.tool_calls if call.service)),
            service_errors=dict(
                Counter(call.service for call in self.tool_calls if call.service and call.outcome != "ok")
            ),
        )


#: Adds a job's task message to the Redis pipeline that stores or notes the job (`workers.celery_app.task_message`).
Enqueue = Callable[[redis.client.Pipeline], None]


def new_job_id() -> str:
    return uuid.uuid4().hex


# Set fields on a record that exists and is not finished, and refresh its TTL. KEYS[1] the record; ARGV[1] the
# TTL, then field/value pairs. A finished job (succeeded, failed, cancelled) is never changed again: that is what
# makes a late or duplicate worker harmless.
_UPDATE_UNFINISHED = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status or status == '"succeeded"' or status == '"failed"' or status == '"cancelled"' then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 1
"""


# One chunk of the job's document is done: count it and set progress and stage in one step, so concurrent chunk
# tasks never move progress backwards. KEYS[1] the record; ARGV[1] total chunks, ARGV[2] share of progress.
_CHUNK_DONE = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status or status == '"succeeded"' or status == '"failed"' or status == '"cancelled"' then return -1 end
local done = redis.call('HINCRBY', KEYS[1], 'chunks_done', 1)
local total = tonumber(ARGV[1])
redis.call('HSET', KEYS[1], 'progress', string.format('%.4f', tonumber(ARGV[2]) * done / total),
           'stage', '"preprocessing chunk ' .. done .. '/' .. total .. '"')
return done
"""


# Claim a job for a delivery: an unfinished job is marked running and its delivery counted; the record is returned
# as it then is (finished or not), in one round trip. KEYS[1] the record; ARGV[1] TTL, then field/value pairs.
_CLAIM = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {} end
if status ~= '"succeeded"' and status ~= '"failed"' and status ~= '"cancelled"' then
  redis.call('HSET', KEYS[1], unpack(ARGV, 4))
  redis.call('HINCRBY', KEYS[1], 'deliveries', 1)
  redis.call('EXPIRE', KEYS[1], ARGV[1])
end
local sent_at = redis.call('ZSCORE', KEYS[2], ARGV[2])
if sent_at then
  redis.call('ZREM', KEYS[2], ARGV[2])
  local newest = redis.call('HGET', KEYS[3], ARGV[3])
  if not newest or tonumber(sent_at) > tonumber(newest) then redis.call('HSET', KEYS[3], ARGV[3], sent_at) end
end
return redis.call('HGETALL', KEYS[1])
"""

# Finish a job that is not finished yet, wake its waiters and count it in the metrics, in one step; 0 if it was
# already finished. KEYS[1] the record, KEYS[2] its done list, KEYS[3..6] the metrics' (none: not counted);
# ARGV[1] TTL, ARGV[2] the number n of field/value arguments that follow, then those, then the metrics' arguments.
_FINISH = (
    RECORD_FUNCTION
    + """
local status = redis.call('HGET', KEYS[1], 'status')
if not status or status == '"succeeded"' or status == '"failed"' or status == '"cancelled"' then return 0 end
local n = tonumber(ARGV[2])
redis.call('HSET', KEYS[1], unpack(ARGV, 3, 2 + n))
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('RPUSH', KEYS[2], '1')
redis.call('EXPIRE', KEYS[2], 600)
if #KEYS > 2 then record_outcome({KEYS[3], KEYS[4], KEYS[5], KEYS[6]}, {unpack(ARGV, 3 + n)}) end
return 1
"""
)


def _json(value: Any) -> str:
    """One field's stored JSON; pydantic-core's serializer handles models, lists of them and plain values alike,
    at a third of the cost of `model_dump` and `json.dumps`."""
    return to_json(value).decode()


def _pairs(fields: dict[str, Any]) -> list[str]:
    pairs: list[str] = []
    for name, value in fields.items():
        pairs += [name, _json(value)]
    return pairs


def _parse(raw: dict[str, str]) -> JobRecord | None:
    """A record from its hash (each field JSON); None for a missing one. The fields are spliced into one JSON
    object and validated by pydantic-core in one pass: a fifth of the cost of decoding them one by one."""
    if not raw:
        return None
    return JobRecord.model_validate_json("{" + ",".join(f'"{name}":{value}' for name, value in raw.items()) + "}")


def _record(flat: list[str]) -> JobRecord | None:
    """A record from a script's flat HGETALL reply."""
    return _parse(dict(zip(flat[::2], flat[1::2], strict=True)))


class JobStore:
    def __init__(self, settings: Settings, client: redis.Redis | None = None) -> None:
        self.settings = settings
        self.redis = client or redis_client(settings)
        self._update = script(self.redis, _UPDATE_UNFINISHED)
        self._chunk_done = script(self.redis, _CHUNK_DONE)
        self._claim = script(self.redis, _CLAIM)
        self._finish = script(self.redis, _FINISH)

    def _key(self, job_id: str) -> str:
        return key(self.settings, "job", job_id)

    def stream_key(self, job_id: str) -> str:
        """A Redis stream of the answer's pieces ({"d": text}), closed by {"end": status}."""
        return key(self.settings, "job", job_id, "stream")

    def append_delta(self, job_id: str, text: str) -> None:
        self.redis.xadd(self.stream_key(job_id), {"d": text})

    def close_stream(self, job_id: str, status: str) -> None:
        with self.redis.pipeline() as pipe:
            pipe.xadd(self.stream_key(job_id), {"end": status})
            pipe.expire(self.stream_key(job_id), 600)
            pipe.execute()

    def _done_key(self, job_id: str) -> str:
        return key(self.settings, "job", job_id, "done")

    def _undelivered_key(self, queue: str) -> str:
        return key(self.settings, "jobs", "undelivered", queue)

    def _newest_claimed_key(self) -> str:
        return key(self.settings, "jobs", "newest-claimed")

    def create(self, record: JobRecord, sent_to: str | None = None, enqueue: Enqueue | None = None) -> None:
        """Store a new record; `sent_to` is the queue its execution message is about to be sent to. `enqueue` adds
        that message's commands to the same transaction: record and message then reach Redis together or not at
        all, in one round trip."""
        fields = {name: _json(getattr(record, name)) for name in type(record).model_fields}
        with self.redis.pipeline() as pipe:
            pipe.hset(self._key(record.id), mapping=fields)
            pipe.expire(self._key(record.id), self.settings.job_ttl_seconds)
            if sent_to:
                self._note_sending(pipe, record.id, sent_to, record.created_at)
            if enqueue is not None:
                enqueue(pipe)
            pipe.execute()

    def sending(self, job_id: str, queue: str, enqueue: Enqueue) -> None:
        """Send the job's execution message to `queue` (`enqueue` adds it), noted in the same transaction as sent
        there and not yet taken by a worker.

        Every message sent to an LLM queue is noted, and the claim that takes it drops the note. A worker can lose
        a message it had just popped (kombu moves it to its unacked set in a second step), and `lost` finds those.
        """
        with self.redis.pipeline() as pipe:
            self._note_sending(pipe, job_id, queue, time.time())
            enqueue(pipe)
            pipe.execute()

    def _note_sending(self, pipe: redis.client.Pipeline, job_id: str, queue: str, at: float) -> None:
        pipe.zadd(self._undelivered_key(queue), {job_id: at})
        pipe.expire(self._undelivered_key(queue), self.settings.job_ttl_seconds)  # notes outlive no job

    def lost(self, queue: str, grace_s: float) -> list[str]:
        """Jobs whose message to `queue` was sent at least `grace_s` before the newest message a worker claimed
        there, yet whose own was never claimed: a queue hands out messages oldest first, so theirs was taken and
        either is still in a worker's hands (unacked) or was lost with it. Notes of jobs that need no delivery any
        more (finished, cancelled, gone) are dropped on the way."""
        newest = self.redis.hget(self._newest_claimed_key(), queue)
        if newest is None:
            return []
        noted = self.redis.zrangebyscore(
            self._undelivered_key(queue), "-inf", float(newest) - grace_s, start=0, num=500
        )
        with self.redis.pipeline(transaction=False) as pipe:
            for job_id in noted:
                pipe.hmget(self._key(job_id), "status", "deliveries")
            states = pipe.execute()
        lost, settled = [], []
        for job_id, (status, deliveries) in zip(noted, states, strict=True):
            waiting = status is not None and json.loads(status) == JobStatus.queued
            (lost if waiting and not int(deliveries or 0) else settled).append(job_id)
        if settled:
            self.redis.zrem(self._undelivered_key(queue), *settled)
        return lost

    def get(self, job_id: str) -> JobRecord | None:
        return _parse(self.redis.hgetall(self._key(job_id)))

    def get_many(self, job_ids: list[str]) -> list[JobRecord | None]:
        with self.redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hgetall(self._key(job_id))
            raws = pipe.execute()
        return [_parse(raw) for raw in raws]

    def status(self, job_id: str) -> JobStatus | None:
        raw = self.redis.hget(self._key(job_id), "status")
        return JobStatus(json.loads(raw)) if raw else None

    def update(self, job_id: str, **fields: Any) -> bool:
        """Set some fields of an unfinished job; False if it is finished or gone (the write is then dropped)."""
        return bool(self._update(keys=[self._key(job_id)], args=[self.settings.job_ttl_seconds, *_pairs(fields)]))

    def claim(self, job_id: str, queue: str, **fields: Any) -> JobRecord | None:
        """Mark an unfinished job running (`fields`) and count the delivery, taken from `queue`; the record,
        finished or not."""
        return _record(
            self._claim(
                keys=[self._key(job_id), self._undelivered_key(queue), self._newest_claimed_key()],
                args=[self.settings.job_ttl_seconds, job_id, queue, *_pairs(fields)],
            )
        )

    def finish(self, job_id: str, counted: RequestOutcome | None = None, **fields: Any) -> bool:
        """Finish the job with `fields`, wake its waiters and count `counted` in the metrics (once per job, as
        `MetricsRecorder.record`); False if it had finished already, and then nothing is counted."""
        pairs = _pairs(fields)
        keys, args = [self._key(job_id), self._done_key(job_id)], [self.settings.job_ttl_seconds, len(pairs), *pairs]
        if counted is not None:
            metric_keys, metric_args = recording(self.settings, counted)
            keys, args = keys + metric_keys, args + metric_args
        return bool(self._finish(keys=keys, args=args))

    def chunk_done(self, job_id: str, total: int, share: float = 0.9) -> int:
        """Count one finished chunk; returns how many are done (-1 if the job is finished or gone)."""
        return int(self._chunk_done(keys=[self._key(job_id)], args=[total, share]))

    def wait(self, job_id: str, timeout_s: float) -> JobRecord | None:
        """Block until the job is terminal or the timeout passes; return the record as it then is.

        The finishing worker pushes a token on the job's done list; BLMOVE waits for it and puts it straight back
        (one atomic step), so every waiter wakes, at once if the job finished before the wait began. The record's
        read is pipelined behind the BLMOVE: Redis answers it as soon as the wait ends, in the same round trip.
        Each wait is at most 2 s, under the client's socket timeout (redis-py's default is 5 s); the record read
        after each also catches a job that ended without a token (cancelled through another path, or expired).
        """
        done, record_key = self._done_key(job_id), self._key(job_id)
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            with self.redis.pipeline(transaction=False) as pipe:
                pipe.blmove(done, done, max(0.01, min(remaining, 2.0)), "LEFT", "RIGHT")
                pipe.hgetall(record_key)
                token, raw = pipe.execute()
            record = _parse(raw)
            if token or record is None or record.status.terminal or remaining <= 0:
                return record
