"""kombu's Redis transport, with one client object per channel instead of one per command, and queue messages that
can ride in a caller's Redis pipeline.

kombu builds a new redis-py client for every publish, ack and event (`Channel.conn_or_acquire`), and building one
copies redis-py's table of response callbacks: a good share of a worker's CPU per job goes there. The clients all
draw connections from the channel's pool and redis-py clients are thread-safe, so one per channel serves them all.
The clients that block on BRPOP (`asynchronous=True`) are kombu's own business and are left as they are.

Inside `publishing_into(pipeline)`, a message published to a queue is added to that pipeline instead of being sent
on its own: it reaches Redis with the caller's other commands, in one round trip, and in a MULTI pipeline in the
same transaction. The pipeline must be on the broker's Redis (the orchestrator's store and broker are one URL).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from kombu.transport import redis as kombu_redis
from kombu.utils.json import dumps
from redis.client import Pipeline

_pipeline: ContextVar[Pipeline | None] = ContextVar("orchestrator_publish_pipeline", default=None)


@contextmanager
def publishing_into(pipeline: Pipeline) -> Iterator[None]:
    """Queue messages published in this block (in this thread) are added to `pipeline`; the caller executes it."""
    token = _pipeline.set(pipeline)
    try:
        yield
    finally:
        _pipeline.reset(token)


class Channel(kombu_redis.Channel):
    _shared_client = None

    def _create_client(self, asynchronous: bool = False):
        if asynchronous:
            return super()._create_client(asynchronous=True)
        if self._shared_client is None:
            self._shared_client = super()._create_client()
        return self._shared_client

    def _put(self, queue, message, **kwargs):
        pipeline = _pipeline.get()
        if pipeline is None or kwargs.get("_publish_batch") is not None or queue in (self._expires or {}):
            return super()._put(queue, message, **kwargs)
        key = self._q_for_pri(queue, self._get_message_priority(message, reverse=False))
        pipeline.lpush(self.global_keyprefix + key, dumps(message))  # the pipeline's client does not prefix keys


class Transport(kombu_redis.Transport):
    Channel = Channel
