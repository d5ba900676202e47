"""Where job records live: Redis hashes with a TTL, changed only by the scripts below while the job is unfinished.

A record is a hash with one JSON value per top-level field, so the front end, the preprocess chord and the LLM
worker can each write their own fields without reading and rewriting the whole record. Every write goes through a
script that first checks the job is still open (exists, not finished): a late or duplicate worker is harmless, and
a late write never resurrects an expired job as a partial hash. The step that finishes a job rewrites its record
compact, in three fields (shared/record_codec.py): it is kept for hours to a week and never written again.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, Literal

import redis
from pydantic import ValidationError
from pydantic_core import to_json

from shared.answers import AnswerStream
from shared.deliveries import DeliveryNotes
from shared.jobs import Billing, JobRecord, JobStatus
from shared.keyspace import Keyspace
from shared.metrics import RECORD_FUNCTION, RequestOutcome, recording
from shared.outbox import Enqueue, Outbox
from shared.record_codec import pack, unpack
from shared.settings import Settings
from shared.store import redis_client, script

log = logging.getLogger(__name__)


# The status of the record KEYS[1], and whether the job is open: it exists and has not finished.
_OPEN = """
local status = redis.call('HGET', KEYS[1], 'status')
local open = status and status ~= '"succeeded"' and status ~= '"failed"' and status ~= '"cancelled"'
"""

# Set fields of an open job and refresh its TTL. ARGV[1] the TTL, then field/value pairs.
_UPDATE = (
    _OPEN
    + """
if not open then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 1
"""
)

# One chunk of a document's map step is done. Its result is kept in the run's results hash, once however often the
# chunk runs; the job's progress is set from how many are kept, so concurrent chunks never move it backwards; and the
# chunk that completes the map writes down the reduce step's message in the outbox, in the same step: the reduce
# runs once, even if that chunk's worker dies before it publishes the message (the sweep publishes it then).
# KEYS[1] the results, KEYS[2] the outbox of the run's shard, KEYS[3] the job's record (none: work without a job).
# ARGV[1] chunk index, ARGV[2] its result, ARGV[3] total chunks, ARGV[4] share of progress, ARGV[5] TTL, ARGV[6] the
# reduce message, ARGV[7] now. Returns {chunks kept, 1 if this call completed the map}, or {-1, 0} for a job no
# longer preprocessing (cancelled, or past its reduce: a late chunk must not reopen the map or reduce it twice).
_CHUNK_DONE = """
if KEYS[3] and redis.call('HGET', KEYS[3], 'status') ~= '"preprocessing"' then return {-1, 0} end
local new = redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[5])
local done = redis.call('HLEN', KEYS[1])
local total = tonumber(ARGV[3])
if new == 0 then return {done, 0} end
if KEYS[3] then
  redis.call('HSET', KEYS[3], 'chunks_done', done, 'progress', string.format('%.4f', tonumber(ARGV[4]) * done / total),
             'stage', '"preprocessing chunk ' .. done .. '/' .. total .. '"')
end
if done < total then return {done, 0} end
redis.call('ZADD', KEYS[2], ARGV[7], ARGV[6])
return {done, 1}
"""

# Claim a job for a delivery: an open job is marked running and its delivery counted, and the delivery note dropped
# (shared/deliveries.py); the record is returned as it then is (finished or not), in one round trip. KEYS[2] the
# queue's undelivered notes, KEYS[3] the newest-claimed marks (neither when the broker is not the store);
# ARGV[1] TTL, ARGV[2] job id, ARGV[3] queue, then field/value pairs.
_CLAIM = (
    _OPEN
    + """
if not status then return {} end
if open then
  redis.call('HSET', KEYS[1], unpack(ARGV, 4))
  redis.call('HINCRBY', KEYS[1], 'deliveries', 1)
  redis.call('EXPIRE', KEYS[1], ARGV[1])
end
local sent_at = KEYS[2] and redis.call('ZSCORE', KEYS[2], ARGV[2])
if sent_at then
  redis.call('ZREM', KEYS[2], ARGV[2])
  local newest = redis.call('HGET', KEYS[3], ARGV[3])
  if not newest or tonumber(sent_at) > tonumber(newest) then redis.call('HSET', KEYS[3], ARGV[3], sent_at) end
end
return redis.call('HGETALL', KEYS[1])
"""
)

# Finish an open job, wake its waiters and count it in the metrics, in one step; the status it had (0 if it was
# already finished). With ARGV[3] "1" the record is replaced by the given fields, its delivery count kept (a compact
# finished record, shared/record_codec.py); else the fields are set on it.
# KEYS[2] its done list, KEYS[3..] the metrics' (none: not counted); ARGV[1] TTL, ARGV[2] the number n of
# field/value arguments that follow ARGV[3], then those, then the metrics' arguments.
_FINISH = (
    RECORD_FUNCTION
    + _OPEN
    + """
