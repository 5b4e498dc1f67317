"""Failure records beside Node.js BullMQ: the seed's exact key, and records that follow their
job whichever tool moves it.

The seed's deployment is queue ``taskQueue`` under prefix ``bull``: its records live at exactly
``failedJobs:{jobId}``. To own those names, this module runs on a private Redis (one per
pytest process) that each test empties first.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from conveyor.client import QueueClient
from conveyor.config import Settings
from conveyor.embedded import RedisServer
from conveyor.jobs import JobState
from conveyor.registry import EmptyPayload, JobContext, TaskRegistry
from conveyor.testing import wait_for
from conveyor.worker import Worker
from conveyor.worker.reconciler import FailureReconciler
from tests.interop.conftest import SCRIPT_TIMEOUT_S, NodeCall, NodeDriver, serve_node
from tests.interop.helpers import settled

#: Fast reconciler ticks (it runs on the stalled-check timer).
TICK_MS = 200


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = RedisServer(tmp_path_factory.mktemp("seed-redis")).start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def queue_name() -> str:
    return "taskQueue"


@pytest.fixture
def prefix() -> str:
    return "bull"


@pytest.fixture(autouse=True)
async def empty(redis: Redis) -> None:
    await redis.flushdb()


@pytest.fixture(scope="module")
def seed_node(
    node_modules: Path, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NodeDriver]:
    yield from serve_node(redis_url, tmp_path_factory)


@pytest.fixture
def node(seed_node: NodeDriver, settings: Settings) -> NodeCall:
    async def call(command: str, arg: Any = None, *, queue: str | None = None) -> Any:
        message = {
            "command": command,
            "arg": arg,
            "prefix": settings.prefix,
            "queue": queue or settings.queue,
        }
        return await asyncio.wait_for(
            asyncio.to_thread(seed_node.request, message), SCRIPT_TIMEOUT_S
        )

    return call


@pytest.fixture
def ran() -> dict[str, int]:
    return {}


@pytest.fixture
def registry(ran: dict[str, int]) -> TaskRegistry:
    registry = TaskRegistry()

    @registry.task("echo")
    async def echo(payload: EmptyPayload, ctx: JobContext) -> str:
        return "ok"

    @registry.task("fail")
    async def fail(payload: EmptyPayload, ctx: JobContext) -> None:
        raise RuntimeError("always")

    @registry.task("fail_once")
    async def fail_once(payload: EmptyPayload, ctx: JobContext) -> str:
        """Fails the first time its job runs, succeeds after that (a retry that works)."""
        ran[ctx.job_id] = ran.get(ctx.job_id, 0) + 1
        if ran[ctx.job_id] == 1:
            raise RuntimeError("first run fails")
        return "second time"

    return registry


@pytest.fixture
def worker(make_worker: Callable[..., Worker], registry: TaskRegistry) -> Callable[..., Worker]:
    def make(**overrides: Any) -> Worker:
        return make_worker(registry, stalled_interval_ms=TICK_MS, **overrides)

    return make


async def node_add(node: NodeCall, specs: list[dict[str, Any]], queue: str | None = None) -> Any:
    return (await node("addBulk", specs, queue=queue))["ids"]


async def record_gone(redis: Redis, key: str) -> bool:
    return not await redis.exists(key)


async def test_the_seeds_deployment_finds_job_42_at_exactly_failedjobs_42(
    node: NodeCall,
    registry: TaskRegistry,
    make_client: Callable[..., QueueClient],
    worker: Callable[..., Worker],
    redis: Redis,
) -> None:
    """A Node API adds to taskQueue with BullMQ's counter ids; job 42 fails for good on a
    Conveyor worker; a seed-era reader finds it at failedJobs:42."""
    ids = await node_add(node, [{"name": "echo", "data": {}, "opts": {"attempts": 1}}] * 41)
    [job_id] = await node_add(node, [{"name": "fail", "data": {"n": 42}, "opts": {"attempts": 1}}])
    assert (ids[-1], job_id) == ("41", "42")
    client = make_client(registry)
    worker()

    await settled(client, job_id, JobState.FAILED)
    record = await redis.hgetall("failedJobs:42")
    assert record["job_id"] == "42"
    assert (record["queue"], record["prefix"]) == ("taskQueue", "bull")
    assert record["error"] == "RuntimeError: always"
    assert await redis.zscore("failedJobs-index", "failedJobs:42") is not None
    assert await client.failure_record("42") == record
    for elsewhere in ("failedJobs:taskQueue:42", "bull:taskQueue:conveyor:failed:42"):
        assert not await redis.exists(elsewhere)


async def test_a_node_side_job_retry_drops_the_record_and_the_job_completes(
    node: NodeCall,
    registry: TaskRegistry,
    make_client: Callable[..., QueueClient],
    worker: Callable[..., Worker],
    redis: Redis,
) -> None:
    """Node's job.retry() (what Bull Board's retry runs) knows nothing of the record: the
    workers' reconciler drops it once the job has left the failed set."""
    [job_id] = await node_add(node, [{"name": "fail_once", "data": {}, "opts": {"attempts": 1}}])
    client = make_client(registry)
    worker()
    await settled(client, job_id, JobState.FAILED)
    assert await redis.exists(f"failedJobs:{job_id}")

    await client.pause()  # so the retried job stays in wait while we look
    await node("retry", [job_id])
    assert (await client.get_job(job_id)).state in (JobState.WAITING, JobState.PAUSED)
    await wait_for(lambda: record_gone(redis, f"failedJobs:{job_id}"), message="record kept")
    assert await redis.zscore("failedJobs-index", f"failedJobs:{job_id}") is None
    assert await client.failure_record(job_id) is None

    await client.resume()
    view = await settled(client, job_id, JobState.COMPLETED)
    assert view.info.return_value == "second time"
    assert await client.failure_record(job_id) is None
    assert not await redis.exists(f"failedJobs:{job_id}")


