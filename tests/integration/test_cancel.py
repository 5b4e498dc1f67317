"""Cancelling jobs from QueueClient with a real worker: before they run, while an async or a
sync handler runs, after a crash, and what is refused."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import BaseModel
from redis.asyncio import Redis

from conveyor._bullmq.cancel import CANCEL_FIELD, CancelOutcome
from conveyor.client import QueueClient
from conveyor.errors import JobNotFoundError, JobOptionsError, JobStateError
from conveyor.jobs import JobState
from conveyor.observability.stats import read_totals
from conveyor.registry import JobContext, TaskRegistry
from conveyor.testing import wait_for, wait_for_state
from conveyor.worker import Worker


class Empty(BaseModel):
    pass


class Seen:
    """What the handlers saw, shared with the test."""

    def __init__(self) -> None:
        self.started: dict[str, asyncio.Event] = {}
        self.cancelled_error: list[str] = []
        self.sync_cancelled = threading.Event()
        self.runs: list[str] = []

    def event(self, job_id: str) -> asyncio.Event:
        return self.started.setdefault(job_id, asyncio.Event())


@pytest.fixture
def seen() -> Seen:
    return Seen()


@pytest.fixture
def registry(seen: Seen) -> TaskRegistry:
    registry = TaskRegistry()

    @registry.task("sleepy", retries=3)
    async def sleepy(payload: Empty, ctx: JobContext) -> str:
        seen.runs.append(ctx.job_id)
        seen.event(ctx.job_id).set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            seen.cancelled_error.append(ctx.job_id)
            raise
        return "slept"

    @registry.task("poller", retries=3)
    def poller(payload: Empty, ctx: JobContext) -> str:
        seen.runs.append(ctx.job_id)
        deadline = time.monotonic() + 30
        while not ctx.cancelled and time.monotonic() < deadline:
            time.sleep(0.01)
        if ctx.cancelled:
            seen.sync_cancelled.set()
        return "polled"

    @registry.task("quick")
    async def quick(payload: Empty, ctx: JobContext) -> str:
        seen.runs.append(ctx.job_id)
        return "done"

    return registry


@pytest.fixture
def client(make_client: Callable[..., QueueClient], registry: TaskRegistry) -> QueueClient:
    return make_client(registry)


async def cancelled_total(client: QueueClient, task: str) -> float:
    totals = await read_totals(client.redis, client.bull.prefix, client.queue)
    return totals[task].cancelled if task in totals else 0.0


async def test_a_waiting_or_delayed_job_is_failed_at_once_and_never_runs(
    client: QueueClient, registry: TaskRegistry, make_worker: Callable[..., Worker], seen: Seen
) -> None:
    waiting = await client.enqueue("quick", {})
    delayed = await client.enqueue("quick", {}, {"delay": 60_000})
    result = await client.cancel(waiting, "not needed", by="tester")
    assert (result.outcome, result.state) == (CancelOutcome.CANCELLED, JobState.WAITING)
    assert (await client.cancel(delayed)).state is JobState.DELAYED
    view = await client.get_job(waiting)
    assert view.state is JobState.FAILED
    assert view.info.failed_reason == "JobCancelled: cancelled by tester: not needed"
    record = await client.failure_record(waiting)
    assert record is not None
    assert record["error"] == view.info.failed_reason
    assert record["name"] == "quick"
    # Idempotent, and counted once per job.
    again = await client.cancel(waiting, "twice")
    assert (again.outcome, again.state) == (CancelOutcome.DONE, JobState.FAILED)
    assert await cancelled_total(client, "quick") == 2
    make_worker(registry)
    other = await client.enqueue("quick", {})
    await wait_for_state(client, other, JobState.COMPLETED)
    assert seen.runs == [other]
    # A retry runs it again: the cancel request goes with the retry.
    await client.retry(waiting)
    await wait_for_state(client, waiting, JobState.COMPLETED)


async def test_a_running_async_job_gets_cancelled_error_and_fails_without_retry(
    client: QueueClient, registry: TaskRegistry, make_worker: Callable[..., Worker], seen: Seen
) -> None:
    make_worker(registry)
    job_id = await client.enqueue("sleepy", {})
    await wait_for(lambda: job_id in seen.started and seen.started[job_id].is_set())
    asked = time.monotonic()
    result = await client.cancel(job_id, "user pressed stop", by="alice")
    assert result.outcome is CancelOutcome.MARKED
    assert result.stopping
    assert (await client.cancel(job_id)).outcome is CancelOutcome.PENDING
    view = await wait_for_state(client, job_id, JobState.FAILED, timeout=5)
    assert time.monotonic() - asked < 1.0
    assert seen.cancelled_error == [job_id]
    assert view.info.failed_reason == "JobCancelled: cancelled by alice: user pressed stop"
    assert view.info.attempts_made == 1  # 4 attempts allowed; a cancel is not retried
    record = await client.failure_record(job_id)
    assert record is not None
    assert "CancelledError" in record["stack"]  # where the handler was stopped
    assert await client.redis.exists(client.bull.cancel_mark(job_id)) == 0
    assert await cancelled_total(client, "sleepy") == 1
    # The worker goes on with other jobs.
    after = await client.enqueue("quick", {})
    await wait_for_state(client, after, JobState.COMPLETED)


async def test_a_sync_handler_polls_ctx_cancelled(
    client: QueueClient, registry: TaskRegistry, make_worker: Callable[..., Worker], seen: Seen
) -> None:
    make_worker(registry)
    job_id = await client.enqueue("poller", {})
    await wait_for(lambda: job_id in seen.runs)
    assert (await client.cancel(job_id, "enough")).outcome is CancelOutcome.MARKED
    view = await wait_for_state(client, job_id, JobState.FAILED, timeout=5)
    assert view.info.failed_reason is not None
    assert view.info.failed_reason.endswith(": enough")
    await wait_for(seen.sync_cancelled.is_set, timeout=5)


async def test_a_cancelled_job_taken_again_fails_without_running(
    client: QueueClient, registry: TaskRegistry, make_worker: Callable[..., Worker], seen: Seen
) -> None:
    job_id = await client.enqueue("quick", {})
    # A worker took the job and died before it saw the cancel: the stalled check puts the
    # job back (here: BullMQ's own move back to wait, which that check also ends with).
    taken = await client.bull.move_to_active("dead-worker:1", 30_000)
    assert taken.job is not None
    assert taken.job.id == job_id
    assert (await client.cancel(job_id, "stop")).outcome is CancelOutcome.MARKED
    await client.bull.release_to_wait(job_id, "dead-worker:1")
    make_worker(registry)
    view = await wait_for_state(client, job_id, JobState.FAILED)
    assert seen.runs == []
    assert view.info.failed_reason is not None
    assert view.info.failed_reason.startswith("JobCancelled: cancelled by ")
    assert view.info.failed_reason.endswith(": stop")
    assert await cancelled_total(client, "quick") == 1


async def test_a_stale_cancel_request_left_by_another_tool_is_ignored(
    client: QueueClient, registry: TaskRegistry, make_worker: Callable[..., Worker], seen: Seen
) -> None:
    job_id = await client.enqueue("quick", {})
    # As after Node's job.retry() of a cancelled job: the field stays, the attempts are reset.
    await client.redis.hset(client.bull.job_key(job_id), CANCEL_FIELD, '{"by": "x"}')
    make_worker(registry)
    await wait_for_state(client, job_id, JobState.COMPLETED)
    assert seen.runs == [job_id]
    assert not await client.redis.hexists(client.bull.job_key(job_id), CANCEL_FIELD)


@pytest.mark.parametrize(("reason", "by"), [("x" * 1001, None), (None, "y" * 201), (5, None)])
async def test_refusals_write_nothing(
    client: QueueClient, redis: Redis, reason: Any, by: str | None
) -> None:
    job_id = await client.enqueue("quick", {})
    with pytest.raises(JobOptionsError):
        await client.cancel(job_id, reason, by=by)
    assert await client.get_state(job_id) is JobState.WAITING
    with pytest.raises(JobNotFoundError):
        await client.cancel("no-such-job")
    with pytest.raises(JobNotFoundError):
        await client.cancel("wait")  # one of the queue's own keys, never a job


async def test_a_finished_job_cannot_be_cancelled(
    client: QueueClient, registry: TaskRegistry, make_worker: Callable[..., Worker]
) -> None:
    make_worker(registry)
    job_id = await client.enqueue("quick", {})
    await wait_for_state(client, job_id, JobState.COMPLETED)
    with pytest.raises(JobStateError, match="completed"):
        await client.cancel(job_id)
    assert await client.get_state(job_id) is JobState.COMPLETED
    assert await cancelled_total(client, "quick") == 0
