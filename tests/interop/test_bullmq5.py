"""Node.js BullMQ 5 beside Conveyor: its pause and resume RENAME the wait and paused lists.

BullMQ 5 pauses a queue by renaming ``wait`` to ``paused`` and resumes by renaming it back,
overwriting ``wait``; while paused it adds to ``paused``. Conveyor runs BullMQ 6's scripts,
which leave jobs in ``wait`` while paused, so before issue 12 every job Conveyor put in
``wait`` during a BullMQ 5 pause was lost at the resume. Each test here ends with every
acknowledged job completed exactly once (``node5/queue.mjs`` pins BullMQ 5.81.5).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from redis.asyncio import Redis

from conveyor.client import JobSpec, QueueClient
from conveyor.config import Settings
from conveyor.jobs import JobState
from conveyor.registry import EmptyPayload, JobContext, TaskRegistry
from conveyor.testing import wait_for
from conveyor.worker import Worker
from tests.interop.conftest import NodeCall
from tests.interop.helpers import settled
from tests.interop.tasks import InteropFailure, Runs, build_registry
from tests.support.api import api_client


async def _all_completed(client: QueueClient, runs: Runs, ids: list[str]) -> None:
    for job_id in ids:
        await settled(client, job_id, JobState.COMPLETED)
    assert {job_id: len(runs.starts[job_id]) for job_id in ids} == dict.fromkeys(ids, 1)


async def test_jobs_conveyor_adds_during_a_bullmq5_pause_survive_its_resume(
    node5: NodeCall,
    redis: Redis,
    redis_url: str,
    settings: Settings,
    registry: TaskRegistry,
    runs: Runs,
    make_client: Callable[..., QueueClient],
    make_worker: Callable[..., Worker],
) -> None:
    """The reported case: jobs are waiting, a BullMQ 5 dashboard pauses the queue, Conveyor's
    API and client enqueue, the dashboard resumes. Before the fix 5 of 5 API jobs were lost."""
    client = make_client(registry)
    node_ids = (await node5("add", [{"name": "echo", "data": {"i": i}} for i in range(3)]))["ids"]
    assert (await node5("getters"))["version"].startswith("bullmq:5.")
    await node5("pause")
    assert await redis.exists(f"{settings.prefix}:{settings.queue}:paused")  # BullMQ 5's RENAME

    ours = [await client.enqueue("echo", {"via": "client"}) for _ in range(2)]
    ours += await client.enqueue_many([JobSpec("echo", {"via": "bulk", "i": i}) for i in range(3)])
    async with api_client(settings, redis_url, tasks=registry) as http:
        for i in range(5):
            answer = await http.post("/enqueue", json={"name": "echo", "data": {"api": i}})
            assert answer.status_code == 201, answer.text
            ours.append(answer.json()["id"])
        bulk = await http.post(
            "/enqueue/bulk", json={"jobs": [{"name": "echo", "data": {"b": i}} for i in range(2)]}
        )
        assert bulk.status_code == 201, bulk.text
        ours += [job["id"] for job in bulk.json()["jobs"]]

    make_worker(registry)  # a worker while paused takes nothing, and moves nothing to wait
    await node5("resume")

    await _all_completed(client, runs, node_ids + ours)


@pytest.mark.parametrize("resumer", ["node5", "conveyor"])
async def test_conveyor_pauses_bullmq5_adds_and_either_side_resumes(
    resumer: str,
    node5: NodeCall,
    registry: TaskRegistry,
    runs: Runs,
    make_client: Callable[..., QueueClient],
    make_worker: Callable[..., Worker],
) -> None:
    """Roles reversed: Conveyor pauses with jobs waiting, both sides add, then BullMQ 5 (or
    Conveyor) resumes. Before the fix a BullMQ 5 resume lost the jobs that were waiting."""
    client = make_client(registry)
    await node5("getters")  # a BullMQ 5 Queue has opened the queue (it writes its version)
    before = await client.enqueue_many([JobSpec("echo", {"before": i}) for i in range(5)])
    await client.pause()
    node_ids = (await node5("add", [{"name": "echo", "data": {"n": i}} for i in range(5)]))["ids"]
    during = [await client.enqueue("echo", {"during": i}) for i in range(5)]
    assert (await node5("getters"))["isPaused"] is True
    make_worker(registry)

    if resumer == "node5":
        await node5("resume")
    else:
        await client.resume()

    await _all_completed(client, runs, before + node_ids + during)


async def test_a_delayed_job_due_during_a_bullmq5_pause_survives_its_resume(
    node5: NodeCall,
    registry: TaskRegistry,
    runs: Runs,
    make_client: Callable[..., QueueClient],
    make_worker: Callable[..., Worker],
) -> None:
    """A Node producer and a Conveyor worker only: the worker promotes a delayed job that
    falls due while BullMQ 5 has the queue paused; BullMQ 5 then adds and resumes."""
    client = make_client(registry)
    [delayed] = (await node5("add", [{"name": "echo", "data": {}, "opts": {"delay": 300}}]))["ids"]
    await node5("pause")
    make_worker(registry)

    async def promoted() -> JobState | None:
        state = await client.get_state(delayed)
        return None if state is JobState.DELAYED else state

    assert await wait_for(promoted, 10, message="the worker never promoted the delayed job")
    [later] = (await node5("add", [{"name": "echo", "data": {"later": True}}]))["ids"]
    await node5("resume")

    await _all_completed(client, runs, [delayed, later])


async def test_a_conveyor_worker_starts_at_once_after_a_bullmq5_resume(
    node5: NodeCall,
    registry: TaskRegistry,
    runs: Runs,
    make_client: Callable[..., QueueClient],
    make_worker: Callable[..., Worker],
) -> None:
    """Before the fix the job stayed in wait, BullMQ 5's resume added no marker for it, and
    the worker slept until its drain delay ended (5 s by default, 10 s here)."""
    client = make_client(registry)
    await node5("pause")
    make_worker(registry, drain_delay_s=10.0)
    job_id = await client.enqueue("echo", {})
    await node5("resume")
    resumed = time.monotonic()

    await settled(client, job_id, JobState.COMPLETED, timeout=3)
    assert runs.starts[job_id][0] - resumed < 3


async def _is_not_active(client: QueueClient, job_id: str) -> bool:
    return await client.get_state(job_id) is not JobState.ACTIVE


def _gated_registry(runs: Runs, gate: asyncio.Event, *, fail_first: bool) -> TaskRegistry:
    """``gated``: the first run waits for ``gate`` (then fails, with ``fail_first``); later
    runs answer at once. Plus the interop tasks."""
    registry = build_registry(runs)

    @registry.task("gated")
    async def gated(payload: EmptyPayload, ctx: JobContext) -> str:
        runs.record(ctx)
        if len(runs.starts[ctx.job_id]) == 1:
            await gate.wait()
            if fail_first:
                raise InteropFailure("first attempt fails after the pause")
        return "done"

    return registry


async def test_a_retry_during_a_bullmq5_pause_survives_its_resume(
    node5: NodeCall,
    runs: Runs,
    make_client: Callable[..., QueueClient],
    make_worker: Callable[..., Worker],
) -> None:
    """An attempt fails while BullMQ 5 has the queue paused: the retry (no backoff) goes back
    to the waiting jobs and must still be there after BullMQ 5's resume."""
    gate = asyncio.Event()
    registry = _gated_registry(runs, gate, fail_first=True)
    client = make_client(registry)
    await node5("getters")
    make_worker(registry)
    job_id = await client.enqueue("gated", {}, {"attempts": 2, "backoff": 0})
    await wait_for(lambda: runs.starts[job_id], message="the first attempt never started")
    await node5("pause")
    [node_id] = (await node5("add", [{"name": "echo", "data": {}}]))["ids"]
    gate.set()
    await wait_for(
        lambda: _is_not_active(client, job_id), message="the failed attempt was never retried"
    )
    await node5("resume")

    await settled(client, job_id, JobState.COMPLETED)
    await settled(client, node_id, JobState.COMPLETED)
    assert len(runs.starts[job_id]) == 2


