"""Cancelling jobs that run in real worker processes, from another process (this test's):
stopped within a second on whichever process runs them, also when Redis was paused while the
cancel came, and never run again when their worker was SIGKILLed."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable

import pytest
from redis.asyncio import Redis

from conveyor.client import JobSpec, QueueClient
from conveyor.config import Settings
from conveyor.jobs import JobState
from conveyor.registry import load_registry
from conveyor.testing import wait_for
from tests.e2e.conftest import output_of

Spawn = Callable[..., subprocess.Popen[str]]
#: What the issue asks: a running job is stopped within a second, wherever it runs.
STOP_WITHIN_S = 1.0


@pytest.fixture
def client(redis: Redis, settings: Settings) -> QueueClient:
    return QueueClient(
        redis,
        queue=settings.queue,
        prefix=settings.prefix,
        registry=load_registry(["tests.support.tasks"]),
        pipelined=False,
    )


async def started(redis: Redis, key: str, ids: list[str]) -> None:
    async def all_started() -> bool:
        return all(await redis.hmget(key, ids))

    await wait_for(all_started, timeout=30, message="the jobs never started")


async def stop_time(client: QueueClient, job_id: str, reason: str) -> float:
    """Seconds from the cancel call to the job being failed (as seen from here)."""
    asked = time.monotonic()
    result = await client.cancel(job_id, reason, by="e2e")
    assert result.stopping, result

    async def failed() -> bool:
        return (await client.get_state(job_id)) is JobState.FAILED

    await wait_for(failed, timeout=10, message=f"job {job_id} was not stopped")
    return time.monotonic() - asked


async def test_running_jobs_on_two_processes_stop_within_a_second_and_the_workers_go_on(
    spawn: Spawn, client: QueueClient, redis: Redis, settings: Settings
) -> None:
    key = f"{settings.prefix}:executions"
    proc = spawn("worker", "--processes", "2", "--concurrency", "3")
    long = {"key": key, "sleep_ms": 60_000}
    ids = await client.enqueue_many([JobSpec("count", long)] * 4 + [JobSpec("sync_poll", long)])
    await started(redis, key, ids)
    # Every job is running, spread over both processes (3 slots each).
    holders = {(await client.get_job(job_id)).info.processed_by for job_id in ids}
    assert len(holders) == 2, holders
    times = [await stop_time(client, job_id, f"stop {n}") for n, job_id in enumerate(ids)]
    assert max(times) < STOP_WITHIN_S, times
    for n, job_id in enumerate(ids):
        view = await client.get_job(job_id)
        assert view.info.failed_reason == f"JobCancelled: cancelled by e2e: stop {n}"
        assert view.info.attempts_made == 1  # not retried
        assert await client.failure_record(job_id) is not None

    async def sync_one_saw_it() -> bool:
        # Its thread is abandoned when the job fails: it writes this after, on its own time.
        return await redis.hget(key + ":cancelled", ids[-1]) == "1"

    await wait_for(sync_one_saw_it, timeout=10, message="the sync handler never saw the cancel")
    assert await redis.hlen(key + ":done") == 0
    # A cancel made while Redis is paused for writes takes effect once it resumes.
    [paused_job] = await client.enqueue_many([JobSpec("count", long)])
    await started(redis, key, [paused_job])
    await redis.execute_command("CLIENT", "PAUSE", "700", "WRITE")
    assert await stop_time(client, paused_job, "while paused") < 0.7 + STOP_WITHIN_S
    # Both processes go on with other jobs.
    quick = await client.enqueue_many([JobSpec("count", {"key": key})] * 20)

    async def all_done() -> bool:
        return await redis.hlen(key + ":done") == len(quick)

    await wait_for(all_done, timeout=30, message=output_of(proc)[-3000:])
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(30) == 0
    assert output_of(proc).count("job_cancelling") == len(ids) + 1


async def test_a_job_cancelled_while_its_worker_is_sigkilled_never_runs_again(
    spawn: Spawn, client: QueueClient, redis: Redis, settings: Settings
) -> None:
    key = f"{settings.prefix}:executions"
    fast_recovery = {"CONVEYOR_LOCK_DURATION_MS": "1000", "CONVEYOR_STALLED_INTERVAL_MS": "1000"}
    victim = spawn("worker", "--concurrency", "1", env=fast_recovery)
    job_id = await client.enqueue("count", {"key": key, "sleep_ms": 60_000})
    await started(redis, key, [job_id])
    # The kill and the cancel race: the cancel lands while the process dies.
    os.killpg(victim.pid, signal.SIGKILL)
    result = await client.cancel(job_id, "crashing", by="e2e")
    assert result.stopping
    victim.wait()
    rescuer = spawn("worker", "--concurrency", "1", env=fast_recovery)

    async def failed() -> bool:
        return (await client.get_state(job_id)) is JobState.FAILED

    await wait_for(failed, timeout=30, message=output_of(rescuer)[-3000:])
    view = await client.get_job(job_id)
    assert view.info.failed_reason == "JobCancelled: cancelled by e2e: crashing"
    assert "stalled_jobs_recovered" in output_of(rescuer)
    # Taken again by the rescuer and failed without running: one execution, never finished.
    assert await redis.hget(key, job_id) == "1"
    assert await redis.hget(key + ":done", job_id) is None
    assert await client.redis.exists(client.bull.cancel_mark(job_id)) == 0
    # The rescuer goes on.
    after = await client.enqueue("count", {"key": key})

    async def completed() -> bool:
        return (await client.get_state(after)) is JobState.COMPLETED

    await wait_for(completed, timeout=30)
