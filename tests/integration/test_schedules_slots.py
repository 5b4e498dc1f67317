"""Each slot of a schedule runs at most once however many workers and API replicas there are:
three workers take an every-200 ms schedule's jobs while two API replicas keep changing it
(each change replaces the next run); every slot that ran, ran once, on the one grid."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections import Counter
from collections.abc import Callable

from pydantic import BaseModel

from conveyor.config import Settings
from conveyor.registry import JobContext, TaskRegistry
from conveyor.worker import Worker
from tests.support.api import api_client

EVERY_MS = 200


class Tick(BaseModel):
    round: int = 0


async def test_each_slot_runs_once_with_three_workers_and_two_api_replicas(
    make_worker: Callable[..., Worker], settings: Settings, redis_url: str
) -> None:
    ran: list[str] = []
    registry = TaskRegistry()

    @registry.task("tick")
    async def tick(payload: Tick, ctx: JobContext) -> None:
        ran.append(ctx.job_id)

    body = {"name": "tick", "every_ms": EVERY_MS}
    async with (
        api_client(settings, redis_url, tasks=registry) as one,
        api_client(settings, redis_url, tasks=registry) as two,
    ):
        assert (
            await one.put("/schedules/s", json={**body, "data": {"round": 0}})
        ).status_code == 201
        for _ in range(3):
            make_worker(registry)
        for round_ in range(1, 13):  # both replicas change it, at once, about every 200 ms
            changes = [
                api.put("/schedules/s", json={**body, "data": {"round": round_}})
                for api in (one, two)
            ]
            answers = await asyncio.gather(*changes)
            assert [a.status_code for a in answers] in ([200, 200],), [a.text for a in answers]
            await asyncio.sleep(random.uniform(0.1, 0.3))
        assert (await one.delete("/schedules/s")).status_code == 204
    await asyncio.sleep(0.3)  # a run taken just before the DELETE finishes

    slots = [int(job_id.rsplit(":", 1)[1]) for job_id in ran if job_id.startswith("repeat:s:")]
    assert len(slots) >= 8, ran
    assert Counter(slots).most_common(1)[0][1] == 1, Counter(slots)  # no slot twice
    ordered = sorted(slots)
    assert all((b - a) % EVERY_MS == 0 for a, b in itertools.pairwise(ordered)), ordered
