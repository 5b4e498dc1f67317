"""QueueClient against a real Redis: what is enqueued, what is refused, and job management."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from pydantic import BaseModel
from redis.asyncio import Redis

from conveyor.client import JobSpec, QueueClient
from conveyor.config import Settings
from conveyor.errors import (
    JobNotFoundError,
    JobOptionsError,
    JobStateError,
    PayloadValidationError,
    UnknownTaskError,
)
from conveyor.jobs import JobState
from conveyor.registry import JobContext, TaskRegistry
from conveyor.testing import wait_for, wait_for_state
from conveyor.worker import Worker


class Email(BaseModel):
    to: str


@pytest.fixture
def registry() -> TaskRegistry:
    registry = TaskRegistry()

    @registry.task("email")
    async def email(payload: Email, ctx: JobContext) -> str:
        return payload.to

    @registry.task("explode")
    async def explode(payload: Email, ctx: JobContext) -> None:
        raise RuntimeError("kaboom")

    return registry


async def total(client: QueueClient) -> int:
    return sum((await client.counts()).values())


async def test_enqueue_stores_a_bullmq_job(
    registry: TaskRegistry,
    make_client: Callable[..., QueueClient],
    redis: Redis,
    settings: Settings,
) -> None:
    client = make_client(registry)
    job_id = await client.enqueue("email", {"to": "a@example.com"})
    raw = await redis.hgetall(f"{settings.prefix}:{settings.queue}:{job_id}")
    assert raw["name"] == "email"
    assert raw["data"] == '{"to":"a@example.com"}'
    assert '"attempts":6' in raw["opts"]
    assert await redis.lrange(f"{settings.prefix}:{settings.queue}:wait", 0, -1) == [job_id]
    view = await client.get_job(job_id)
    assert view.state is JobState.WAITING
    assert view.info.data == {"to": "a@example.com"}


@pytest.mark.parametrize(
    ("name", "data", "options", "error"),
    [
        ("email", {"to": 5}, None, PayloadValidationError),
        ("email", {}, None, PayloadValidationError),
        ("nope", {"to": "x"}, None, UnknownTaskError),
        ("email", {"to": "x"}, {"delay": -5}, JobOptionsError),
        ("email", {"to": "x"}, {"bogus": 1}, JobOptionsError),
        ("email", {"to": float("nan")}, None, PayloadValidationError),
    ],
)
async def test_bad_input_enqueues_nothing(
    registry: TaskRegistry,
    make_client: Callable[..., QueueClient],
    name: str,
    data: object,
    options: dict[str, object] | None,
    error: type[Exception],
) -> None:
    client = make_client(registry)
    with pytest.raises(error):
        await client.enqueue(name, data, options)
    assert await total(client) == 0


async def test_bulk_is_all_or_nothing(
    registry: TaskRegistry, make_client: Callable[..., QueueClient]
) -> None:
    client = make_client(registry)
    good = JobSpec("email", {"to": "x@example.com"})
    with pytest.raises(PayloadValidationError):
        await client.enqueue_many([good, good, JobSpec("email", {"to": None})])
    assert await total(client) == 0
    ids = await client.enqueue_many([good] * 50)
    assert len(set(ids)) == 50
    assert (await client.counts())[JobState.WAITING] == 50


async def test_same_job_id_is_enqueued_once(
    registry: TaskRegistry, make_client: Callable[..., QueueClient]
) -> None:
    client = make_client(registry)
    first = await client.enqueue("email", {"to": "x"}, {"jobId": "order-42"})
    second = await client.enqueue("email", {"to": "y"}, {"jobId": "order-42"})
    assert first == second == "order-42"
    assert await total(client) == 1
    assert (await client.get_job("order-42")).info.data == {"to": "x"}


async def test_delayed_and_prioritized_states(
    registry: TaskRegistry, make_client: Callable[..., QueueClient]
) -> None:
    client = make_client(registry)
    delayed = await client.enqueue("email", {"to": "x"}, {"delay": 60_000})
    urgent = await client.enqueue("email", {"to": "x"}, {"priority": 1})
    assert (await client.get_job(delayed)).state is JobState.DELAYED
    assert (await client.get_job(urgent)).state is JobState.PRIORITIZED


async def test_unknown_job_raises_not_found(
    make_client: Callable[..., QueueClient],
) -> None:
    client = make_client()
    with pytest.raises(JobNotFoundError):
        await client.get_job("missing")
    with pytest.raises(JobNotFoundError):
        await client.retry("missing")
    with pytest.raises(JobNotFoundError):
        await client.remove("missing")


async def test_retry_remove_and_the_failure_record(
    registry: TaskRegistry,
    make_client: Callable[..., QueueClient],
    make_worker: Callable[..., Worker],
    redis: Redis,
) -> None:
    client = make_client(registry)
    job_id = await client.enqueue("explode", {"to": "x"}, {"attempts": 1})
    with pytest.raises(JobStateError):
        await client.retry(job_id)  # still waiting
    worker = make_worker(registry)
    await wait_for_state(client, job_id, JobState.FAILED)
    assert await client.failure_record(job_id) is not None
    keys = client.records.keys
    assert await redis.zscore(keys.index, keys.record(job_id)) is not None

    worker.stop()
    await wait_for(lambda: not worker.running)
    await client.retry(job_id)
    view = await client.get_job(job_id)
    assert view.state is JobState.WAITING
    assert view.info.attempts_made == 0
    assert await client.failure_record(job_id) is None
    assert await redis.zscore(keys.index, keys.record(job_id)) is None

    await client.remove(job_id)
    with pytest.raises(JobNotFoundError):
        await client.get_job(job_id)


async def test_removing_a_failed_job_removes_its_record(
    registry: TaskRegistry,
    make_client: Callable[..., QueueClient],
    make_worker: Callable[..., Worker],
) -> None:
    client = make_client(registry)
    job_id = await client.enqueue("explode", {"to": "x"}, {"attempts": 1})
    make_worker(registry)
    await wait_for_state(client, job_id, JobState.FAILED)
    await client.remove(job_id)
    assert await client.failure_record(job_id) is None


async def test_pause_and_resume(
    registry: TaskRegistry,
    make_client: Callable[..., QueueClient],
    make_worker: Callable[..., Worker],
) -> None:
    client = make_client(registry)
    await client.pause()
    assert await client.is_paused()
    make_worker(registry)
    job_id = await client.enqueue("email", {"to": "x"})
    # A negative can only be observed over a window: the worker must leave the job alone.
    await asyncio.sleep(0.3)
    assert (await client.get_job(job_id)).state is JobState.WAITING
    await client.resume()
    assert not await client.is_paused()
    await wait_for_state(client, job_id, JobState.COMPLETED)


async def test_list_jobs_and_retry_all_failed(
    registry: TaskRegistry,
    make_client: Callable[..., QueueClient],
    make_worker: Callable[..., Worker],
) -> None:
    client = make_client(registry)
    ids = [await client.enqueue("explode", {"to": str(n)}, {"attempts": 1}) for n in range(3)]
    worker = make_worker(registry)
    await wait_for(lambda: _count(client, JobState.FAILED, 3))
    listed = await client.list_jobs(JobState.FAILED)
    assert {job.id for job in listed} == set(ids)
    worker.stop()
    await wait_for(lambda: not worker.running)
    assert (await client.retry_all_failed()).retried == 3
    assert (await client.counts())[JobState.WAITING] == 3


async def _count(client: QueueClient, state: JobState, n: int) -> bool:
    return (await client.counts())[state] == n
