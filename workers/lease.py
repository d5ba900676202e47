"""Leases on the messages a worker holds: a dead worker's jobs come back within a minute, a live worker's long jobs
never do.

kombu's Redis transport emulates acknowledgements. A delivered message waits in the `unacked` hash and its delivery
tag in the `unacked_index` sorted set, scored with the time of delivery (`kombu.transport.redis.QoS.append`); every
worker's event loop restores to its queue each message whose score is older than `visibility_timeout`
(`QoS.restore_visible`, every `unacked_restore_interval` seconds, under a Redis mutex), and an ack removes both
entries. Left as it is, the timeout has to exceed the longest task, or a live worker's long job runs twice; and a
SIGKILLed worker's jobs then wait that long.

So the score is made a lease. Every worker process that consumes queues runs a thread that, every `interval`
seconds (a sixth of the timeout, at most 10 s), sets the score of each delivery tag it holds to the current time
with ZADD XX: a tag acknowledged or restored meanwhile is not present any more and is not put back. The timeout
then bounds the time since a worker's last renewal, not the length of a task: a live worker's messages never get
that old, and a dead worker's come back `visibility_timeout_seconds` after its last renewal, at the next restore
scan of any live worker (`celery_config` makes scans frequent). With the defaults (60 s, renewals every 10 s, scans
every 5 s) a SIGKILLed worker's jobs are back in their queue 50 to 65 s after it died (6 s more if it died during a
restore scan, holding kombu's mutex), at the front of it (kombu restores with RPUSH and workers BRPOP).

What a worker holds is what Celery tracks in `celery.worker.state`: the requests running (`active_requests`),
waiting for a pool slot (`reserved_requests`) and waiting for their ETA or countdown (`scheduled_requests`, e.g. a
job retrying after a Redis error). With the prefork pool these live in the parent process, which consumes and acks
and where this thread runs (it starts on `worker_ready`, sent in the parent); the children hold nothing of their own.
A request Celery gives up (its broker connection lost: `Consumer.on_close`) is no longer renewed, and its message
comes back like a dead worker's.

A message that comes back is safe to run again: `JobStore.claim` hands a job that is still `running` (its worker
died) to the new delivery and counts it, and never re-runs a finished one (workers/tasks.py); a finished job is
billed and counted once whatever the number of deliveries.

The lost-message sweep (workers/sweep.py) is not affected. It sends a message again only for a job still `queued`
with no delivery whose message is neither in the `unacked` hash nor in its queue; the lease changes only scores in
the index, never which messages are in the hash, and kombu moves a restored message from the hash to the queue in
one transaction. A dead worker's messages stay in the hash until restored, so the sweep leaves them to the restore
rather than sending a second copy; and the restore brings back jobs at any stage, where the sweep only handles the
messages lost between BRPOP and `QoS.append`, which the lease cannot see either.

Limits. kombu compares scores with each worker's own clock (`time()`), as this thread writes them: hosts' clocks
must agree to well within the timeout minus the interval. A worker cut off from Redis, or a process paused, for
longer than the timeout loses its leases, and its jobs may run a second time elsewhere (still finishing, billed and
counted once). A live worker keeps the lease of a task that hangs, as it would keep the message: provider calls are
bounded by `provider_timeout_seconds`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

import redis
from celery import Celery, signals
from celery.worker import state

from workers.celery_app import STORE_TRANSPORT, app

log = logging.getLogger(__name__)
BATCH = 500  # tags per ZADD


def renewal_interval(visibility_timeout: float) -> float:
    """Seconds between renewals: six per timeout, so a few failed ones (a Redis hiccup) lose no lease."""
    return max(0.1, min(10.0, visibility_timeout / 6))


def held_tags() -> set[str]:
    """Delivery tags of the messages this process's worker holds: running, waiting for a slot, or for their ETA."""
    tags = set()
    for requests in (state.active_requests, state.reserved_requests, state.scheduled_requests):
        for request in snapshot(requests):
            tag = getattr(request.message, "delivery_tag", None)
            if tag:
                tags.add(tag)
    return tags


def snapshot(requests: Iterable[Any]) -> tuple[Any, ...]:
    """A copy of one of Celery's sets of requests, which the consumer thread changes while this one reads it; a
    RuntimeError when it kept changing for a hundred reads."""
    for _ in range(100):
        try:
            return tuple(requests)
        except RuntimeError:  # "changed size during iteration": read it again
            continue
    return tuple(requests)  # still changing: the error ends this round, the next one tries again


class Lease:
    """The thread that renews this process's leases."""

    def __init__(self, celery: Celery, client: redis.Redis | None = None) -> None:
        options = celery.conf.broker_transport_options or {}
        self.visibility_timeout = float(options.get("visibility_timeout", 3600))
        self.interval = renewal_interval(self.visibility_timeout)
        # the channel's own key, as kombu's prefixing client names it
        self.key = options.get("global_keyprefix", "") + options.get("unacked_index_key", "unacked_index")
        # A connection of its own, with timeouts: a half-open socket must fail a renewal, not stop them all.
        timeout = max(1.0, self.interval)
        self.redis = client or redis.Redis.from_url(
            celery.conf.broker_url, socket_timeout=timeout, socket_connect_timeout=timeout
        )
        self._renewed_at = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="message-lease", daemon=True)

    def start(self) -> None:
        log.info(
            "renewing the leases of held messages every %.1f s (visibility timeout %.0f s)",
            self.interval,
            self.visibility_timeout,
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.renew()
            except Exception:  # Redis trouble must not end the thread; the next round tries again
                late = time.monotonic() - self._renewed_at
                if late > self.visibility_timeout:
                    log.exception(
                        "leases not renewed for %.0f s (visibility timeout %.0f s): this worker's jobs may run "
                        "again elsewhere",
                        late,
                        self.visibility_timeout,
                    )
                else:
                    log.warning("lease renewal failed; trying again in %.1f s", self.interval, exc_info=True)

    def renew(self) -> int:
        """Set the score of every tag this worker holds, and still in the index, to now; how many were renewed."""
        tags = sorted(held_tags())
        renewed = 0
        if tags:
            now = time.time()
            with self.redis.pipeline(transaction=False) as pipe:
                for start in range(0, len(tags), BATCH):
                    pipe.zadd(self.key, dict.fromkeys(tags[start : start + BATCH], now), xx=True, ch=True)
                renewed = sum(pipe.execute())
        self._renewed_at = time.monotonic()
        log.debug("renewed %d of %d held messages", renewed, len(tags))
        return renewed


@signals.worker_ready.connect
def _start(**_: Any) -> None:
    """Every worker started from the command line renews its leases, whatever its queues and pool; on RabbitMQ
    there are none to renew (it hands a message out again only when its worker's connection drops)."""
    if app.conf.broker_transport != STORE_TRANSPORT:
        return
    lease = Lease(app)
    lease.start()
    signals.worker_shutdown.connect(lambda **_: lease.stop(), weak=False)
