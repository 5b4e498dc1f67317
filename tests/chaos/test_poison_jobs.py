"""Poison jobs: one hangs, one blocks the event loop, one exhausts memory, one outlives its
lock. Each is ended and follows its retry policy; the workers keep serving everyone else."""

from __future__ import annotations

from collections.abc import Callable

from redis.asyncio import Redis

from conveyor.client import JobSpec
from conveyor.jobs import JobState
from conveyor.redis import connect
from conveyor.testing import wait_for
from tests.chaos.conftest import Chaos


async def test_poison_jobs_are_contained(
    chaos: Chaos, report: Callable[..., None], closing: list[Redis]
) -> None:
    chaos.start_redis()
    redis = connect(chaos.url)
    closing.append(redis)
    client = chaos.client(redis)
    twice = {"attempts": 2, "backoff": 10}
    proc = chaos.spawn(
        "worker",
        "--processes",
        "2",
        "--concurrency",
        "10",
        CONVEYOR_WATCHDOG_S="4",
        CONVEYOR_MAX_MEMORY_MB="768",
        CONVEYOR_LOCK_DURATION_MS="2000",
    )

    async def settled(ids: list[str]) -> bool:
        states = [await client.get_state(j) for j in ids]
        return all(s in (JobState.COMPLETED, JobState.FAILED) for s in states)

    # Phase 1: a hang, a memory hog and a job 2x longer than its lock (2 s), among 200
    # healthy jobs.
    poison = {
        "hang": await client.enqueue("hang", {}, twice),
        "hog_memory": await client.enqueue("hog_memory", {}, twice),
    }
    long_job = await client.enqueue("count", {"key": "chaos:long", "sleep_ms": 4000})
    healthy = await client.enqueue_many(
        [JobSpec("count", {"key": "chaos:healthy", "sleep_ms": 20})] * 200
    )
    phase1 = [*poison.values(), long_job, *healthy]
    await wait_for(lambda: settled(phase1), timeout=90, message=chaos.output(proc)[-3000:])

    # Phase 2: a job that blocks its event loop. A blocked process cannot be saved: the
    # watchdog ends it, the supervisor starts another, and the stalled-job check recovers the
    # job; stalled twice, it fails for good. (Jobs that shared its process are recovered too.)
    poison["block_loop"] = await client.enqueue("block_loop", {}, twice)
    await wait_for(
        lambda: settled([poison["block_loop"]]), timeout=90, message=chaos.output(proc)[-3000:]
    )
    after = await client.enqueue_many(
        [JobSpec("count", {"key": "chaos:after", "sleep_ms": 20})] * 50
    )
    await wait_for(lambda: settled(after), timeout=60, message=chaos.output(proc)[-3000:])

    outcome = {}
    for name, job_id in poison.items():
        view = await client.get_job(job_id)
        record = await client.failure_record(job_id)
        assert view.state is JobState.FAILED, (name, view)
        assert record is not None, name
        outcome[name] = record["error"]
    assert "TimeoutError" in outcome["hang"]
    assert "MemoryError" in outcome["hog_memory"]
    assert "stalled more than allowable limit" in outcome["block_loop"]
    assert await redis.hget("chaos:blocked", poison["block_loop"]) == "2"
    assert (await client.get_job(long_job)).state is JobState.COMPLETED
    assert await redis.hget("chaos:long", long_job) == "1"
    for job_id in [*healthy, *after]:
        assert (await client.get_state(job_id)) is JobState.COMPLETED
    log = chaos.output(proc)
    assert "event_loop_blocked" in log
    assert "worker_process_exited" in log
    report(
        jobs=len(healthy) + len(after) + 4,
        faults="hang (timeout 1 s), event-loop block (watchdog 4 s), memory hog (768 MB cap), "
        "job 2x its lock",
        lost=0,
        poison_outcome=outcome,
        worker_restarts=log.count("worker_process_exited"),
        long_job_runs=int(await redis.hget("chaos:long", long_job) or 0),
    )
