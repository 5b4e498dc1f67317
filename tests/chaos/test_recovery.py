"""Crash recovery in seconds (docs/reliability.md#crash-recovery): the jobs of a SIGKILLed
worker process run again within 5 s, with the default 30 s lock, whether a supervisor
(``--processes 2``) or a peer's heartbeat notices; and a worker that is alive but silent
(its event loop blocked, or SIGSTOPped) never loses its job to either."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Callable

from redis.asyncio import Redis

from conveyor.client import JobSpec, QueueClient
from conveyor.jobs import JobState
from conveyor.redis import connect
from conveyor.testing import wait_for
from tests.chaos.conftest import Chaos

#: BullMQ's defaults: only the new mechanisms can recover a job within seconds.
DEFAULT_LOCKS = {"CONVEYOR_LOCK_DURATION_MS": "30000", "CONVEYOR_STALLED_INTERVAL_MS": "30000"}
KEY = "chaos:executions"


async def _holders(redis: Redis, chaos: Chaos, ids: list[str]) -> dict[str, str]:
    """job id -> the lock token holding it now (``{host}:{pid}:{tag}:{n}``)."""
    base = f"{chaos.prefix}:{chaos.queue}:"
    tokens = await redis.mget([f"{base}{job_id}:lock" for job_id in ids])
    return {job_id: str(token) for job_id, token in zip(ids, tokens, strict=True) if token}


def _pid(token: str) -> int:
    return int(token.split(":")[-3])


async def _executions(redis: Redis) -> dict[str, int]:
    return {str(job): int(n) for job, n in (await redis.hgetall(KEY)).items()}


async def _started_again(redis: Redis, victims: list[str], killed_at: float) -> float:
    """Seconds from the kill until every one of ``victims`` has started a second time."""

    async def all_again() -> bool:
        runs = await _executions(redis)
        return all(runs.get(job, 0) >= 2 for job in victims)

    await wait_for(all_again, timeout=60, message="the dead worker's jobs never ran again")
    return time.monotonic() - killed_at


async def _all_completed(client: QueueClient, ids: list[str]) -> None:
    async def done() -> bool:
        return (await client.counts())[JobState.COMPLETED] == len(ids)

    await wait_for(done, timeout=30, message=str(await client.counts()))


def _released_logs(chaos: Chaos, procs: list[subprocess.Popen[str]]) -> list[str]:
    return [
        line
        for proc in procs
        for line in chaos.output(proc).splitlines()
        if "dead_worker_jobs_released" in line and "count=0" not in line
    ]


async def test_a_sigkilled_child_of_processes_2_has_its_jobs_run_again_within_5_s(
    chaos: Chaos, report: Callable[..., None], closing: list[Redis]
) -> None:
    chaos.start_redis()
    redis = connect(chaos.url)
    closing.append(redis)
    client = chaos.client(redis)
    supervisor = chaos.spawn("worker", "--processes", "2", "--concurrency", "10", **DEFAULT_LOCKS)
    chaos.wait_started(supervisor)
    ids = await client.enqueue_many([JobSpec("count", {"key": KEY, "sleep_ms": 2000})] * 10)
    await wait_for(lambda: _all_running(redis, ids), timeout=20, message="jobs never started")
    holders = await _holders(redis, chaos, ids)
    pids = [_pid(token) for token in holders.values()]
    victim = max(set(pids), key=pids.count)
    victims = [job for job, token in holders.items() if _pid(token) == victim]
    os.kill(victim, signal.SIGKILL)
    killed_at = time.monotonic()
    recovery_s = await _started_again(redis, victims, killed_at)
    await _all_completed(client, ids)
    runs = await _executions(redis)
    assert {job: n for job, n in runs.items() if n != 1} == dict.fromkeys(victims, 2)
    assert recovery_s < 5, recovery_s
    log = chaos.output(supervisor)
    assert "by=supervisor" in log
    assert f"count={len(victims)}" in log
    report(
        jobs=len(ids),
        faults="SIGKILL of the --processes 2 child holding most jobs (lock 30 s)",
        dead_jobs=len(victims),
        recovery_s=round(recovery_s, 2),
        lost=len(ids) - (await client.counts())[JobState.COMPLETED],
        ran_twice=len(victims),
    )


async def _all_running(redis: Redis, ids: list[str]) -> bool:
    return len(await redis.hgetall(KEY)) == len(ids)


async def test_a_sigkilled_unsupervised_worker_has_its_jobs_run_again_within_5_s(
    chaos: Chaos, report: Callable[..., None], closing: list[Redis]
) -> None:
    chaos.start_redis()
    redis = connect(chaos.url)
    closing.append(redis)
    client = chaos.client(redis)
    workers = [chaos.spawn("worker", "--concurrency", "10", **DEFAULT_LOCKS) for _ in range(2)]
    for proc in workers:
        chaos.wait_started(proc)
    await asyncio.sleep(0.6)  # both beat (and so may judge) before one dies
    ids = await client.enqueue_many([JobSpec("count", {"key": KEY, "sleep_ms": 2000})] * 6)
    await wait_for(lambda: _all_running(redis, ids), timeout=20, message="jobs never started")
    holders = await _holders(redis, chaos, ids)
    pids = [_pid(token) for token in holders.values()]
    (victim,) = [proc for proc in workers if proc.pid == max(set(pids), key=pids.count)]
    (peer,) = [proc for proc in workers if proc is not victim]
    victims = [job for job, token in holders.items() if _pid(token) == victim.pid]
    os.killpg(victim.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    victim.wait()
    recovery_s = await _started_again(redis, victims, killed_at)
    await _all_completed(client, ids)
    runs = await _executions(redis)
    assert {job: n for job, n in runs.items() if n != 1} == dict.fromkeys(victims, 2)
    assert recovery_s < 5, recovery_s
    assert "by=heartbeat" in chaos.output(peer)
    report(
        jobs=len(ids),
        faults="SIGKILL of an unsupervised worker, a peer running (lock 30 s)",
        dead_jobs=len(victims),
        recovery_s=round(recovery_s, 2),
        lost=len(ids) - (await client.counts())[JobState.COMPLETED],
        ran_twice=len(victims),
    )


async def test_a_blocked_or_sigstopped_worker_keeps_its_job(
    chaos: Chaos, report: Callable[..., None], closing: list[Redis]
) -> None:
    """Two workers; one job blocks its worker's event loop for 4 s, another's worker is
    SIGSTOPped for 5 s (both over twice dead_worker_after_ms): each job keeps its lock and
    runs exactly once, to completion, on the worker that took it."""
    chaos.start_redis()
    redis = connect(chaos.url)
    closing.append(redis)
    client = chaos.client(redis)
    workers = [chaos.spawn("worker", "--concurrency", "5", **DEFAULT_LOCKS) for _ in range(2)]
    for proc in workers:
        chaos.wait_started(proc)
    await asyncio.sleep(0.6)  # both beat
    (blocker,) = await client.enqueue_many(
        [JobSpec("block_briefly", {"key": KEY, "block_ms": 4000, "sleep_ms": 200})]
    )
    (sleeper,) = await client.enqueue_many([JobSpec("count", {"key": KEY, "sleep_ms": 7000})])
    ids = [blocker, sleeper]
    await wait_for(lambda: _all_running(redis, ids), timeout=20, message="jobs never started")
    held = await _holders(redis, chaos, ids)
    stopped = _pid(held[sleeper])
    os.kill(stopped, signal.SIGSTOP)
    stopped_at = time.monotonic()
    try:
        while time.monotonic() - stopped_at < 5:
            # Nobody else ever holds either job meanwhile.
            now = await _holders(redis, chaos, ids)
            assert all(now.get(job) in (None, token) for job, token in held.items()), now
            await asyncio.sleep(0.1)
    finally:
        os.kill(stopped, signal.SIGCONT)
    await _all_completed(client, ids)
    assert await _executions(redis) == dict.fromkeys(ids, 1)
    assert _released_logs(chaos, workers) == []
    report(
        jobs=len(ids),
        faults="event loop blocked 4 s; worker SIGSTOPped 5 s (dead_worker_after 2 s, lock 30 s)",
        lost=len(ids) - (await client.counts())[JobState.COMPLETED],
        ran_twice=0,
        taken_from_silent_worker=0,
    )