if not open then return 0 end
local n = tonumber(ARGV[2])
if ARGV[3] == '1' then
  local deliveries = redis.call('HGET', KEYS[1], 'deliveries') or '0'
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], 'deliveries', deliveries)
end
redis.call('HSET', KEYS[1], unpack(ARGV, 4, 3 + n))
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('RPUSH', KEYS[2], '1')
redis.call('EXPIRE', KEYS[2], 600)
if #KEYS > 2 then record_outcome({unpack(KEYS, 3)}, {unpack(ARGV, 4 + n)}) end
return status
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


def _compact(record: JobRecord) -> dict[str, str]:
    """A finished record's hash but its delivery count (which the store keeps as it stands): its status, and the
    rest packed in `z` (see `shared.record_codec`)."""
    return {"status": _json(record.status), "z": pack(record)}


def _parse(raw: dict[str, str]) -> JobRecord | None:
    """A record from its hash (each field JSON, or a finished record's packed `z`); None for a missing one. The
    fields are spliced into one JSON object and validated by pydantic-core in one pass: a fifth of the cost of
    decoding them one by one."""
    if not raw:
        return None
    members = [f'"{name}":{value}' for name, value in raw.items() if name != "z"]
    if "z" in raw:
        members.append(unpack(raw["z"]))
    return JobRecord.model_validate_json("{" + ",".join(members) + "}")


def _parse_or_none(raw: dict[str, str]) -> JobRecord | None:
    try:
        return _parse(raw)
    except ValidationError:
        return None


def _record(flat: list[str]) -> JobRecord | None:
    """A record from a script's flat HGETALL reply."""
    return _parse(dict(zip(flat[::2], flat[1::2], strict=True)))


