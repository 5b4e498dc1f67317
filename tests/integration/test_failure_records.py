"""Failure records per queue: the same job id on two queues never shares a record, records
written by earlier versions are still found, and cleanup drains the index they used."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from redis.asyncio import Redis

from conveyor._bullmq import BullQueue
from conveyor.client import QueueClient
from conveyor.config import Settings
from conveyor.errors import JobLockLostError
from conveyor.jobs import JobState
from conveyor.maintenance import RetentionPolicy
from conveyor.maintenance.remover import Cleaner
from conveyor.registry import EmptyPayload, JobContext, TaskRegistry
from conveyor.resp import RespConnection
from conveyor.testing import wait_for_state
from conveyor.worker import Worker
from tests.support.api import api_client


@pytest.fixture
def registry() -> TaskRegistry:
    registry = TaskRegistry()

    @registry.task("fail", retries=0)
    async def fail(payload: EmptyPayload, ctx: JobContext) -> None:
        raise RuntimeError(f"failed in {ctx.queue}")

    return registry


@pytest.fixture
def failed_prefix(prefix: str) -> str:
    """This test's own legacy ``failedJobs`` part, so the shared legacy index is its own."""
    return f"{prefix}-failedJobs"


async def test_the_same_custom_id_on_two_queues_keeps_two_records(
    registry: TaskRegistry,
    make_client: Callable[..., QueueClient],
    make_worker: Callable[..., Worker],
    settings: Settings,
    redis: Redis,
) -> None:
    """Before: both records were failedJobs:report-1, so B's failure overwrote A's record and
    removing A's job deleted B's record while B's job was still failed."""
    a_queue, b_queue = settings.queue, settings.queue + "-b"
    a, b = make_client(registry), make_client(registry, queue=b_queue)
    make_worker(registry)
    make_worker(registry, queue=b_queue)
    await a.enqueue("fail", {"from": "a"}, {"jobId": "report-1"})
    await wait_for_state(a, "report-1", JobState.FAILED)
    await b.enqueue("fail", {"from": "b"}, {"jobId": "report-1"})
    await wait_for_state(b, "report-1", JobState.FAILED)

    record_a, record_b = await a.failure_record("report-1"), await b.failure_record("report-1")
    assert record_a is not None
    assert record_b is not None
    assert (record_a["queue"], json.loads(record_a["data"])) == (a_queue, {"from": "a"})
    assert (record_b["queue"], json.loads(record_b["data"])) == (b_queue, {"from": "b"})
    assert record_b["error"] == f"RuntimeError: failed in {b_queue}"
    assert not await redis.exists("failedJobs:report-1")

    await a.remove("report-1")
    assert await a.failure_record("report-1") is None
    assert await b.failure_record("report-1") == record_b
    assert (await b.get_job("report-1")).state is JobState.FAILED


async def test_the_same_idempotency_key_on_two_queues_through_the_api(
    registry: TaskRegistry,
    make_client: Callable[..., QueueClient],
    make_worker: Callable[..., Worker],
    settings: Settings,
    redis_url: str,
) -> None:
    b_queue = settings.queue + "-b"
    make_worker(registry)
    make_worker(registry, queue=b_queue)
    ids = []
    for queue in (settings.queue, b_queue):
        async with api_client(settings, redis_url, tasks=registry, queue=queue) as api:
            reply = await api.post(
                "/enqueue", json={"name": "fail", "data": {}}, headers={"Idempotency-Key": "k-1"}
            )
            assert reply.status_code == 201, reply.text
            ids.append(reply.json()["id"])
            await wait_for_state(make_client(registry, queue=queue), ids[-1], JobState.FAILED)
    assert ids[0] == ids[1]  # the same id on both queues
    async with api_client(settings, redis_url, tasks=registry) as api:
        assert (await api.delete(f"/jobs/{ids[0]}")).status_code == 204
    assert await make_client(registry, queue=b_queue).failure_record(ids[1]) is not None


