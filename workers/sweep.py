"""Send again the jobs whose execution message a crashed worker took from its queue and lost, or that a process
died before publishing.

kombu's Redis transport pops a message (BRPOP) and records it as unacknowledged in a second step; a worker killed
between the two loses the message, and its job would wait forever. The job store notes every message sent to an
LLM queue until a claim takes it (`JobStore.lost`); once messages sent well after a job's own have been claimed,
its message should have been taken too. One worker at a time (a Redis lock) looks for such jobs, makes sure their
message is neither in a worker's unacknowledged set nor back in the queue, and sends it again. RabbitMQ loses no
message a worker took (it hands it out again when that worker's connection drops), so with it as the broker that
search is skipped; what the round does there is publish the outbox's messages that their publisher left unsent
(shared/outbox.py).

The same round settles the budget reservations a process left behind when it died between a job's finish and its
settlement (`KeyStore.reconcile`): a job finished for longer than the round's interval is settled at its recorded
cost, so a reservation is never held more than two intervals (30 s by default) past its job's end; a job cancelled
while its call ran, once no worker holds its message any more (on RabbitMQ: no live worker reports it active or
reserved), at its reservation.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Iterator
from typing import Any

from celery import Celery, signals
from pydantic import ValidationError

from shared.auth import KeyStore
from shared.job_store import JobStore
from shared.jobs import JobRecord
from shared.store import key
from workers.celery_app import EXECUTE_TASK, LLM_QUEUES, CeleryMessage, app, task_message
from workers.runtime import services

log = logging.getLogger(__name__)
PAGE = 1000


class LostMessageSweep:
    def __init__(self, app: Celery, jobs: JobStore) -> None:
        self.app, self.jobs, self.redis = app, jobs, jobs.redis
        self.keys = KeyStore(jobs.settings, jobs.redis)
        self.interval = jobs.settings.lost_message_sweep_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lost-message-sweep", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sweep()
            except Exception:  # a Redis hiccup must not end the thread; the next round tries again
                log.exception("lost-message sweep failed")

    def sweep(self) -> list[str]:
        """One round, if no other worker is running one; the ids of the jobs sent again."""
        lock = key(self.jobs.settings, "jobs", "sweep-lock")
        if not self.redis.set(lock, "1", nx=True, px=int(self.interval * 1000)):
            return []
        try:
            settled = self.keys.reconcile(self.interval, lookup=self._record, held=self._held)
        except Exception:  # the lost messages below matter more than a settlement the next round can make
            log.exception("settling left-over reservations failed")
            settled = []
        if settled:
            log.warning("settled %d reservations left by a crashed process: %s", len(settled), ", ".join(settled))
        resent = self._publish_outbox()
        if not self.jobs.settings.broker_is_store:
            return resent
        for queue in LLM_QUEUES:
            candidates = self.jobs.lost(queue, grace_s=self.interval)
            if not candidates:
                continue
            for job_id in self._missing(candidates, queue):
                log.warning("job %s: its message to %s was lost with a worker; sending it again", job_id, queue)
                self.jobs.update(job_id, stage="queued again: a worker crashed holding its message")
                self.jobs.sending(job_id, queue, task_message(self.app, EXECUTE_TASK, [job_id], queue, job_id))
                resent.append(job_id)
        return resent

    def _publish_outbox(self) -> list[str]:
        """Publish the messages written down a round ago or more and still not sent; the ids of their jobs."""
        published = []
        for message in self.jobs.outbox.due(self.interval):
            log.warning("job %s: its message to %s was never published; publishing it", message.task_id, message.queue)
            if self.jobs.publish(CeleryMessage(self.app, message)):
                published.append(message.task_id)
        return published

    def _record(self, job_id: str) -> JobRecord | None:
        """The job's record; None for one that cannot be read (its worker fails it and releases it)."""
        try:
            return self.jobs.get(job_id)
        except ValidationError:
            return None

    def _held(self, job_ids: list[str]) -> set[str]:
        """Those of `job_ids` whose message a worker holds unacknowledged: it is still running them."""
        if not self.jobs.settings.broker_is_store:  # ask the live workers what they run or hold
            inspect = self.app.control.inspect(timeout=2.0)
            reports = [inspect.active() or {}, inspect.reserved() or {}]
            return {task["id"] for report in reports for tasks in report.values() for task in tasks} & set(job_ids)
        held: set[str] = set()
        for payload in self._unacked():
            held |= {job_id for job_id in job_ids if job_id in payload}
        return held

    def _missing(self, job_ids: list[str], queue: str) -> list[str]:
        """Those of `job_ids` whose message is neither unacknowledged nor (restored there) in the queue. Messages
        carry the job's id as their task id, in plain text, so a substring test finds them without decoding."""
        missing = set(job_ids)
        for payload in itertools.chain(self._unacked(), self._queued(queue)):
            missing -= {job_id for job_id in missing if job_id in payload}
            if not missing:
                break
        return [job_id for job_id in job_ids if job_id in missing]

    def _unacked(self) -> Iterator[str]:
        """Messages workers hold (kombu's hash of delivery tag -> message)."""
        name = self.jobs.settings.redis_prefix + "unacked"
        for _, payload in self.redis.hscan_iter(name, count=PAGE):
            yield payload

    def _queued(self, queue: str) -> Iterator[str]:
        name = self.jobs.settings.redis_prefix + queue
        for start in range(0, self.redis.llen(name), PAGE):
            yield from self.redis.lrange(name, start, start + PAGE - 1)


@signals.worker_ready.connect
def _start(sender: Any, **_: Any) -> None:
    """Every worker that takes LLM jobs runs the sweep thread; the lock lets one of them at a time do a round."""
    if not {queue.name for queue in sender.task_consumer.queues} & set(LLM_QUEUES):
        return
    sweep = LostMessageSweep(app, services().jobs)
    sweep.start()
    signals.worker_shutdown.connect(lambda **_: sweep.stop(), weak=False)
