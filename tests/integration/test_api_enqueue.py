"""POST /enqueue and /enqueue/bulk through the real app against real Redis.

Every test runs twice: through the ASGI fast path with per-tick batching (the default), and
through FastAPI's route with one round trip per job; both must behave the same.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from conveyor.client import QueueClient
from conveyor.config import Settings
from conveyor.jobs import JobState
from conveyor.policy import MAX_BACKOFF_MS
from conveyor.services.api.enqueue import idempotent_job_id
from tests.support.api import api_client

PROBLEM = "application/problem+json"


async def total(queue: QueueClient) -> int:
    return sum((await queue.counts()).values())


def assert_problem(response: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["type"] == f"urn:conveyor:problem:{slug}"
    assert body["status"] == status
    assert body["title"]
    assert body["detail"]
    assert body["instance"] == response.request.url.path
    return body


def paths(problem: dict[str, Any]) -> list[str]:
    return [e["path"] for e in problem["errors"]]


async def test_enqueue_answers_201_once_redis_holds_the_job(
    api: httpx.AsyncClient, queue: QueueClient, settings: Settings, redis: Redis
) -> None:
    payload = {"duration_ms": 10, "fail_rate": 0.5}
    response = await api.post("/enqueue", json={"name": "simulate", "data": payload})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["name"] == "simulate"
    assert body["queue"] == settings.queue
    assert body["created"] is True
    assert body["status_url"] == f"/jobs/{body['id']}"
    assert response.headers["location"] == body["status_url"]
    view = await queue.get_job(body["id"])
    assert view.state is JobState.WAITING
    assert view.info.name == "simulate"
    assert view.info.data == payload
    assert view.info.options["attempts"] == settings.retries + 1
    assert view.info.options["backoff"] == {
        "type": settings.backoff_type,
        "delay": settings.backoff_delay_ms,
    }
    raw = await redis.hgetall(f"{settings.prefix}:{settings.queue}:{body['id']}")
    assert json.loads(raw["data"]) == payload
    assert raw["name"] == "simulate"


async def test_data_and_options_may_be_omitted(api: httpx.AsyncClient, queue: QueueClient) -> None:
    response = await api.post("/enqueue", json={"name": "simulate"})
    assert response.status_code == 201
    view = await queue.get_job(response.json()["id"])
    assert view.info.data == {}


@pytest.mark.parametrize(
    ("options", "state", "stored"),
    [
        ({"delay": 60_000}, JobState.DELAYED, {"delay": 60_000}),
        ({"priority": 7}, JobState.PRIORITIZED, {"priority": 7}),
        (
            {"attempts": 2, "backoff": {"type": "fixed", "delay": 50}},
            JobState.WAITING,
            {"attempts": 2, "backoff": {"type": "fixed", "delay": 50}},
        ),
        ({"backoff": 75}, JobState.WAITING, {"backoff": {"type": "fixed", "delay": 75}}),
        (
            {"removeOnComplete": True, "removeOnFail": {"age": 60, "count": 10}, "lifo": True},
            JobState.WAITING,
            {"removeOnComplete": True, "removeOnFail": {"age": 60, "count": 10}, "lifo": True},
        ),
    ],
)
async def test_job_options_in_bullmq_words(
    api: httpx.AsyncClient,
    queue: QueueClient,
    options: dict[str, Any],
    state: JobState,
    stored: dict[str, Any],
) -> None:
    response = await api.post("/enqueue", json={"name": "simulate", "options": options})
    assert response.status_code == 201, response.text
    view = await queue.get_job(response.json()["id"])
    assert view.state is state
    for key, value in stored.items():
        assert view.info.options[key] == value


@pytest.mark.parametrize(
    ("data", "expected_paths"),
    [
        ({"recipients": [{"address": "a@b.c"}]}, ["data.subject"]),
        ({"subject": "hi", "recipients": [{"address": "nope"}]}, ["data.recipients.0.address"]),
        (
            {"subject": "", "recipients": [{"address": "a@b.c"}, {"address": 5}]},
            ["data.subject", "data.recipients.1.address"],
        ),
        ({"subject": "hi", "recipients": [], "cc": []}, ["data.recipients", "data.cc"]),
    ],
)
async def test_payload_that_fails_the_model_is_422_with_field_paths(
    api: httpx.AsyncClient, queue: QueueClient, data: dict[str, Any], expected_paths: list[str]
) -> None:
    response = await api.post("/enqueue", json={"name": "send_email", "data": data})
    problem = assert_problem(response, 422, "invalid-payload")
    assert paths(problem) == expected_paths
    assert all(e["message"] and e["type"] for e in problem["errors"])
    assert await total(queue) == 0


@pytest.mark.parametrize(
    ("body", "expected_paths"),
    [
        ({"name": 5}, ["name"]),
        ({"data": {}}, ["name"]),
        ({"name": ""}, ["name"]),
        ({"name": "simulate", "data": [1, 2]}, ["data"]),
        ({"name": "simulate", "options": {"delay": "5"}}, ["options.delay"]),
        ({"name": "simulate", "options": {"delay": -1}}, ["options.delay"]),
        ({"name": "simulate", "options": {"attempts": True}}, ["options.attempts"]),
        ({"name": "simulate", "options": {"timeout": 5}}, ["options.timeout"]),
        ({"name": "simulate", "options": {"jobId": "a:b"}}, ["options.jobId"]),
        ({"name": "simulate", "payload": {}}, ["payload"]),
        ([{"name": "simulate"}], [""]),
    ],
)
async def test_wrong_types_are_422_with_the_path(
    api: httpx.AsyncClient, queue: QueueClient, body: Any, expected_paths: list[str]
) -> None:
    problem = assert_problem(await api.post("/enqueue", json=body), 422, "invalid-request")
    assert paths(problem) == expected_paths
    assert await total(queue) == 0


async def test_unknown_task_is_422_and_names_the_known_ones(
    api: httpx.AsyncClient, queue: QueueClient
) -> None:
    problem = assert_problem(
        await api.post("/enqueue", json={"name": "no_such_task"}), 422, "unknown-task"
    )
    assert paths(problem) == ["name"]
    assert {"simulate", "send_email"} <= set(problem["known_tasks"])
    assert await total(queue) == 0


TWO_DAYS_MS = 2 * 24 * 3600 * 1000


@pytest.mark.parametrize("form", ["number", "object"])
async def test_one_backoff_limit_whichever_way_it_is_written(
    api: httpx.AsyncClient, queue: QueueClient, form: str
) -> None:
    """conveyor.policy's MAX_BACKOFF_MS (30 days) for a number and for {type, delay} alike
    (the object form used to stop at 1 day, the number at 30), in the API and the schema."""

    def backoff(ms: int) -> Any:
        return ms if form == "number" else {"type": "fixed", "delay": ms}

    body = {"name": "simulate", "options": {"backoff": backoff(TWO_DAYS_MS)}}
    response = await api.post("/enqueue", json=body)
    assert response.status_code == 201, response.text
    view = await queue.get_job(response.json()["id"])
    assert view.info.options["backoff"] == {"type": "fixed", "delay": TWO_DAYS_MS}

    body = {"name": "simulate", "options": {"backoff": backoff(MAX_BACKOFF_MS + 1)}}
    problem = assert_problem(await api.post("/enqueue", json=body), 422, "invalid-request")
    assert paths(problem)[0].startswith("options.backoff")
    assert await total(queue) == 1

    schema = (await api.get("/openapi.json")).json()["components"]["schemas"]
    assert schema["BackoffOptions"]["properties"]["delay"]["maximum"] == MAX_BACKOFF_MS


async def test_options_bullmq_refuses_are_422(api: httpx.AsyncClient, queue: QueueClient) -> None:
    response = await api.post("/enqueue", json={"name": "simulate", "options": {"jobId": "42"}})
    problem = assert_problem(response, 422, "invalid-options")
    assert paths(problem) == ["options"]
    assert "integer" in problem["detail"]
    assert await total(queue) == 0


@pytest.mark.parametrize(
    ("content", "content_type", "status", "slug"),
    [
        (b'{"name": "simulate",', "application/json", 400, "malformed-json"),
        (b"", "application/json", 400, "malformed-json"),
        (b"\xff\xfe", "application/json", 400, "malformed-json"),
        (b'{"name": "simulate"}', "text/plain", 415, "unsupported-media-type"),
        (b'{"name": "simulate"}', None, 415, "unsupported-media-type"),
        (b"name=simulate", "application/x-www-form-urlencoded", 415, "unsupported-media-type"),
        (b'{"name": "simulate"}', "application/vnd.api+json; charset=utf-8", 201, None),
    ],
)
async def test_what_is_not_json_is_refused(
    api: httpx.AsyncClient,
    queue: QueueClient,
    content: bytes,
    content_type: str | None,
    status: int,
    slug: str | None,
) -> None:
    headers = {"content-type": content_type} if content_type else {}
    response = await api.post("/enqueue", content=content, headers=headers)
    if slug is None:
        assert response.status_code == status
        assert await total(queue) == 1
    else:
        assert_problem(response, status, slug)
        assert await total(queue) == 0


async def test_body_over_the_limit_is_413_whether_declared_or_streamed(
    settings: Settings, redis_url: str, queue: QueueClient
) -> None:
    big = json.dumps({"name": "echo", "data": {"value": "x" * 2000}}).encode()

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(big), 256):
            yield big[start : start + 256]

    variants: list[dict[str, Any]] = [{}, {"api_fast_path": False}]
    for overrides in variants:
        async with api_client(settings, redis_url, api_max_body_bytes=1024, **overrides) as api:
            declared = await api.post(
                "/enqueue", content=big, headers={"content-type": "application/json"}
            )
            assert_problem(declared, 413, "body-too-large")
            streamed = await api.post(
                "/enqueue", content=chunks(), headers={"content-type": "application/json"}
            )
            assert "content-length" not in streamed.request.headers
            assert_problem(streamed, 413, "body-too-large")
            small = await api.post("/enqueue", json={"name": "echo", "data": {"value": "x"}})
            assert small.status_code == 201
    assert await total(queue) == 2


async def test_idempotency_key_returns_the_same_job(
    api: httpx.AsyncClient, queue: QueueClient
) -> None:
    body = {"name": "simulate", "data": {"duration_ms": 5}}
    first = await api.post("/enqueue", json=body, headers={"Idempotency-Key": "order-17"})
    again = await api.post("/enqueue", json=body, headers={"Idempotency-Key": "order-17"})
    assert first.status_code == 201
    assert again.status_code == 200
    assert first.json()["id"] == again.json()["id"] == idempotent_job_id("order-17")
    assert again.json()["created"] is False
    other = await api.post("/enqueue", json=body, headers={"Idempotency-Key": "order-18"})
    assert other.status_code == 201
    assert other.json()["id"] != first.json()["id"]
    assert await total(queue) == 2


async def test_idempotency_key_with_keys_in_another_order_is_the_same_request(
    api: httpx.AsyncClient, queue: QueueClient
) -> None:
    headers = {"Idempotency-Key": "k", "content-type": "application/json"}
    first = await api.post(
        "/enqueue",
        content=b'{"name":"simulate","data":{"duration_ms":5,"fail_rate":0}}',
        headers=headers,
    )
    again = await api.post(
        "/enqueue",
        content=b'{"data":{"fail_rate":0,"duration_ms":5},"name":"simulate"}',
        headers=headers,
    )
    assert (first.status_code, again.status_code) == (201, 200)
    assert await total(queue) == 1


async def test_idempotency_key_reused_for_another_payload_is_refused(
    api: httpx.AsyncClient, queue: QueueClient
) -> None:
    headers = {"Idempotency-Key": "pay-1"}
    first = await api.post("/enqueue", json={"name": "echo", "data": {"value": 1}}, headers=headers)
    assert first.status_code == 201
    for body in ({"name": "echo", "data": {"value": 2}}, {"name": "simulate"}):
        problem = assert_problem(
            await api.post("/enqueue", json=body, headers=headers), 422, "idempotency-key-reused"
        )
        assert problem["job_id"] == first.json()["id"]
    view = await queue.get_job(first.json()["id"])
    assert view.info.data == {"value": 1}
    assert await total(queue) == 1


@pytest.mark.parametrize(
    ("key", "error_type"), [("k" * 256, "string_too_long"), ("", "string_too_short")]
)
async def test_idempotency_key_out_of_bounds_is_422(
    api: httpx.AsyncClient, queue: QueueClient, key: str, error_type: str
) -> None:
    response = await api.post(
        "/enqueue", json={"name": "simulate"}, headers={"Idempotency-Key": key}
    )
    problem = assert_problem(response, 422, "invalid-request")
    assert problem["errors"][0]["path"] == "header.Idempotency-Key"
    assert problem["errors"][0]["type"] == error_type
    assert await total(queue) == 0


async def test_idempotency_key_and_job_id_together_are_refused(
    api: httpx.AsyncClient, queue: QueueClient
) -> None:
    response = await api.post(
        "/enqueue",
        json={"name": "simulate", "options": {"jobId": "mine"}},
        headers={"Idempotency-Key": "k"},
    )
    assert_problem(response, 422, "invalid-options")
    assert await total(queue) == 0


async def test_client_job_id_returns_the_existing_job(
    api: httpx.AsyncClient, queue: QueueClient
) -> None:
    body = {"name": "echo", "data": {"value": 1}, "options": {"jobId": "report-2026-01"}}
    first = await api.post("/enqueue", json=body)
    assert first.status_code == 201
    assert first.json()["id"] == "report-2026-01"
    body["data"] = {"value": 2}
    again = await api.post("/enqueue", json=body)
    assert again.status_code == 200
    assert again.json() == {**first.json(), "created": False}
    assert (await queue.get_job("report-2026-01")).info.data == {"value": 1}
    assert await total(queue) == 1


async def test_concurrent_enqueues_each_get_their_own_job(
    api: httpx.AsyncClient, queue: QueueClient
) -> None:
    responses = await asyncio.gather(
        *(api.post("/enqueue", json={"name": "echo", "data": {"value": i}}) for i in range(150))
    )
    assert {r.status_code for r in responses} == {201}, [
        r.text for r in responses if r.status_code != 201
    ][:2]
    ids = [r.json()["id"] for r in responses]
    assert len(set(ids)) == 150
    for i in (0, 77, 149):
        assert (await queue.get_job(ids[i])).info.data == {"value": i}
    assert await total(queue) == 150


async def test_bulk_adds_every_job_in_order(api: httpx.AsyncClient, queue: QueueClient) -> None:
    jobs = [
        {"name": "echo", "data": {"value": 1}},
        {"name": "simulate", "options": {"delay": 60_000}},
        {"name": "send_email", "data": {"subject": "s", "recipients": [{"address": "a@b.c"}]}},
    ]
    response = await api.post("/enqueue/bulk", json={"jobs": jobs})
    assert response.status_code == 201, response.text
    accepted = response.json()["jobs"]
    assert [a["name"] for a in accepted] == ["echo", "simulate", "send_email"]
    assert all(a["created"] and a["status_url"] == f"/jobs/{a['id']}" for a in accepted)
    assert (await queue.get_job(accepted[0]["id"])).info.data == {"value": 1}
    assert (await queue.get_job(accepted[1]["id"])).state is JobState.DELAYED
    assert await total(queue) == 3


@pytest.mark.parametrize(
    ("jobs", "slug", "expected_paths"),
    [
        (
            [{"name": "echo"}, {"name": "echo"}, {"name": "simulate", "data": {"x": 1}}],
            "invalid-payload",
            ["jobs.2.data.x"],
        ),
        ([{"name": "echo"}, {"name": "nope"}], "unknown-task", ["jobs.1.name"]),
        (
            [{"name": "echo"}, {"name": "echo", "options": {"delay": "x"}}],
            "invalid-request",
            ["jobs.1.options.delay"],
        ),
        ([{"name": "echo", "options": {"jobId": "123"}}], "invalid-options", ["jobs.0.options"]),
        ([], "invalid-request", ["jobs"]),
    ],
)
async def test_bulk_is_all_or_nothing(
    api: httpx.AsyncClient,
    queue: QueueClient,
    jobs: list[dict[str, Any]],
    slug: str,
    expected_paths: list[str],
) -> None:
    problem = assert_problem(await api.post("/enqueue/bulk", json={"jobs": jobs}), 422, slug)
    assert paths(problem) == expected_paths
    assert await total(queue) == 0


async def test_bulk_refuses_duplicate_ids_and_too_many_jobs(
    settings: Settings, redis_url: str, queue: QueueClient
) -> None:
    async with api_client(settings, redis_url, api_bulk_max_jobs=3) as api:
        twice = [{"name": "echo", "options": {"jobId": "same"}}] * 2
        assert_problem(
            await api.post("/enqueue/bulk", json={"jobs": twice}), 422, "invalid-options"
        )
        many = [{"name": "echo"}] * 4
        problem = assert_problem(
            await api.post("/enqueue/bulk", json={"jobs": many}), 422, "invalid-request"
        )
        assert paths(problem) == ["jobs"]
        ok = await api.post("/enqueue/bulk", json={"jobs": many[:3]})
        assert ok.status_code == 201
    assert await total(queue) == 3


async def test_bulk_with_idempotency_key_returns_the_same_jobs(
    api: httpx.AsyncClient, queue: QueueClient
) -> None:
    body = {"jobs": [{"name": "echo", "data": {"value": i}} for i in range(3)]}
    headers = {"Idempotency-Key": "batch-9"}
    first = await api.post("/enqueue/bulk", json=body, headers=headers)
    again = await api.post("/enqueue/bulk", json=body, headers=headers)
    assert first.status_code == again.status_code == 201
    assert [j["id"] for j in first.json()["jobs"]] == [j["id"] for j in again.json()["jobs"]]
    assert [j["created"] for j in again.json()["jobs"]] == [False] * 3
    changed = {"jobs": [{"name": "echo", "data": {"value": 9}}]}
    assert_problem(
        await api.post("/enqueue/bulk", json=changed, headers=headers),
        422,
        "idempotency-key-reused",
    )
    assert await total(queue) == 3
