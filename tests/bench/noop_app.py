"""The bare Celery baseline of the throughput benchmark: a no-op task on the same Redis."""

import os

from celery import Celery

app = Celery("noop", broker=os.environ["BENCH_REDIS_URL"], backend=os.environ["BENCH_REDIS_URL"])
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
)


@app.task(name="noop")
def noop() -> None:
    return None
