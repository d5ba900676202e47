"""An in-process Celery worker on a thread pool, for the embedded mode: same tasks, queues and broker."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from celery.contrib.testing.worker import start_worker
from celery.worker import WorkController

from workers.celery_app import ALL_QUEUES, app
from workers.runtime import services
from workers.sweep import LostMessageSweep


@contextmanager
def in_process_worker(concurrency: int = 8, queues: tuple[str, ...] = ALL_QUEUES) -> Iterator[WorkController]:
    with start_worker(
        app,
        pool="threads",
        concurrency=concurrency,
        queues=list(queues),
        perform_ping_check=False,
        loglevel="WARNING",
        shutdown_timeout=30,
    ) as worker:
        sweep = LostMessageSweep(app, services().jobs)  # Celery's ready signal is the CLI worker's only
        sweep.start()
        try:
            yield worker
        finally:
            sweep.stop()
