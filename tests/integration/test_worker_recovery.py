"""A dead worker's jobs go back at once (lua/release_worker.lua) as BullMQ's stalled check would
put them back, and only a dead worker's: a peer's heartbeat judge (worker/heartbeat.py) never
takes the jobs of a worker that still has a connection open, however long it is silent.
Process-level recovery (SIGKILL, SIGSTOP) is tests/chaos/test_recovery.py."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from redis.asyncio import Redis

from conveyor import keys
from conveyor._bullmq import BullQueue
from conveyor.client import JobSpec, QueueClient
from conveyor.config import Settings
from conveyor.jobs import JobState
from conveyor.registry import JobContext, TaskRegistry
from conveyor.resp import RespConnection
from conveyor.testing import wait_for, wait_for_state
from conveyor.worker import Worker

LOCK_MS = 30_000


async def _take(bull: BullQueue, token: str) -> str:
    fetched = await bull.move_to_active(token, LOCK_MS)
    assert fetched.job is not None
    return fetched.job.id


async def _events(redis: Redis, bull: BullQueue, event: str) -> list[str]:
    entries: list[tuple[str, dict[str, str]]] = await redis.xrange(bull.keys["events"])  # type: ignore[assignment]
    return [fields["jobId"] for _, fields in entries if fields.get("event") == event]


async def test_release_puts_back_exactly_the_dead_workers_jobs_as_stalls(
    redis: Redis, settings: Settings, make_client: Callable[..., QueueClient]
) -> None:
    client = make_client()
    await client.enqueue_many([JobSpec("simulate", {"duration_ms": 1}) for _ in range(5)])
    bull = BullQueue(redis, settings.queue, settings.prefix)
    # Names that share a prefix with the dead one's must not match its tokens.
    dead = [await _take(bull, "host:1:dead:1"), await _take(bull, "host:1:dead:2")]
    others = [
        await _take(bull, "host:1:dead:x:3"),
        await _take(bull, "host:1:deadbeef:4"),
        await _take(bull, "host:1:alive:5"),
    ]
    released = await bull.release_worker(
        "host:1:dead", max_stalled_count=1, seen_beat_ms=None, forget=False
    )
    assert sorted(released or []) == sorted(dead)
    assert await redis.lrange(bull.keys["active"], 0, -1) == list(reversed(others))
    # Back in wait, at the end BullMQ takes from first (they run next), with a wake-up marker.
    assert set(await redis.lrange(bull.keys["wait"], 0, -1)) == set(dead)
    assert await redis.zcard(bull.keys["marker"]) == 1
    for job_id in dead:
        assert await redis.exists(bull.job_key(job_id) + ":lock") == 0
        assert await redis.hget(bull.job_key(job_id), "stc") == "1"
        assert await redis.hget(bull.job_key(job_id), "defa") is None
    for job_id in others:
        assert await redis.exists(bull.job_key(job_id) + ":lock") == 1
    assert sorted(await _events(redis, bull, "stalled")) == sorted(dead)
    # A second release finds nothing: the jobs are no longer the dead worker's.
    assert (
        await bull.release_worker(
            "host:1:dead", max_stalled_count=1, seen_beat_ms=None, forget=True
        )
        == []
    )


async def test_a_job_stalled_too_often_fails_for_good_with_its_record(
    redis: Redis,
    settings: Settings,
    make_client: Callable[..., QueueClient],
    make_worker: Callable[..., Worker],
) -> None:
    """max_stalled_count 0: the first release defers a failure, which the next worker to take
    the job records as BullMQ does (failed set and failure record, one MULTI)."""
    client = make_client()
    (job_id,) = await client.enqueue_many([JobSpec("ok", {})])
    bull = BullQueue(redis, settings.queue, settings.prefix)
    assert await _take(bull, "gone:7:abc:1") == job_id
    assert await bull.release_worker(
        "gone:7:abc", max_stalled_count=0, seen_beat_ms=None, forget=False
    ) == [job_id]
    registry = TaskRegistry()
    ran: list[str] = []

    @registry.task("ok")
    async def ok(payload: dict[str, int], ctx: JobContext) -> None:
        ran.append(ctx.job_id)

    make_worker(registry)
    job = await wait_for_state(client, job_id, JobState.FAILED)
    # As the stalled check's deferred failures always read (worker/attempt.py).
    reason = "Unrecoverable: job stalled more than allowable limit"
    assert job.info.failed_reason == reason
    assert ran == []
    record = await client.failure_record(job_id)
    assert record is not None
    assert record["error"] == reason


async def test_release_keeps_a_paused_queue_paused(
    redis: Redis, settings: Settings, make_client: Callable[..., QueueClient]
) -> None:
    client = make_client()
    (job_id,) = await client.enqueue_many([JobSpec("simulate", {})])
    bull = BullQueue(redis, settings.queue, settings.prefix)
    await _take(bull, "gone:8:abc:1")
    await client.pause()
    await bull.release_worker("gone:8:abc", max_stalled_count=1, seen_beat_ms=None, forget=False)
    # The paused-layout guard: a paused queue's waiting jobs are kept in "paused"; no marker.
    assert await redis.lrange(bull.keys["paused"], 0, -1) == [job_id]
    assert await redis.llen(bull.keys["wait"]) == 0
    assert await redis.zcard(bull.keys["marker"]) == 0
    await client.resume()
    assert (await client.counts())[JobState.WAITING] == 1


async def test_a_worker_that_beat_again_keeps_its_jobs(
    redis: Redis, settings: Settings, make_client: Callable[..., QueueClient]
) -> None:
    client = make_client()
    await client.enqueue_many([JobSpec("simulate", {})])
    bull = BullQueue(redis, settings.queue, settings.prefix)
    job_id = await _take(bull, "slow:9:abc:1")
    first = await bull.heartbeat(
        "slow:9:abc", silent_after_ms=1, lease_ms=1, forget_after_ms=60_000
    )
    await asyncio.sleep(0.01)
    await bull.heartbeat("slow:9:abc", silent_after_ms=1, lease_ms=1, forget_after_ms=60_000)
    # A judge that saw the first beat is too late: the worker has beaten since.
    assert (
        await bull.release_worker(
            "slow:9:abc", max_stalled_count=1, seen_beat_ms=first.now_ms, forget=True
        )
        is None
    )
    assert await redis.get(bull.job_key(job_id) + ":lock") == "slow:9:abc:1"
    heartbeats = keys.heartbeats(settings.prefix, settings.queue)
    assert await redis.zscore(heartbeats, "slow:9:abc") is not None


async def test_the_judge_releases_a_silent_disconnected_worker_but_not_a_connected_one(
    redis: Redis,
    redis_url: str,
    settings: Settings,
    make_client: Callable[..., QueueClient],
    make_worker: Callable[..., Worker],
) -> None:
    """Two workers that beat once and fall silent, each holding a job: "gone" has no
    connection open (as after SIGKILL), "stopped" keeps its connection (as under SIGSTOP).
    A live worker releases the first's job within dead_worker_after_ms and runs it; the
    second's job stays locked by its owner however long it is silent."""
    client = make_client()
    ids = await client.enqueue_many([JobSpec("ok", {}) for _ in range(2)])
    bull = BullQueue(redis, settings.queue, settings.prefix)
    gone_job = await _take(bull, "gone:10:abc:1")
    stopped_job = await _take(bull, "stopped:11:abc:1")
    stopped = RespConnection(redis_url)
    stopped.client_name = bull.client_name("stopped:11:abc")
    await stopped.connect()
    try:
        registry = TaskRegistry()
        ran: list[str] = []

        @registry.task("ok")
        async def ok(payload: dict[str, int], ctx: JobContext) -> None:
            ran.append(ctx.job_id)

        make_worker(registry, heartbeat_interval_ms=100, dead_worker_after_ms=500)
        await asyncio.sleep(0.3)  # the judge is connected before they beat for the last time
        for name in ("gone:10:abc", "stopped:11:abc"):
            await bull.heartbeat(name, silent_after_ms=500, lease_ms=1, forget_after_ms=60_000)
        await wait_for_state(client, gone_job, JobState.COMPLETED, timeout=5)
        assert ran == [gone_job]
        await asyncio.sleep(1.0)  # twice dead_worker_after_ms more: still not released
        assert await redis.get(bull.job_key(stopped_job) + ":lock") == "stopped:11:abc:1"
        assert (await client.get_job(ids[1])).state is JobState.ACTIVE
        heartbeats = keys.heartbeats(settings.prefix, settings.queue)
        assert await redis.zscore(heartbeats, "gone:10:abc") is None
        assert await redis.zscore(heartbeats, "stopped:11:abc") is not None
    finally:
        await stopped.close()


