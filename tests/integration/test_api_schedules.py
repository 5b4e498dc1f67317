"""``/schedules`` over HTTP against a real Redis: create (201), change (200), an identical PUT
that changes nothing, read, run now, remove; and every bad request a 422 or 404 that writes
nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from conveyor.config import Settings
from tests.support.api import api_client


@pytest.fixture
async def http(settings: Settings, redis_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(settings, redis_url) as client:
        yield client


async def _keys(redis: Redis, settings: Settings) -> set[str]:
    return {str(k) async for k in redis.scan_iter(f"{settings.prefix}:{settings.queue}:*")}


async def test_put_creates_then_changes_then_leaves_alone(
    http: httpx.AsyncClient, redis: Redis, settings: Settings
) -> None:
    body = {"name": "echo", "data": {"value": 1}, "cron": "0 9 * * *", "tz": "Europe/Paris"}
    created = await http.put("/schedules/daily", json=body)
    assert created.status_code == 201, created.text
    view = created.json()
    assert (view["id"], view["name"], view["cron"], view["tz"]) == (
        "daily", "echo", "0 9 * * *", "Europe/Paris",
    )  # fmt: skip
    assert view["next_run_at"].endswith(("T07:00:00Z", "T08:00:00Z"))  # 09:00 in Paris
    first_job = view["next_job_id"]
    assert await redis.exists(f"{settings.prefix}:{settings.queue}:{first_job}")
    assert (await http.get(f"/jobs/{first_job}")).json()["state"] == "delayed"

    same = await http.put("/schedules/daily", json=body)
    assert same.status_code == 200
    assert same.json()["next_job_id"] == first_job  # nothing replaced

    changed = await http.put(
        "/schedules/daily", json={**body, "every_ms": 60_000, "cron": None, "tz": None}
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["every_ms"] == 60_000
    assert not await redis.exists(f"{settings.prefix}:{settings.queue}:{first_job}")

    listed = (await http.get("/schedules")).json()["schedules"]
    assert [s["id"] for s in listed] == ["daily"]
    assert (await http.get("/schedules/daily")).json()["every_ms"] == 60_000

    run = await http.post("/schedules/daily/run")
    assert run.status_code == 201
    job = (await http.get(run.json()["status_url"])).json()
    assert job["name"] == "echo"
    assert job["data"] == {"value": 1}

    assert (await http.delete("/schedules/daily")).status_code == 204
    assert (await http.get("/schedules/daily")).status_code == 404
    assert (await http.delete("/schedules/daily")).status_code == 404
    assert (await http.post("/schedules/daily/run")).status_code == 404
    assert await redis.zcard(f"{settings.prefix}:{settings.queue}:repeat") == 0


@pytest.mark.parametrize(
    ("body", "problem", "path"),
    [
        ({"name": "echo", "cron": "61 * * * *"}, "invalid-schedule", ""),
        ({"name": "echo", "cron": "0 9 * *"}, "invalid-schedule", ""),
        ({"name": "echo", "cron": "0 9 * * *", "tz": "Mars/Olympus"}, "invalid-schedule", ""),
        ({"name": "echo", "every_ms": 1000, "cron": "* * * * *"}, "invalid-schedule", ""),
        ({"name": "echo"}, "invalid-schedule", ""),
        ({"name": "echo", "every_ms": 0}, "invalid-request", "every_ms"),
        ({"name": "echo", "every_ms": 1000, "end": "2001-01-01T00:00:00Z"}, "invalid-schedule", ""),
        (
            {"name": "echo", "every_ms": 1000, "start": "2030-01-01T00:00:00"},
            "invalid-request",
            "start",
        ),
        ({"name": "nope", "every_ms": 1000}, "unknown-task", "name"),
        (
            {"name": "echo", "every_ms": 1000, "data": {"sleep_ms": -1}},
            "invalid-payload",
            "data.sleep_ms",
        ),
        (
            {"name": "send_email", "every_ms": 1000, "data": {"subject": ""}},
            "invalid-payload",
            "data.subject",
        ),
        ({"name": "echo", "every_ms": 1000, "extra": 1}, "invalid-request", "extra"),
    ],
)
async def test_bad_schedule_is_422_and_writes_nothing(
    http: httpx.AsyncClient,
    redis: Redis,
    settings: Settings,
    body: dict[str, Any],
    problem: str,
    path: str,
) -> None:
    before = await _keys(redis, settings)
    response = await http.put("/schedules/s1", json=body)
    assert response.status_code == 422, response.text
    answer = response.json()
    assert answer["type"].endswith(problem), answer
    assert any(e["path"].startswith(path) for e in answer["errors"]), answer
    assert await _keys(redis, settings) == before


@pytest.mark.parametrize("schedule_id", ["a:b", "-x", "a b", "x" * 129])
async def test_bad_schedule_id_writes_nothing(
    http: httpx.AsyncClient, redis: Redis, settings: Settings, schedule_id: str
) -> None:
    before = await _keys(redis, settings)
    response = await http.put(f"/schedules/{schedule_id}", json={"name": "echo", "every_ms": 1000})
    assert response.status_code == 422, response.text
    assert await _keys(redis, settings) == before
