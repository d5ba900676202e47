"""The embedded runtime: what one `orchestrator` command runs besides itself, owned for the life of the command.

With no `ORCH_REDIS_URL` a command needs a Redis and, to run jobs, a worker: `EmbeddedRuntime` starts (or joins) the
data directory's Valkey server (shared/embedded.py) and runs an in-process worker (workers/embedded.py), and takes
them down again whichever way the command ends: normally, by an exception, or by a signal. With a Redis configured
it starts nothing, and only handles the signals and the command's own jobs.

Signals (uvicorn's convention, SIGINT and SIGTERM alike): the first asks for a graceful stop; it raises `Interrupted`
(a KeyboardInterrupt) in the main thread, or tells a listener (`signals_to`, for a server with its own shutdown, like
uvicorn's). A second forces the stop: the drain is cut short and the process exits as soon as the cleanup below is
done, without tracebacks. After the cleanup, a further signal exits at once.

Stopping, in this order:
1. With `jobs_on_interrupt="cancel"` and a signal: the unfinished jobs this command submitted are cancelled
   (`orchestrator run`: the user no longer waits for the answer, which nobody would read if it ran later).
2. The worker takes no new message; the jobs in hand get `drain_seconds` to finish (the setting
   `shutdown_drain_seconds`, 5 s by default).
3. The jobs still in hand go back to `queued`, and the worker stops: its broker channel closes, which puts their
   messages back in their queues, so the next worker on this data directory (or any other) runs them.
4. The server stops if no other command uses it, and its URL file goes with it.

Use:

    with EmbeddedRuntime(get_settings(), worker_threads=4) as runtime:
        ...  # runtime.settings point at the server; leaving the block after a signal raises Interrupted
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from types import FrameType
from typing import Any, Literal

from rich.console import Console

from shared.settings import Settings

OnInterrupt = Literal["requeue", "cancel"]
HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)

_jobs_on_interrupt: ContextVar[OnInterrupt] = ContextVar("orchestrator_jobs_on_interrupt", default="requeue")
_abandoned = threading.Event()


class Interrupted(KeyboardInterrupt):
    """The command was asked to stop by a signal; `exit_code` is the shell's 128 + the signal's number."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


@contextmanager
def jobs_on_interrupt(policy: OnInterrupt) -> Iterator[None]:
    """The default `jobs_on_interrupt` of the runtimes entered in this block (a command sets it for its handler)."""
    token = _jobs_on_interrupt.set(policy)
    try:
        yield
    finally:
        _jobs_on_interrupt.reset(token)


def work_abandoned() -> bool:
    """Whether a runtime of this process stopped with work still running in threads (tasks it gave up on, a
    server's thread): the interpreter would wait for them at exit, so the process should leave by `exit_now`."""
    return _abandoned.is_set()


