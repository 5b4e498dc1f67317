"""The worker's seed semantics against a real Redis: run once, retry with exponential
backoff, fail for good into BullMQ's failed set and failedJobs:{jobId}."""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import BaseModel
from redis.asyncio import Redis

from conveyor.client import QueueClient
from conveyor.jobs import JobState
from conveyor.observability.logging import LoggingHooks
from conveyor.registry import JobContext, TaskRegistry
from conveyor.testing import wait_for, wait_for_state
from conveyor.worker import Worker


class Item(BaseModel):
    n: int = 0


class Boom(Exception):
    pass


@pytest.fixture
def runs() -> dict[str, list[float]]:
    """job id -> monotonic start time of each attempt."""
    return defaultdict(list)


@pytest.fixture
def registry(runs: dict[str, list[float]]) -> TaskRegistry:
    registry = TaskRegistry()

    @registry.task("ok")
    async def ok(payload: Item, ctx: JobContext) -> dict[str, int]:
        runs[ctx.job_id].append(time.monotonic())
        return {"double": payload.n * 2}

    @registry.task("always_fail")
    async def always_fail(payload: Item, ctx: JobContext) -> None:
        runs[ctx.job_id].append(time.monotonic())
        raise Boom(f"attempt {ctx.attempt} failed")

    @registry.task("fail_twice")
    async def fail_twice(payload: Item, ctx: JobContext) -> str:
        runs[ctx.job_id].append(time.monotonic())
        if ctx.attempt <= 2:
            raise Boom("not yet")
        return "third time lucky"

    @registry.task("sync_ok")
    def sync_ok(payload: Item, ctx: JobContext) -> int:
        time.sleep(0.05)
        runs[ctx.job_id].append(time.monotonic())
        return payload.n + 1

    return registry


