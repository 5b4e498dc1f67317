"""A payload is stored as its task's model validated it, not as it was sent: the job hash's
JSON matches the task's published schema (Node.js consumers read it), through the API (single
and bulk, both request paths) and QueueClient. Real app, real Redis."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest
from redis.asyncio import Redis

from conveyor.client import JobSpec, QueueClient
from conveyor.config import Settings
from conveyor.errors import JobOptionsError
from tests.support.api import registry

SENT = {"duration_ms": "5", "fail_rate": True}
#: What the simulate task's model makes of SENT: the integer 5 and the number 1.0.
STORED = '{"duration_ms":5,"fail_rate":1.0}'


async def stored_data(redis: Redis, settings: Settings, job_id: str) -> str:
    raw = await redis.hget(f"{settings.prefix}:{settings.queue}:{job_id}", "data")
    assert isinstance(raw, str)
    return raw


async def test_the_api_stores_the_validated_payload(
    api: httpx.AsyncClient, redis: Redis, settings: Settings
) -> None:
    one = await api.post("/enqueue", json={"name": "simulate", "data": SENT})
    assert one.status_code == 201, one.text
    assert await stored_data(redis, settings, one.json()["id"]) == STORED
    bulk = await api.post("/enqueue/bulk", json={"jobs": [{"name": "simulate", "data": SENT}] * 2})
    assert bulk.status_code == 201, bulk.text
    for job in bulk.json()["jobs"]:
        assert await stored_data(redis, settings, job["id"]) == STORED
    status = await api.get(f"/jobs/{one.json()['id']}")
    assert status.json()["data"] == {"duration_ms": 5, "fail_rate": 1.0}


async def test_fields_not_sent_stay_unsent_and_free_form_payloads_are_kept(
    api: httpx.AsyncClient, redis: Redis, settings: Settings
) -> None:
    partial = await api.post("/enqueue", json={"name": "simulate", "data": {"fail_rate": 0}})
    assert await stored_data(redis, settings, partial.json()["id"]) == '{"fail_rate":0.0}'
    value = {"b": [1, "x", None, {"c": 18446744073709551617}], "a": "é"}
    echo = await api.post("/enqueue", json={"name": "echo", "data": {"value": value}})
    assert echo.status_code == 201, echo.text
    raw = await stored_data(redis, settings, echo.json()["id"])
    assert json.loads(raw) == {"value": value}
    ignored = await api.post("/enqueue", json={"name": "echo", "data": {"value": 1, "zzz": 2}})
    assert await stored_data(redis, settings, ignored.json()["id"]) == '{"value":1}'


async def test_the_client_stores_the_validated_payload(
    make_client: Callable[..., QueueClient], redis: Redis, settings: Settings
) -> None:
    client = make_client(registry)
    job_id = await client.enqueue("simulate", SENT)
    assert await stored_data(redis, settings, job_id) == STORED
    (bulk_id,) = await client.enqueue_many([JobSpec("simulate", SENT)])
    assert await stored_data(redis, settings, bulk_id) == STORED


async def test_non_finite_numbers_are_still_refused_by_the_client(
    make_client: Callable[..., QueueClient], redis: Redis, settings: Settings
) -> None:
    client = make_client(registry)
    for data in ({"value": {"x": float("inf")}}, {"value": [float("nan")]}):
        with pytest.raises(JobOptionsError, match="NaN"):
            await client.enqueue("echo", data)
    assert await redis.keys(f"{settings.prefix}:*") == []
