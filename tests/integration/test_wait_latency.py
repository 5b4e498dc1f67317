"""An attempt's wait counts from its own due time: a retry's from the end of its backoff, not
from the first enqueue (which added the earlier attempts and the backoff to it)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from conveyor.client import QueueClient
from conveyor.hooks import JobEvent, NoHooks
from conveyor.jobs import JobState
from conveyor.registry import JobContext, TaskRegistry
from conveyor.services.monitor.jobs import job_row
from conveyor.testing import wait_for_state
from conveyor.worker import Worker

FIRST_ATTEMPT_S = 1.5


class Started(NoHooks):
    def __init__(self) -> None:
        self.events: list[JobEvent] = []

    def job_started(self, event: JobEvent) -> None:
        self.events.append(event)


async def test_a_retrys_wait_starts_at_its_due_time(
    make_client: Callable[..., QueueClient], make_worker: Callable[..., Worker]
) -> None:
    registry = TaskRegistry()

    @registry.task("slow_then_fine")
    async def slow_then_fine(payload: dict[str, int], ctx: JobContext) -> str:
        if ctx.attempt == 1:
            await asyncio.sleep(FIRST_ATTEMPT_S)
            raise RuntimeError("first attempt fails")
        return "ok"

    client = make_client(registry)
    hooks = Started()
    make_worker(registry, hooks=hooks)
    job_id = await client.enqueue(
        "slow_then_fine", {}, {"backoff": {"type": "fixed", "delay": 300}}
    )
    view = await wait_for_state(client, job_id, JobState.COMPLETED, timeout=30)

    second = [e for e in hooks.events if e.attempt == 2]
    assert len(second) == 1
    # It used to be about FIRST_ATTEMPT_S: the first attempt's run counted as waiting.
    assert second[0].wait_ms < FIRST_ATTEMPT_S * 1000 / 2, second[0]
    row = job_row(view.info, view.state, client.max_attempts(view.info))
    assert row["wait_ms"] is not None
    assert row["wait_ms"] < FIRST_ATTEMPT_S * 1000 / 2, row
