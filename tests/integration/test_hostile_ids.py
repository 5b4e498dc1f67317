"""Job ids that name one of the queue's own keys, or route somewhere else, never touch a key
that is not a job's: at enqueue (API single and bulk, QueueClient), in the API's URL paths and
in the monitor's. Real app, real monitor server, real Redis."""

from __future__ import annotations

import httpx
import pytest
from redis.asyncio import Redis

from conveyor._bullmq import RESERVED_JOB_IDS
from conveyor.client import JobSpec, QueueClient
from conveyor.config import Settings
from conveyor.errors import JobNotFoundError, JobOptionsError
from conveyor.observability.stats import totals_key
from tests.support.monitor import serve_monitor

PROBLEM = "application/problem+json"
ACT = {"X-Conveyor-Action": "1"}
#: BullMQ's own key names (Python and Node QueueKeys, Node's migrations) and Conveyor's.
SAMPLE = ["wait", "active", "delayed", "meta", "marker", "events", "id", "pc", "de", "limiter",
          "stalled-check", "repeat", "paused", "prioritized", "completed", "failed", "stalled",
          "waiting-children", "migrations", "metrics", "conveyor"]  # fmt: skip


async def keys_of(redis: Redis, settings: Settings) -> dict[str, str]:
    """Every key under the test's prefix with its type: what Redis holds for this test."""
    names = sorted(await redis.keys(f"{settings.prefix}:*"))
    return {str(name): str(await redis.type(name)) for name in names}


def test_the_reserved_names_cover_bullmq_and_conveyor() -> None:
    assert set(SAMPLE) <= RESERVED_JOB_IDS


@pytest.mark.parametrize("job_id", ["wait", "active", "meta", "marker", "conveyor", "migrations"])
async def test_a_job_id_naming_a_queue_key_is_refused_and_nothing_is_written(
    api: httpx.AsyncClient, redis: Redis, settings: Settings, job_id: str
) -> None:
    single = await api.post("/enqueue", json={"name": "simulate", "options": {"jobId": job_id}})
    assert single.status_code == 422, single.text
    assert single.headers["content-type"] == PROBLEM
    assert single.json()["type"] == "urn:conveyor:problem:invalid-options"
    assert job_id in single.json()["detail"]
    bulk = await api.post(
        "/enqueue/bulk",
        json={"jobs": [{"name": "simulate"}, {"name": "simulate", "options": {"jobId": job_id}}]},
    )
    assert bulk.status_code == 422, bulk.text
    assert bulk.json()["errors"][0]["path"] == "jobs.1.options"
    assert await keys_of(redis, settings) == {}
    # The queue still works: the next enqueue is a job like any other.
    ok = await api.post("/enqueue", json={"name": "simulate"})
    assert ok.status_code == 201, ok.text


async def test_every_reserved_name_is_refused_by_the_client(
    queue: QueueClient, redis: Redis, settings: Settings
) -> None:
    for job_id in sorted(RESERVED_JOB_IDS):
        with pytest.raises(JobOptionsError, match="own keys"):
            await queue.enqueue("simulate", {}, {"jobId": job_id})
        with pytest.raises(JobOptionsError, match="own keys"):
            await queue.enqueue_many(
                [JobSpec("simulate"), JobSpec("simulate", options={"jobId": job_id})]
            )
    assert await keys_of(redis, settings) == {}


async def test_a_job_id_with_a_slash_is_refused(
    api: httpx.AsyncClient, queue: QueueClient, redis: Redis, settings: Settings
) -> None:
    response = await api.post("/enqueue", json={"name": "simulate", "options": {"jobId": "a/b"}})
    assert response.status_code == 422, response.text
    with pytest.raises(JobOptionsError):
        await queue.enqueue("simulate", {}, {"jobId": "a/b"})
    assert await keys_of(redis, settings) == {}


