"""BullMQ's ``deduplication`` option through the API (single and bulk) and QueueClient: simple,
throttle (ttl), extend and debounce (replace + delay) modes, stored as Node stores them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from conveyor.client import JobSpec, QueueClient
from conveyor.errors import JobOptionsError
from conveyor.jobs import JobState
from conveyor.registry import EmptyPayload, JobContext, TaskRegistry
from conveyor.testing import wait_for
from conveyor.worker import Worker


async def post(api: httpx.AsyncClient, options: dict[str, Any], status: int) -> dict[str, Any]:
    response = await api.post(
        "/enqueue", json={"name": "echo", "data": {"value": 1}, "options": options}
    )
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_a_duplicate_is_answered_with_the_first_jobs_id(
    api: httpx.AsyncClient, queue: QueueClient, redis: Redis
) -> None:
    first = await post(api, {"deduplication": {"id": "report-7"}}, 201)
    assert first["created"] is True
    assert first["deduplicated"] is False
    again = await post(api, {"deduplication": {"id": "report-7"}, "delay": 60_000}, 200)
    assert again == {**first, "created": False, "deduplicated": True}
    assert (await queue.counts())[JobState.WAITING] == 1
    # Stored as BullMQ stores it: the ``de`` option, the ``deid`` field, the ``de:{id}`` key.
    base = queue.bull.base
    assert await redis.get(f"{base}de:report-7") == first["id"]
    assert await redis.hget(queue.bull.job_key(first["id"]), "deid") == "report-7"
    view = await queue.get_job(first["id"])
    assert view.info.options["deduplication"] == {"id": "report-7"}
    # Simple mode lasts while the job does: once it is gone, the id is free again.
    await queue.remove(first["id"])
    third = await post(api, {"deduplication": {"id": "report-7"}}, 201)
    assert third["id"] != first["id"]


async def test_bulk_answers_each_jobs_own_or_first_id(
    api: httpx.AsyncClient, queue: QueueClient
) -> None:
    existing = await queue.enqueue("echo", {"value": 0}, {"deduplication": {"id": "a"}})
    jobs = [
        {"name": "echo", "data": {"value": 1}, "options": {"deduplication": {"id": "a"}}},
        {"name": "echo", "data": {"value": 2}, "options": {"deduplication": {"id": "b"}}},
        {"name": "echo", "data": {"value": 3}, "options": {"deduplication": {"id": "b"}}},
    ]
    response = await api.post("/enqueue/bulk", json={"jobs": jobs})
    assert response.status_code == 201, response.text
    answered = response.json()["jobs"]
    assert answered[0]["id"] == existing
    assert answered[0]["deduplicated"] is True
    assert answered[1]["created"] is True
    assert answered[1]["deduplicated"] is False
    assert answered[2]["id"] == answered[1]["id"]
    assert answered[2]["deduplicated"] is True
    assert (await queue.counts())[JobState.WAITING] == 2


async def test_throttle_extend_and_debounce_from_the_client(
    queue: QueueClient, redis: Redis
) -> None:
    base = queue.bull.base
    # Throttle: the id is taken for ttl ms, whatever happens to the job.
    first = await queue.enqueue("echo", {}, {"deduplication": {"id": "t", "ttl": 300}})
    assert await queue.enqueue("echo", {}, {"deduplication": {"id": "t", "ttl": 300}}) == first
    assert 0 < await redis.pttl(f"{base}de:t") <= 300

    async def expired() -> bool:
        return await redis.exists(f"{base}de:t") == 0

    await wait_for(expired, timeout=5)
    assert await queue.enqueue("echo", {}, {"deduplication": {"id": "t", "ttl": 300}}) != first
    # Extend: each duplicate restarts the ttl.
    dedup = {"id": "x", "ttl": 60_000, "extend": True}
    kept = await queue.enqueue("echo", {}, {"deduplication": dedup})
    await redis.pexpire(f"{base}de:x", 1_000)
    assert await queue.enqueue("echo", {}, {"deduplication": dedup}) == kept
    assert await redis.pttl(f"{base}de:x") > 50_000
    # Debounce: replace + delay, the newest job wins while the first is still delayed.
    debounce = {"id": "d", "ttl": 60_000, "extend": True, "replace": True}
    old = await queue.enqueue("echo", {"value": 1}, {"delay": 60_000, "deduplication": debounce})
    new = await queue.enqueue("echo", {"value": 2}, {"delay": 60_000, "deduplication": debounce})
    assert new != old
    assert await queue.find_job(old) is None
    assert (await queue.get_job(new)).info.data == {"value": 2}
    assert await redis.get(f"{base}de:d") == new


@pytest.mark.parametrize(
    ("dedup", "message"),
    [
        ({}, "deduplication.id"),
        ({"id": ""}, "deduplication.id"),
        ({"id": "a", "ttl": -1}, "deduplication.ttl"),
        ({"id": "a", "reschedule": True}, "reschedule"),
        ({"id": "a", "extend": "yes"}, "deduplication.extend"),
        ("a", "options.deduplication"),
    ],
)
async def test_a_bad_deduplication_is_refused_before_redis(
    queue: QueueClient, dedup: Any, message: str
) -> None:
    with pytest.raises(JobOptionsError, match=message):
        queue.prepare(JobSpec("echo", {}, {"deduplication": dedup}))


async def test_the_api_refuses_bad_deduplication_and_changes_nothing(
    api: httpx.AsyncClient, queue: QueueClient, redis: Redis
) -> None:
    body = await post(api, {"deduplication": {"id": "a", "reschedule": True}}, 422)
    assert "reschedule" in body["detail"]
    response = await api.post(
        "/enqueue",
        json={"name": "echo", "options": {"deduplication": {"id": "a"}}},
        headers={"Idempotency-Key": "k1"},
    )
    assert response.status_code == 422, response.text
    assert "Idempotency-Key" in response.json()["detail"]
    assert sum((await queue.counts()).values()) == 0
    assert await redis.exists(f"{queue.bull.base}de:a") == 0


async def test_keep_last_if_active_adds_the_newest_duplicate_when_the_running_job_ends(
    make_client: Callable[..., QueueClient], make_worker: Callable[..., Worker]
) -> None:
    release = asyncio.Event()
    seen: list[Any] = []
    registry = TaskRegistry()

    @registry.task("hold")
    async def hold(payload: EmptyPayload, ctx: JobContext) -> None:
        seen.append(payload.model_dump())
        await release.wait()

    client = make_client(registry)
    make_worker(registry)
    dedup = {"deduplication": {"id": "k", "keepLastIfActive": True}}
    first = await client.enqueue("hold", {"n": 1}, dedup)
    await wait_for(lambda: len(seen) == 1)
    assert await client.enqueue("hold", {"n": 2}, dedup) == first
    assert await client.enqueue("hold", {"n": 3}, dedup) == first  # the newest is kept
    release.set()
    await wait_for(lambda: len(seen) == 2)
    assert seen == [{"n": 1}, {"n": 3}]
