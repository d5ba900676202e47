"""Task messages written down before they are sent, so that every accepted job's message reaches the broker.

With the broker on the store's Redis, a job's record and its message are written in one transaction and the outbox
is not used. With a broker of its own (RabbitMQ) they cannot be: the store writes the record and the message's
outbox entry in one transaction, publishes the message after, and drops the entry once the broker has confirmed
it. The workers' sweep (workers/sweep.py) publishes the entries left older than a round: their publisher died or
the broker refused them. A message that goes out twice that way (its publisher died between the publish and the
drop) is harmless: a claim never runs a finished job again, and a finished job is billed and counted once.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

import redis
from pydantic import BaseModel

from shared.keyspace import Keyspace

#: Entries read per sweep.
SWEEP_BATCH = 500


class TaskMessage(BaseModel):
    """What a worker is asked to run: a task, its arguments, its queue; the task's id is its job's."""

    task: str
    args: list[Any]
    queue: str
    task_id: str


class Enqueue(Protocol):
    """A task message as the dispatch sends it, for the job store to send with the writes of its job."""

    message: TaskMessage

    def into(self, pipeline: redis.client.Pipeline) -> bool:
        """Add the message to `pipeline`, in its transaction; False if the broker is not the store's Redis."""

    def publish(self) -> None:
        """Send the message to the broker now, on its own (raises if the broker did not take it)."""


class Outbox:
    """One sorted set per shard (shared/keyspace.py): a message's entry is in its job's shard, written in the same
    transaction as the job's record."""

    def __init__(self, keys: Keyspace, client: redis.Redis) -> None:
        self.keys = keys
        self.redis = client

    def key(self, message: TaskMessage) -> str:
        return self.keys.sharded(self.keys.shard_of(message.task_id), "outbox")

    def add(self, pipe: redis.client.Pipeline, message: TaskMessage) -> None:
        pipe.zadd(self.key(message), {message.model_dump_json(): time.time()})

    def sent(self, message: TaskMessage) -> None:
        self.redis.zrem(self.key(message), message.model_dump_json())

    def due(self, older_than_s: float) -> list[TaskMessage]:
        """Messages written down at least `older_than_s` ago and not yet sent, oldest first in each shard."""
        cutoff = time.time() - older_than_s
        with self.redis.pipeline(transaction=False) as pipe:
            for name in self.keys.every_shard("outbox"):
                pipe.zrangebyscore(name, "-inf", cutoff, start=0, num=SWEEP_BATCH)
            shards = pipe.execute()
        return [TaskMessage.model_validate_json(entry) for entries in shards for entry in entries]