async def test_records_of_earlier_versions_are_found_retried_and_drained(
    registry: TaskRegistry,
    make_client: Callable[..., QueueClient],
    make_worker: Callable[..., Worker],
    settings: Settings,
    redis: Redis,
    failed_prefix: str,
) -> None:
    """Earlier versions kept every queue's records at failedJobs:{id} in one failedJobs-index.
    Readers fall back to that key when its queue field matches; Conveyor's retry drops it;
    cleanup drains this queue's entries from the old index and leaves other queues' alone."""
    client = make_client(registry, failed_key_prefix=failed_prefix)
    make_worker(registry, failed_key_prefix=failed_prefix)
    ids = [await client.enqueue("fail", {}, {"jobId": f"old-{n}"}) for n in range(3)]
    for job_id in ids:
        await wait_for_state(client, job_id, JobState.FAILED)
    keys = client.records.keys
    # Move the records where an earlier version would have written them.
    for job_id in ids:
        score = await redis.zscore(keys.index, keys.record(job_id))
        await redis.rename(keys.record(job_id), keys.legacy_record(job_id))
        await redis.zrem(keys.index, keys.record(job_id))
        await redis.zadd(keys.legacy_index, {keys.legacy_record(job_id): score or 0})
    other = f"{failed_prefix}:someone-elses"
    await redis.hset(other, mapping={"job_id": "someone-elses", "queue": "x", "prefix": "y"})
    await redis.zadd(keys.legacy_index, {other: 1})

    for job_id in ids:
        record = await client.failure_record(job_id)
        assert record is not None
        assert record["job_id"] == job_id

    await client.retry(ids[0])
    assert not await redis.exists(keys.legacy_record(ids[0]))
    assert await redis.zscore(keys.legacy_index, keys.legacy_record(ids[0])) is None

    await client.remove(ids[1])
    assert await client.failure_record(ids[1]) is None

    # ids[2] is still failed: cleanup at the end of its retention takes job and old record.
    cleaner = Cleaner(
        redis,
        queue=settings.queue,
        prefix=settings.prefix,
        failed_key_prefix=failed_prefix,
        policy=RetentionPolicy(failed_s=1),
    )
    assert record is not None
    report = await cleaner.run(int(record["failed_at_ms"]) + 10_000)
    assert report.failure_records_removed >= 1
    assert not await redis.exists(keys.legacy_record(ids[2]))
    assert await redis.zrange(keys.legacy_index, 0, -1) == [other]
    assert await redis.exists(other)


async def _failed_events(redis: Redis, bull: BullQueue, job_id: str) -> int:
    entries: list[tuple[str, dict[str, str]]] = await redis.xrange(bull.keys["events"])  # type: ignore[assignment]
    return sum(1 for _, f in entries if f.get("event") == "failed" and f.get("jobId") == job_id)


async def test_a_failure_after_redis_forgot_its_scripts_is_moved_once_with_its_record(
    registry: TaskRegistry,
    make_client: Callable[..., QueueClient],
    make_worker: Callable[..., Worker],
    settings: Settings,
    redis: Redis,
) -> None:
    """The move to failed and the record are one script: a NOSCRIPT ran neither, and the
    worker's reload runs both, once."""
    client = make_client(registry)
    make_worker(registry)
    await client.enqueue("fail", {}, {"jobId": "before"})
    await wait_for_state(client, "before", JobState.FAILED)
    await redis.script_flush()
    await client.enqueue("fail", {"n": 2}, {"jobId": "after"})
    await wait_for_state(client, "after", JobState.FAILED)
    record = await client.failure_record("after")
    assert record is not None
    assert (record["error"], record["attempts"]) == (
        f"RuntimeError: failed in {settings.queue}",
        "1",
    )
    assert json.loads(record["data"]) == {"n": 2}
    assert record["removed_on_fail"] == "0"
    bull = BullQueue(redis, settings.queue, settings.prefix)
    assert await redis.hget(bull.job_key("after"), "atm") == "1"
    assert await _failed_events(redis, bull, "after") == 1


async def test_a_refused_move_to_failed_leaves_the_record_that_is_there(
    make_client: Callable[..., QueueClient], settings: Settings, redis: Redis
) -> None:
    """A worker whose lock is gone (the job ran again elsewhere and failed there) is refused,
    and its failure writes no record over the one of the worker that failed the job."""
    await make_client().enqueue("simulate", {"duration_ms": 1}, {"jobId": "twice"})
    hot = RespConnection.like(redis)
    try:
        bull = BullQueue(redis, settings.queue, settings.prefix, hot_path=hot)
        records = bull.failure_store()
        taken = await bull.move_to_active("token-1", 5000)
        assert taken.job is not None
        assert taken.job.id == "twice"

        async def fail(token: str, error: str) -> None:
            assert taken.job is not None
            await bull.fail(
                taken.job,
                token,
                error=error,
                stacktrace=[f"{error}\n"],
                attempts=1,
                keep={"count": -1},
                lock_duration_ms=5000,
                records=records,
                failed_at_iso="2026-11-30T08:00:00.000Z",
                failed_at_ms=1_796_025_600_000,
            )

        await fail("token-1", "RuntimeError: the worker that holds the lock")
        with pytest.raises(JobLockLostError):
            await fail("token-0", "RuntimeError: a worker that lost its lock")
    finally:
        await hot.close()
    record = await records.read("twice")
    assert record is not None
    assert record["error"] == "RuntimeError: the worker that holds the lock"
    assert record["stack"] == "RuntimeError: the worker that holds the lock\n"
    assert await redis.hget(bull.job_key("twice"), "failedReason") == record["error"]
    assert await _failed_events(redis, bull, "twice") == 1
