"""A dead Conveyor worker's jobs, put back at once by its supervisor or a peer's heartbeat
(``lua/release_worker.lua``), are ordinary BullMQ stalled jobs to Node.js BullMQ: waiting,
with their stall counted, run by a Node worker, or failed by it once stalled too often."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from redis.asyncio import Redis

from conveyor._bullmq import BullQueue
from conveyor.config import Settings
from tests.interop.conftest import NodeCall, NodeWorker
from tests.interop.helpers import node_jobs

LOCK_MS = 30_000
StartNodeWorker = Callable[..., Awaitable[NodeWorker]]


async def _taken_by_a_conveyor_worker_that_dies(
    node: NodeCall, redis: Redis, settings: Settings, max_stalled_count: int
) -> str:
    [job_id] = (await node("add", [{"name": "echo", "data": {"n": 7}}]))["ids"]
    bull = BullQueue(redis, settings.queue, settings.prefix)
    fetched = await bull.move_to_active("ghost:1:abc:1", LOCK_MS)
    assert fetched.job is not None
    assert fetched.job.id == job_id
    released = await bull.release_worker(
        "ghost:1:abc", max_stalled_count=max_stalled_count, seen_beat_ms=None, forget=False
    )
    assert released == [job_id]
    return job_id


async def test_node_runs_a_released_job_and_sees_its_stall(
    node: NodeCall, node_worker: StartNodeWorker, redis: Redis, settings: Settings
) -> None:
    job_id = await _taken_by_a_conveyor_worker_that_dies(node, redis, settings, 1)
    job = (await node_jobs(node, job_id))[job_id]
    assert job["state"] == "waiting"
    assert job["stalledCounter"] == 1
    worker = await node_worker()
    await worker.wait("completed", job_id)
    job = (await node_jobs(node, job_id))[job_id]
    assert job["state"] == "completed"
    assert job["returnvalue"] == {"echo": {"n": 7}, "attempt": 1, "by": "node"}
    assert job["stalledCounter"] == 1


async def test_node_fails_a_job_released_once_too_often(
    node: NodeCall, node_worker: StartNodeWorker, redis: Redis, settings: Settings
) -> None:
    job_id = await _taken_by_a_conveyor_worker_that_dies(node, redis, settings, 0)
    worker = await node_worker()
    await worker.wait("failed", job_id)
    job = (await node_jobs(node, job_id))[job_id]
    assert job["state"] == "failed"
    assert job["failedReason"] == "job stalled more than allowable limit"
    assert worker.of("started", job_id) == []  # failed without running
