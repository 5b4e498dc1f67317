"""An API serving several queues (CONVEYOR_QUEUES): a job goes to the queue its request names
(single and bulk), the default is CONVEYOR_QUEUE, an unknown queue is a 422 that writes
nothing, and the job and queue endpoints find each queue's jobs."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from conveyor.client import QueueClient
from conveyor.config import Settings
from conveyor.jobs import JobState
from tests.support.api import api_client


@pytest.fixture
def other_name(settings: Settings) -> str:
    return f"{settings.queue}-other"


@pytest.fixture(
    params=[
        pytest.param({}, id="fast-path+batching"),
        pytest.param({"api_fast_path": False, "api_batch_enqueue": False}, id="route+single"),
    ]
)
async def api(
    request: pytest.FixtureRequest, settings: Settings, redis_url: str, other_name: str
) -> AsyncIterator[httpx.AsyncClient]:
    queues: dict[str, Any] = {"queues": {settings.queue: 1, other_name: 1}}
    async with api_client(settings, redis_url, **queues, **request.param) as client:
        yield client


@pytest.fixture
def queues(
    make_client: Callable[..., QueueClient], settings: Settings, other_name: str
) -> dict[str, QueueClient]:
    return {settings.queue: make_client(), other_name: make_client(queue=other_name)}


async def waiting(client: QueueClient) -> list[str]:
    return [job.id for job in await client.list_jobs(JobState.WAITING, 0, -1)]


async def test_a_job_goes_to_the_queue_it_names_and_is_found_there(
    api: httpx.AsyncClient, queues: dict[str, QueueClient], settings: Settings, other_name: str
) -> None:
    default = (await api.post("/enqueue", json={"name": "echo"})).json()
    chosen = await api.post("/enqueue", json={"name": "echo", "queue": other_name})
    assert chosen.status_code == 201
    body = chosen.json()
    assert default["queue"] == settings.queue
    assert default["status_url"] == f"/jobs/{default['id']}"
    assert body["queue"] == other_name
    assert body["status_url"] == f"/jobs/{body['id']}?queue={other_name}"
    assert chosen.headers["location"] == body["status_url"]
    assert await waiting(queues[settings.queue]) == [default["id"]]
    assert await waiting(queues[other_name]) == [body["id"]]

    status = (await api.get(body["status_url"])).json()
    assert (status["id"], status["queue"], status["state"]) == (body["id"], other_name, "waiting")
    assert (await api.get(f"/jobs/{body['id']}")).status_code == 404  # not in the default
    counts = (await api.get(f"/queues/{other_name}")).json()
    assert (counts["name"], counts["total"]) == (other_name, 1)
    deleted = await api.delete(body["status_url"])
    assert deleted.status_code == 204
    assert await waiting(queues[other_name]) == []


async def test_a_bulk_goes_to_the_queue_named_at_its_top(
    api: httpx.AsyncClient, queues: dict[str, QueueClient], settings: Settings, other_name: str
) -> None:
    jobs: list[dict[str, Any]] = [{"name": "echo"}, {"name": "echo", "queue": other_name}]
    response = await api.post("/enqueue/bulk", json={"queue": other_name, "jobs": jobs})
    assert response.status_code == 201
    ids = [job["id"] for job in response.json()["jobs"]]
    assert {job["queue"] for job in response.json()["jobs"]} == {other_name}
    assert sorted(await waiting(queues[other_name])) == sorted(ids)
    assert await waiting(queues[settings.queue]) == []


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/enqueue", {"name": "echo", "queue": "nope"}, "queue"),
        ("/enqueue/bulk", {"queue": "nope", "jobs": [{"name": "echo"}]}, "queue"),
        (
            "/enqueue/bulk",
            {"jobs": [{"name": "echo"}, {"name": "echo", "queue": "no"}]},
            "jobs.1.queue",
        ),
    ],
)
async def test_an_unknown_queue_is_422_and_writes_nothing(
    api: httpx.AsyncClient,
    queues: dict[str, QueueClient],
    path: str,
    body: dict[str, Any],
    field: str,
) -> None:
    response = await api.post(path, json=body)
    assert response.status_code == 422
    problem = response.json()
    assert problem["type"] == "urn:conveyor:problem:unknown-queue"
    assert [error["path"] for error in problem["errors"]] == [field]
    for client in queues.values():
        assert sum((await client.counts()).values()) == 0
    assert (await api.get("/jobs/x?queue=nope")).status_code == 404
    assert (await api.get("/queues/nope")).status_code == 404


async def test_a_bulk_cannot_split_over_queues(
    api: httpx.AsyncClient, queues: dict[str, QueueClient], other_name: str
) -> None:
    jobs = [{"name": "echo"}, {"name": "echo", "queue": other_name}]
    response = await api.post("/enqueue/bulk", json={"jobs": jobs})
    assert response.status_code == 422
    assert [e["path"] for e in response.json()["errors"]] == ["jobs.1.queue"]
    for client in queues.values():
        assert sum((await client.counts()).values()) == 0


async def test_the_openapi_document_lists_the_served_queues(
    api: httpx.AsyncClient, settings: Settings, other_name: str
) -> None:
    schemas = (await api.get("/openapi.json")).json()["components"]["schemas"]
    bulk_queue = schemas["BulkTaskJobs"]["properties"]["queue"]
    assert bulk_queue["enum"] == [settings.queue, other_name]