def exit_now(code: int) -> None:
    """End the process at once with `code`, without waiting for threads, after flushing what was printed."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    exit_now(128 + signum)


class EmbeddedRuntime:
    """Redis and a worker for one command (see the module docstring). `worker_threads=None` runs no worker."""

    def __init__(
        self,
        settings: Settings,
        worker_threads: int | None = None,
        *,
        jobs_on_interrupt: OnInterrupt | None = None,
        drain_seconds: float | None = None,
        console: Console | None = None,
    ) -> None:
        self.settings = settings
        self.embedded = not settings.redis_url
        self.worker_threads = worker_threads
        self.jobs_on_interrupt: OnInterrupt = jobs_on_interrupt or _jobs_on_interrupt.get()
        self.drain_seconds = drain_seconds if drain_seconds is not None else settings.shutdown_drain_seconds
        self.console = console or Console(stderr=True, highlight=False)
        self.interrupted: int | None = None  # the first signal received
        self.server: Any = None  # shared.embedded.EmbeddedRedis
        self.worker: Any = None  # workers.embedded.InProcessWorker
        self.submitted: dict[str, None] = {}  # with "cancel": the jobs this command submitted, in order
        self.cancelled: list[str] = []
        self.requeued: list[str] = []
        self._phase = "new"  # new, starting, running, stopping, stopped
        self._signals = 0
        self._force = threading.Event()
        self._listener: Callable[[bool], None] | None = None
        self._previous: dict[int, Any] = {}
        self._redis_url_before: str | None = None

    # entering ------------------------------------------------------------------------------------------------------

    def __enter__(self) -> EmbeddedRuntime:
        self._phase = "starting"
        self._install_signals()
        try:
            self._start()
        except BaseException:
            self._phase = "stopping"
            try:
                self._stop(interrupted=self.interrupted is not None)
            finally:
                self._restore_signals()
            raise
        self._phase = "running"
        if self.interrupted is not None:  # a signal while starting: it was held until the start was done
            self.__exit__(None, None, None)
        return self

    def _start(self) -> None:
        if self.jobs_on_interrupt == "cancel":
            from celery import signals as celery_signals

            celery_signals.after_task_publish.connect(self._on_publish, weak=False)
        if not self.embedded:
            return
        from shared.embedded import EmbeddedRedis
        from workers.celery_app import reconfigure

        self.server = EmbeddedRedis.open(self.settings)
        self._redis_url_before = os.environ.get("ORCH_REDIS_URL")
        os.environ["ORCH_REDIS_URL"] = self.server.url
        self.settings = reconfigure()
        self.console.print(
            f"[dim]embedded Redis at {self.server.url} "
            f"({'started' if self.server.started else 'shared with another command'}; "
            f"data in {self.settings.resolved_data_dir})[/dim]"
        )
        if self.worker_threads:
            from workers.embedded import InProcessWorker

            self.worker = InProcessWorker(concurrency=self.worker_threads)
            self.worker.start()

    def _on_publish(self, sender: str | None = None, headers: dict | None = None, **_: Any) -> None:
        """Note the jobs this command submits: a job's own task carries the job's id; tasks that tasks send (a
        document's next step) belong to whoever submitted the job."""
        from celery._state import get_current_worker_task

        from workers.celery_app import EXECUTE_TASK, PREPROCESS_TASK

        if sender in (EXECUTE_TASK, PREPROCESS_TASK) and get_current_worker_task() is None and headers:
            job_id = headers.get("id")
            if job_id:
                self.submitted[job_id] = None

    # signals -------------------------------------------------------------------------------------------------------

    def _install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # only the main thread receives signals; the caller handles them
        for signum in HANDLED_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._on_signal)

    def _restore_signals(self) -> None:
        for signum, handler in self._previous.items():
            # After a signal, a further one ends the process at once: the cleanup is done.
            signal.signal(signum, _exit_on_signal if self.interrupted is not None else handler)
        self._previous.clear()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals += 1
        if self._signals > 1:  # a second signal forces the stop
            self._force.set()
            if self._listener is not None:
                self._listener(True)
            return
        self.interrupted = signum
        if self._listener is not None:
            self._listener(False)
        elif self._phase == "running":
            self._phase = "stopping"  # from here on, a signal no longer raises: the cleanup must run whole
            raise Interrupted(signum)

    @contextmanager
    def signals_to(self, listener: Callable[[bool], None]) -> Iterator[None]:
        """Within this block, a signal calls `listener(force)` (force False for the first, True for the next)
        instead of raising: for a server that stops itself gracefully, such as uvicorn's."""
        self._listener = listener
        try:
            yield
        finally:
            self._listener = None

    def run_in_thread(self, target: Callable[[], Any], name: str = "command") -> Any:
        """Run `target` in a daemon thread, waiting for it here, where a signal can interrupt the wait: for a call
        that blocks where a KeyboardInterrupt cannot end it (the MCP stdio server, reading stdin in a thread of
        its own). Interrupted, the thread is left running and the process exits without waiting for it."""
        outcome: dict[str, Any] = {}

        def run() -> None:
            try:
                outcome["value"] = target()
            except BaseException as error:  # handed to the waiting thread
                outcome["error"] = error

        thread = threading.Thread(target=run, name=name, daemon=True)
        thread.start()
        try:
            while thread.is_alive():
                thread.join(0.2)
        except BaseException:
            _abandoned.set()
            raise
        if "error" in outcome:
            raise outcome["error"]
        return outcome.get("value")

    # leaving -------------------------------------------------------------------------------------------------------

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        if self._phase in ("stopped", "new"):
            return
        if exc is not None and isinstance(exc, KeyboardInterrupt) and self.interrupted is None:
            self.interrupted = getattr(exc, "signum", signal.SIGINT)  # a KeyboardInterrupt not of our handler
        self._phase = "stopping"
        try:
            self._stop(interrupted=self.interrupted is not None)
        finally:
            self._phase = "stopped"
            self._restore_signals()
        if self.interrupted is not None and exc is None:
            raise Interrupted(self.interrupted)  # the command ends as interrupted (exit code 128 + signal)

    def _stop(self, interrupted: bool) -> None:
        from celery import signals as celery_signals

        celery_signals.after_task_publish.disconnect(self._on_publish)
        try:
            if interrupted and self.jobs_on_interrupt == "cancel":
                self._attempt("cancel this command's jobs", self._cancel_own_jobs)
            if self.worker is not None:
                self._stop_worker()
        finally:
            if self.server is not None:
                if _abandoned.is_set():
                    # Tasks given up on still run in pool threads; once the server is gone, all they could say is
                    # that it is gone. Their jobs are queued again, and the process is about to end.
                    logging.disable(logging.CRITICAL)
                self.server.close(timeout=1.0 if self._force.is_set() else 5.0)
                self._forget_server()
        self._report(interrupted)

    def _forget_server(self) -> None:
        """This process's settings no longer name the server (for a later command in the same process)."""
        from workers.celery_app import reconfigure

        if self._redis_url_before is None:
            os.environ.pop("ORCH_REDIS_URL", None)
        else:
            os.environ["ORCH_REDIS_URL"] = self._redis_url_before
        reconfigure()

    def _attempt(self, what: str, step: Callable[[], None]) -> None:
        """A step of the stop that must not keep the next ones from running (Redis may be unreachable)."""
        try:
            step()
        except Exception as error:
            self.console.print(f"[yellow]could not {what}[/yellow]: {error}")

    def _store(self) -> Any:
        from shared.job_store import JobStore

        return JobStore(self.settings)

    def _cancel_own_jobs(self) -> None:
        from shared.auth import settle_job

        store = self._store()
        reason = "cancelled: the command that submitted it was interrupted and no longer waits for it"
        for job_id in self.submitted:
            record = store.get(job_id)
            if record is None or record.status.terminal:
                continue
            if store.cancel(record, reason):
                settle_job(self.settings, store.redis, record, 0.0)  # release its budget reservation
                self.cancelled.append(job_id)

    def _stop_worker(self) -> None:
        from shared.jobs import JobStatus

        worker = self.worker
        worker.stop_consuming()
        if not self._force.is_set():  # cancelled jobs are not waited for: they stop at their next attempt
            worker.wait_idle(self.drain_seconds, interrupt=self._force, ignore=self.cancelled)
        left = worker.in_flight_jobs() - set(self.cancelled)

        def requeue() -> None:
            store = self._store()
            for job_id in sorted(left):
                if store.status(job_id) in (JobStatus.running, JobStatus.preprocessing) and store.update(
                    job_id,
                    status=JobStatus.queued,
                    stage="queued again: the worker running it stopped before it finished",
                ):
                    self.requeued.append(job_id)

        if left:
            self._attempt("put the jobs in flight back in their queue", requeue)
        holding = worker.in_flight()  # tasks still running, cancelled ones included: given up on by the stop
        stopped = worker.stop(timeout=2.0 if self._force.is_set() else 10.0)
        if holding or not stopped:
            _abandoned.set()
        self.worker = None

    def _report(self, interrupted: bool) -> None:
        if self.cancelled:
            self.console.print(
                f"interrupted: cancelled job {', '.join(self.cancelled)}, which nobody waits for any more"
            )
        if self.requeued:
            where = "when an orchestrator next runs on this data directory" if self.embedded else "on a worker"
            self.console.print(
                f"{'interrupted' if interrupted else 'stopped'}: {len(self.requeued)} job(s) still running were "
                f"put back in their queue; they run again {where}"
            )


__all__ = ["EmbeddedRuntime", "Interrupted", "exit_now", "jobs_on_interrupt", "work_abandoned"]
