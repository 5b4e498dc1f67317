"""Cleanup against a real Redis: old failures go with their records, recent ones stay, in
bounded batches, and the failed set and failedJobs:* never disagree."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from pydantic import BaseModel
from redis.asyncio import Redis

from conveyor.client import JobSpec, QueueClient
from conveyor.clock import now_ms
from conveyor.config import Settings
from conveyor.errors import Unrecoverable
from conveyor.jobs import JobState
from conveyor.maintenance import Cleaner, RetentionPolicy
from conveyor.registry import JobContext, TaskRegistry
from conveyor.testing import wait_for
from conveyor.worker import Worker

WEEK_S = 7 * 86_400
WEEK_MS = WEEK_S * 1000


class Empty(BaseModel):
    pass


@pytest.fixture
def registry() -> TaskRegistry:
    registry = TaskRegistry()

    @registry.task("boom")
    async def boom(payload: Empty, ctx: JobContext) -> None:
        raise Unrecoverable(f"job {ctx.job_id} cannot work")

    @registry.task("ok")
    async def ok(payload: Empty, ctx: JobContext) -> str:
        return "fine"

    return registry


@pytest.fixture
def failed_prefix(prefix: str) -> str:
    """This test's own failure record prefix (the index is per prefix), so tests that run at
    the same time never see each other's records."""
    return f"{prefix}-failedJobs"


@pytest.fixture
def client(make_client: Callable[..., QueueClient], failed_prefix: str) -> QueueClient:
    return make_client(failed_key_prefix=failed_prefix)


@pytest.fixture
async def worker(
    make_worker: Callable[..., Worker], registry: TaskRegistry, failed_prefix: str
) -> Worker:
    return make_worker(registry, failed_key_prefix=failed_prefix)


def make_cleaner(
    redis: Redis,
    settings: Settings,
    failed_prefix: str,
    *,
    batch_size: int = 1000,
    queue: str | None = None,
    **policy: Any,
) -> Cleaner:
    return Cleaner(
        redis,
        queue=queue or settings.queue,
        prefix=settings.prefix,
        failed_key_prefix=failed_prefix,
        policy=RetentionPolicy(**{"failed_s": WEEK_S, **policy}),
        batch_size=batch_size,
    )


async def fail_jobs(client: QueueClient, count: int, **options: Any) -> list[str]:
    """Enqueue ``count`` jobs that fail for good; answers their ids once all are recorded."""
    before = (await client.counts())[JobState.FAILED]
    ids = await client.enqueue_many([JobSpec("boom", {}, dict(options))] * count)
    await wait_for(lambda: all_recorded(client, ids), message=f"{count} failure records")
    if not options.get("removeOnFail"):
        after = (await client.counts())[JobState.FAILED]
        assert after == before + count
    return ids


async def all_recorded(client: QueueClient, ids: list[str]) -> bool:
    for job_id in ids:
        if await client.failure_record(job_id) is None:
            return False
    return True


async def finished_on(client: QueueClient, ids: list[str]) -> int:
    """The newest failure time (ms) of these jobs: by their records' failed_at_ms and, for
    jobs still in the failed set, BullMQ's finishedOn (read from a clock a moment later)."""
    times = []
    for job_id in ids:
        record = await client.failure_record(job_id)
        assert record is not None
        times.append(int(record["failed_at_ms"]))
        score = await client.redis.zscore(client.bull.keys["failed"], job_id)
        if score is not None:
            times.append(int(score))
    return max(times)


async def assert_consistent(redis: Redis, client: QueueClient, failed_prefix: str) -> None:
    """Every record of this queue in the index has its job in the failed set and vice versa
    (for jobs that were not removed on failure), and every index entry has a record."""
    index = client.records.keys.index
    failed_ids = set(map(str, await redis.zrange(client.bull.keys["failed"], 0, -1)))
    for record_key in map(str, await redis.zrange(index, 0, -1)):
        record = await redis.hgetall(record_key)
        assert record, f"index entry {record_key} has no record"
        assert record["job_id"] in failed_ids, f"{record_key}: its job left the failed set"
    for job_id in failed_ids:
        assert await redis.exists(client.records.keys.record(job_id)), job_id
        assert await redis.exists(client.bull.job_key(job_id)), job_id


async def gone(redis: Redis, client: QueueClient, failed_prefix: str, job_id: str) -> bool:
    record_key = client.records.keys.record(job_id)
    return (
        not await redis.exists(client.bull.job_key(job_id))
        and await redis.zscore(client.bull.keys["failed"], job_id) is None
        and not await redis.exists(record_key)
        and await redis.zscore(client.records.keys.index, record_key) is None
    )


