"""Several queues in one worker process: one ``Worker`` per queue, one shared slot pool.

Each queue keeps its own loop, connections (its hot path and its marker wait, so in a Redis
Cluster each talks to the node that owns its queue), lock renewal and stalled-job check; the
group only shares the process's concurrency (``slots.SlotPool``) and starts and stops them
together. One queue's Redis trouble never stops another's loop.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

from redis.asyncio import Redis

from conveyor.hooks import WorkerHooks
from conveyor.registry import TaskRegistry
from conveyor.worker.options import WorkerOptions
from conveyor.worker.runner import Worker
from conveyor.worker.slots import SlotPool


class WorkerGroup:
    """Workers of several queues sharing ``concurrency`` slots by ``weights``; runs and stops
    like one ``Worker``."""

    def __init__(
        self,
        redis: dict[str, Redis],
        registry: TaskRegistry,
        options: WorkerOptions,
        weights: dict[str, int],
        *,
        blocking_redis: dict[str, Redis],
        hooks: WorkerHooks | None = None,
    ) -> None:
        """``redis`` and ``blocking_redis`` map each queue to its clients (the same client
        for every queue on one Redis); ``options`` are every queue's but for its name."""
        self.pool = SlotPool(options.concurrency, weights)
        self.workers = [
            Worker(
                redis[queue],
                registry,
                _for_queue(options, queue),
                blocking_redis=blocking_redis[queue],
                hooks=hooks,
                slots=self.pool,
            )
            for queue in weights
        ]

    @property
    def running(self) -> bool:
        return any(worker.running for worker in self.workers)

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()

    def active_job_ids(self) -> list[str]:
        return [job_id for worker in self.workers for job_id in worker.active_job_ids()]

    async def run(self, grace_s: float = 30.0) -> None:
        """Run every queue's worker until ``stop()``; each drains within ``grace_s``. If one
        ends with an error, the others are stopped (gracefully) and the error raised."""
        tasks = [asyncio.ensure_future(worker.run(grace_s)) for worker in self.workers]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            self.stop()
            results = await asyncio.gather(*tasks, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result


def _for_queue(options: WorkerOptions, queue: str) -> WorkerOptions:
    return replace(options, queue=queue)
