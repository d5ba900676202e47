"""With RabbitMQ as the broker, a job's record and message cannot share a transaction: the outbox makes every
accepted job's message reach the broker, even one the broker refused when the job was accepted. Real RabbitMQ (on
5672, or ORCH_TEST_AMQP_URL) and the real Redis."""

from __future__ import annotations

import os
import time

import pytest
from celery import Celery
from kombu import Connection

from shared.job_store import JobStore
from shared.jobs import JobInput, JobRecord, JobStatus, new_job_id
from shared.planning import Planner
from shared.requests import JobRequest
from shared.settings import get_settings
from workers.celery_app import ALL_QUEUES, EXECUTE_TASK, celery_config, task_message
from workers.sweep import LostMessageSweep

AMQP = os.environ.get("ORCH_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
NOBODY = "amqp://guest:guest@127.0.0.1:1//"  # a port where no broker listens


def _rabbitmq_answers() -> bool:
    try:
        with Connection(AMQP, connect_timeout=1) as connection:
            connection.ensure_connection(max_retries=1)
        return True
    except Exception:  # noqa: BLE001 - any failure means there is no broker to test against
        return False


pytestmark = pytest.mark.skipif(not _rabbitmq_answers(), reason=f"no RabbitMQ answers at {AMQP}")


def celery_for(broker: str, monkeypatch) -> tuple[Celery, JobStore]:
    """A Celery app and a job store whose settings name `broker`, as a process started with ORCH_BROKER_URL has."""
    monkeypatch.setenv("ORCH_BROKER_URL", broker)
    get_settings.cache_clear()
    settings = get_settings()
    celery = Celery(f"outbox-test-{broker.rsplit(':', 1)[-1]}")
    celery.conf.update(celery_config(settings))
    return celery, JobStore(settings)


def queued_record(store: JobStore) -> JobRecord:
    proposal = Planner(store.settings).propose(JobRequest(request="Translate 'the road to Lyon' into French"))
    return JobRecord(
        id=new_job_id(),
        status=JobStatus.queued,
        queue="llm.simple",
        created_at=time.time(),
        input=JobInput(request="Translate 'the road to Lyon' into French"),
        **proposal.model_dump(),
    )


@pytest.fixture
def purged(redis_env, provider_env, monkeypatch):
    celery, _ = celery_for(AMQP, monkeypatch)
    with celery.connection_for_write() as connection:
        for queue in ALL_QUEUES:
            celery.amqp.queues[queue].bind(connection.default_channel).declare()
    celery.control.purge()
    yield
    celery.control.purge()


def test_a_message_the_broker_refused_is_published_by_the_sweep_and_its_job_runs(purged, start_worker, monkeypatch):
    refusing, store = celery_for(NOBODY, monkeypatch)
    record = queued_record(store)
    started = time.monotonic()
    store.create(record, record.queue, task_message(refusing, EXECUTE_TASK, [record.id], record.queue, record.id))
    assert time.monotonic() - started < 10  # the broker is given seconds, not forever
    assert store.get(record.id).status == JobStatus.queued  # accepted: its record is there
    assert [m.task_id for m in store.outbox.due(0)] == [record.id]  # and its message written down
    assert store.redis.zcard(store.deliveries.undelivered_key(record.queue)) == 0  # RabbitMQ loses none: no notes

    monkeypatch.setenv("ORCH_LOST_MESSAGE_SWEEP_SECONDS", "0.2")
    live, store = celery_for(AMQP, monkeypatch)
    time.sleep(0.3)
    assert LostMessageSweep(live, store).sweep() == [record.id]
    assert store.outbox.due(0) == []
    start_worker()
    deadline = time.monotonic() + 30
    while (status := store.status(record.id)) != JobStatus.succeeded:
        assert time.monotonic() < deadline, status
        time.sleep(0.1)
    assert store.get(record.id).deliveries == 1


def test_a_message_the_broker_took_leaves_nothing_in_the_outbox(purged, start_worker, monkeypatch):
    live, store = celery_for(AMQP, monkeypatch)
    record = queued_record(store)
    store.create(record, record.queue, task_message(live, EXECUTE_TASK, [record.id], record.queue, record.id))
    assert store.outbox.due(0) == []
    start_worker()  # started after the publish: RabbitMQ kept the message for the queue it declared
    deadline = time.monotonic() + 30
    while store.status(record.id) != JobStatus.succeeded:
        assert time.monotonic() < deadline
        time.sleep(0.1)