async def test_old_failures_go_recent_ones_stay(
    redis: Redis, settings: Settings, client: QueueClient, worker: Worker, failed_prefix: str
) -> None:
    old = await fail_jobs(client, 7)
    boundary = await finished_on(client, old)
    await wait_for(lambda: now_ms() > boundary + 1)
    recent = await fail_jobs(client, 4)

    # A week after the boundary: the old ones are exactly a week old, the recent ones less.
    cleaner = make_cleaner(redis, settings, failed_prefix, batch_size=3)
    report = await cleaner.run(boundary + WEEK_MS)

    assert report.failed_jobs_removed == 7
    assert report.failure_records_removed == 7
    assert report.index_entries_dropped == 0
    assert set(report.sample_job_ids) <= set(old)
    for job_id in old:
        assert await gone(redis, client, failed_prefix, job_id), job_id
    assert sorted(await redis.zrange(client.bull.keys["failed"], 0, -1)) == sorted(recent)
    for job_id in recent:
        assert (await client.get_job(job_id)).state is JobState.FAILED
        assert await client.failure_record(job_id) is not None
    await assert_consistent(redis, client, failed_prefix)

    # Nothing more goes at the same time; everything goes a week after the recent ones.
    again = await cleaner.run(boundary + WEEK_MS)
    assert (again.failed_jobs_removed, again.failure_records_removed) == (0, 0)
    last = await cleaner.run(await finished_on(client, recent) + WEEK_MS)
    assert (last.failed_jobs_removed, last.failure_records_removed) == (4, 4)
    assert await redis.zcard(client.bull.keys["failed"]) == 0
    assert await redis.zcard(client.records.keys.index) == 0


async def test_dry_run_predicts_the_run_and_changes_nothing(
    redis: Redis, settings: Settings, client: QueueClient, worker: Worker, failed_prefix: str
) -> None:
    old = await fail_jobs(client, 5)
    boundary = await finished_on(client, old)
    await wait_for(lambda: now_ms() > boundary + 1)
    await fail_jobs(client, 2)
    cleaner = make_cleaner(redis, settings, failed_prefix, batch_size=2)
    before = await redis.zrange(client.records.keys.index, 0, -1, withscores=True)

    preview = await cleaner.preview(boundary + WEEK_MS)

    assert preview.dry_run
    assert (preview.failed_jobs_removed, preview.failure_records_removed) == (5, 5)
    assert set(preview.sample_job_ids) == set(old)
    assert await redis.zrange(client.records.keys.index, 0, -1, withscores=True) == before
    assert await redis.zcard(client.bull.keys["failed"]) == 7
    report = await cleaner.run(boundary + WEEK_MS)
    assert (report.failed_jobs_removed, report.failure_records_removed) == (5, 5)


async def test_a_single_batch_leaves_both_stores_consistent(
    redis: Redis, settings: Settings, client: QueueClient, worker: Worker, failed_prefix: str
) -> None:
    """Each step is one MULTI: if the process died after any batch, nothing would disagree."""
    ids = await fail_jobs(client, 6)
    cutoff = await finished_on(client, ids)

    batch = await client.bull.clean_failed(cutoff, 2, records=client.records)

    assert len(batch.job_ids) == 2
    assert batch.records_removed == 2
    for job_id in batch.job_ids:
        assert await gone(redis, client, failed_prefix, job_id)
    assert await redis.zcard(client.bull.keys["failed"]) == 4
    await assert_consistent(redis, client, failed_prefix)


async def test_records_of_jobs_removed_on_failure_expire_by_their_own_time(
    redis: Redis, settings: Settings, client: QueueClient, worker: Worker, failed_prefix: str
) -> None:
    ids = await fail_jobs(client, 3, removeOnFail=True)
    assert await redis.zcard(client.bull.keys["failed"]) == 0
    records = [await client.failure_record(j) for j in ids]
    failed_at = sorted(int(r["failed_at_ms"]) for r in records if r)
    cleaner = make_cleaner(redis, settings, failed_prefix)

    early = await cleaner.run(failed_at[0] + WEEK_MS - 1)
    assert early.failure_records_removed == 0
    assert await all_recorded(client, ids)

    report = await cleaner.run(failed_at[-1] + WEEK_MS)
    assert (report.failed_jobs_removed, report.failure_records_removed) == (0, 3)
    for job_id in ids:
        assert await gone(redis, client, failed_prefix, job_id)


