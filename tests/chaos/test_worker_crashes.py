"""Workers die (SIGKILL) or are deployed over (SIGTERM) under load: no job is lost."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from collections.abc import Callable

from redis.asyncio import Redis

from conveyor.client import JobSpec, QueueClient
from conveyor.jobs import JobState
from conveyor.redis import connect
from conveyor.testing import wait_for
from tests.chaos.conftest import Chaos, enqueue_all


async def _enqueue(client: QueueClient, key: str, sleeps: list[int]) -> list[str]:
    return await enqueue_all(
        client, [JobSpec("count", {"key": key, "sleep_ms": ms}) for ms in sleeps]
    )


async def test_crash_storm_loses_no_job(
    chaos: Chaos, report: Callable[..., None], closing: list[Redis]
) -> None:
    """2,000 jobs of 10-500 ms on 3 workers; every 2 s one worker is SIGKILLed and restarted."""
    chaos.start_redis()
    redis = connect(chaos.url)
    closing.append(redis)
    client = chaos.client(redis)
    key = "chaos:executions"
    rng = random.Random(7)
    ids = await _enqueue(client, key, [rng.randint(10, 500) for _ in range(2000)])
    # A storm stalls the same job again and again through no fault of its own; BullMQ fails a
    # job stalled more than max_stalled_count times (default 1), so a storm needs a higher one.
    storm = {"CONVEYOR_MAX_STALLED_COUNT": "50"}
    workers = [chaos.spawn("worker", "--concurrency", "25", **storm) for _ in range(3)]
    for proc in workers:
        chaos.wait_started(proc)

    at_risk: set[str] = set()  # jobs active (locked) when a worker was killed
    kills = 0
    started = time.monotonic()

    async def settled() -> int:
        counts = await client.counts()
        return counts[JobState.COMPLETED] + counts[JobState.FAILED]

    while await settled() < len(ids):
        assert time.monotonic() - started < 150, f"the storm never drained: {await client.counts()}"
        await asyncio.sleep(2)
        victim = rng.randrange(len(workers))
        os.killpg(workers[victim].pid, signal.SIGKILL)
        workers[victim].wait()
        kills += 1
        at_risk |= set(map(str, await redis.lrange(f"{chaos.prefix}:{chaos.queue}:active", 0, -1)))
        workers[victim] = chaos.spawn("worker", "--concurrency", "25", **storm)
    drained_s = time.monotonic() - started

    async def all_completed() -> bool:
        return (await client.counts())[JobState.COMPLETED] == len(ids)

    await wait_for(all_completed, timeout=60, message=str(await client.counts()))
    counts = await client.counts()
    executions = {job: int(n) for job, n in (await redis.hgetall(key)).items()}
    twice = {job for job, n in executions.items() if n > 1}
    assert set(executions) == set(ids)
    assert counts[JobState.FAILED] == 0
    assert twice <= at_risk, "only jobs active at a kill may run twice"
    report(
        jobs=len(ids),
        faults=f"{kills} SIGKILLs of 3 workers",
        lost=len(ids) - counts[JobState.COMPLETED],
        ran_twice=len(twice),
        at_risk=len(at_risk),
        drain_s=round(drained_s, 1),
    )


async def test_deploy_sigterm_finishes_or_requeues_every_active_job(
    chaos: Chaos, report: Callable[..., None], closing: list[Redis]
) -> None:
    """SIGTERM to every worker mid-load, twice: once with a grace long enough to finish, once
    shorter than the jobs (they go back to the queue). New workers finish everything; nothing
    fails because of a shutdown."""
    chaos.start_redis()
    redis = connect(chaos.url)
    closing.append(redis)
    client = chaos.client(redis)
    key = "chaos:executions"
    rng = random.Random(11)
    # FIFO: the long jobs are running when the second SIGTERM (short grace) comes.
    ids = await _enqueue(client, key, [rng.randint(50, 300) for _ in range(150)])
    ids += await _enqueue(client, key, [2000] * 20)
    ids += await _enqueue(client, key, [rng.randint(50, 300) for _ in range(450)])
    rounds: list[dict[str, object]] = []
    at_risk: set[str] = set()  # jobs the workers handed back at the end of their grace
    # Locks of 3 s (renewed every 1.5 s) so that CPU starvation on a small machine does not
    # expire them: this scenario is about shutdowns, the crash storm about lost locks.
    lock = {"CONVEYOR_LOCK_DURATION_MS": "3000"}
    for grace in ("30", "0.3"):
        workers = [
            chaos.spawn("worker", "--concurrency", "10", CONVEYOR_SHUTDOWN_GRACE_S=grace, **lock)
            for _ in range(3)
        ]
        for proc in workers:
            chaos.wait_started(proc)

        async def some_done(target: int = 100 + 90 * len(rounds)) -> bool:
            return await redis.hlen(key + ":done") >= target

        await wait_for(some_done, timeout=60)
        active = set(await redis.lrange(f"{chaos.prefix}:{chaos.queue}:active", 0, -1))
        sent = time.monotonic()
        for proc in workers:
            os.killpg(proc.pid, signal.SIGTERM)
        codes = [proc.wait(60) for proc in workers]
        for proc in workers:  # jobs cut off by the grace and handed back
            at_risk |= {
                line.split("job_id=")[1].split()[0]
                for line in chaos.output(proc).splitlines()
                if "job_released" in line
            }
        rounds.append(
            {
                "grace_s": float(grace),
                "active_at_sigterm": len(active),
                "exit_s": round(time.monotonic() - sent, 2),
            }
        )
        assert codes == [0, 0, 0], [chaos.output(p)[-2000:] for p in workers]
        assert await redis.llen(f"{chaos.prefix}:{chaos.queue}:active") == 0
        assert (await client.counts())[JobState.FAILED] == 0

    finisher = chaos.spawn("worker", "--concurrency", "50")
    chaos.wait_started(finisher)

    async def all_completed() -> bool:
        return (await client.counts())[JobState.COMPLETED] == len(ids)

    await wait_for(all_completed, timeout=90, message=str(await client.counts()))
    executions = {job: int(n) for job, n in (await redis.hgetall(key)).items()}
    twice = {job for job, n in executions.items() if n > 1}
    assert set(executions) == set(ids)
    # Only jobs cut off by the short grace may have started again.
    assert twice <= at_risk, {j: executions[j] for j in twice - at_risk}
    report(
        jobs=len(ids),
        faults="SIGTERM to 3 workers, twice (grace 30 s, then 0.3 s)",
        lost=len(ids) - (await client.counts())[JobState.COMPLETED],
        ran_twice=len(twice),
        handed_back=len(at_risk),
        failed=(await client.counts())[JobState.FAILED],
        rounds=rounds,
    )
