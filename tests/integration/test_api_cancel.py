"""``POST /jobs/{id}/cancel`` against a real worker: 200 for a job that waits, 202 for one
that runs (stopped within a second), 409 for a finished one; refusals write nothing."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from conveyor.client import QueueClient
from conveyor.config import Settings
from conveyor.jobs import JobState
from conveyor.testing import wait_for_state
from conveyor.worker import Worker
from tests.support.api import api_client, registry


@pytest.fixture
async def api(settings: Settings, redis_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(settings, redis_url) as client:
        yield client


async def enqueue(api: httpx.AsyncClient, **body: Any) -> str:
    response = await api.post("/enqueue", json={"name": "echo", **body})
    assert response.status_code == 201, response.text
    job_id: str = response.json()["id"]
    return job_id


async def test_a_waiting_job_is_cancelled_with_its_reason(
    api: httpx.AsyncClient, queue: QueueClient
) -> None:
    job_id = await enqueue(api, options={"delay": 60_000})
    response = await api.post(f"/jobs/{job_id}/cancel", json={"reason": "duplicate order"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["outcome"] == "cancelled"
    assert body["previous_state"] == "delayed"
    assert body["state"] == "failed"
    assert body["failed_reason"].startswith("JobCancelled: cancelled by api ")
    assert body["failed_reason"].endswith(": duplicate order")
    # Again, body-less (a script's header): idempotent.
    again = await api.post(f"/jobs/{job_id}/cancel")
    assert again.status_code == 200, again.text
    assert again.json()["outcome"] == "done"
    status = (await api.get(f"/jobs/{job_id}")).json()
    assert status["state"] == "failed"
    assert status["failed_reason"] == body["failed_reason"]


async def test_a_running_job_is_stopped_within_a_second(
    api: httpx.AsyncClient, queue: QueueClient, make_worker: Callable[..., Worker]
) -> None:
    make_worker(registry)
    job_id = await enqueue(api, data={"sleep_ms": 10_000})
    await wait_for_state(queue, job_id, JobState.ACTIVE)
    asked = time.monotonic()
    response = await api.post(f"/jobs/{job_id}/cancel", json={"reason": "too slow"})
    assert response.status_code == 202, response.text
    assert response.json()["outcome"] == "marked"
    assert response.json()["state"] == "active"
    await wait_for_state(queue, job_id, JobState.FAILED, timeout=5)
    assert time.monotonic() - asked < 1.0
    assert (await api.post(f"/jobs/{job_id}/cancel")).json()["outcome"] == "done"


async def test_finished_unknown_and_bad_requests(
    api: httpx.AsyncClient, queue: QueueClient, make_worker: Callable[..., Worker]
) -> None:
    make_worker(registry)
    done = await enqueue(api, data={"value": 1})
    await wait_for_state(queue, done, JobState.COMPLETED)
    conflict = await api.post(f"/jobs/{done}/cancel")
    assert conflict.status_code == 409, conflict.text
    assert "completed" in conflict.json()["detail"]
    assert (await api.post("/jobs/nope/cancel")).status_code == 404
    waiting = await enqueue(api, options={"delay": 60_000})
    too_long = await api.post(f"/jobs/{waiting}/cancel", json={"reason": "x" * 1001})
    assert too_long.status_code == 422, too_long.text
    extra = await api.post(f"/jobs/{waiting}/cancel", json={"why": "x"})
    assert extra.status_code == 422, extra.text
    broken = await api.post(
        f"/jobs/{waiting}/cancel", content=b"{", headers={"content-type": "application/json"}
    )
    assert broken.status_code == 400, broken.text
    assert await queue.get_state(waiting) is JobState.DELAYED
    assert await queue.redis.exists(queue.bull.cancel_mark(waiting)) == 0


async def test_a_cross_site_form_cannot_cancel(
    settings: Settings, redis_url: str, queue: QueueClient
) -> None:
    job_id = await queue.enqueue("echo", {}, {"delay": 60_000})
    async with api_client(settings, redis_url, headers={}) as browser:
        response = await browser.post(
            f"/jobs/{job_id}/cancel",
            content=b"reason=x",
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        assert response.status_code in (403, 415), response.text
        bare = await browser.post(f"/jobs/{job_id}/cancel")
        assert bare.status_code == 403, bare.text
    assert await queue.get_state(job_id) is JobState.DELAYED