class JobStore:
    def __init__(self, settings: Settings, client: redis.Redis | None = None) -> None:
        self.settings = settings
        self.redis = client or redis_client(settings)
        self.keys = Keyspace.of(settings, self.redis)
        self.answers = AnswerStream(self.keys, self.redis)
        self.deliveries = DeliveryNotes(settings, self.redis)
        self.outbox = Outbox(self.keys, self.redis)
        self._update = script(self.redis, _UPDATE)
        self._chunk_done = script(self.redis, _CHUNK_DONE)
        self._claim = script(self.redis, _CLAIM)
        self._finish = script(self.redis, _FINISH)

    def _key(self, job_id: str) -> str:
        return self.keys.job(job_id)

    def _done_key(self, job_id: str) -> str:
        return self.keys.job(job_id, "done")

    def create(self, record: JobRecord, sent_to: str | None = None, enqueue: Enqueue | None = None) -> None:
        """Store a new record; `sent_to` is the queue its execution message is about to be sent to, `enqueue` that
        message. With the broker on the store's Redis, record and message reach it together or not at all, in one
        round trip; with a broker of its own, the message is written down in the record's transaction and
        published after it (shared/outbox.py): a worker never finds a message without its record either way."""
        if record.status.terminal:
            fields = _compact(record) | {"deliveries": _json(record.deliveries)}
            kept = record.retention_s(self.settings)
        else:
            fields = {name: _json(getattr(record, name)) for name in type(record).model_fields}
            kept = self.settings.job_ttl_seconds
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self._key(record.id), mapping=fields)
            pipe.expire(self._key(record.id), kept)
            if sent_to and self.settings.broker_is_store:
                self.deliveries.note(pipe, record.id, sent_to, record.created_at)
            publish_after = self._enqueue(pipe, enqueue)
            pipe.execute()
        if publish_after:
            self.publish(enqueue)

    def sending(self, job_id: str, queue: str, enqueue: Enqueue) -> None:
        """Send the job's execution message to `queue`, noted in the same transaction as sent there and not yet
        taken by a worker (shared/deliveries.py: how a message a worker took and lost is found; RabbitMQ loses none,
        and there nothing is noted)."""
        with self.redis.pipeline(transaction=True) as pipe:
            if self.settings.broker_is_store:
                self.deliveries.note(pipe, job_id, queue)
            publish_after = self._enqueue(pipe, enqueue)
            pipe.execute()
        if publish_after:
            self.publish(enqueue)

    def _enqueue(self, pipe: redis.client.Pipeline, enqueue: Enqueue | None) -> bool:
        """Add the message to `pipe`, or its outbox entry when it must be published after (then True)."""
        if enqueue is None or enqueue.into(pipe):
            return False
        self.outbox.add(pipe, enqueue.message)
        return True

    def publish(self, enqueue: Enqueue) -> bool:
        """Publish a message written down in the outbox, and drop its entry; False if the broker did not take it
        (the workers' sweep publishes it later: the job was accepted)."""
        try:
            enqueue.publish()
        except Exception as error:  # noqa: BLE001 - whatever the broker's client raises, the outbox has the message
            log.warning(
                "job %s: its message is kept for the sweep, the broker did not take it: %s",
                enqueue.message.task_id,
                error,
            )
            return False
        self.outbox.sent(enqueue.message)
        return True

    def lost(self, queue: str, grace_s: float) -> list[str]:
        """Queued jobs whose message to `queue` was taken by a worker and lost (see `DeliveryNotes.lost`)."""
        return self.deliveries.lost(queue, grace_s, self._key)

    def get(self, job_id: str) -> JobRecord | None:
        return _parse(self.redis.hgetall(self._key(job_id)))

    def get_many(self, job_ids: list[str], unreadable: Literal["raise"] | None = "raise") -> list[JobRecord | None]:
        """The records of `job_ids` in one round trip; `unreadable=None` gives None for a record that no longer
        validates instead of raising."""
        with self.redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hgetall(self._key(job_id))
            raws = pipe.execute()
        if unreadable == "raise":
            return [_parse(raw) for raw in raws]
        return [_parse_or_none(raw) for raw in raws]

    def billing(self, job_id: str) -> Billing | None:
        """The job's reservation, read alone: it settles even a record that no longer validates as a whole."""
        raw = self.redis.hget(self._key(job_id), "billing")
        return Billing.model_validate_json(raw) if raw and raw != "null" else None

    def status(self, job_id: str) -> JobStatus | None:
        raw = self.redis.hget(self._key(job_id), "status")
        return JobStatus(json.loads(raw)) if raw else None

    def update(self, job_id: str, **fields: Any) -> bool:
        """Set some fields of an unfinished job; False if it is finished or gone (the write is then dropped)."""
        return bool(self._update(keys=[self._key(job_id)], args=[self.settings.job_ttl_seconds, *_pairs(fields)]))

    def claim(self, job_id: str, queue: str, **fields: Any) -> JobRecord | None:
        """Mark an unfinished job running (`fields`) and count the delivery, taken from `queue`; the record,
        finished or not."""
        keys = [self._key(job_id)]
        if self.settings.broker_is_store:  # the delivery notes (shared/deliveries.py)
            keys += [self.deliveries.undelivered_key(queue), self.deliveries.newest_claimed_key()]
        return _record(self._claim(keys=keys, args=[self.settings.job_ttl_seconds, job_id, queue, *_pairs(fields)]))

    def finish(
        self,
        job_id: str,
        counted: RequestOutcome | None = None,
        ttl: int | None = None,
        record: JobRecord | None = None,
        **fields: Any,
    ) -> JobStatus | None:
        """Finish the job with `fields`, wake its waiters and count `counted` in the metrics (once per job: only the
        finish of an open job counts); the status it finished from, or None if it had finished already (and then
        nothing is counted or written). `record`: the job's record as the caller has it; the finished record (it
        with `fields`) is then stored compact in place of the open one, its delivery count kept as it stands.
        Without it, `fields` are set on the record as it is. `ttl`: how long the finished record is kept (default:
        an async job's)."""
        if record is None:
            pairs = _pairs(fields)
        else:
            pairs = [item for pair in _compact(record.model_copy(update=fields)).items() for item in pair]
        ttl = ttl or self.settings.job_ttl_seconds
        keys, args = [self._key(job_id), self._done_key(job_id)], [ttl, len(pairs), int(record is not None), *pairs]
        if counted is not None:
            metric_keys, metric_args = recording(self.keys, counted, shard=self.keys.shard_of(job_id))
            keys, args = keys + metric_keys, args + metric_args
        was = self._finish(keys=keys, args=args)
        return JobStatus(json.loads(was)) if was else None

    def cancel(self, record: JobRecord, reason: str) -> JobStatus | None:
        """Finish an unfinished job as cancelled with `reason` (its waiters woken, nothing counted); the status it
        had, or None if it had finished already."""
        return self.finish(
            record.id,
            ttl=record.retention_s(self.settings),
            record=record,
            status=JobStatus.cancelled,
            stage="cancelled",
            finished_at=time.time(),
            error=reason,
        )

    def chunk_done(
        self,
        run_id: str,
        job_id: str | None,
        index: int,
        total: int,
        result: str,
        reduce: Enqueue,
        share: float = 0.9,
    ) -> int:
        """Keep chunk `index`'s map `result` for the map/reduce `run_id` and count it in the progress of its job,
        if it has one; the number of chunks kept (-1 if the job is no longer preprocessing). The call that keeps the
        last chunk publishes `reduce` (written down in the outbox first, in the same step). `reduce` must carry
        `run_id` as its task id: its outbox entry is in the run's shard."""
        keys = [self.keys.job(run_id, "chunks"), self.outbox.key(reduce.message)]
        if job_id:
            keys.append(self._key(job_id))
        ttl = self.settings.job_ttl_seconds
        args = [index, result, total, share, ttl, reduce.message.model_dump_json(), time.time()]
        done, completed = self._chunk_done(keys=keys, args=args)
        if completed:
            self.publish(reduce)
        return int(done)

    def chunk_results(self, run_id: str) -> list[str]:
        """The map results kept for the run, in chunk order."""
        kept = self.redis.hgetall(self.keys.job(run_id, "chunks"))
        return [kept[index] for index in sorted(kept, key=int)]

    def drop_chunk_results(self, run_id: str) -> None:
        self.redis.delete(self.keys.job(run_id, "chunks"))

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
