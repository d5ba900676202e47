"""Task events sent in batches on a timer, instead of one publish per event as each is buffered.

Celery's worker buffers task events (received, started, succeeded...) and asks its event loop to flush them at
once: every job then costs three publishes, and the two sent from pool threads also wake the loop. Those publishes
compete for the interpreter with the jobs themselves. Here the loop flushes the buffer every
`EVENT_FLUSH_INTERVAL_S` (a full buffer of 24 events still flushes at once, as in Celery), so a busy worker sends
a batch per interval and a request never waits behind its own events. Flower and `celery events` see each event
at most that much later; the times they show are the events' own timestamps, taken when they happened.
"""

from __future__ import annotations

from typing import Any

from celery import bootsteps
from celery.worker.consumer import Consumer

EVENT_FLUSH_INTERVAL_S = 0.1


class BatchedEventsConsumer(Consumer):
    def on_send_event_buffered(self) -> None:
        """Leave buffered events to the flush timer (`FlushEvents`)."""


class FlushEvents(bootsteps.StartStopStep):
    """Flush the consumer's buffered task events on a timer of the worker's event loop; once more at shutdown."""

    requires = ("celery.worker.consumer.events:Events",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.timer = None

    def start(self, c: Consumer) -> None:
        if c.hub is not None and self.timer is None:
            self.timer = c.hub.call_repeatedly(EVENT_FLUSH_INTERVAL_S, c._flush_events)

    def stop(self, c: Consumer) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        c._flush_events()

    shutdown = stop
