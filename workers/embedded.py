"""An in-process Celery worker on a thread pool, for the embedded mode: same tasks, queues and broker.

It stops in steps, so that the embedded runtime (api/embedded.py) can let the jobs in hand finish before it gives
up on them, and always before the server goes:

1. `stop_consuming()`: no new message is taken from the queues (the task consumer is cancelled on the worker's own
   event loop thread).
2. `wait_idle(seconds)`: the jobs in hand get that long to finish.
3. `in_flight_jobs()`: the jobs still in hand, for the runtime to set back to `queued`.
4. `stop()`: a cold shutdown. The pool is not waited for; the consumer's broker channel is closed, and kombu's Redis
   transport then puts every message delivered on it and not acknowledged back at the head of its queue
   (`QoS.restore_unacked_once` on `Channel.close`, `restore_at_shutdown`; with `task_acks_late` that is every task
   still running). A message whose channel is never closed (the process killed) waits in the `unacked` hash until
   a live worker's restore finds it older than the visibility timeout.

A task still running after `stop()` is abandoned in its pool thread: its message is back in the queue and its job
record `queued`, so another worker runs it again; if it finishes first, the job is finished and the repeated run
does nothing (`JobStore.claim` never re-runs a finished job).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from celery import Celery
from celery.contrib.testing.worker import setup_app_for_worker
from celery.utils.nodenames import anon_nodename
from celery.worker import WorkController, state

from workers.celery_app import ALL_QUEUES, EXECUTE_TASK, PREPROCESS_TASK, app
from workers.lease import Lease, snapshot
from workers.runtime import services
from workers.sweep import LostMessageSweep

START_TIMEOUT_S = 30.0


class _Controller(WorkController):
    """A worker that says when its consumer is up."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.ready = threading.Event()
        super().__init__(*args, **kwargs)

    def on_consumer_ready(self, consumer: Any) -> None:
        self.ready.set()


def _snapshot(requests: Iterable[Any]) -> tuple[Any, ...]:
    """`lease.snapshot`, or nothing when the set kept changing: the caller asks again a moment later."""
    try:
        return snapshot(requests)
    except RuntimeError:
        return ()


def job_of(request: Any) -> str | None:
    """The job a task request works for: the task id of a job's own task (the job id), else a `job_id` among its
    arguments (the chunk and reduce tasks of a document's preprocessing)."""
    if request.task_name in (EXECUTE_TASK, PREPROCESS_TASK):
        return request.id
    for argument in request.args or ():
        if isinstance(argument, dict) and isinstance(argument.get("job_id"), str):
            return argument["job_id"]
    return None


class InProcessWorker:
    def __init__(self, concurrency: int = 8, queues: tuple[str, ...] = ALL_QUEUES, celery: Celery = app) -> None:
        self.celery, self.concurrency, self.queues = celery, concurrency, queues
        self.controller: _Controller | None = None
        self._thread: threading.Thread | None = None
        self._lease: Lease | None = None
        self._sweep: LostMessageSweep | None = None

    def start(self, timeout: float = START_TIMEOUT_S) -> None:
        # Celery's ready signal is the CLI worker's only: lease renewals and the lost-message sweep start here.
        self._lease = Lease(self.celery)  # renewed until the worker has stopped
        self._lease.start()
        setup_app_for_worker(self.celery, "WARNING", None)
        self.controller = _Controller(
            app=self.celery,
            concurrency=self.concurrency,
            hostname=anon_nodename(),
            pool="threads",
            loglevel="WARNING",
            logfile=None,
            ready_callback=None,
            without_heartbeat=True,
            without_mingle=True,
            without_gossip=True,
            queues=list(self.queues),
        )
        # Unlike `celery.contrib.testing.worker.start_worker`, task_join_will_block stays as the pool set it (True,
        # as in any worker): a task sent by a task does not subscribe this process to its result on the way.
        self._thread = threading.Thread(target=self.controller.start, name="embedded-worker", daemon=True)
        self._thread.start()
        if not self.controller.ready.wait(timeout):
            self.stop(timeout=5)
            raise RuntimeError(f"the in-process worker did not start within {timeout:.0f} s")
        self._sweep = LostMessageSweep(self.celery, services().jobs)
        self._sweep.start()

    def _on_loop(self, callback: Any) -> None:
        """Run `callback` on the worker's event loop thread (kombu's channels are not for two threads at once)."""
        consumer = self.controller.consumer if self.controller else None
        hub = getattr(consumer, "hub", None) if consumer else None
        if hub is not None:
            hub.call_soon(callback)  # thread-safe, and wakes the loop
        elif consumer is not None:
            callback()

    def stop_consuming(self) -> None:
        """Take no new message from the queues; the tasks in hand go on."""
        consumer = self.controller.consumer if self.controller else None
        if consumer is None or consumer.task_consumer is None:
            return
        task_consumer = consumer.task_consumer

        def cancel() -> None:
            try:
                task_consumer.cancel()
            except Exception:  # the connection is going anyway; the cold stop closes it
                pass

        self._on_loop(cancel)

    def in_flight(self) -> tuple[Any, ...]:
        """The task requests this worker holds: running, or waiting for a pool thread."""
        return _snapshot(state.active_requests) + _snapshot(state.reserved_requests)

    def in_flight_jobs(self) -> set[str]:
        return {job for request in self.in_flight() if (job := job_of(request)) is not None}

    def wait_idle(self, timeout: float, interrupt: threading.Event | None = None, ignore: Iterable[str] = ()) -> bool:
        """Wait until no task is in hand (but those of the jobs in `ignore`), at most `timeout` seconds or until
        `interrupt` is set; True when idle."""
        ignored = set(ignore)
        deadline = time.monotonic() + timeout
        while any(job_of(request) not in ignored for request in self.in_flight()):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (interrupt is not None and interrupt.is_set()):
                return False
            if interrupt is not None:
                interrupt.wait(min(0.05, remaining))
            else:
                time.sleep(min(0.05, remaining))
        return True

    def stop(self, timeout: float = 10.0) -> bool:
        """Cold shutdown: unacknowledged messages go back to their queues as the consumer's channel closes. True
        when the worker's thread ended within `timeout` (its pool threads may still run abandoned tasks)."""
        stopped = True
        if self._sweep is not None:
            self._sweep.stop()
        if self._thread is not None and self._thread.is_alive():
            state.should_terminate = 0  # the event loop raises WorkerTerminate at its next turn
            self._on_loop(lambda: None)  # which is now
            self._thread.join(timeout)
            stopped = not self._thread.is_alive()
            if stopped:  # else the flag stays: the loop must still end when it gets to it
                state.should_terminate = None
        if self._lease is not None:
            self._lease.stop()
        return stopped


@contextmanager
def in_process_worker(
    concurrency: int = 8, queues: tuple[str, ...] = ALL_QUEUES, drain_seconds: float = 30.0
) -> Iterator[InProcessWorker]:
    """The worker for the life of the block; on the way out, the tasks in hand get `drain_seconds` to finish."""
    worker = InProcessWorker(concurrency, queues)
    worker.start()
    try:
        yield worker
    finally:
        worker.stop_consuming()
        worker.wait_idle(drain_seconds)
        worker.stop()


__all__ = ["InProcessWorker", "in_process_worker", "job_of"]