async def test_job_is_processed_once_and_logged(
    registry: TaskRegistry,
    make_client: Callable[..., QueueClient],
    make_worker: Callable[..., Worker],
    runs: dict[str, list[float]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="conveyor.jobs")
    client = make_client(registry)
    make_worker(registry, hooks=LoggingHooks())
    job_id = await client.enqueue("ok", {"n": 21})

    view = await wait_for_state(client, job_id, JobState.COMPLETED)
    assert view.info.return_value == {"double": 42}
    assert view.info.attempts_made == 1
    assert len(runs[job_id]) == 1
    completed = [r for r in caplog.records if r.getMessage() == "job_completed"]
    assert [r.fields["job_id"] for r in completed] == [job_id]  # type: ignore[attr-defined]
    assert completed[0].fields["attempt"] == "1/6"  # type: ignore[attr-defined]
    assert await client.failure_record(job_id) is None


async def test_always_failing_job_gets_six_attempts_with_growing_delays_then_fails(
    registry: TaskRegistry,
    make_client: Callable[..., QueueClient],
    make_worker: Callable[..., Worker],
    runs: dict[str, list[float]],
    redis: Redis,
    settings: Any,
) -> None:
    client = make_client(registry)
    make_worker(registry)
    job_id = await client.enqueue("always_fail", {"n": 1})

    view = await wait_for_state(client, job_id, JobState.FAILED, timeout=20)
    starts = runs[job_id]
    assert len(starts) == 6
    gaps_ms = [(b - a) * 1000 for a, b in itertools.pairwise(starts)]
    base = settings.backoff_delay_ms  # 20 ms in tests
    for index, gap in enumerate(gaps_ms):
        assert gap >= base * 2**index * 0.95, (index, gaps_ms)
    assert gaps_ms[-1] > gaps_ms[0] * 4, gaps_ms  # 320 ms vs 20 ms: clearly growing

    assert view.info.attempts_made == 6
    assert view.info.failed_reason == "Boom: attempt 6 failed"
    failed_ids = await redis.zrange(f"{settings.prefix}:{settings.queue}:failed", 0, -1)
    assert failed_ids == [job_id]

    record = await client.failure_record(job_id)
    assert record is not None
    assert set(record) >= {"name", "queue", "data", "error", "stack", "attempts", "failed_at"}
    assert record["name"] == "always_fail"
    assert record["queue"] == settings.queue
    assert json.loads(record["data"]) == {"n": 1}
    assert record["error"] == "Boom: attempt 6 failed"
    assert "Traceback" in record["stack"]
    assert "Boom" in record["stack"]
    assert record["attempts"] == "6"
    assert record["failed_at"].endswith("Z")
    # Not the seed's queue: the record lives in the queue's own key space.
    key = f"{settings.prefix}:{settings.queue}:conveyor:failed:{job_id}"
    assert await redis.hgetall(key) == record
    score = await redis.zscore(f"{settings.prefix}:{settings.queue}:conveyor:failed-index", key)
    assert score == pytest.approx(int(record["failed_at_ms"]))


async def test_job_failing_twice_then_succeeding_completes_on_the_third_attempt(
    registry: TaskRegistry,
    make_client: Callable[..., QueueClient],
    make_worker: Callable[..., Worker],
    runs: dict[str, list[float]],
) -> None:
    client = make_client(registry)
    make_worker(registry)
    job_id = await client.enqueue("fail_twice")
    view = await wait_for_state(client, job_id, JobState.COMPLETED)
    assert view.info.attempts_made == 3
    assert view.info.return_value == "third time lucky"
    assert len(runs[job_id]) == 3
    assert len(view.info.stacktrace) == 2
    assert await client.failure_record(job_id) is None


async def test_job_options_override_the_default_retries(
    registry: TaskRegistry,
    make_client: Callable[..., QueueClient],
    make_worker: Callable[..., Worker],
    runs: dict[str, list[float]],
) -> None:
    client = make_client(registry)
    make_worker(registry)
    job_id = await client.enqueue("always_fail", options={"attempts": 2, "backoff": 1})
    view = await wait_for_state(client, job_id, JobState.FAILED)
    assert len(runs[job_id]) == 2
    record = await client.failure_record(job_id)
    assert record is not None
    assert record["attempts"] == "2"
    assert view.info.options["backoff"] == {"type": "fixed", "delay": 1}


async def test_task_level_retry_override(
    make_client: Callable[..., QueueClient], make_worker: Callable[..., Worker]
) -> None:
    registry = TaskRegistry()
    calls: Counter[str] = Counter()

    @registry.task("fragile", retries=1, backoff_delay_ms=1)
    async def fragile(payload: Item, ctx: JobContext) -> None:
        calls[ctx.job_id] += 1
        raise Boom("no")

    client = make_client(registry)
    make_worker(registry)
    job_id = await client.enqueue("fragile")
    await wait_for_state(client, job_id, JobState.FAILED)
    assert calls[job_id] == 2


async def test_sync_handlers_run_in_threads(
    registry: TaskRegistry,
    make_client: Callable[..., QueueClient],
    make_worker: Callable[..., Worker],
) -> None:
    client = make_client(registry)
    make_worker(registry, concurrency=5)
    ids = [await client.enqueue("sync_ok", {"n": n}) for n in range(10)]
    for n, job_id in enumerate(ids):
        view = await wait_for_state(client, job_id, JobState.COMPLETED)
        assert view.info.return_value == n + 1


async def test_job_longer_than_its_lock_keeps_it_and_runs_once(
    make_client: Callable[..., QueueClient], make_worker: Callable[..., Worker]
) -> None:
    registry = TaskRegistry()
    calls: Counter[str] = Counter()

    @registry.task("long")
    async def long(payload: Item, ctx: JobContext) -> None:
        calls[ctx.job_id] += 1
        await asyncio.sleep(1.5)

    client = make_client(registry)
    # Two workers; the lock (300 ms) is far shorter than the job, renewed every 150 ms, and
    # both run the stalled check every 300 ms: without renewal the job would run twice.
    for _ in range(2):
        make_worker(registry, lock_duration_ms=300, stalled_interval_ms=300)
    job_id = await client.enqueue("long")
    await wait_for_state(client, job_id, JobState.COMPLETED)
    assert calls[job_id] == 1


async def test_timeout_ends_the_attempt_and_follows_the_retry_policy(
    make_client: Callable[..., QueueClient], make_worker: Callable[..., Worker]
) -> None:
    registry = TaskRegistry()

    @registry.task("hang", timeout_s=0.1)
    async def hang(payload: Item, ctx: JobContext) -> None:
        await asyncio.sleep(3600)

    @registry.task("ok")
    async def ok(payload: Item, ctx: JobContext) -> str:
        return "fine"

    client = make_client(registry)
    make_worker(registry)
    hung = await client.enqueue("hang", options={"attempts": 2, "backoff": 1})
    fine = await client.enqueue("ok")
    view = await wait_for_state(client, hung, JobState.FAILED)
    assert view.info.attempts_made == 2
    assert view.info.failed_reason == "TimeoutError: attempt timed out after 0.1 s"
    assert (await client.get_job(fine)).state is JobState.COMPLETED


async def test_a_bad_payload_in_the_queue_fails_for_good(
    registry: TaskRegistry,
    make_client: Callable[..., QueueClient],
    make_worker: Callable[..., Worker],
) -> None:
    """Jobs that bypass validation (a Node producer, say) fail at once, with a record. (A job
    of an unknown task waits for a worker that knows it: test_unknown_tasks.py.)"""
    raw = make_client(None)  # no registry: nothing is checked at enqueue
    bad = await raw.enqueue("ok", {"n": "not a number"})
    make_worker(registry)
    for job_id, fragment in ((bad, "invalid payload"),):
        view = await wait_for_state(raw, job_id, JobState.FAILED)
        assert view.info.attempts_made == 1
        assert fragment in (view.info.failed_reason or "")
        record = await raw.failure_record(job_id)
        assert record is not None
        assert fragment in record["error"]


async def test_graceful_stop_finishes_active_jobs(
    make_client: Callable[..., QueueClient], make_worker: Callable[..., Worker]
) -> None:
    registry = TaskRegistry()
    started = asyncio.Event()

    @registry.task("slow")
    async def slow(payload: Item, ctx: JobContext) -> str:
        started.set()
        await asyncio.sleep(0.5)
        return "done"

    client = make_client(registry)
    worker = make_worker(registry)
    job_id = await client.enqueue("slow")
    await asyncio.wait_for(started.wait(), 10)
    worker.stop()
    await wait_for(lambda: not worker.running)
    view = await client.get_job(job_id)
    assert view.state is JobState.COMPLETED
    assert view.info.return_value == "done"


async def test_jobs_still_running_after_the_grace_go_back_to_the_queue(
    make_client: Callable[..., QueueClient], make_worker: Callable[..., Worker]
) -> None:
    registry = TaskRegistry()
    started = asyncio.Event()

    @registry.task("endless")
    async def endless(payload: Item, ctx: JobContext) -> None:
        started.set()
        await asyncio.sleep(3600)

    client = make_client(registry)
    worker = make_worker(registry, grace_s=0.2)
    job_id = await client.enqueue("endless")
    await asyncio.wait_for(started.wait(), 10)
    worker.stop()
    await wait_for(lambda: not worker.running)
    view = await client.get_job(job_id)
    assert view.state is JobState.WAITING
    assert view.info.failed_reason is None
    assert await client.failure_record(job_id) is None


async def test_a_delayed_job_starts_on_time_not_on_redis_clock_tick(
    redis: Redis,
    registry: TaskRegistry,
    make_client: Callable[..., QueueClient],
    make_worker: Callable[..., Worker],
    runs: dict[str, list[float]],
) -> None:
    """Redis ends a blocking wait only on its clock tick (1 s at hz 1); the worker ends its
    wait itself at the due time. The margin is wide on purpose: this proves who woke the
    worker, not how fast (that is bench/, --only timeliness)."""
    hz = str((await redis.config_get("hz"))["hz"])
    await redis.config_set("hz", 1)
    try:
        client = make_client(registry)
        make_worker(registry, drain_delay_s=5.0)
        await asyncio.sleep(0.3)  # the worker is idle, blocked on the marker
        delays = []
        for _ in range(3):
            enqueued = time.monotonic()
            job_id = await client.enqueue("ok", options={"delay": 150})
            # Watch the handler, not Redis: any command would wake Redis and end the wait.
            await wait_for(functools.partial(runs.get, job_id), timeout=5)
            delays.append(runs[job_id][0] - enqueued - 0.150)
        assert min(delays) >= -0.002  # never early
        assert max(delays) < 0.6  # Redis's own tick would be up to 1 s late
    finally:
        await redis.config_set("hz", hz)


async def test_the_worker_connection_is_named_as_bullmq_names_it(
    redis: Redis, registry: TaskRegistry, make_worker: Callable[..., Worker]
) -> None:
    worker = make_worker(registry)
    expected = worker.bull.client_name(worker.options.name)

    async def named() -> bool:
        return expected in [str(c.get("name")) for c in await redis.client_list()]

    assert await wait_for(named, message="the worker's connection is not in CLIENT LIST")


async def test_text_redis_cannot_store_fails_the_attempt_and_is_recorded(
    make_client: Callable[..., QueueClient], make_worker: Callable[..., Worker]
) -> None:
    """A lone surrogate (an undecodable file name, say) in a result fails the attempt like a
    handler error; in an error message it is escaped so the failure record is written."""
    registry = TaskRegistry()

    @registry.task("bad_result", retries=0)
    async def bad_result(payload: Item, ctx: JobContext) -> str:
        return "file-\udc80.txt"

    @registry.task("bad_error", retries=0)
    async def bad_error(payload: Item, ctx: JobContext) -> None:
        raise Boom("cannot open file-\udc80.txt")

    client = make_client(registry)
    make_worker(registry)
    result_job = await client.enqueue("bad_result")
    error_job = await client.enqueue("bad_error")
    for job_id in (result_job, error_job):
        view = await wait_for_state(client, job_id, JobState.FAILED)
        record = await client.failure_record(job_id)
        assert record is not None
        assert view.info.failed_reason
    assert "UnicodeEncodeError" in str((await client.get_job(result_job)).info.failed_reason)
    assert "file-\\udc80.txt" in str((await client.get_job(error_job)).info.failed_reason)