async def test_a_job_that_fails_again_after_a_node_retry_keeps_its_new_record(
    node: NodeCall,
    registry: TaskRegistry,
    make_client: Callable[..., QueueClient],
    worker: Callable[..., Worker],
) -> None:
    """The reconciler checks, atomically, that the job is not failed (again) when it drops
    anything: a retried job that failed again before the event was read keeps its record."""
    [job_id] = await node_add(node, [{"name": "fail", "data": {}, "opts": {"attempts": 1}}])
    client = make_client(registry)
    worker()
    await settled(client, job_id, JobState.FAILED)
    first = await client.failure_record(job_id)
    assert first is not None

    await node("retry", [job_id])

    async def failed_again() -> bool:
        record = await client.failure_record(job_id)
        view = await client.get_job(job_id)
        again = record is not None and record["failed_at_ms"] != first["failed_at_ms"]
        return again and view.state is JobState.FAILED

    await wait_for(failed_again, message="the retried job did not fail again with a record")
    # A reconciler that reads the stream from its start sees the "waiting, prev failed" event
    # of the retry now, after the second failure: it must keep the new record.
    report = await FailureReconciler(client.bull, client.records, start_at="0").tick()
    assert report.events_read > 0
    assert report.dropped_by_event == report.dropped_by_sweep == 0
    assert await client.failure_record(job_id) is not None


@pytest.mark.parametrize("move", ["retryJobs", "remove", "clean"])
async def test_other_node_moves_drop_the_record_too(
    node: NodeCall,
    registry: TaskRegistry,
    make_client: Callable[..., QueueClient],
    worker: Callable[..., Worker],
    redis: Redis,
    move: str,
) -> None:
    """Bull Board's retry-all (Queue.retryJobs), Job.remove() and Queue.clean, on a queue that
    is not the seed's (records in the queue's own key space)."""
    queue = "emails"
    ids = await node_add(node, [{"name": "fail", "data": {}, "opts": {"attempts": 1}}] * 3, queue)
    client = make_client(registry, queue=queue)
    worker(queue=queue)
    for job_id in ids:
        await settled(client, job_id, JobState.FAILED)
    keys = [f"bull:emails:conveyor:failed:{job_id}" for job_id in ids]
    for key in keys:
        assert await redis.exists(key)
    assert await redis.zcard("bull:emails:conveyor:failed-index") == 3

    if move == "retryJobs":
        await client.pause()
        await node("retryJobs", queue=queue)
    elif move == "remove":
        await node("remove", ids, queue=queue)
    else:
        assert sorted((await node("clean", queue=queue))["ids"]) == sorted(ids)

    async def all_gone() -> bool:
        return not any([await redis.exists(key) for key in keys])

    await wait_for(all_gone, message=f"records kept after {move}")
    assert await redis.zcard("bull:emails:conveyor:failed-index") == 0
    assert not await redis.exists("failedJobs-index")


