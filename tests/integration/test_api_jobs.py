"""Following and managing jobs over HTTP, with a real worker running them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

import httpx
import pytest

from conveyor.client import QueueClient
from conveyor.config import Settings
from conveyor.jobs import JobState
from conveyor.testing import wait_for
from conveyor.worker import Worker
from tests.support.api import api_client, registry


@pytest.fixture
async def api(settings: Settings, redis_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(settings, redis_url) as client:
        yield client


@pytest.fixture
def queue(make_client: Callable[..., QueueClient]) -> QueueClient:
    return make_client()


async def enqueue(api: httpx.AsyncClient, name: str, **body: Any) -> str:
    response = await api.post("/enqueue", json={"name": name, **body})
    assert response.status_code == 201, response.text
    job_id: str = response.json()["id"]
    return job_id


async def job(api: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    response = await api.get(f"/jobs/{job_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def state_is(api: httpx.AsyncClient, job_id: str, state: str) -> dict[str, Any] | None:
    body = await job(api, job_id)
    return body if body["state"] == state else None


async def test_a_waiting_job_reports_its_state_and_options(
    api: httpx.AsyncClient, settings: Settings
) -> None:
    job_id = await enqueue(api, "echo", data={"value": 3}, options={"priority": 4})
    body = await job(api, job_id)
    assert body["id"] == job_id
    assert body["name"] == "echo"
    assert body["queue"] == settings.queue
    assert body["state"] == "prioritized"
    assert body["data"] == {"value": 3}
    assert body["priority"] == 4
    assert body["attempts_made"] == 0
    assert body["max_attempts"] == settings.retries + 1
    assert body["progress"] == 0
    assert body["result"] is None
    assert body["failed_reason"] is None
    assert datetime.fromisoformat(body["created_at"]).tzinfo is not None
    assert body["started_at"] is None
    assert body["finished_at"] is None


async def test_a_completed_job_shows_result_progress_logs_and_timestamps(
    api: httpx.AsyncClient, make_worker: Callable[..., Worker]
) -> None:
    job_id = await enqueue(api, "echo", data={"value": {"answer": 42}})
    make_worker(registry)
    body = await wait_for(lambda: state_is(api, job_id, "completed"))
    assert body["result"] == {"answer": 42}
    assert body["progress"] == 50
    assert body["attempts_made"] == 1
    started = datetime.fromisoformat(body["started_at"])
    assert datetime.fromisoformat(body["created_at"]) <= started
    assert started <= datetime.fromisoformat(body["finished_at"])
    logs = await api.get(f"/jobs/{job_id}/logs")
    assert logs.json() == {"id": job_id, "logs": ["echo attempt 1"]}


async def test_a_failed_job_shows_why_and_can_be_retried(
    api: httpx.AsyncClient,
    make_worker: Callable[..., Worker],
    queue: QueueClient,
    settings: Settings,
) -> None:
    job_id = await enqueue(api, "explode", data={"value": "once"})
    make_worker(registry)
    body = await wait_for(lambda: state_is(api, job_id, "failed"))
    assert body["failed_reason"] == "RuntimeError: boom: once"
    assert body["attempts_made"] == 1
    assert body["max_attempts"] == 1
    assert "boom: once" in body["stacktrace"][-1]
    assert await queue.failure_record(job_id) is not None

    await api.post(f"/queues/{settings.queue}/pause")
    retried = await api.post(f"/jobs/{job_id}/retry")
    assert retried.status_code == 200, retried.text
    assert retried.json()["state"] in ("waiting", "paused")
    assert retried.json()["attempts_made"] == 0
    assert await queue.failure_record(job_id) is None
    await api.post(f"/queues/{settings.queue}/resume")
    await wait_for(lambda: state_is(api, job_id, "failed"))
    assert await queue.failure_record(job_id) is not None


async def test_retry_refuses_a_job_that_is_not_finished(api: httpx.AsyncClient) -> None:
    job_id = await enqueue(api, "echo")
    response = await api.post(f"/jobs/{job_id}/retry")
    assert response.status_code == 409
    assert response.json()["type"] == "urn:conveyor:problem:job-state-conflict"
    assert (await job(api, job_id))["state"] == "waiting"


async def test_delete_cancels_a_waiting_or_delayed_job(
    api: httpx.AsyncClient, queue: QueueClient
) -> None:
    waiting = await enqueue(api, "echo")
    delayed = await enqueue(api, "echo", options={"delay": 60_000})
    for job_id in (waiting, delayed):
        response = await api.delete(f"/jobs/{job_id}")
        assert response.status_code == 204
        assert response.content == b""
        gone = await api.get(f"/jobs/{job_id}")
        assert gone.status_code == 404
    assert sum((await queue.counts()).values()) == 0


async def test_delete_refuses_a_running_job(
    api: httpx.AsyncClient, make_worker: Callable[..., Worker]
) -> None:
    job_id = await enqueue(api, "echo", data={"sleep_ms": 1500})
    make_worker(registry)
    await wait_for(lambda: state_is(api, job_id, "active"))
    response = await api.delete(f"/jobs/{job_id}")
    assert response.status_code == 409
    assert response.json()["type"] == "urn:conveyor:problem:job-state-conflict"
    await wait_for(lambda: state_is(api, job_id, "completed"))
    assert (await api.delete(f"/jobs/{job_id}")).status_code == 204


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/jobs/{id}"),
        ("GET", "/jobs/{id}/logs"),
        ("POST", "/jobs/{id}/retry"),
        ("DELETE", "/jobs/{id}"),
    ],
)
async def test_unknown_job_is_404(api: httpx.AsyncClient, method: str, path: str) -> None:
    response = await api.request(method, path.format(id="no-such-job"))
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == "urn:conveyor:problem:job-not-found"
    assert response.json()["job_id"] == "no-such-job"


async def test_queue_counts_by_state(api: httpx.AsyncClient, settings: Settings) -> None:
    await enqueue(api, "echo")
    await enqueue(api, "echo")
    await enqueue(api, "echo", options={"delay": 60_000})
    await enqueue(api, "echo", options={"priority": 1})
    response = await api.get(f"/queues/{settings.queue}")
    assert response.status_code == 200
    body = response.json()
    assert body["name"] == settings.queue
    assert body["paused"] is False
    assert body["counts"] == {
        "waiting": 2,
        "prioritized": 1,
        "delayed": 1,
        "active": 0,
        "paused": 0,
        "completed": 0,
        "failed": 0,
        "waiting_children": 0,
    }
    assert body["total"] == 4


async def test_pause_stops_workers_taking_jobs_and_resume_lets_them(
    api: httpx.AsyncClient, settings: Settings, make_worker: Callable[..., Worker]
) -> None:
    paused = await api.post(f"/queues/{settings.queue}/pause")
    assert paused.status_code == 200
    assert paused.json()["paused"] is True
    job_id = await enqueue(api, "echo", data={"value": 1})
    assert (await job(api, job_id))["state"] in ("waiting", "paused")
    assert (await api.get(f"/queues/{settings.queue}")).json()["paused"] is True
    make_worker(registry)
    resumed = await api.post(f"/queues/{settings.queue}/resume")
    assert resumed.json()["paused"] is False
    await wait_for(lambda: state_is(api, job_id, "completed"))


async def test_list_jobs_by_state_newest_first(api: httpx.AsyncClient, settings: Settings) -> None:
    ids = [await enqueue(api, "echo", data={"value": i}) for i in range(4)]
    response = await api.get(
        f"/queues/{settings.queue}/jobs", params={"state": "waiting", "limit": 3}
    )
    assert response.status_code == 200
    body = response.json()
    assert (body["state"], body["offset"], body["limit"]) == ("waiting", 0, 3)
    assert [j["id"] for j in body["jobs"]] == ids[::-1][:3]
    assert all(j["state"] == "waiting" for j in body["jobs"])
    rest = await api.get(f"/queues/{settings.queue}/jobs", params={"state": "waiting", "offset": 3})
    assert [j["id"] for j in rest.json()["jobs"]] == ids[:1]
    bad = await api.get(f"/queues/{settings.queue}/jobs", params={"state": "nonsense"})
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["path"] == "query.state"


@pytest.mark.parametrize(
    ("method", "suffix"),
    [("GET", ""), ("GET", "/jobs"), ("POST", "/pause"), ("POST", "/resume")],
)
async def test_other_queues_are_404(api: httpx.AsyncClient, method: str, suffix: str) -> None:
    response = await api.request(method, f"/queues/someone-elses{suffix}")
    assert response.status_code == 404
    assert response.json()["type"] == "urn:conveyor:problem:queue-not-found"


async def test_tasks_lists_each_task_with_its_payload_schema(api: httpx.AsyncClient) -> None:
    response = await api.get("/tasks")
    assert response.status_code == 200
    tasks = {t["name"]: t for t in response.json()}
    assert set(tasks) == set(registry.names())
    email = tasks["send_email"]["payload_schema"]
    assert email["required"] == ["subject", "recipients"]
    assert tasks["explode"]["retries"] == 0


async def test_health_and_readiness(api: httpx.AsyncClient) -> None:
    assert (await api.get("/healthz")).json() == {"status": "ok"}
    assert (await api.get("/readyz")).json() == {"status": "ready", "redis": "ok"}


@pytest.mark.parametrize(
    ("method", "path", "status", "slug"),
    [
        ("GET", "/nowhere", 404, "not-found"),
        ("PUT", "/enqueue", 405, "method-not-allowed"),
        ("GET", "/enqueue", 405, "method-not-allowed"),
    ],
)
async def test_routing_errors_are_problems_too(
    api: httpx.AsyncClient, method: str, path: str, status: int, slug: str
) -> None:
    response = await api.request(method, path)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == f"urn:conveyor:problem:{slug}"
    if status == 405:
        assert "POST" in response.headers["allow"]


async def test_job_state_values_are_bullmq_words(api: httpx.AsyncClient) -> None:
    job_id = await enqueue(api, "echo", options={"delay": 60_000})
    assert (await job(api, job_id))["state"] == JobState.DELAYED.value == "delayed"
