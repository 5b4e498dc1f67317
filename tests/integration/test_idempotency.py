"""An Idempotency-Key stands for its whole request: the same key with another batch, on the
other endpoint, or with other options is a 422 that writes nothing; the same request again is
the same jobs, even when the copies race. Real app, real Redis."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from redis.asyncio import Redis

from conveyor.config import Settings
from conveyor.services.api.idempotency import FINGERPRINT_FIELD, idempotent_job_id


async def keys_of(redis: Redis, settings: Settings) -> dict[str, str]:
    """Every key under the test's prefix with its type: what Redis holds for this test."""
    names = sorted(await redis.keys(f"{settings.prefix}:*"))
    return {str(name): str(await redis.type(name)) for name in names}


def jobs(count: int) -> dict[str, Any]:
    return {"jobs": [{"name": "echo", "data": {"value": i}} for i in range(count)]}


def assert_reused(response: httpx.Response) -> None:
    assert response.status_code == 422, response.text
    assert response.json()["type"] == "urn:conveyor:problem:idempotency-key-reused"


async def test_the_same_key_with_a_bigger_or_smaller_batch_is_refused(
    api: httpx.AsyncClient, redis: Redis, settings: Settings
) -> None:
    key = {"Idempotency-Key": "batch-1"}
    first = await api.post("/enqueue/bulk", json=jobs(3), headers=key)
    assert first.status_code == 201, first.text
    before = await keys_of(redis, settings)
    for count in (5, 2):
        assert_reused(await api.post("/enqueue/bulk", json=jobs(count), headers=key))
    assert await keys_of(redis, settings) == before
    again = await api.post("/enqueue/bulk", json=jobs(3), headers=key)
    assert [j["created"] for j in again.json()["jobs"]] == [False] * 3
    assert await keys_of(redis, settings) == before


async def test_a_key_stands_for_one_endpoint(
    api: httpx.AsyncClient, redis: Redis, settings: Settings
) -> None:
    one = {"name": "echo", "data": {"value": 0}}
    single = await api.post("/enqueue", json=one, headers={"Idempotency-Key": "k1"})
    assert single.status_code == 201, single.text
    bulk = await api.post("/enqueue/bulk", json={"jobs": [one]}, headers={"Idempotency-Key": "k2"})
    assert bulk.status_code == 201, bulk.text
    before = await keys_of(redis, settings)
    assert_reused(
        await api.post("/enqueue/bulk", json={"jobs": [one]}, headers={"Idempotency-Key": "k1"})
    )
    assert_reused(await api.post("/enqueue", json=one, headers={"Idempotency-Key": "k2"}))
    assert await keys_of(redis, settings) == before


async def test_the_same_key_with_other_options_is_refused(
    api: httpx.AsyncClient, redis: Redis, settings: Settings
) -> None:
    key = {"Idempotency-Key": "opts"}
    body: dict[str, Any] = {"name": "echo", "data": {"value": 1}, "options": {"priority": 3}}
    assert (await api.post("/enqueue", json=body, headers=key)).status_code == 201
    before = await keys_of(redis, settings)
    body["options"] = {"priority": 4}
    assert_reused(await api.post("/enqueue", json=body, headers=key))
    assert await keys_of(redis, settings) == before
    job_key = f"{settings.prefix}:{settings.queue}:{idempotent_job_id('opts')}"
    assert await redis.hget(job_key, FINGERPRINT_FIELD)


async def test_racing_copies_of_one_request_make_one_set_of_jobs(
    api: httpx.AsyncClient, redis: Redis, settings: Settings
) -> None:
    key = {"Idempotency-Key": "race"}
    replies = await asyncio.gather(
        *(api.post("/enqueue/bulk", json=jobs(4), headers=key) for _ in range(8))
    )
    assert {r.status_code for r in replies} == {201}
    created = [job["created"] for r in replies for job in r.json()["jobs"]]
    assert created.count(True) == 4
    singles = await asyncio.gather(
        *(
            api.post("/enqueue", json={"name": "echo"}, headers={"Idempotency-Key": "one"})
            for _ in range(8)
        )
    )
    assert sorted(r.status_code for r in singles) == [200] * 7 + [201]
    assert len(await redis.keys(f"{settings.prefix}:{settings.queue}:idem-*")) == 5


async def test_racing_different_requests_under_one_key_never_mix(
    api: httpx.AsyncClient, redis: Redis, settings: Settings
) -> None:
    key = {"Idempotency-Key": "mixed"}
    replies = await asyncio.gather(
        *(api.post("/enqueue/bulk", json=jobs(n), headers=key) for n in (2, 5, 3, 5, 2))
    )
    won = {len(r.json()["jobs"]) for r in replies if r.status_code == 201}
    assert len(won) == 1, [r.text for r in replies]
    for reply in replies:
        if reply.status_code != 201:
            assert_reused(reply)
    stored = await redis.keys(f"{settings.prefix}:{settings.queue}:idem-*")
    assert len(stored) == won.pop()