async def test_ids_in_api_paths_that_name_queue_keys_are_404_and_touch_nothing(
    api: httpx.AsyncClient, queue: QueueClient, redis: Redis, settings: Settings
) -> None:
    await queue.enqueue("simulate", {}, {"jobId": "x"})
    await queue.bull.add_log("x", "x's own log line")
    assert (await api.post(f"/queues/{settings.queue}/pause")).status_code == 200
    totals = totals_key(settings.prefix, settings.queue)
    await redis.hset(totals, "simulate:completed", 7)
    before = await keys_of(redis, settings)
    assert f"{settings.prefix}:{settings.queue}:meta" in before
    for job_id in [*SAMPLE, "conveyor:totals", "x:logs", "nope"]:
        for method, path in [
            ("GET", f"/jobs/{job_id}"),
            ("GET", f"/jobs/{job_id}/logs"),
            ("POST", f"/jobs/{job_id}/retry"),
            ("DELETE", f"/jobs/{job_id}"),
        ]:
            response = await api.request(method, path)
            assert response.status_code == 404, (method, path, response.text)
            assert response.json()["type"] == "urn:conveyor:problem:job-not-found"
    assert await keys_of(redis, settings) == before
    assert await queue.is_paused()
    assert await redis.hget(totals, "simulate:completed") == "7"


async def test_an_encoded_slash_in_a_path_names_no_job(
    api: httpx.AsyncClient, queue: QueueClient
) -> None:
    await queue.enqueue("simulate", {}, {"jobId": "x"})
    await queue.bull.add_log("x", "secret line")
    for method, path in [
        ("GET", "/jobs/x%2Flogs"),
        ("GET", "/jobs/x%2flogs"),
        ("POST", "/jobs/x%2Fretry"),
        ("GET", "/jobs/x%2F..%2Fx"),
    ]:
        response = await api.request(method, path)
        assert response.status_code == 404, (path, response.text)
        assert "secret" not in response.text
    assert (await api.get("/jobs/x/logs")).json()["logs"] == ["secret line"]


async def test_retrying_an_orphan_names_the_queue(
    api: httpx.AsyncClient, queue: QueueClient, redis: Redis, settings: Settings
) -> None:
    await redis.zadd(f"{settings.prefix}:{settings.queue}:failed", {"ghost": 1})
    response = await api.post("/jobs/ghost/retry")
    assert response.status_code == 404, response.text
    assert f"queue {settings.queue!r}" in response.json()["detail"]
    assert "reprocessJob" not in response.text
    with pytest.raises(JobNotFoundError) as caught:
        await queue.retry("ghost")
    assert caught.value.queue == settings.queue


async def test_monitor_ids_that_name_queue_keys_are_404_and_touch_nothing(
    settings: Settings, queue: QueueClient, redis: Redis
) -> None:
    await queue.enqueue("simulate", {}, {"jobId": "x"})
    await queue.bull.add_log("x", "secret line")
    await queue.pause()
    before = await keys_of(redis, settings)
    base = f"/api/queues/{settings.queue}"
    async with serve_monitor(settings) as monitor:
        for needle in ["wait", "events", "id", "marker", "meta", "conveyor:totals"]:
            found = await monitor.get(f"{base}/jobs", params={"state": "waiting", "q": needle})
            assert found.status_code == 200, (needle, found.text)
            assert found.json()["jobs"] == []
        for job_id in ["wait", "meta", "events", "conveyor", "nope"]:
            page = await monitor.get(f"{base}/jobs/{job_id}")
            assert page.status_code == 404, (job_id, page.text)
            retried = await monitor.post(f"{base}/jobs/{job_id}/retry", headers=ACT)
            assert retried.status_code == 404, (job_id, retried.text)
            removed = await monitor.delete(f"{base}/jobs/{job_id}", headers=ACT)
            assert removed.status_code == 404, (job_id, removed.text)
        # An encoded '/' does not reach x's retry (the router matched "x" + "/retry").
        sneaky = await monitor.post(f"{base}/jobs/x%2Fretry", headers=ACT)
        assert sneaky.status_code == 404, sneaky.text
        assert (await monitor.get(f"{base}/jobs/x")).json()["logs"] == ["secret line"]
    assert await keys_of(redis, settings) == before
    assert await queue.is_paused()