async def test_a_worker_forgets_its_heartbeat_when_it_stops(
    redis: Redis, settings: Settings, make_worker: Callable[..., Worker]
) -> None:
    worker = make_worker(TaskRegistry(), heartbeat_interval_ms=100)
    heartbeats = keys.heartbeats(settings.prefix, settings.queue)
    await wait_for(lambda: redis.zscore(heartbeats, worker.options.name))
    worker.stop()
    await wait_for(lambda: not worker.running)
    assert await redis.zscore(heartbeats, worker.options.name) is None


async def test_a_judge_that_reconnected_leaves_earlier_silence_to_the_lock(
    redis: Redis,
    settings: Settings,
    make_client: Callable[..., QueueClient],
    make_worker: Callable[..., Worker],
) -> None:
    """After a Redis restart or failover every worker is reconnecting, so a peer missing from
    CLIENT LIST may only be late: a judge whose own connection broke judges only peers seen
    beating since it came back. Here the peer beats once and never again (no connection), and
    the judge's connection is killed right after: the peer's job stays locked."""
    client = make_client()
    await client.enqueue_many([JobSpec("ok", {})])
    bull = BullQueue(redis, settings.queue, settings.prefix)
    job_id = await _take(bull, "ghost:12:abc:1")
    judge = make_worker(TaskRegistry(), heartbeat_interval_ms=100, dead_worker_after_ms=500)
    heartbeats = keys.heartbeats(settings.prefix, settings.queue)
    await wait_for(lambda: redis.zscore(heartbeats, judge.options.name))
    await bull.heartbeat("ghost:12:abc", silent_after_ms=500, lease_ms=1, forget_after_ms=60_000)
    # The judge's hot path (its heartbeat's connection) breaks, as in a Redis restart.
    hot_path = bull.heartbeat_connection_name(judge.options.name)
    (judge_id,) = [c["id"] for c in await redis.client_list() if c.get("name") == hot_path]
    assert await redis.client_kill_filter(_id=judge_id) == 1
    await asyncio.sleep(1.5)  # three times dead_worker_after_ms
    assert await redis.get(bull.job_key(job_id) + ":lock") == "ghost:12:abc:1"
    assert await redis.zscore(heartbeats, "ghost:12:abc") is not None
