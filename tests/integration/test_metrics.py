"""Worker-recorded stats in Redis, the history the charts read, and the /metrics text
(parsed with prometheus_client's own parser)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from pydantic import BaseModel
from redis.asyncio import Redis

from conveyor.client import JobSpec, QueueClient
from conveyor.config import Settings
from conveyor.hooks import HookChain, JobEvent
from conveyor.jobs import JobState
from conveyor.observability.logging import LoggingHooks
from conveyor.observability.stats import (
    UNKNOWN_TASK,
    StatsHooks,
    minute_key,
    read_history,
    read_totals,
    totals_key,
)
from conveyor.redis import connect
from conveyor.registry import JobContext, TaskRegistry
from conveyor.testing import wait_for
from conveyor.worker import Worker
from tests.support.monitor import serve_monitor


class Sleep(BaseModel):
    ms: int = 0


@pytest.fixture
def registry() -> TaskRegistry:
    registry = TaskRegistry()

    @registry.task("nap")
    async def nap(payload: Sleep, ctx: JobContext) -> None:
        await asyncio.sleep(payload.ms / 1000)

    @registry.task("flaky")
    async def flaky(payload: Sleep, ctx: JobContext) -> None:
        raise RuntimeError("always")

    return registry


@pytest.fixture
async def stats(redis: Redis, settings: Settings, registry: TaskRegistry) -> StatsHooks:
    return StatsHooks(redis, prefix=settings.prefix, task_names=registry.names())


def _event(queue: str, name: str = "nap", wait_ms: float = 10, run_ms: float = 20) -> JobEvent:
    return JobEvent("j", name, queue, 1, 1, wait_ms=wait_ms, duration_ms=run_ms)


async def _run_jobs(
    client: QueueClient,
    make_worker: Callable[..., Worker],
    registry: TaskRegistry,
    stats: StatsHooks,
) -> None:
    """3 naps that complete, 2 flaky jobs of 2 attempts each (2 retries, 2 failures)."""
    await client.enqueue_many([JobSpec("nap", {"ms": 30}) for _ in range(3)])
    await client.enqueue_many(
        [JobSpec("flaky", {}, {"attempts": 2, "backoff": 0}) for _ in range(2)]
    )
    stats.start(interval_s=0.05)
    make_worker(registry, hooks=HookChain(LoggingHooks(), stats))

    async def finished() -> bool:
        counts = await client.counts()
        return counts[JobState.COMPLETED] == 3 and counts[JobState.FAILED] == 2

    await wait_for(finished, message="jobs did not finish")

    async def recorded() -> bool:
        # the hooks run just after each job's state changed: wait until the flusher has them
        totals = await read_totals(stats.redis, stats.prefix, client.queue)
        done = "nap" in totals and totals["nap"].completed == 3
        return done and "flaky" in totals and totals["flaky"].failed == 2

    await wait_for(recorded, message="stats not flushed")
    await stats.close()


async def test_worker_hooks_record_totals_by_task(
    make_client: Callable[..., QueueClient],
    make_worker: Callable[..., Worker],
    registry: TaskRegistry,
    stats: StatsHooks,
    redis: Redis,
    settings: Settings,
) -> None:
    await _run_jobs(make_client(), make_worker, registry, stats)

    totals = await read_totals(redis, settings.prefix, settings.queue)

    assert (totals["nap"].completed, totals["nap"].failed, totals["nap"].retried) == (3, 0, 0)
    assert (totals["flaky"].completed, totals["flaky"].failed, totals["flaky"].retried) == (
        0,
        2,
        2,
    )
    nap_run = dict(totals["nap"].run.cumulative())
    assert nap_run["+Inf"] == 3
    assert nap_run["0.025"] == 0  # every nap ran 30 ms or more
    assert nap_run["0.25"] == 3
    assert totals["nap"].run.sum_s >= 0.09
    assert dict(totals["flaky"].wait.cumulative())["+Inf"] == 4  # one wait per attempt


async def test_history_holds_per_second_throughput_and_latency(
    make_client: Callable[..., QueueClient],
    make_worker: Callable[..., Worker],
    registry: TaskRegistry,
    stats: StatsHooks,
    redis: Redis,
    settings: Settings,
) -> None:
    await _run_jobs(make_client(), make_worker, registry, stats)

    points = await read_history(
        redis, settings.prefix, settings.queue, minutes=1, now=time.time() + 1
    )

    assert len(points) == 60
    assert sum(p.completed for p in points) == 3
    assert sum(p.failed for p in points) == 2
    assert sum(p.retried for p in points) == 2
    timed = [p for p in points if p.run_ms is not None]
    assert timed
    assert all(p.wait_ms is not None and p.wait_ms >= 0 for p in timed)


async def test_history_is_summed_into_wider_steps(redis: Redis, settings: Settings) -> None:
    now = 1_800_000_000.0  # a fixed clock: 10 events at second 0..9 of a minute, 5 at 30
    clock_value = [now]
    stats = StatsHooks(redis, prefix=settings.prefix, clock=lambda: clock_value[0])
    for second in range(10):
        clock_value[0] = now + second
        stats.job_completed(_event(settings.queue, run_ms=100))
    clock_value[0] = now + 30
    for _ in range(5):
        stats.job_failed(_event(settings.queue, run_ms=300))
    assert await stats.flush()

    points = await read_history(
        redis, settings.prefix, settings.queue, minutes=1, step_s=10, now=now + 60
    )

    assert [p.t for p in points] == [int(now) + 10 * i for i in range(6)]
    assert [p.completed for p in points] == [1.0, 0, 0, 0, 0, 0]
    assert [p.failed for p in points] == [0, 0, 0, 0.5, 0, 0]
    assert points[0].run_ms == 100
    assert points[3].run_ms == 300
    assert points[1].run_ms is None


async def test_nothing_reaches_redis_until_the_flush(redis: Redis, settings: Settings) -> None:
    stats = StatsHooks(redis, prefix=settings.prefix)
    for _ in range(500):
        stats.job_completed(_event(settings.queue))
    assert await redis.exists(totals_key(settings.prefix, settings.queue)) == 0

    assert await stats.flush()

    totals = await read_totals(redis, settings.prefix, settings.queue)
    assert totals["nap"].completed == 500


async def test_history_keys_expire_after_the_retention(redis: Redis, settings: Settings) -> None:
    stats = StatsHooks(redis, prefix=settings.prefix, history_minutes=5, clock=lambda: 600.0)
    stats.job_completed(_event(settings.queue))
    await stats.flush()

    ttl = await redis.ttl(minute_key(settings.prefix, settings.queue, 600))

    assert 5 * 60 < ttl <= 5 * 60 + 120
    assert await redis.ttl(totals_key(settings.prefix, settings.queue)) == -1


async def test_unknown_task_names_share_one_label(
    redis: Redis, settings: Settings, registry: TaskRegistry
) -> None:
    stats = StatsHooks(redis, prefix=settings.prefix, task_names=registry.names())
    for name in ("made-up-1", "made-up-2", "nap"):
        stats.job_failed(_event(settings.queue, name=name))
    await stats.flush()

    totals = await read_totals(redis, settings.prefix, settings.queue)

    assert set(totals) == {"nap", UNKNOWN_TASK}
    assert totals[UNKNOWN_TASK].failed == 2


async def test_a_failed_flush_keeps_the_counts_for_the_next(
    redis: Redis, settings: Settings
) -> None:
    dead = connect("redis://127.0.0.1:1", timeout_s=0.5)  # nothing listens on port 1
    stats = StatsHooks(dead, prefix=settings.prefix)
    stats.job_completed(_event(settings.queue))
    try:
        assert await stats.flush() is False
    finally:
        await dead.aclose()
    stats.job_completed(_event(settings.queue))
    stats.redis = redis

    assert await stats.flush() is True

    assert (await read_totals(redis, settings.prefix, settings.queue))["nap"].completed == 2


# --- /metrics ---------------------------------------------------------------------------------
def _samples(text: str) -> dict[str, list[Sample]]:
    families: dict[str, list[Sample]] = {}
    for family in text_string_to_metric_families(text):
        families[family.name] = list(family.samples)
    return families


def _value(samples: list[Sample], name: str, **labels: str) -> float:
    found = [
        s.value
        for s in samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    assert len(found) == 1, (name, labels, found)
    return found[0]


async def test_metrics_text_parses_and_matches_redis(
    make_client: Callable[..., QueueClient],
    make_worker: Callable[..., Worker],
    registry: TaskRegistry,
    stats: StatsHooks,
    settings: Settings,
) -> None:
    client = make_client()
    await _run_jobs(client, make_worker, registry, stats)
    await client.enqueue_many([JobSpec("nap", {}, {"delay": 60_000}) for _ in range(4)])
    q = settings.queue

    async with serve_monitor(settings) as http:
        reply = await http.get("/metrics")
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith("text/plain")

        async def one_worker() -> dict[str, list[Sample]]:
            text = (await http.get("/metrics")).text
            families = _samples(text)
            ok = _value(families["conveyor_workers"], "conveyor_workers", queue=q) == 1
            return families if ok else {}

        families = await wait_for(one_worker, message="worker not counted")

    depth = families["conveyor_queue_jobs"]
    assert _value(depth, "conveyor_queue_jobs", queue=q, state="completed") == 3
    assert _value(depth, "conveyor_queue_jobs", queue=q, state="failed") == 2
    assert _value(depth, "conveyor_queue_jobs", queue=q, state="delayed") == 4
    assert _value(depth, "conveyor_queue_jobs", queue=q, state="waiting") == 0
    assert _value(families["conveyor_queue_paused"], "conveyor_queue_paused", queue=q) == 0

    done = families["conveyor_jobs_completed"]
    assert _value(done, "conveyor_jobs_completed_total", queue=q, task="nap") == 3
    failed = families["conveyor_jobs_failed"]
    assert _value(failed, "conveyor_jobs_failed_total", queue=q, task="flaky") == 2
    retried = families["conveyor_jobs_retried"]
    assert _value(retried, "conveyor_jobs_retried_total", queue=q, task="flaky") == 2

    run = families["conveyor_job_run_seconds"]
    labels: dict[str, Any] = {"queue": q, "task": "nap"}
    assert _value(run, "conveyor_job_run_seconds_count", **labels) == 3
    assert _value(run, "conveyor_job_run_seconds_bucket", le="+Inf", **labels) == 3
    assert _value(run, "conveyor_job_run_seconds_sum", **labels) >= 0.09
    buckets = [s for s in run if s.name.endswith("_bucket") and s.labels["task"] == "nap"]
    values = [s.value for s in buckets]
    assert values == sorted(values)  # cumulative
    wait = families["conveyor_job_wait_seconds"]
    assert _value(wait, "conveyor_job_wait_seconds_count", queue=q, task="flaky") == 4


async def test_history_survives_a_monitor_restart(
    make_client: Callable[..., QueueClient],
    make_worker: Callable[..., Worker],
    registry: TaskRegistry,
    stats: StatsHooks,
    settings: Settings,
) -> None:
    await _run_jobs(make_client(), make_worker, registry, stats)
    url = f"/api/queues/{settings.queue}/history?minutes=5"

    async with serve_monitor(settings) as first:
        before = (await first.get(url)).json()
    async with serve_monitor(settings) as second:
        after = (await second.get(url)).json()

    def completed(history: dict[str, Any]) -> float:
        return sum(p["completed"] * history["step_s"] for p in history["points"])

    # the current second is left out of a history; both monitors see all 3 once it is past
    assert completed(before) <= 3
    assert completed(after) >= completed(before)
    async with serve_monitor(settings) as third:

        async def all_three() -> bool:
            return completed((await third.get(url)).json()) == 3

        await wait_for(all_three, timeout=5, message="history lost")
    assert before["step_s"] == 1
    assert len(before["points"]) == 300
