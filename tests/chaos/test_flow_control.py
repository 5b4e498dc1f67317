"""Queue-wide limits hold across real worker processes (each its own `conveyor worker`), set
by the settings each applies at start: a rate limit over 30 s, a concurrency cap through a
SIGKILL."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable

from redis.asyncio import Redis

from conveyor.client import JobSpec, QueueClient
from conveyor.jobs import JobState
from conveyor.limits import QueueLimits, RateLimit
from conveyor.redis import connect
from conveyor.testing import wait_for
from tests.chaos.conftest import Chaos, enqueue_all

RATE_PER_S = 50
WINDOW_S = 30


async def _enqueue(
    client: QueueClient,
    key: str,
    count: int,
    sleep_ms: int = 0,
    *,
    task: str = "flow_probe",
    also: str | None = None,
) -> list[str]:
    data = {"key": key, "sleep_ms": sleep_ms, "also": also}
    return await enqueue_all(client, [JobSpec(task, data) for _ in range(count)])


async def test_three_processes_keep_a_rate_limit_of_50_per_second_over_30_s(
    chaos: Chaos, report: Callable[..., None], closing: list[Redis]
) -> None:
    chaos.start_redis()
    redis = connect(chaos.url)
    closing.append(redis)
    client = chaos.client(redis)
    key = "flow:rate"
    # more than 30 s of work, so the workers are never short of jobs
    await _enqueue(client, key, RATE_PER_S * (WINDOW_S + 4))
    limit = {"CONVEYOR_RATE_LIMIT": f"{RATE_PER_S}/s"}
    workers = [chaos.spawn("worker", "--concurrency", "10", **limit) for _ in range(3)]
    for proc in workers:
        chaos.wait_started(proc)
    assert await client.get_limits() == QueueLimits(RateLimit(RATE_PER_S, 1000))

    async def first_start() -> int | None:
        first = await redis.lindex(key + ":starts", 0)
        return int(first) if first is not None else None

    t0 = await wait_for(first_start, 30)

    async def window_over() -> bool:
        last = await redis.lindex(key + ":starts", -1)
        return last is not None and int(last) >= t0 + WINDOW_S * 1000

    await wait_for(window_over, WINDOW_S + 20, message="the 30 s window never ended")
    starts = [int(s) for s in await redis.lrange(key + ":starts", 0, -1)]
    in_window = sum(1 for s in starts if t0 <= s < t0 + WINDOW_S * 1000)
    expected = RATE_PER_S * WINDOW_S
    pids = await redis.smembers(key + ":pids")
    report(jobs_in_30_s=in_window, expected=expected, ratio=round(in_window / expected, 4))
    assert len(pids) == 3, f"every process took jobs: {pids}"
    assert abs(in_window - expected) <= expected * 0.05, (in_window, expected)


async def test_a_concurrency_of_2_is_never_exceeded_through_a_sigkill(
    chaos: Chaos, report: Callable[..., None], closing: list[Redis]
) -> None:
    """The queue's concurrency of 2 (BullMQ's), and beside it a task with a per-task
    concurrency of 1 (Conveyor's) whose runs count in both."""
    chaos.start_redis()
    redis = connect(chaos.url)
    closing.append(redis)
    client = chaos.client(redis)
    key, solo = "flow:cap", "flow:solo"
    ids = await _enqueue(client, key, 24, sleep_ms=300)
    ids += await _enqueue(client, solo, 8, sleep_ms=300, task="flow_probe_solo", also=key)
    cap = {"CONVEYOR_QUEUE_CONCURRENCY": "2"}
    workers = [chaos.spawn("worker", "--concurrency", "5", **cap) for _ in range(3)]
    for proc in workers:
        chaos.wait_started(proc)

    async def someone_running() -> str | None:
        runs = await redis.smembers(key + ":running")
        return str(next(iter(runs))) if runs else None

    # SIGKILL a process while it runs a job: that job stays active (its lock still held)
    # until the stalled check recovers it, and runs again elsewhere.
    await wait_for(lambda: redis.llen(key + ":done"), 30)
    victim_run = await wait_for(someone_running, 10)
    victim_pid = int(victim_run.split(":")[0])
    victim = next(p for p in workers if p.pid == victim_pid)
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait()
    killed_at = time.monotonic()
    # A dead process runs nothing: take its runs out of the running sets.
    for running in (key + ":running", solo + ":running"):
        for run in await redis.smembers(running):
            if str(run).startswith(f"{victim_pid}:"):
                await redis.srem(running, run)

    async def all_completed() -> bool:
        return (await client.counts())[JobState.COMPLETED] == len(ids)

    await wait_for(all_completed, 60, message=str(await client.counts()))
    most = int(await redis.get(key + ":max") or 0)
    most_solo = int(await redis.get(solo + ":max") or 0)
    report(
        most_running=most,
        most_running_solo_task=most_solo,
        recovered_after_s=round(time.monotonic() - killed_at, 2),
    )
    assert most == 2, f"at most 2 jobs ran at once across 3 processes (saw {most})"
    assert most_solo == 1, f"at most 1 job of the solo task ran at once (saw {most_solo})"
    done = await redis.llen(key + ":done") + await redis.llen(solo + ":done")
    assert done >= len(ids)
    await asyncio.sleep(0)
