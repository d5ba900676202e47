"""Which execution messages were sent and not yet taken by a worker: how a message lost with a worker is found.

Every message sent to an LLM queue is noted (a sorted set per queue, scored by when it was sent) in the transaction
that sends it, and the claim that takes it drops the note and moves the queue's "newest claimed" mark forward. A
worker can lose a message it had just popped (kombu moves it to its unacked set in a second step); a queue hands out
messages oldest first, so a note older than the newest claim belongs to a message that was taken and lost, or is
still in a worker's hands. `lost` lists those; the workers' sweep (workers/sweep.py) sends them again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import redis

from shared.jobs import JobStatus
from shared.settings import Settings
from shared.store import key

#: Notes read per sweep of a queue.
SWEEP_BATCH = 500


class DeliveryNotes:
    def __init__(self, settings: Settings, client: redis.Redis) -> None:
        self.settings = settings
        self.redis = client

    def undelivered_key(self, queue: str) -> str:
        return key(self.settings, "jobs", "undelivered", queue)

    def newest_claimed_key(self) -> str:
        return key(self.settings, "jobs", "newest-claimed")

    def note(self, pipe: redis.client.Pipeline, job_id: str, queue: str, at: float | None = None) -> None:
        """Add to `pipe` the note that the job's message is being sent to `queue`."""
        pipe.zadd(self.undelivered_key(queue), {job_id: time.time() if at is None else at})
        pipe.expire(self.undelivered_key(queue), self.settings.job_ttl_seconds)  # notes outlive no job

    def lost(self, queue: str, grace_s: float, record_key: Callable[[str], str]) -> list[str]:
        """Jobs whose message to `queue` was sent at least `grace_s` before the newest message a worker claimed
        there, yet whose own was never claimed. Notes of jobs that need no delivery any more (finished, cancelled,
        gone) are dropped on the way. `record_key` names a job's record."""
        newest = self.redis.hget(self.newest_claimed_key(), queue)
        if newest is None:
            return []
        noted = self.redis.zrangebyscore(
            self.undelivered_key(queue), "-inf", float(newest) - grace_s, start=0, num=SWEEP_BATCH
        )
        with self.redis.pipeline(transaction=False) as pipe:
            for job_id in noted:
                pipe.hmget(record_key(job_id), "status", "deliveries")
            states = pipe.execute()
        lost, settled = [], []
        for job_id, (status, deliveries) in zip(noted, states, strict=True):
            waiting = status is not None and json.loads(status) == JobStatus.queued
            (lost if waiting and not int(deliveries or 0) else settled).append(job_id)
        if settled:
            self.redis.zrem(self.undelivered_key(queue), *settled)
        return lost
