"""A job whose task this worker does not know waits for one that does (a rolling deploy, two
apps on one queue): put back without counting an attempt, counted, failed only after a limit."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from redis.asyncio import Redis

from conveyor.client import QueueClient
from conveyor.config import Settings
from conveyor.hooks import HookChain
from conveyor.jobs import JobState
from conveyor.observability.logging import LoggingHooks
from conveyor.observability.metrics import QueueMetrics, render_metrics
from conveyor.observability.stats import UNKNOWN_TASK, StatsHooks, read_totals
from conveyor.registry import JobContext, TaskRegistry
from conveyor.testing import wait_for_state
from conveyor.worker import Worker
from conveyor.worker.unknown import COUNT_FIELD, SINCE_FIELD


def app(name: str) -> TaskRegistry:
    registry = TaskRegistry()

    @registry.task(name)
    async def handler(payload: dict[str, int], ctx: JobContext) -> str:
        return f"{name} ran attempt {ctx.attempt}"

    return registry


async def test_a_job_for_another_app_waits_for_it_and_runs_there(
    make_client: Callable[..., QueueClient],
    make_worker: Callable[..., Worker],
    redis: Redis,
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="conveyor.jobs")
    client = make_client(None)
    stats = StatsHooks(redis, prefix=settings.prefix, task_names=["mine"])
    mine = make_worker(app("mine"), hooks=HookChain(LoggingHooks(), stats))
    job_id = await client.enqueue("theirs", {})

    # The worker that does not know it puts it back: delayed, no attempt used, nothing failed.
    view = await wait_for_state(client, job_id, JobState.DELAYED)
    assert view.info.attempts_made == 0
    assert int(view.info.raw[COUNT_FIELD]) >= 1
    assert SINCE_FIELD in view.info.raw
    assert await client.failure_record(job_id) is None
    deferred = [r for r in caplog.records if r.getMessage() == "job_deferred"]
    assert deferred
    assert "unknown task 'theirs'" in str(deferred[0].__dict__["fields"]["reason"])

    # Counted for the monitor and /metrics.
    await stats.flush()
    totals = await read_totals(redis, settings.prefix, settings.queue)
    assert totals[UNKNOWN_TASK].deferred >= 1
    metrics = render_metrics([QueueMetrics(settings.queue, {}, totals=totals)]).decode()
    assert f'conveyor_jobs_deferred_total{{queue="{settings.queue}",task="_unknown"}}' in metrics

    # A rolling deploy: the old app leaves, the one that knows the task picks it up (its first
    # attempt). With both running, each due time is a race the old app may win again, and the
    # put-back delay doubles, so how long that takes is a matter of luck (it once took > 30 s).
    mine.stop()
    make_worker(app("theirs"))
    view = await wait_for_state(client, job_id, JobState.COMPLETED, timeout=30)
    assert view.info.return_value == "theirs ran attempt 1"
    assert view.info.attempts_made == 1


async def test_it_fails_for_good_once_it_has_waited_the_limit(
    make_client: Callable[..., QueueClient],
    make_worker: Callable[..., Worker],
) -> None:
    client = make_client(None)
    make_worker(app("mine"), unknown_task_timeout_s=0.5)
    job_id = await client.enqueue("nobody-knows", {})
    view = await wait_for_state(client, job_id, JobState.FAILED, timeout=30)
    assert "unknown task 'nobody-knows'" in (view.info.failed_reason or "")
    assert view.info.attempts_made == 1  # the put-backs were not attempts
    assert int(view.info.raw[COUNT_FIELD]) >= 1
    record = await client.failure_record(job_id)
    assert record is not None
    assert "unknown task" in record["error"]


async def test_known_tasks_are_untouched(
    make_client: Callable[..., QueueClient], make_worker: Callable[..., Worker]
) -> None:
    client = make_client(None)
    make_worker(app("mine"))
    job_id = await client.enqueue("mine", {})
    view = await wait_for_state(client, job_id, JobState.COMPLETED)
    assert COUNT_FIELD not in view.info.raw
