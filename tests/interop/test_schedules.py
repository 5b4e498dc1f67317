"""Schedules shared with Node.js BullMQ: job schedulers made by either side, run by Conveyor's
workers (which create each next run as Node's worker does), read and removed by either."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis

from conveyor._bullmq import BullQueue
from conveyor.config import Settings
from conveyor.registry import TaskRegistry
from conveyor.schedules import Schedule
from conveyor.scheduling import Schedules
from conveyor.testing import wait_for
from conveyor.worker import Worker
from tests.interop.conftest import NodeCall, NodeWorker
from tests.interop.tasks import Runs
from tests.support.api import api_client


async def test_node_scheduler_keeps_running_on_conveyor_workers_alone(
    node: NodeCall,
    registry: TaskRegistry,
    runs: Runs,
    make_worker: Callable[..., Worker],
    redis: Redis,
    settings: Settings,
) -> None:
    """Issue 16: a Node scheduler every 500 ms keeps running (6 runs) with only Conveyor
    workers (before, the first run was the last: Node's worker makes the next run)."""
    make_worker(registry)
    make_worker(registry)
    first = (
        await node(
            "upsertScheduler",
            {"id": "tick", "repeat": {"every": 500}, "name": "echo", "data": {"n": 1}},
        )
    )["id"]
    assert first.startswith("repeat:tick:")

    def tick_runs() -> list[str]:
        return [job_id for job_id in runs.order if job_id.startswith("repeat:tick:")]

    # 6 runs take 2.5-3 s on a quiet machine. A loaded one takes some runs late and so skips
    # slots (BullMQ's rule), so wait on the runs rather than on the clock.
    await wait_for(lambda: len(tick_runs()) >= 6, timeout=30, message="the schedule stopped")
    ran = tick_runs()
    slots = [int(job_id.rsplit(":", 1)[1]) for job_id in ran]
    assert len(set(slots)) == len(slots)  # each slot once
    # On its grid; a run taken more than a slot late skips ahead (BullMQ's rule).
    assert all((b - a) % 500 == 0 for a, b in itertools.pairwise(slots)), slots
    [scheduler] = (await node("schedulers"))["schedulers"]
    assert scheduler["key"] == "tick"
    assert scheduler["iterationCount"] >= len(ran)
    assert scheduler["next"] > slots[-1]


async def test_http_schedule_is_nodes_scheduler_runs_and_delete_stops_it(
    node: NodeCall,
    registry: TaskRegistry,
    runs: Runs,
    make_worker: Callable[..., Worker],
    settings: Settings,
    redis_url: str,
) -> None:
    """Issue 16: a schedule made over HTTP is listed by Node's getJobSchedulers and runs;
    DELETE stops new runs."""
    async with api_client(settings, redis_url, tasks=registry) as http:
        made = await http.put(
            "/schedules/beat", json={"name": "echo", "data": {"k": "v"}, "every_ms": 300}
        )
        assert made.status_code == 201, made.text
        [scheduler] = (await node("schedulers"))["schedulers"]
        assert scheduler["key"] == "beat"
        assert scheduler["name"] == "echo"
        assert scheduler["every"] == 300
        assert scheduler["template"]["data"] == {"k": "v"}

        make_worker(registry)
        await wait_for(lambda: len(_ran(runs, "beat")) >= 3, timeout=10)
        assert (await http.delete("/schedules/beat")).status_code == 204
        assert (await node("schedulers"))["schedulers"] == []
        stopped_at = len(_ran(runs, "beat"))
        await asyncio.sleep(1.0)  # three more slots' worth
        # At most the run already taken when DELETE came may still finish.
        assert len(_ran(runs, "beat")) <= stopped_at + 1


def _ran(runs: Runs, scheduler_id: str) -> list[str]:
    return [job_id for job_id in runs.order if job_id.startswith(f"repeat:{scheduler_id}:")]


async def test_node5_legacy_repeatable_keeps_running_on_conveyor_workers(
    node5: NodeCall,
    registry: TaskRegistry,
    runs: Runs,
    make_worker: Callable[..., Worker],
    redis: Redis,
    settings: Settings,
) -> None:
    """A BullMQ 5 repeatable job (Queue.add with repeat, every 300 ms) carries on with only
    Conveyor workers, as a BullMQ 5 worker carries it on, its data kept."""
    make_worker(registry)
    [first] = (
        await node5("add", [{"name": "echo", "data": {"n": 5}, "opts": {"repeat": {"every": 300}}}])
    )["ids"]
    assert first.startswith("repeat:")
    chain = first.rsplit(":", 1)[0] + ":"
    await wait_for(lambda: len([j for j in runs.order if j.startswith(chain)]) >= 5, timeout=10)
    ran = [j for j in runs.order if j.startswith(chain)]
    slots = [int(j.rsplit(":", 1)[1]) for j in ran]
    assert len(set(slots)) == len(slots)
    assert all((b - a) % 300 == 0 for a, b in itertools.pairwise(slots)), slots
    last = await redis.hget(f"{settings.prefix}:{settings.queue}:{ran[-1]}", "data")
    assert last == '{"n":5}'


async def test_conveyor_cron_schedule_runs_on_node_workers(
    node_worker: Callable[..., Awaitable[NodeWorker]], redis: Redis, settings: Settings
) -> None:
    """A schedule Conveyor makes (a 6-field cron, every second) runs on Node workers alone:
    Node's worker makes each next run from the job Conveyor wrote."""
    worker = await node_worker()
    schedules = Schedules(BullQueue(redis, settings.queue, settings.prefix))
    await schedules.put(Schedule(id="sec", task="echo", data={"x": 1}, cron="* * * * * *"))

    def completed() -> list[dict[str, Any]]:
        return [e for e in worker.of("completed") if str(e["id"]).startswith("repeat:sec:")]

    await wait_for(lambda: len(completed()) >= 3, timeout=10)
    slots = [int(str(e["id"]).rsplit(":", 1)[1]) for e in completed()]
    assert all((b - a) % 1000 == 0 for a, b in itertools.pairwise(slots)), slots
    assert (await schedules.get("sec")).iterations >= 3
