"""Bulks go out as one MULTI on a lean connection (hiredis packs and parses): the scripts are
loaded in the same write, so a Redis that forgot them (a restart, SCRIPT FLUSH) still takes
every job of the bulk, never a part of it; through the API and through QueueClient."""

from __future__ import annotations

from collections.abc import Callable

from redis.asyncio import Redis

from conveyor.client import JobSpec, QueueClient
from conveyor.config import Settings
from conveyor.jobs import JobState
from tests.support.api import api_client


async def total(queue: QueueClient) -> int:
    return sum((await queue.counts()).values())


async def test_an_api_bulk_after_script_flush_adds_every_job(
    settings: Settings, redis_url: str, redis: Redis, queue: QueueClient
) -> None:
    jobs = [{"name": "simulate", "data": {"duration_ms": 5}}] * 50
    async with api_client(settings, redis_url) as api:
        first = await api.post("/enqueue/bulk", json={"jobs": jobs})
        assert first.status_code == 201, first.text
        await redis.script_flush()
        second = await api.post("/enqueue/bulk", json={"jobs": [*jobs, {"name": "simulate"}]})
        assert second.status_code == 201, second.text
    ids = [job["id"] for job in first.json()["jobs"] + second.json()["jobs"]]
    assert len(set(ids)) == 101
    assert await total(queue) == 101
    assert all([await queue.find_job(job_id) for job_id in ids])


async def test_enqueue_many_after_script_flush_adds_every_job(
    redis: Redis, make_client: Callable[..., QueueClient]
) -> None:
    client = make_client()
    first = await client.enqueue_many([JobSpec("noop", {"n": i}) for i in range(20)])
    await redis.script_flush()
    second = await client.enqueue_many(
        [JobSpec("noop", {"n": i}, {"delay": 60_000 if i % 2 else 0}) for i in range(20)]
    )
    assert len(set(first + second)) == 40
    counts = await client.counts()
    assert (counts[JobState.WAITING], counts[JobState.DELAYED]) == (30, 10)
    record = await client.find_job(second[1])
    assert record is not None
    assert record.data == {"n": 1}