async def test_other_queues_are_left_alone_even_when_older(
    redis: Redis,
    settings: Settings,
    make_client: Callable[..., QueueClient],
    make_worker: Callable[..., Worker],
    registry: TaskRegistry,
    client: QueueClient,
    worker: Worker,
    failed_prefix: str,
) -> None:
    other_queue = settings.queue + "-other"
    other = make_client(queue=other_queue, failed_key_prefix=failed_prefix)
    make_worker(registry, queue=other_queue, failed_key_prefix=failed_prefix)
    theirs = await fail_jobs(other, 5)  # older, first in the shared index
    ours = await fail_jobs(client, 3)
    now = max(await finished_on(client, ours), await finished_on(other, theirs)) + WEEK_MS

    # Batches of 2: the window has to walk past the other queue's records to find ours.
    report = await make_cleaner(redis, settings, failed_prefix, batch_size=2).run(now)

    assert (report.failed_jobs_removed, report.failure_records_removed) == (3, 3)
    for job_id in ours:
        assert await gone(redis, client, failed_prefix, job_id)
    for job_id in theirs:
        assert (await other.get_job(job_id)).state is JobState.FAILED
        assert await other.failure_record(job_id) is not None
    await assert_consistent(redis, other, failed_prefix)


async def test_a_record_written_just_after_the_cutoff_goes_with_its_job(
    redis: Redis, settings: Settings, client: QueueClient, worker: Worker, failed_prefix: str
) -> None:
    """The job's finishedOn and the record's failed_at come from two clocks readings; a job
    on the old side of the cutoff takes its record along even if the record is a bit newer."""
    [job_id] = await fail_jobs(client, 1)
    finished = int(await redis.zscore(client.bull.keys["failed"], job_id) or 0)
    record_key = client.records.keys.record(job_id)
    await redis.zadd(client.records.keys.index, {record_key: finished + 5})

    report = await make_cleaner(redis, settings, failed_prefix).run(finished + WEEK_MS)

    assert (report.failed_jobs_removed, report.failure_records_removed) == (1, 1)
    assert await gone(redis, client, failed_prefix, job_id)


async def test_index_entries_without_a_record_are_dropped(
    redis: Redis, settings: Settings, client: QueueClient, failed_prefix: str
) -> None:
    index = client.records.keys.index
    await redis.zadd(index, {f"{failed_prefix}:lost": 1000, f"{failed_prefix}:young": now_ms()})

    report = await make_cleaner(redis, settings, failed_prefix).run(now_ms())

    assert report.index_entries_dropped == 1
    assert await redis.zrange(index, 0, -1) == [f"{failed_prefix}:young"]


async def test_completed_jobs_go_only_with_a_completed_retention(
    redis: Redis, settings: Settings, client: QueueClient, worker: Worker, failed_prefix: str
) -> None:
    ids = await client.enqueue_many([JobSpec("ok", {})] * 5)
    await wait_for(lambda: _count(client, JobState.COMPLETED, 5), message="5 completed jobs")
    later = now_ms() + 3_600_000

    kept = await make_cleaner(redis, settings, failed_prefix).run(later)
    assert kept.completed_jobs_removed == 0
    assert await redis.zcard(client.bull.keys["completed"]) == 5

    cleaner = make_cleaner(redis, settings, failed_prefix, batch_size=2, completed_s=3600)
    assert (await cleaner.preview(later)).completed_jobs_removed == 5
    report = await cleaner.run(later)
    assert report.completed_jobs_removed == 5
    for job_id in ids:
        assert not await redis.exists(client.bull.job_key(job_id))
    assert await redis.zcard(client.bull.keys["completed"]) == 0


async def _count(client: QueueClient, state: JobState, expected: int) -> bool:
    return (await client.counts())[state] == expected


async def test_a_large_backlog_goes_in_bounded_batches(
    redis: Redis, settings: Settings, client: QueueClient, worker: Worker, failed_prefix: str
) -> None:
    ids = await fail_jobs(client, 60)
    cleaner = make_cleaner(redis, settings, failed_prefix, batch_size=7)
    calls: list[int] = []
    clean_failed = client.bull.clean_failed
    cleaner.bull = client.bull

    async def counted(*args: Any, **kwargs: Any) -> Any:
        batch = await clean_failed(*args, **kwargs)
        calls.append(len(batch.job_ids))
        return batch

    client.bull.clean_failed = counted  # type: ignore[method-assign]
    report = await cleaner.run(await finished_on(client, ids) + WEEK_MS)

    assert report.failed_jobs_removed == 60
    assert max(calls) <= 7
    # 8 full batches and the rest; then one look at the index earlier versions shared
    assert len(calls) == 9 + 1
    assert await redis.zcard(client.records.keys.index) == 0
