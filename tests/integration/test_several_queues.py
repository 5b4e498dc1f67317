"""Several queues in one worker process (CONVEYOR_QUEUES): every queue's jobs complete, and
while several queues have work the process's concurrency is shared by their weights."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter

from pydantic import BaseModel

from conveyor import JobContext, JobSpec, QueueClient, Settings, TaskRegistry, run_worker
from conveyor.errors import Unrecoverable
from conveyor.jobs import JobState
from conveyor.maintenance import RetentionPolicy
from conveyor.redis import connect
from conveyor.services import cleanup
from conveyor.services.monitor.inspector import Inspector
from conveyor.testing import wait_for

JOB_S = 0.05


class Empty(BaseModel):
    pass


async def test_one_process_serves_two_queues_shared_by_weight(settings: Settings) -> None:
    heavy, light = f"{settings.queue}-heavy", f"{settings.queue}-light"
    starts: list[str] = []
    running: Counter[str] = Counter()
    most: Counter[str] = Counter()
    registry = TaskRegistry()

    @registry.task("work")
    async def work(payload: Empty, ctx: JobContext) -> str:
        starts.append(ctx.queue)
        running[ctx.queue] += 1
        most[ctx.queue] = max(most[ctx.queue], running[ctx.queue])
        most["all"] = max(most["all"], running.total())
        try:
            await asyncio.sleep(JOB_S)
        finally:
            running[ctx.queue] -= 1
        return ctx.queue

    @registry.task("boom")
    async def boom(payload: Empty, ctx: JobContext) -> None:
        raise Unrecoverable("for the cleanup")

    config = Settings.model_validate(
        {**settings.model_dump(), "queue": heavy, "queues": {heavy: 3, light: 1}, "concurrency": 4}
    )
    clients = {
        name: QueueClient.from_settings(config, registry=registry, queue=name)
        for name in (heavy, light)
    }
    per_queue = 40
    try:
        for client in clients.values():  # both backlogs exist before the worker starts
            await client.enqueue_many([JobSpec("work", {}) for _ in range(per_queue)])
        runner = asyncio.create_task(run_worker(registry, config, handle_signals=False))
        try:

            async def all_done() -> bool:
                counts = [await c.counts() for c in clients.values()]
                return all(c.get(JobState.COMPLETED, 0) == per_queue for c in counts)

            await wait_for(all_done, 20, message="every job of both queues completes")
            for client in clients.values():
                await client.enqueue("boom", {})

            async def both_failed() -> bool:
                counts = [await c.counts() for c in clients.values()]
                return all(c.get(JobState.FAILED, 0) == 1 for c in counts)

            await wait_for(both_failed, 10, message="one failure in each queue")
        finally:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
    finally:
        for client in clients.values():
            await client.close()
    assert Counter(starts) == {heavy: per_queue, light: per_queue}
    # Cleanup and the monitor's queue list cover every queue of CONVEYOR_QUEUES.
    assert config.redis_url is not None
    reports = await cleanup.once(config, config.redis_url, RetentionPolicy(0), dry_run=False)
    assert [(r.queue, r.failed_jobs_removed, r.failure_records_removed) for r in reports] == [
        (heavy, 1, 1),
        (light, 1, 1),
    ]
    async with connect(config.redis_url) as redis:
        assert Inspector(redis, config).configured == [heavy, light]
    # While both had a backlog (the heavy queue's 40 jobs take 40 / 3 rounds, in which the
    # light one runs about 13), the starts follow the weights 3:1 once the first round is
    # done; the whole process never ran more than its 4 at once.
    window = Counter(starts[8:32])
    assert 15 <= window[heavy] <= 21, window
    assert most["all"] == 4  # the process's concurrency, never more
    # Work-conserving: once the heavy queue has nothing left, the light one gets all 4.
    assert most[light] == 4
