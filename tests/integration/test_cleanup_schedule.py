"""The cleanup schedule against a real Redis with a controllable clock: one run per interval
whatever the number of replicas, surviving restarts, and recorded for the monitor."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from pydantic import BaseModel
from redis.asyncio import Redis

from conveyor.client import JobSpec, QueueClient
from conveyor.clock import now_ms
from conveyor.config import Settings
from conveyor.errors import Unrecoverable
from conveyor.jobs import JobState
from conveyor.maintenance import (
    Cleaner,
    CleanupBusyError,
    CleanupKeys,
    CleanupReport,
    CleanupScheduler,
    RetentionPolicy,
    read_last_run_ms,
    read_runs,
)
from conveyor.redis import connect
from conveyor.registry import JobContext, TaskRegistry
from conveyor.testing import wait_for
from conveyor.worker import Worker

DAY_S = 86_400
DAY_MS = DAY_S * 1000


class Empty(BaseModel):
    pass


class FakeClock:
    """Wall-clock milliseconds that only move when the test says so."""

    def __init__(self, start_ms: int) -> None:
        self.ms = start_ms

    def __call__(self) -> int:
        return self.ms

    def advance(self, seconds: float) -> None:
        self.ms += round(seconds * 1000)


@pytest.fixture
def failed_prefix(prefix: str) -> str:
    return f"{prefix}-failedJobs"


@pytest.fixture
def client(make_client: Callable[..., QueueClient], failed_prefix: str) -> QueueClient:
    return make_client(failed_key_prefix=failed_prefix)


@pytest.fixture
async def worker(make_worker: Callable[..., Worker], failed_prefix: str) -> Worker:
    registry = TaskRegistry()

    @registry.task("boom")
    async def boom(payload: Empty, ctx: JobContext) -> None:
        raise Unrecoverable("no")

    return make_worker(registry, failed_key_prefix=failed_prefix)


@pytest.fixture
async def replica(
    redis_url: str, settings: Settings, failed_prefix: str
) -> AsyncIterator[Callable[..., CleanupScheduler]]:
    """Builds cleanup schedulers as separate replicas would be: each with its own connection."""
    clients: list[Redis] = []

    def make(clock: Callable[[], int] | None = None, **options: Any) -> CleanupScheduler:
        redis = connect(redis_url)
        clients.append(redis)
        cleaner = Cleaner(
            redis,
            queue=settings.queue,
            prefix=settings.prefix,
            failed_key_prefix=failed_prefix,
            policy=RetentionPolicy(failed_s=options.pop("retention_s", 7 * DAY_S)),
            batch_size=5,
        )
        if clock is not None:
            options["clock"] = clock
        return CleanupScheduler(redis, cleaner, **{"interval_s": DAY_S, **options})

    yield make
    for client in clients:
        await client.aclose()


async def fail_jobs(client: QueueClient, count: int) -> list[str]:
    before = (await client.counts())[JobState.FAILED]
    ids = await client.enqueue_many([JobSpec("boom", {})] * count)

    async def recorded() -> bool:
        counts = await client.counts()
        records = [await client.failure_record(j) for j in ids]
        return counts[JobState.FAILED] == before + count and all(records)

    await wait_for(recorded, message=f"{count} failures recorded")
    return ids


async def test_runs_once_per_interval_and_survives_a_restart(
    redis: Redis, replica: Callable[..., CleanupScheduler]
) -> None:
    t0 = now_ms()
    first = replica()
    report = await first.tick(t0)
    assert report is not None
    assert report.trigger == "schedule"
    assert await read_last_run_ms(redis, first.keys) == t0

    assert await first.tick(t0 + DAY_MS - 1) is None
    restarted = replica()  # a new process: nothing in memory
    assert await restarted.tick(t0 + DAY_MS - 1) is None
    assert await restarted.tick(t0 + DAY_MS) is not None
    assert await first.tick(t0 + DAY_MS + 1) is None

    runs = await read_runs(redis, first.keys)
    assert [r.started_at_ms for r in runs] == [t0 + DAY_MS, t0]  # newest first
    assert await read_last_run_ms(redis, first.keys) == t0 + DAY_MS
    assert not await redis.exists(first.keys.lease)


async def test_concurrent_replicas_do_the_work_once(
    redis: Redis,
    client: QueueClient,
    worker: Worker,
    replica: Callable[..., CleanupScheduler],
) -> None:
    ids = await fail_jobs(client, 12)
    replicas = [replica() for _ in range(4)]
    now = now_ms() + 8 * DAY_MS

    results = await asyncio.gather(*(r.tick(now) for r in replicas for _ in range(5)))

    reports = [r for r in results if r is not None]
    assert len(reports) == 1
    assert reports[0].failed_jobs_removed == 12
    assert reports[0].failure_records_removed == 12
    assert await redis.zcard(client.bull.keys["failed"]) == 0
    for job_id in ids:
        assert await client.failure_record(job_id) is None
    assert len(await read_runs(redis, replicas[0].keys)) == 1


async def test_two_cleanup_services_share_one_schedule(
    redis: Redis,
    client: QueueClient,
    worker: Worker,
    replica: Callable[..., CleanupScheduler],
) -> None:
    """Two scheduler loops (two services) and a clock the test moves: each interval's work is
    done exactly once, by one of them."""
    await fail_jobs(client, 6)
    clock = FakeClock(now_ms() + 1)  # everything failed before "now"
    services = [replica(clock, poll_s=0.02, retention_s=0) for _ in range(2)]
    keys = services[0].keys
    stop = asyncio.Event()
    loops = [asyncio.create_task(s.run_forever(stop)) for s in services]
    try:
        runs = await wait_for(lambda: read_runs(redis, keys), message="the first run")
        assert runs[0].failed_jobs_removed == 6
        # Both keep looking at the schedule; neither runs again within the interval.
        ticks = [s.ticks for s in services]
        clock.advance(DAY_S - 2)
        await wait_for(lambda: all(s.ticks >= t + 5 for s, t in zip(services, ticks, strict=True)))
        assert len(await read_runs(redis, keys)) == 1

        await fail_jobs(client, 4)
        clock.advance(2)  # the interval has passed
        await wait_for(lambda: has_runs(redis, keys, 2), message="the second run")
        ticks = [s.ticks for s in services]
        await wait_for(lambda: all(s.ticks >= t + 5 for s, t in zip(services, ticks, strict=True)))
        runs = await read_runs(redis, keys)
        assert len(runs) == 2
        assert [r.failed_jobs_removed for r in runs] == [4, 6]
        assert runs[0].started_at_ms - runs[1].started_at_ms >= DAY_MS
    finally:
        stop.set()
        await asyncio.gather(*loops)


async def has_runs(redis: Redis, keys: CleanupKeys, count: int) -> bool:
    return len(await read_runs(redis, keys)) >= count


async def test_a_held_lease_blocks_runs_until_it_expires(
    redis: Redis, replica: Callable[..., CleanupScheduler]
) -> None:
    """A replica that died mid-run leaves its lease; nobody runs until it expires, then one
    does (the interrupted run's work is redone: the removal is idempotent)."""
    scheduler = replica()
    await redis.set(scheduler.keys.lease, "dead-replica", px=60_000)
    assert await scheduler.tick(now_ms()) is None
    with pytest.raises(CleanupBusyError, match="in progress"):
        await scheduler.run_now(now_ms())
    await redis.delete(scheduler.keys.lease)  # what PX does when the minute is up
    assert await scheduler.tick(now_ms()) is not None


async def test_a_replica_that_lost_the_race_looks_again_soon(
    redis: Redis, replica: Callable[..., CleanupScheduler]
) -> None:
    """While another replica holds the lease, this one looks again within about a second
    (it used to wait a whole minute, so it learnt of the finished run that late)."""
    scheduler = replica()
    await redis.set(scheduler.keys.lease, "other-replica", px=60_000)
    stop = asyncio.Event()
    loop = asyncio.create_task(scheduler.run_forever(stop))
    try:
        await wait_for(lambda: scheduler.ticks >= 3, timeout=5)
        await redis.delete(scheduler.keys.lease)
        await wait_for(lambda: has_runs(redis, scheduler.keys, 1), timeout=5)
    finally:
        stop.set()
        await loop


async def test_a_long_run_keeps_its_lease(
    redis: Redis, replica: Callable[..., CleanupScheduler]
) -> None:
    scheduler = replica(lease_ms=900)
    gate = asyncio.Event()
    real_run = scheduler.cleaner.run

    async def slow_run(*args: object, **kwargs: object) -> object:
        await gate.wait()
        return await real_run(*args, **kwargs)  # type: ignore[arg-type]

    scheduler.cleaner.run = slow_run  # type: ignore[method-assign,assignment]
    running = asyncio.create_task(scheduler.tick(now_ms()))
    await wait_for(lambda: redis.exists(scheduler.keys.lease))
    token = await redis.get(scheduler.keys.lease)
    ttls: list[int] = []

    async def renewed_twice() -> bool:
        ttls.append(await redis.pttl(scheduler.keys.lease))
        return sum(1 for a, b in itertools.pairwise(ttls) if b > a) >= 2

    # The run outlives its lease's first term; the lease is renewed (every third), not lost.
    await wait_for(renewed_twice, timeout=10)
    assert await redis.get(scheduler.keys.lease) == token
    gate.set()
    assert await running is not None
    assert not await redis.exists(scheduler.keys.lease)


async def test_manual_runs_are_recorded_but_leave_the_schedule_alone(
    redis: Redis,
    client: QueueClient,
    worker: Worker,
    replica: Callable[..., CleanupScheduler],
) -> None:
    await fail_jobs(client, 3)
    scheduler = replica()
    now = now_ms() + 8 * DAY_MS

    dry = await scheduler.run_now(now, dry_run=True)
    assert dry.dry_run
    assert dry.failed_jobs_removed == 3
    assert await redis.zcard(client.bull.keys["failed"]) == 3
    real = await scheduler.run_now(now)
    assert not real.dry_run
    assert real.failed_jobs_removed == 3
    assert await redis.zcard(client.bull.keys["failed"]) == 0

    assert await read_last_run_ms(redis, scheduler.keys) is None
    raw = await redis.lrange(scheduler.keys.runs, 0, -1)
    docs = [json.loads(r) for r in raw]
    assert [(d["trigger"], d["dry_run"], d["failed_jobs_removed"]) for d in docs] == [
        ("manual", False, 3),
        ("manual", True, 3),
    ]
    assert {"started_at", "duration_ms", "failure_records_removed", "queue"} <= set(docs[0])


async def test_the_run_history_is_bounded(
    redis: Redis, replica: Callable[..., CleanupScheduler]
) -> None:
    scheduler = replica(runs_kept=3)
    for _ in range(5):
        await scheduler.run_now(now_ms(), dry_run=True)
    assert await redis.llen(scheduler.keys.runs) == 3


async def test_a_garbled_last_run_counts_as_never_ran(
    redis: Redis, replica: Callable[..., CleanupScheduler], settings: Settings
) -> None:
    clock = FakeClock(now_ms())
    scheduler = replica(clock, poll_s=0.02)
    await redis.set(scheduler.keys.last_run, "not a number")  # garbage reads as never ran
    stop = asyncio.Event()
    loop = asyncio.create_task(scheduler.run_forever(stop))
    try:
        await wait_for(lambda: read_runs(redis, scheduler.keys))
        assert await read_last_run_ms(redis, scheduler.keys) == clock.ms
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await loop
    assert CleanupKeys.for_queue(settings.prefix, settings.queue) == scheduler.keys


def test_the_schedule_lives_in_the_queues_own_key_space(settings: Settings) -> None:
    keys = CleanupKeys.for_queue(settings.prefix, settings.queue)
    own = f"{settings.prefix}:{settings.queue}:conveyor:cleanup:"
    assert (keys.lease, keys.last_run, keys.runs) == (
        f"{own}lease",
        f"{own}last-run",
        f"{own}runs",
    )
    old = f"conveyor:cleanup:{settings.prefix}:{settings.queue}:"
    assert (keys.legacy_lease, keys.legacy_last_run, keys.legacy_runs) == (
        f"{old}lease",
        f"{old}last-run",
        f"{old}runs",
    )


async def test_an_upgrade_neither_skips_nor_repeats_a_run(
    redis: Redis, replica: Callable[..., CleanupScheduler]
) -> None:
    """A deployment whose schedule an earlier version kept at conveyor:cleanup:{prefix}:{queue}:*
    goes on from it: its last run counts, its history shows, and a replica of that version
    still running (a rolling upgrade) neither runs beside this one nor repeats its run."""
    t0 = now_ms()
    scheduler = replica()
    keys = scheduler.keys
    old_run = CleanupReport(
        queue=scheduler.cleaner.queue,
        prefix=scheduler.cleaner.prefix,
        trigger="schedule",
        dry_run=False,
        started_at_ms=t0 - DAY_MS // 2,
        finished_at_ms=t0 - DAY_MS // 2,
        failed_retention_s=7 * DAY_S,
        failed_cutoff_ms=0,
        completed_retention_s=None,
        completed_cutoff_ms=None,
        failed_jobs_removed=0,
        failure_records_removed=0,
        completed_jobs_removed=0,
    )
    await redis.set(keys.legacy_last_run, t0 - DAY_MS // 2)
    await redis.lpush(keys.legacy_runs, old_run.to_json())

    assert await scheduler.tick(t0) is None  # the old version ran half a day ago: not due
    assert await read_last_run_ms(redis, keys) == t0 - DAY_MS // 2

    due = t0 + DAY_MS // 2
    await redis.set(keys.legacy_lease, "old-replica", px=60_000)  # an old replica runs now
    assert await scheduler.tick(due) is None
    assert not await redis.exists(keys.lease)  # it let go of its own lease too
    await redis.delete(keys.legacy_lease)

    report = await scheduler.tick(due)
    assert report is not None
    assert await redis.get(keys.last_run) == str(due)
    # Kept in step, so the old replica, reading only its key, does not repeat the run.
    assert await redis.get(keys.legacy_last_run) == str(due)
    assert not await redis.exists(keys.lease, keys.legacy_lease)
    runs = await read_runs(redis, keys)
    assert [r.started_at_ms for r in runs] == [due, t0 - DAY_MS // 2]  # this version's first


async def test_a_new_deployment_writes_no_legacy_key(
    redis: Redis, replica: Callable[..., CleanupScheduler]
) -> None:
    scheduler = replica()
    assert await scheduler.tick(now_ms()) is not None
    keys = scheduler.keys
    assert not await redis.exists(keys.legacy_last_run, keys.legacy_lease, keys.legacy_runs)
