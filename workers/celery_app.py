"""The Celery app: queues per complexity tier plus `preprocess`, JSON only, late acks, no result backend."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Any

from celery import Celery, signals
from kombu import Connection, Exchange, Queue, pools
from redis.client import Pipeline

from shared.compression import Preprocessing
from shared.heap import freeze_startup_heap
from shared.outbox import TaskMessage
from shared.providers import prepare_adapters
from shared.settings import Settings, Tier, get_settings
from workers.events import FlushEvents
from workers.transport import publishing_into

LLM_QUEUES = tuple(f"llm.{tier}" for tier in Tier)
PREPROCESS_QUEUE = "preprocess"
ALL_QUEUES = (*LLM_QUEUES, PREPROCESS_QUEUE)
EXECUTE_TASK = "orchestrator.execute"
PREPROCESS_TASK = "orchestrator.preprocess"
REDUCE_TASK = "orchestrator.preprocess.reduce"


def queue_for(tier: Tier | str) -> str:
    return f"llm.{tier}"


#: kombu's Redis transport as the orchestrator runs it, when the broker is the store's Redis.
STORE_TRANSPORT = "workers.transport:Transport"
#: How long a publish insists on a broker that does not answer: about 3 s, then the message waits in the outbox.
PUBLISH_RETRIES = {"max_retries": 3, "interval_start": 0, "interval_step": 0.5, "interval_max": 1}


@dataclass(frozen=True)
class CeleryMessage:
    """A job's task message (`shared.outbox.Enqueue`) sent through a Celery app."""

    celery: Celery
    message: TaskMessage

    @property
    def in_store(self) -> bool:
        return self.celery.conf.broker_transport == STORE_TRANSPORT

    def into(self, pipeline: Pipeline) -> bool:
        """With the broker on the store's Redis, the message rides in `pipeline`: a worker never finds a message
        without its record, no message is noted as sent without being sent, and both cost one round trip."""
        if not self.in_store:
            return False
        with publishing_into(pipeline):
            self.publish()
        return True

    def publish(self) -> None:
        """On Redis no queue is declared (`declare=()`): a message to a list needs no binding, and the consumers
        declare their queues, while kombu would copy the queue and its exchange on every publish only to find them
        declared (a fifth of `send_task`'s cost). On RabbitMQ, which drops a message to a queue not declared yet,
        kombu declares it once per connection, and the publish returns once the broker has confirmed the message:
        only then may the outbox drop it."""
        message = self.message
        fields = {"args": message.args, "queue": message.queue, "task_id": message.task_id, "ignore_result": True}
        if self.in_store:
            self.celery.send_task(message.task, declare=(), **fields)
            return
        broker = _confirming(self.celery, self.celery.conf.broker_url)
        with pools.producers[broker].acquire(block=True, timeout=10) as producer:
            self.celery.send_task(message.task, producer=producer, **fields)


@functools.lru_cache(maxsize=8)
def _confirming(celery: Celery, url: str) -> Connection:
    """The app's broker at `url` with publisher confirms, for job messages alone: the app's own connections go
    without, since on them a worker's task events would wait on confirms in its event loop."""
    return celery.connection_for_write(url, transport_options={"confirm_publish": True})


def task_message(celery: Celery, task: str, args: list[Any], queue: str, job_id: str) -> CeleryMessage:
    """A job's task message, for the job store to send with the writes that record or note it (`JobStore.create`,
    `JobStore.sending`). The job's id is the task's: a cancel revokes it, a sweep recognises it."""
    return CeleryMessage(celery, TaskMessage(task=task, args=args, queue=queue, task_id=job_id))


class CeleryDispatch:
    """How the orchestrator's jobs reach the workers (`shared.orchestrator.Dispatch`) through a Celery app."""

    def __init__(self, celery: Celery) -> None:
        self.celery = celery

    def queue_for(self, tier: Tier) -> str:
        return queue_for(tier)

    def execute(self, job_id: str, queue: str) -> CeleryMessage:
        return task_message(self.celery, EXECUTE_TASK, [job_id], queue, job_id)

    def preprocess(self, work: Preprocessing) -> tuple[str, CeleryMessage]:
        job_id = work.job_id or ""
        return PREPROCESS_QUEUE, task_message(
            self.celery, PREPROCESS_TASK, [work.model_dump(mode="json")], PREPROCESS_QUEUE, job_id
        )

    def revoke(self, job_id: str) -> None:
        self.celery.control.revoke(job_id)

    def ping(self) -> None:
        """Reach the broker, or raise (kombu raises its transport's own errors)."""
        with self.celery.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=2)


