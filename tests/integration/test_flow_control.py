"""Queue-wide limits, a worker's limiter and RateLimited, against a real Redis, in BullMQ's
format (the meta hash and limiter key that Node's BullMQ reads and writes)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from pydantic import BaseModel
from redis.asyncio import Redis

from conveyor import JobContext, QueueLimits, RateLimit, RateLimited, TaskRegistry
from conveyor.client import QueueClient
from conveyor.config import Settings
from conveyor.jobs import JobState
from conveyor.services.app_worker import apply_limit_settings
from conveyor.testing import wait_for, wait_for_state
from conveyor.worker import Worker
from tests.support.api import api_client


@pytest.fixture
async def api(settings: Settings, redis_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(settings, redis_url) as client:
        yield client


def meta_key(settings: Settings) -> str:
    return f"{settings.prefix}:{settings.queue}:meta"


async def test_limits_are_written_where_node_bullmq_keeps_them(
    queue: QueueClient, redis: Redis, settings: Settings
) -> None:
    limits = await queue.set_limits(QueueLimits(RateLimit(5, 1000), concurrency=2))
    assert limits == QueueLimits(RateLimit(5, 1000), concurrency=2)
    meta = await redis.hgetall(meta_key(settings))
    # Node: setGlobalRateLimit(5, 1000) + setGlobalConcurrency(2)
    assert {k: meta.get(k) for k in ("max", "duration", "concurrency")} == {
        "max": "5",
        "duration": "1000",
        "concurrency": "2",
    }
    assert await queue.set_limits(QueueLimits()) == QueueLimits()
    meta = await redis.hgetall(meta_key(settings))
    assert not {"max", "duration", "concurrency"} & set(meta)


async def test_put_and_get_limits_over_http(
    api: httpx.AsyncClient, redis: Redis, settings: Settings
) -> None:
    url = f"/queues/{settings.queue}/limits"
    empty = await api.get(url)
    assert empty.status_code == 200
    assert empty.json() | {"active": 0} == {
        "queue": settings.queue,
        "rate": None,
        "concurrency": None,
        "active": 0,
        "limited_ms": 0,
        "held": False,
        "maxed": False,
    }
    put = await api.put(url, json={"rate": {"max": 5, "duration_ms": 1000}, "concurrency": 2})
    assert put.status_code == 200, put.text
    assert put.json()["rate"] == {"max": 5, "duration_ms": 1000}
    assert put.json()["concurrency"] == 2
    assert (await api.get(url)).json()["rate"] == {"max": 5, "duration_ms": 1000}
    assert await redis.hmget(meta_key(settings), ["max", "duration", "concurrency"]) == [
        "5",
        "1000",
        "2",
    ]
    cleared = await api.put(url, json={"rate": None, "concurrency": 2})
    assert cleared.json()["rate"] is None
    assert cleared.json()["concurrency"] == 2
    assert await redis.hmget(meta_key(settings), ["max", "duration"]) == [None, None]
    other = await api.get("/queues/someOtherQueue/limits")
    assert other.status_code == 404


BAD_BODIES: list[tuple[str, Any]] = [
    ("max 0", {"rate": {"max": 0, "duration_ms": 1000}, "concurrency": None}),
    ("negative duration", {"rate": {"max": 5, "duration_ms": -1}, "concurrency": None}),
    ("duration over a week", {"rate": {"max": 5, "duration_ms": 604_800_001}, "concurrency": 1}),
    ("float max", {"rate": {"max": 1.5, "duration_ms": 1000}, "concurrency": None}),
    ("string max", {"rate": {"max": "5", "duration_ms": 1000}, "concurrency": None}),
    ("bool concurrency", {"rate": None, "concurrency": True}),
    ("concurrency 0", {"rate": None, "concurrency": 0}),
    ("missing concurrency", {"rate": None}),
    ("missing duration", {"rate": {"max": 5}, "concurrency": None}),
    ("unknown field", {"rate": None, "concurrency": 3, "burst": 9}),
    ("not an object", [1, 2]),
]


@pytest.mark.parametrize("body", [b for _, b in BAD_BODIES], ids=[n for n, _ in BAD_BODIES])
async def test_bad_limits_are_422_and_write_nothing(
    api: httpx.AsyncClient, redis: Redis, settings: Settings, body: Any
) -> None:
    url = f"/queues/{settings.queue}/limits"
    before = await api.put(url, json={"rate": {"max": 7, "duration_ms": 700}, "concurrency": 3})
    assert before.status_code == 200
    meta_before = await redis.hgetall(meta_key(settings))
    response = await api.put(url, json=body)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["errors"], response.json()
    assert await redis.hgetall(meta_key(settings)) == meta_before


class Probe(BaseModel):
    n: int = 0


def probe_registry(starts: list[float], hold_s: float | None = None) -> TaskRegistry:
    registry = TaskRegistry()
    held: set[str] = set()

    @registry.task("probe")
    async def probe(payload: Probe, ctx: JobContext) -> int:
        if hold_s is not None and ctx.job_id not in held:
            held.add(ctx.job_id)
            raise RateLimited(hold_s)
        starts.append(time.monotonic())
        return ctx.attempt

    return registry


async def test_rate_limited_holds_the_queue_and_spends_no_attempt(
    queue: QueueClient, make_worker: Callable[..., Worker]
) -> None:
    starts: list[float] = []
    # The first job asks for a 0.8 s hold; a second worker (no limiter, no queue-wide rate
    # limit), started during the hold, must obey it too.
    make_worker(probe_registry(starts, hold_s=0.8), concurrency=1)
    first = await queue.enqueue("probe", {"n": 1})
    held_at = await wait_for(lambda: _held(queue), 5)
    make_worker(probe_registry(starts), concurrency=1)
    others = [await queue.enqueue("probe", {"n": n}) for n in range(2, 5)]
    view = await wait_for_state(queue, first, JobState.COMPLETED, 10)
    assert view.info.attempts_made == 1  # the hold cost no attempt: completed on its first
    for job_id in others:
        await wait_for_state(queue, job_id, JobState.COMPLETED, 10)
    # nothing started while the hold lasted (0.8 s from when the handler raised)
    assert len(starts) == 4
    assert min(starts) - held_at >= 0.6, (min(starts) - held_at, starts)


async def _held(queue: QueueClient) -> float | None:
    flow = await queue.flow_state()
    return time.monotonic() if flow.held and flow.limited_ms > 0 else None


def test_rate_limited_refuses_a_hold_it_cannot_keep() -> None:
    from conveyor import LimitError

    for bad in (0, -1, float("nan"), float("inf"), 8 * 24 * 3600):
        with pytest.raises(LimitError):
            RateLimited(bad)


async def test_worker_limiters_share_bullmqs_limiter_key(
    queue: QueueClient, make_worker: Callable[..., Worker]
) -> None:
    starts: list[float] = []
    registry = probe_registry(starts)
    for _ in range(2):
        make_worker(registry, concurrency=5, limiter=RateLimit(3, 500))
    ids = [await queue.enqueue("probe", {"n": n}) for n in range(9)]
    for job_id in ids:
        await wait_for_state(queue, job_id, JobState.COMPLETED, 10)
    starts.sort()
    # 3 per 500 ms window across both workers: the 4th start is a window after the 1st
    for i in range(3, len(starts)):
        assert starts[i] - starts[i - 3] >= 0.45, [round(s - starts[0], 3) for s in starts]


async def test_settings_write_the_queue_limits_at_start(
    queue: QueueClient, make_worker: Callable[..., Worker], settings: Settings
) -> None:
    await queue.set_limits(QueueLimits(RateLimit(9, 900), concurrency=4))
    worker = make_worker(probe_registry([]))
    only_rate = settings.model_copy(update={"rate_limit": "100/s"})
    await apply_limit_settings(worker, only_rate)
    assert await queue.get_limits() == QueueLimits(RateLimit(100, 1000), concurrency=4)
    removed = settings.model_copy(update={"queue_concurrency": "none"})
    await apply_limit_settings(worker, removed)
    assert await queue.get_limits() == QueueLimits(RateLimit(100, 1000), concurrency=None)
    await asyncio.sleep(0)


# --- per-task limits ----------------------------------------------------------------------
class Nap(BaseModel):
    ms: int = 0


def limited_registry(log: dict[str, Any]) -> TaskRegistry:
    """``capped`` (concurrency 2), ``paced`` (4 per second) and ``free`` (no limit); each
    records its starts and how many of its runs overlapped at most."""
    registry = TaskRegistry()
    log.update(running=0, most=0, starts={"capped": [], "paced": [], "free": []})

    async def run(name: str, payload: Nap) -> None:
        log["starts"][name].append(time.monotonic())
        if name == "capped":
            log["running"] += 1
            log["most"] = max(log["most"], log["running"])
        await asyncio.sleep(payload.ms / 1000)
        if name == "capped":
            log["running"] -= 1

    @registry.task("capped", concurrency=2)
    async def capped(payload: Nap, ctx: JobContext) -> None:
        await run("capped", payload)

    @registry.task("paced", rate_limit="4/s")
    async def paced(payload: Nap, ctx: JobContext) -> None:
        await run("paced", payload)

    @registry.task("free")
    async def free(payload: Nap, ctx: JobContext) -> None:
        await run("free", payload)

    return registry


async def test_a_task_concurrency_holds_across_workers_without_spending_attempts(
    queue: QueueClient, make_worker: Callable[..., Worker]
) -> None:
    log: dict[str, Any] = {}
    registry = limited_registry(log)  # one registry, two workers: one count of overlaps
    for _ in range(2):
        make_worker(registry, concurrency=5)
    capped = [await queue.enqueue("capped", {"ms": 300}) for _ in range(6)]
    free = [await queue.enqueue("free", {}) for _ in range(4)]
    started = time.monotonic()
    for job_id in free:
        await wait_for_state(queue, job_id, JobState.COMPLETED, 10)
    free_done_s = time.monotonic() - started
    for job_id in capped:
        view = await wait_for_state(queue, job_id, JobState.COMPLETED, 20)
        assert view.info.attempts_made == 1  # put-backs spent no attempt
    assert log["most"] == 2
    assert free_done_s < 1.0, "an unlimited task is not held behind a capped one"


async def test_a_task_rate_limit_holds_across_workers(
    queue: QueueClient, make_worker: Callable[..., Worker]
) -> None:
    log: dict[str, Any] = {}
    registry = limited_registry(log)
    for _ in range(2):
        make_worker(registry, concurrency=5)
    paced = [await queue.enqueue("paced", {}) for _ in range(10)]
    for job_id in paced:
        await wait_for_state(queue, job_id, JobState.COMPLETED, 20)
    starts = sorted(log["starts"]["paced"])
    assert len(starts) == 10
    for i in range(4, len(starts)):
        assert starts[i] - starts[i - 4] >= 0.95, [round(s - starts[0], 3) for s in starts]


async def test_a_capped_job_that_is_retried_takes_its_slot_again(
    queue: QueueClient, make_worker: Callable[..., Worker]
) -> None:
    """Its own id, left in the running set by the failed attempt, does not count against it."""
    registry = TaskRegistry()
    runs: list[int] = []

    @registry.task("once_flaky", concurrency=1, retries=2, backoff_delay_ms=0)
    async def once_flaky(payload: Nap, ctx: JobContext) -> int:
        runs.append(ctx.attempt)
        if ctx.attempt == 1:
            raise RuntimeError("first attempt fails")
        return ctx.attempt

    make_worker(registry, concurrency=3)
    job_id = await queue.enqueue("once_flaky", {})
    view = await wait_for_state(queue, job_id, JobState.COMPLETED, 5)
    assert runs == [1, 2]
    assert view.info.attempts_made == 2


async def test_get_tasks_shows_a_tasks_own_limits(settings: Settings, redis_url: str) -> None:
    registry = TaskRegistry()

    @registry.task("limited", rate_limit="600/m", concurrency=3)
    async def limited(payload: Nap, ctx: JobContext) -> None:
        return None

    @registry.task("unlimited")
    async def unlimited(payload: Nap, ctx: JobContext) -> None:
        return None

    async with api_client(settings, redis_url, tasks=registry) as http:
        tasks = {t["name"]: t for t in (await http.get("/tasks")).json()}
    assert (tasks["limited"]["rate_limit"], tasks["limited"]["concurrency"]) == ("600/m", 3)
    assert (tasks["unlimited"]["rate_limit"], tasks["unlimited"]["concurrency"]) == (None, None)


def test_a_bad_task_limit_fails_at_registration() -> None:
    from conveyor import LimitError

    registry = TaskRegistry()
    with pytest.raises(LimitError):
        registry.task("x", rate_limit="ten per second")
    with pytest.raises(LimitError):
        registry.task("y", concurrency=0)


# --- shown in the monitor and in /metrics -----------------------------------------------------
async def test_the_monitor_and_metrics_show_the_limits_and_when_they_hold_back(
    queue: QueueClient, settings: Settings
) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from tests.support.monitor import serve_monitor

    await queue.set_limits(QueueLimits(RateLimit(5, 1000), concurrency=2))
    async with serve_monitor(settings) as http:
        overview = (await http.get("/api/overview")).json()
        mine = next(q for q in overview["queues"] if q["name"] == settings.queue)
        assert mine["limits"] == {
            "rate": {"max": 5, "duration_ms": 1000},
            "concurrency": 2,
            "limited_ms": 0,
            "held": False,
            "maxed": False,
        }
        await queue.bull.hold(5000)  # what RateLimited(5) sets (Node: queue.rateLimit(5000))
        overview = (await http.get("/api/overview")).json()
        mine = next(q for q in overview["queues"] if q["name"] == settings.queue)
        assert mine["limits"]["held"] is True
        assert 4000 < mine["limits"]["limited_ms"] <= 5000
        text = (await http.get("/metrics")).text
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.labels.get("queue") == settings.queue
    }
    q = ("queue", settings.queue)
    assert samples[("conveyor_queue_rate_limit_max", (q,))] == 5
    assert samples[("conveyor_queue_rate_limit_window_seconds", (q,))] == 1.0
    assert samples[("conveyor_queue_concurrency_limit", (q,))] == 2
    assert samples[("conveyor_queue_held_back", (q, ("reason", "hold")))] == 1
    assert samples[("conveyor_queue_held_back", (q, ("reason", "rate")))] == 0
    assert samples[("conveyor_queue_held_back", (q, ("reason", "concurrency")))] == 0
    assert 4 < samples[("conveyor_queue_limited_seconds", (q,))] <= 5