async def test_a_record_written_by_an_earlier_version_is_read_and_moved_aside(
    node: NodeCall,
    registry: TaskRegistry,
    make_client: Callable[..., QueueClient],
    worker: Callable[..., Worker],
    redis: Redis,
) -> None:
    """Earlier versions wrote counter ids at failedJobs:{queue}:{id} and every other id of
    every queue at failedJobs:{id}. Such a record is still found (its queue field matches),
    and the seed's queue failing a job whose id another queue's old record holds moves that
    record to its own queue's key space instead of overwriting it."""
    await redis.hset(
        "failedJobs:taskQueue:7",
        mapping={"job_id": "7", "queue": "taskQueue", "prefix": "bull", "error": "old"},
    )
    await redis.zadd("failedJobs-index", {"failedJobs:taskQueue:7": 1000})
    await redis.hset(
        "failedJobs:report-1",
        mapping={"job_id": "report-1", "queue": "emails", "prefix": "bull", "error": "theirs"},
    )
    await redis.zadd("failedJobs-index", {"failedJobs:report-1": 2000})
    client, emails = make_client(registry), make_client(registry, queue="emails")
    assert (await client.failure_record("7") or {}).get("error") == "old"
    assert (await emails.failure_record("report-1") or {}).get("error") == "theirs"
    assert await client.failure_record("report-1") is None  # not this queue's

    job_id = await client.enqueue("fail", {}, {"jobId": "report-1", "attempts": 1})
    worker()
    await settled(client, job_id, JobState.FAILED)
    ours = await redis.hgetall("failedJobs:report-1")
    assert (ours["queue"], ours["error"]) == ("taskQueue", "RuntimeError: always")
    theirs = await redis.hgetall("bull:emails:conveyor:failed:report-1")
    assert (theirs["queue"], theirs["error"]) == ("emails", "theirs")
    assert (
        await redis.zscore(
            "bull:emails:conveyor:failed-index", "bull:emails:conveyor:failed:report-1"
        )
        == 2000
    )
    assert (await emails.failure_record("report-1") or {}).get("error") == "theirs"


async def test_a_move_whose_event_was_missed_is_caught_by_the_sweep(
    node: NodeCall,
    registry: TaskRegistry,
    make_client: Callable[..., QueueClient],
    worker: Callable[..., Worker],
    redis: Redis,
) -> None:
    """Node retries a job while no Conveyor worker runs; a reconciler that starts later (at
    the stream's end, so it never reads that event) drops the record in its first sweep."""
    [job_id] = await node_add(node, [{"name": "fail", "data": {}, "opts": {"attempts": 1}}])
    client = make_client(registry)
    running = worker()
    await settled(client, job_id, JobState.FAILED)
    running.stop()
    await wait_for(lambda: not running.running, message="the worker never stopped")

    await node("retry", [job_id])
    assert await redis.exists(f"failedJobs:{job_id}")  # nobody reconciles yet

    report = await FailureReconciler(client.bull, client.records).tick()
    assert (report.full_sweep, report.dropped_by_event, report.dropped_by_sweep) == (True, 0, 1)
    assert not await redis.exists(f"failedJobs:{job_id}")
    assert await redis.zscore("failedJobs-index", f"failedJobs:{job_id}") is None


async def test_the_record_of_a_job_removed_on_failure_stays_until_retention(
    registry: TaskRegistry,
    make_client: Callable[..., QueueClient],
    worker: Callable[..., Worker],
) -> None:
    """removeOnFail: BullMQ deletes the job as it fails; its record is the only trace of the
    failure, so the reconciler keeps it (cleanup's retention removes it)."""
    client = make_client(registry)
    worker()
    job_id = await client.enqueue("fail", {}, {"attempts": 1, "removeOnFail": True})
    record = await wait_for(lambda: client.failure_record(job_id), message="no record")
    assert record["removed_on_fail"] == "1"

    report = await FailureReconciler(client.bull, client.records, start_at="0").tick()
    assert report.dropped_by_event == report.dropped_by_sweep == 0
    assert await client.failure_record(job_id) == record
