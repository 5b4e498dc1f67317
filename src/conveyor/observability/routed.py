"""Hooks chosen by the job's queue: a worker process serving several queues of a Redis
Cluster keeps each queue's stats through that queue's own client (its slot's master)."""

from __future__ import annotations

from conveyor.hooks import JobEvent, WorkerHooks


class QueueRoutedHooks:
    """Calls the hooks of the event's queue (``by_queue``); events of other queues are dropped."""

    def __init__(self, by_queue: dict[str, WorkerHooks]) -> None:
        self.by_queue = by_queue

    def job_started(self, event: JobEvent) -> None:
        hooks = self.by_queue.get(event.queue)
        if hooks is not None:
            hooks.job_started(event)

    def job_completed(self, event: JobEvent) -> None:
        hooks = self.by_queue.get(event.queue)
        if hooks is not None:
            hooks.job_completed(event)

    def job_retrying(self, event: JobEvent) -> None:
        hooks = self.by_queue.get(event.queue)
        if hooks is not None:
            hooks.job_retrying(event)

    def job_failed(self, event: JobEvent) -> None:
        hooks = self.by_queue.get(event.queue)
        if hooks is not None:
            hooks.job_failed(event)

    def job_deferred(self, event: JobEvent) -> None:
        hooks = self.by_queue.get(event.queue)
        if hooks is not None:
            hooks.job_deferred(event)