def celery_config(settings: Settings) -> dict[str, Any]:
    visibility = settings.visibility_timeout_seconds
    transport = {
        # An unacked message comes back this long after its worker last renewed its lease on it (workers/lease.py
        # renews every message a live worker holds): long enough for a few missed renewals, not the longest task.
        "visibility_timeout": visibility,
        # kombu scans for expired unacked messages every interval x throttle seconds (100 s by default); a dead
        # worker's messages should come back soon after its last renewal plus the timeout (60 + 5 s by default).
        "unacked_restore_interval": min(5, max(1, visibility // 12)),
        "unacked_restore_throttle": 1,
        # A worker killed while it held the sweep's lock would block every sweep for 5 minutes by default.
        "unacked_mutex_expire": min(300, max(5, visibility // 10)),
        "global_keyprefix": settings.redis_prefix,  # queues and bookkeeping under the same prefix as the rest
    }
    if not settings.broker_is_store:
        # RabbitMQ keeps a message a worker took until it acks, and hands it out again when that worker's connection
        # drops: no visibility timeout to tune. A publish gives up within seconds when the broker is down (kombu
        # would retry forever): the job is accepted all the same, and the sweep publishes its message later.
        # Job messages are published with confirms on connections of their own (`CeleryMessage.publish`).
        transport = {**PUBLISH_RETRIES}
    return {
        "broker_url": settings.redis_url if settings.broker_is_store else settings.broker_url,
        # kombu's Redis transport with one client per channel (workers/transport.py); else the URL's own
        "broker_transport": STORE_TRANSPORT if settings.broker_is_store else None,
        # No result backend: a job's state is its record, and a document's map results are kept beside it.
        "task_ignore_result": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        # Each queue with its own exchange and routing key: a bare `Queue(name)` is bound to the default queue's, and
        # RabbitMQ would route every tier's messages by that one key.
        "task_queues": [Queue(name, Exchange(name), routing_key=name) for name in ALL_QUEUES],
        "task_default_queue": queue_for(Tier.moderate),
        "task_publish_retry_policy": PUBLISH_RETRIES,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "broker_transport_options": transport,
        "worker_prefetch_multiplier": 1,
        "worker_send_task_events": True,
        "worker_consumer": "workers.events:BatchedEventsConsumer",
        # No `task-sent` events: each costs the sender a publish per job (a third of `send_task`), and a job waiting
        # in its queue is already visible on its record and in Flower's broker view.
        "task_send_sent_event": False,
        "broker_connection_retry_on_startup": True,
        "worker_hijack_root_logger": False,
        "worker_redirect_stdouts": False,  # stdout may be an MCP stdio channel (`orchestrator mcp`)
    }


app = Celery("orchestrator", include=["workers.tasks", "workers.preprocess", "workers.sweep", "workers.lease"])
app.conf.update(celery_config(get_settings()))
app.steps["consumer"].add(FlushEvents)


def reconfigure() -> Settings:
    """Settings read again from the environment (after `ORCH_REDIS_URL` changed: the embedded server started), with
    the workers' stores and this process's Celery app following them."""
    from workers.runtime import services

    get_settings.cache_clear()
    services.cache_clear()
    settings = get_settings()
    app.conf.update(celery_config(settings))
    return settings


@signals.after_setup_logger.connect
def _quiet_per_task_lines(loglevel: int, **_: Any) -> None:
    """Below DEBUG, no line per task ("Received task", "Task ... succeeded") or per provider call (the SDKs' HTTP
    clients log each request at INFO): at hundreds of jobs a second they cost a tenth of a worker's CPU and repeat
    what the job records and Flower hold. Warnings and failures still log."""
    if loglevel > logging.DEBUG:
        for name in ("celery.worker.strategy", "celery.app.trace", "httpx", "httpx2"):
            logging.getLogger(name).setLevel(logging.WARNING)


@signals.worker_init.connect
def _prepare_provider_adapters(**_: Any) -> None:
    prepare_adapters(get_settings())


@signals.celeryd_after_setup.connect
def _freeze_startup_heap(**_: Any) -> None:
    """A worker started from the command line, its tasks and provider clients built, before its pool starts: a
    prefork pool's children inherit the frozen heap and share its pages instead of copying them to collect."""
    freeze_startup_heap()