async def test_a_job_released_at_shutdown_during_a_bullmq5_pause_survives_its_resume(
    node5: NodeCall,
    runs: Runs,
    make_client: Callable[..., QueueClient],
    make_worker: Callable[..., Worker],
) -> None:
    """A worker stops while BullMQ 5 has the queue paused and hands its running job back;
    BullMQ 5 resumes; another worker runs the job."""
    gate = asyncio.Event()  # never set: the first run only ends when it is cancelled
    registry = _gated_registry(runs, gate, fail_first=False)
    client = make_client(registry)
    await node5("getters")
    first = make_worker(registry, grace_s=0.2)
    job_id = await client.enqueue("gated", {})
    await wait_for(lambda: runs.starts[job_id], message="the job never started")
    await node5("pause")
    [node_id] = (await node5("add", [{"name": "echo", "data": {}}]))["ids"]
    first.stop()
    await wait_for(lambda: not first.running, message="the worker never stopped")
    assert await client.get_state(job_id) is JobState.WAITING  # released, not failed
    await node5("resume")
    make_worker(registry)

    await settled(client, job_id, JobState.COMPLETED)
    await settled(client, node_id, JobState.COMPLETED)


async def test_bullmq6_reads_and_resumes_the_bullmq5_layout(
    node: NodeCall,
    redis: Redis,
    settings: Settings,
    registry: TaskRegistry,
    runs: Runs,
    make_client: Callable[..., QueueClient],
    make_worker: Callable[..., Worker],
) -> None:
    """A queue that no Node Queue had opened, paused by Conveyor, keeps its jobs in "paused";
    BullMQ 6.7 then counts them as paused and its resume moves them back to wait."""
    client = make_client(registry)
    ids = await client.enqueue_many([JobSpec("echo", {"i": i}) for i in range(3)])
    await client.pause()
    assert await redis.llen(f"{settings.prefix}:{settings.queue}:paused") == 3
    getters = await node("getters")  # BullMQ 6.7 opens the queue (and writes its version)
    assert getters["isPaused"] is True
    assert (getters["counts"]["paused"], getters["counts"]["waiting"]) == (3, 0)
    make_worker(registry)
    await node("resume")

    await _all_completed(client, runs, ids)
