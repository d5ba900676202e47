"""kombu's Redis transport, with one client object per channel instead of one per command.

kombu builds a new redis-py client for every publish, ack and event (`Channel.conn_or_acquire`), and building one
copies redis-py's table of response callbacks: a good share of a worker's CPU per job goes there. The clients all
draw connections from the channel's pool and redis-py clients are thread-safe, so one per channel serves them all.
The clients that block on BRPOP (`asynchronous=True`) are kombu's own business and are left as they are.
"""

from __future__ import annotations

from kombu.transport import redis as kombu_redis


class Channel(kombu_redis.Channel):
    _shared_client = None

    def _create_client(self, asynchronous: bool = False):
        if asynchronous:
            return super()._create_client(asynchronous=True)
        if self._shared_client is None:
            self._shared_client = super()._create_client()
        return self._shared_client


class Transport(kombu_redis.Transport):
    Channel = Channel
