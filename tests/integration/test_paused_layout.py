"""Where a paused queue's waiting jobs are kept, and what a resume does with them.

While a queue is paused, Conveyor keeps its waiting jobs in BullMQ's ``paused`` list (the
layout BullMQ 5 uses and renames back to ``wait`` at its resume), unless the queue's meta says
the last Node Queue to open it was BullMQ 6 or newer and there is no ``paused`` list. The
interop tests (tests/interop/test_bullmq5.py) run the same against real Node.js BullMQ 5.
"""

from __future__ import annotations

from collections.abc import Callable

from redis.asyncio import Redis

from conveyor.client import JobSpec, QueueClient
from conveyor.clock import now_ms
from conveyor.config import Settings
from conveyor.jobs import JobState
from conveyor.registry import JobContext, TaskRegistry
from conveyor.testing import wait_for
from conveyor.worker import Worker


def _registry(order: list[str]) -> TaskRegistry:
    registry = TaskRegistry()

    @registry.task("step")
    async def step(payload: dict[str, int], ctx: JobContext) -> None:
        order.append(ctx.job_id)

    return registry


async def test_jobs_added_before_during_and_after_a_pause_run_in_order(
    redis: Redis,
    settings: Settings,
    make_client: Callable[..., QueueClient],
    make_worker: Callable[..., Worker],
) -> None:
    order: list[str] = []
    registry = _registry(order)
    client = make_client(registry)
    key = f"{settings.prefix}:{settings.queue}:"
    before = await client.enqueue_many([JobSpec("step", {"i": i}) for i in range(3)])
    await client.pause()
    assert (await redis.llen(key + "wait"), await redis.llen(key + "paused")) == (0, 3)
    during = [await client.enqueue("step", {"i": i}) for i in range(3, 6)]
    assert (await redis.llen(key + "wait"), await redis.llen(key + "paused")) == (0, 6)
    counts = await client.counts()
    assert (counts[JobState.PAUSED], counts[JobState.WAITING]) == (6, 0)

    await client.resume()
    assert not await redis.exists(key + "paused")
    make_worker(registry, concurrency=1)
    await wait_for(lambda: len(order) == 6, message=f"ran only {order}")
    assert order == before + during


async def test_a_resume_moves_every_job_bullmq5_left_in_paused(
    redis: Redis, settings: Settings, make_client: Callable[..., QueueClient]
) -> None:
    """BullMQ's own resume moves 7,000 jobs a call; Conveyor's resume moves them all at once,
    so a BullMQ 5 pause can never come between and rename ``wait`` over the rest."""
    client = make_client()
    key = f"{settings.prefix}:{settings.queue}:"
    await redis.hset(key + "meta", mapping={"paused": 1, "version": "bullmq:5.81.5"})
    legacy = [f"old-{n}" for n in range(7_500)]
    await redis.lpush(key + "paused", *legacy)  # as BullMQ 5 keeps them: newest on the left
    await redis.lpush(key + "wait", "stray-1", "stray-2")  # what a BullMQ 6 client added

    await client.resume()

    assert not await redis.exists(key + "paused")
    waiting = await redis.lrange(key + "wait", 0, -1)
    assert sorted(waiting) == sorted([*legacy, "stray-1", "stray-2"])


async def test_bullmq6_layout_stays_when_meta_names_bullmq6_and_no_paused_list_exists(
    redis: Redis, settings: Settings, make_client: Callable[..., QueueClient]
) -> None:
    client = make_client()
    key = f"{settings.prefix}:{settings.queue}:"
    await redis.hset(key + "meta", "version", "bullmq:6.7.0")
    await client.enqueue("step", {})
    await client.pause()
    await client.enqueue("step", {})
    assert (await redis.llen(key + "wait"), await redis.exists(key + "paused")) == (2, 0)

    # A paused list (a BullMQ 5 client paused or added) switches to BullMQ 5's layout.
    await redis.lpush(key + "paused", "from-bullmq5")
    await client.enqueue("step", {})
    assert (await redis.llen(key + "wait"), await redis.llen(key + "paused")) == (0, 4)


async def _due(client: QueueClient) -> str:
    """A delayed job, waited for until it is due (promoted by the next script that fetches)."""
    added = now_ms()
    job_id = await client.enqueue("step", {}, {"delay": 1})
    await wait_for(lambda: now_ms() > added + 5)
    return job_id


async def test_a_due_job_promoted_while_a_job_finishes_on_a_paused_queue_goes_to_paused(
    redis: Redis, settings: Settings, make_client: Callable[..., QueueClient]
) -> None:
    """moveToFinished reads the meta hash when it fetches the next job; the paused-layout
    guard after it trusts that read (no HMGET of its own when not paused), and must still
    move what the script promoted to "wait" while the queue is paused."""
    client = make_client()
    key = f"{settings.prefix}:{settings.queue}:"
    first = await client.enqueue("step", {})
    taken = await client.bull.move_to_active("w:1", 30_000)
    assert taken.job is not None
    assert taken.job.id == first
    await client.pause()
    due = await _due(client)

    fetched = await client.bull.complete(
        first, "w:1", "null", keep={"count": -1}, lock_duration_ms=30_000, fetch_next=True
    )

    assert fetched.job is None
    assert await redis.lrange(key + "wait", 0, -1) == []
    assert await redis.lrange(key + "paused", 0, -1) == [due]


async def test_a_due_job_promoted_while_a_job_finishes_runs_next_when_not_paused(
    redis: Redis, settings: Settings, make_client: Callable[..., QueueClient]
) -> None:
    client = make_client()
    key = f"{settings.prefix}:{settings.queue}:"
    first = await client.enqueue("step", {})
    taken = await client.bull.move_to_active("w:1", 30_000)
    assert taken.job is not None
    assert taken.job.id == first
    due = await _due(client)

    fetched = await client.bull.complete(
        first, "w:1", "null", keep={"count": -1}, lock_duration_ms=30_000, fetch_next=True
    )

    assert fetched.job is not None
    assert fetched.job.id == due
    assert not await redis.exists(key + "paused")
    assert await redis.lrange(key + "active", 0, -1) == [due]


async def test_a_due_job_promoted_by_a_fetch_on_a_paused_queue_goes_to_paused(
    redis: Redis, settings: Settings, make_client: Callable[..., QueueClient]
) -> None:
    """The same for moveToActive (a worker fetching with no job to finish)."""
    client = make_client()
    key = f"{settings.prefix}:{settings.queue}:"
    await client.pause()
    due = await _due(client)

    fetched = await client.bull.move_to_active("w:1", 30_000)

    assert fetched.job is None
    assert await redis.lrange(key + "wait", 0, -1) == []
    assert await redis.lrange(key + "paused", 0, -1) == [due]
