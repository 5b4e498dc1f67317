"""The monitor's JSON API, event stream and actions against a real Redis and a real server."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from pydantic import BaseModel
from redis.asyncio import Redis

from conveyor.client import JobSpec, QueueClient
from conveyor.clock import now_ms
from conveyor.config import Settings
from conveyor.jobs import JobState
from conveyor.maintenance import RetentionPolicy
from conveyor.registry import JobContext, TaskRegistry
from conveyor.services import cleanup as cleanup_service
from conveyor.testing import wait_for
from conveyor.worker import Worker
from tests.support.monitor import serve_monitor

ACT = {"X-Conveyor-Action": "1"}


class Msg(BaseModel):
    message: str = ""


@pytest.fixture
def registry() -> TaskRegistry:
    registry = TaskRegistry()

    @registry.task("ok")
    async def ok(payload: Msg, ctx: JobContext) -> str:
        await ctx.progress(50)
        await ctx.log(f"working on {ctx.job_id}")
        return "done"

    @registry.task("boom")
    async def boom(payload: Msg, ctx: JobContext) -> None:
        await ctx.log("about to fail")
        raise ConnectionError(payload.message or "connection refused")

    return registry


@pytest.fixture
async def monitor(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with serve_monitor(settings) as http:
        yield http


async def _fail_jobs(
    client: QueueClient,
    make_worker: Callable[..., Worker],
    registry: TaskRegistry,
    messages: list[str],
) -> list[str]:
    """Jobs that fail for good (one attempt) with the given messages, in order."""
    ids = await client.enqueue_many(
        [JobSpec("boom", {"message": m}, {"attempts": 1}) for m in messages]
    )
    worker = make_worker(registry)
    await wait_for(
        lambda: _count(client, JobState.FAILED, len(messages)), message="jobs did not fail"
    )
    worker.stop()
    await wait_for(lambda: not worker.running)
    return ids


async def _count(client: QueueClient, state: JobState, at_least: int) -> bool:
    return (await client.counts())[state] >= at_least


def _queue(overview: dict[str, Any], name: str) -> dict[str, Any]:
    return next(q for q in overview["queues"] if q["name"] == name)


# --- counts ------------------------------------------------------------------------------------
async def test_overview_counts_every_state(
    monitor: httpx.AsyncClient, make_client: Callable[..., QueueClient], settings: Settings
) -> None:
    client = make_client()
    await client.enqueue_many([JobSpec("ok", {}) for _ in range(3)])
    await client.enqueue("ok", {}, {"delay": 60_000})
    await client.enqueue("ok", {}, {"priority": 5})

    reply = await monitor.get("/api/overview")

    assert reply.status_code == 200
    queue = _queue(reply.json(), settings.queue)
    assert queue["counts"] == {s.value: n for s, n in (await client.counts()).items()}
    assert queue["counts"]["waiting"] == 3
    assert queue["counts"]["delayed"] == 1
    assert queue["counts"]["prioritized"] == 1
    assert queue["paused"] is False
    assert queue["workers"] == 0
    assert queue["oldest_waiting_s"] >= 0


async def test_queues_are_discovered_beside_the_configured_one(
    monitor: httpx.AsyncClient, make_client: Callable[..., QueueClient], settings: Settings
) -> None:
    other = make_client(queue="emails")
    await other.enqueue("send", {})

    names = [q["name"] for q in (await monitor.get("/api/overview")).json()["queues"]]

    assert names[0] == settings.queue
    assert "emails" in names
    assert _queue((await monitor.get("/api/overview")).json(), "emails")["counts"]["waiting"] == 1


async def test_unknown_queue_is_a_404_and_changes_nothing(
    monitor: httpx.AsyncClient, redis: Redis, settings: Settings
) -> None:
    reply = await monitor.post("/api/queues/nope/pause", headers=ACT)
    assert reply.status_code == 404
    assert reply.headers["content-type"] == "application/problem+json"
    assert "unknown queue 'nope'" in reply.json()["detail"]
    assert await redis.exists(f"{settings.prefix}:nope:meta") == 0


async def test_event_stream_pushes_new_counts_without_asking(
    monitor: httpx.AsyncClient, make_client: Callable[..., QueueClient], settings: Settings
) -> None:
    client = make_client()
    async with monitor.stream("GET", "/api/events") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        lines = stream.aiter_lines()

        async def next_overview() -> dict[str, Any]:
            async for line in lines:
                if line.startswith("data: "):
                    return _queue(json.loads(line[6:]), settings.queue)
            raise AssertionError("stream ended")

        first = await asyncio.wait_for(next_overview(), 10)
        assert first["counts"]["waiting"] == 0
        await client.enqueue_many([JobSpec("ok", {}) for _ in range(4)])
        second = await asyncio.wait_for(next_overview(), 10)
        assert second["counts"]["waiting"] == 4


# --- lists and details ---------------------------------------------------------------------------
async def test_job_list_pages_newest_first(
    monitor: httpx.AsyncClient, make_client: Callable[..., QueueClient], settings: Settings
) -> None:
    client = make_client()
    ids = await client.enqueue_many([JobSpec("ok", {"message": str(i)}) for i in range(30)])
    url = f"/api/queues/{settings.queue}/jobs"

    first = (await monitor.get(url, params={"state": "waiting", "size": 25})).json()
    second = (await monitor.get(url, params={"state": "waiting", "size": 25, "page": 1})).json()

    assert first["total"] == 30
    assert len(first["jobs"]) == 25
    assert len(second["jobs"]) == 5
    listed = [j["id"] for j in first["jobs"] + second["jobs"]]
    assert listed == list(reversed(ids))
    assert first["jobs"][0]["data_preview"] == '{"message":"29"}'


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"state": "sleeping"}, "unknown state 'sleeping'"),
        ({"state": "waiting", "size": 500}, "size"),
        ({"state": "waiting", "page": -1}, "page"),
    ],
)
async def test_bad_list_parameters_are_a_400(
    monitor: httpx.AsyncClient, settings: Settings, params: dict[str, Any], needle: str
) -> None:
    reply = await monitor.get(f"/api/queues/{settings.queue}/jobs", params=params)
    assert reply.status_code == 400
    assert needle in reply.json()["detail"]


async def test_search_by_name_and_by_id(
    monitor: httpx.AsyncClient, make_client: Callable[..., QueueClient], settings: Settings
) -> None:
    client = make_client()
    await client.enqueue_many([JobSpec("send-email", {}) for _ in range(3)])
    await client.enqueue_many([JobSpec("resize-image", {}) for _ in range(2)])
    delayed = await client.enqueue("resize-image", {}, {"delay": 60_000})
    url = f"/api/queues/{settings.queue}/jobs"

    by_name = (await monitor.get(url, params={"state": "waiting", "q": "EMAIL"})).json()
    by_id = (await monitor.get(url, params={"state": "waiting", "q": delayed})).json()

    assert by_name["total"] == 3
    assert {j["name"] for j in by_name["jobs"]} == {"send-email"}
    assert by_name["searched"] == 5
    assert by_name["truncated"] is False
    # an exact id is found whatever the state listed
    assert [(j["id"], j["state"]) for j in by_id["jobs"]] == [(delayed, "delayed")]


async def test_job_detail_has_payload_attempts_logs_and_failure(
    monitor: httpx.AsyncClient,
    make_client: Callable[..., QueueClient],
    make_worker: Callable[..., Worker],
    registry: TaskRegistry,
    settings: Settings,
) -> None:
    client = make_client()
    [job_id] = await _fail_jobs(client, make_worker, registry, ["ConnectionError to db"])

    reply = await monitor.get(f"/api/queues/{settings.queue}/jobs/{job_id}")

    assert reply.status_code == 200
    job = reply.json()
    assert job["state"] == "failed"
    assert job["data"] == {"message": "ConnectionError to db"}
    assert job["options"]["attempts"] == 1
    assert job["attempts_made"] == 1
    assert job["failed_reason"] == "ConnectionError: ConnectionError to db"
    assert "raise ConnectionError" in job["stacktrace"][-1]
    assert job["logs"] == ["about to fail"]
    assert job["failure_record"]["job_id"] == job_id
    # Not the seed's queue: the page names the record's key in the queue's own key space.
    assert (
        job["failure_record_key"] == f"{settings.prefix}:{settings.queue}:conveyor:failed:{job_id}"
    )
    assert job["run_ms"] is not None
    assert job["wait_ms"] is not None
    missing = await monitor.get(f"/api/queues/{settings.queue}/jobs/nope")
    assert missing.status_code == 404


async def test_failures_are_grouped_by_error(
    monitor: httpx.AsyncClient,
    make_client: Callable[..., QueueClient],
    make_worker: Callable[..., Worker],
    registry: TaskRegistry,
    settings: Settings,
) -> None:
    client = make_client()
    messages = [f"timeout after {5000 + i} ms" for i in range(5)] + ["HTTP 500", "HTTP 404"]
    await _fail_jobs(client, make_worker, registry, messages)

    groups = (await monitor.get(f"/api/queues/{settings.queue}/errors")).json()

    summary = {g["pattern"]: g["count"] for g in groups["groups"]}
    assert summary == {
        "ConnectionError: timeout after <n> ms": 5,
        "ConnectionError: HTTP 500": 1,
        "ConnectionError: HTTP 404": 1,
    }
    assert groups["groups"][0]["names"] == ["boom"]
    assert groups["is_sample"] is False
    assert groups["total_failed"] == 7


async def test_error_groups_say_when_they_are_a_sample(
    make_client: Callable[..., QueueClient],
    make_worker: Callable[..., Worker],
    registry: TaskRegistry,
    settings: Settings,
) -> None:
    client = make_client()
    await _fail_jobs(client, make_worker, registry, ["same"] * 12)
    async with serve_monitor(settings, monitor_error_sample=10) as http:
        groups = (await http.get(f"/api/queues/{settings.queue}/errors")).json()
    assert groups["sampled"] == 10
    assert groups["total_failed"] == 12
    assert groups["is_sample"] is True
    assert groups["groups"][0]["count"] == 10


async def test_workers_are_listed_by_their_connection_name(
    monitor: httpx.AsyncClient,
    make_worker: Callable[..., Worker],
    registry: TaskRegistry,
    settings: Settings,
) -> None:
    worker = make_worker(registry)

    async def listed() -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = (await monitor.get("/api/workers")).json()["workers"]
        return found

    found = await wait_for(listed, message="worker not listed")
    assert [(w["queue"], w["name"]) for w in found] == [(settings.queue, worker.options.name)]
    overview = (await monitor.get("/api/overview")).json()
    assert _queue(overview, settings.queue)["workers"] == 1


# --- actions -----------------------------------------------------------------------------------
async def test_retry_one_failed_job(
    monitor: httpx.AsyncClient,
    make_client: Callable[..., QueueClient],
    make_worker: Callable[..., Worker],
    registry: TaskRegistry,
    redis: Redis,
    settings: Settings,
) -> None:
    client = make_client()
    [job_id, other] = await _fail_jobs(client, make_worker, registry, ["a", "b"])

    reply = await monitor.post(f"/api/queues/{settings.queue}/jobs/{job_id}/retry", headers=ACT)

    assert reply.status_code == 200
    assert reply.json() == {"retried": 1, "job_id": job_id}
    assert await client.get_state(job_id) is JobState.WAITING
    assert await client.get_state(other) is JobState.FAILED
    assert await client.failure_record(job_id) is None
    assert await client.failure_record(other) is not None
    again = await monitor.post(f"/api/queues/{settings.queue}/jobs/{job_id}/retry", headers=ACT)
    assert again.status_code == 409
    assert "only failed or completed jobs can be retried" in again.json()["detail"]


async def test_retry_all_failed(
    monitor: httpx.AsyncClient,
    make_client: Callable[..., QueueClient],
    make_worker: Callable[..., Worker],
    registry: TaskRegistry,
    settings: Settings,
) -> None:
    client = make_client()
    await _fail_jobs(client, make_worker, registry, ["x"] * 4)

    reply = await monitor.post(f"/api/queues/{settings.queue}/retry-failed", headers=ACT)

    assert reply.json() == {"retried": 4, "orphans": 0, "orphan_ids": []}
    counts = await client.counts()
    assert (counts[JobState.FAILED], counts[JobState.WAITING]) == (0, 4)


async def test_retry_all_failed_skips_and_reports_orphans(
    make_client: Callable[..., QueueClient],
    make_worker: Callable[..., Worker],
    registry: TaskRegistry,
    settings: Settings,
    redis: Redis,
) -> None:
    """A failed-set member with no job hash cannot be retried: it used to make retry-all loop
    for ever. Now it is left in place and reported, and every real failed job is retried."""
    client = make_client()
    ids = await _fail_jobs(client, make_worker, registry, ["x"] * 5)
    failed_key = f"{settings.prefix}:{settings.queue}:failed"
    scores = [float(s) for _, s in await redis.zrange(failed_key, 0, -1, withscores=True)]  # type: ignore[str-unpack]
    ghosts = {"ghost-first": scores[0] - 1, "ghost-middle": scores[2], "ghost-last": scores[-1] + 1}
    await redis.zadd(failed_key, ghosts)

    done = await asyncio.wait_for(client.retry_all_failed(batch=2), 10)
    assert done.retried == 5
    assert sorted(done.orphans) == sorted(ghosts)
    assert {await client.get_state(job_id) for job_id in ids} == {JobState.WAITING}
    assert set(await redis.zrange(failed_key, 0, -1)) == set(ghosts)

    await client.enqueue_many([JobSpec("boom", {"message": "y"}, {"attempts": 1})] * 2)
    worker = make_worker(registry)  # the five retried fail again, with two more
    await wait_for(lambda: _count(client, JobState.FAILED, 3 + 7), message="jobs did not fail")
    worker.stop()
    await wait_for(lambda: not worker.running)
    async with serve_monitor(settings) as monitor:
        reply = await monitor.post(f"/api/queues/{settings.queue}/retry-failed", headers=ACT)
    assert reply.status_code == 200, reply.text
    assert reply.json()["retried"] == 7
    assert reply.json()["orphans"] == 3
    assert sorted(reply.json()["orphan_ids"]) == sorted(ghosts)


async def test_remove_a_job(
    monitor: httpx.AsyncClient, make_client: Callable[..., QueueClient], settings: Settings
) -> None:
    client = make_client()
    job_id = await client.enqueue("ok", {})

    reply = await monitor.delete(f"/api/queues/{settings.queue}/jobs/{job_id}", headers=ACT)

    assert reply.json() == {"removed": 1, "job_id": job_id}
    assert await client.get_state(job_id) is JobState.UNKNOWN
    gone = await monitor.delete(f"/api/queues/{settings.queue}/jobs/{job_id}", headers=ACT)
    assert gone.status_code == 404


async def test_pause_and_resume(
    monitor: httpx.AsyncClient, make_client: Callable[..., QueueClient], settings: Settings
) -> None:
    client = make_client()
    await client.enqueue("ok", {})

    paused = await monitor.post(f"/api/queues/{settings.queue}/pause", headers=ACT)
    assert paused.json() == {"paused": True}
    assert await client.is_paused()
    overview = (await monitor.get("/api/overview")).json()
    assert _queue(overview, settings.queue)["paused"] is True
    # BullMQ 5 keeps the jobs where they are and only flags the queue
    assert sum(_queue(overview, settings.queue)["counts"].values()) == 1

    resumed = await monitor.post(f"/api/queues/{settings.queue}/resume", headers=ACT)
    assert resumed.json() == {"paused": False}
    assert not await client.is_paused()
    assert (await client.counts())[JobState.WAITING] == 1


async def test_retry_and_remove_a_group_of_failures(
    monitor: httpx.AsyncClient,
    make_client: Callable[..., QueueClient],
    make_worker: Callable[..., Worker],
    registry: TaskRegistry,
    settings: Settings,
) -> None:
    client = make_client()
    ids = await _fail_jobs(client, make_worker, registry, ["refused"] * 3 + ["bad input"] * 2)
    url = f"/api/queues/{settings.queue}/errors"

    retried = await monitor.post(
        url + "/retry", json={"pattern": "ConnectionError: refused"}, headers=ACT
    )
    removed = await monitor.post(
        url + "/remove", json={"pattern": "ConnectionError: bad input"}, headers=ACT
    )

    assert retried.json() == {"retried": 3}
    assert removed.json() == {"removed": 2}
    states = [await client.get_state(i) for i in ids]
    assert states == [JobState.WAITING] * 3 + [JobState.UNKNOWN] * 2
    empty = await monitor.post(url + "/retry", json={"pattern": ""}, headers=ACT)
    assert empty.status_code == 400


async def test_actions_need_the_action_header(
    monitor: httpx.AsyncClient, make_client: Callable[..., QueueClient], settings: Settings
) -> None:
    client = make_client()
    reply = await monitor.post(f"/api/queues/{settings.queue}/pause")
    assert reply.status_code == 403
    assert "X-Conveyor-Action" in reply.json()["detail"]
    assert not await client.is_paused()


# --- access control ------------------------------------------------------------------------------
async def test_credentials_guard_pages_and_actions(
    make_client: Callable[..., QueueClient], settings: Settings
) -> None:
    client = make_client()
    await client.enqueue("ok", {})
    users = "admin:s3cret:rw,viewer:look:ro"
    async with serve_monitor(settings, monitor_users=users) as anon:
        for path in ("/", "/api/overview", "/api/events", "/metrics"):
            reply = await anon.get(path)
            assert reply.status_code == 401, path
            assert reply.headers["www-authenticate"].startswith("Basic")
        wrong = await anon.get("/api/overview", auth=("admin", "nope"))
        assert wrong.status_code == 401
        assert (await anon.get("/healthz")).status_code == 200
        assert (await anon.get("/readyz")).status_code == 200

        viewer = ("viewer", "look")
        assert (await anon.get("/api/overview", auth=viewer)).status_code == 200
        assert (await anon.get("/", auth=viewer)).status_code == 200
        me = (await anon.get("/api/me", auth=viewer)).json()
        assert (me["user"], me["can_act"]) == ("viewer", False)
        refused = await anon.post(f"/api/queues/{settings.queue}/pause", auth=viewer, headers=ACT)
        assert refused.status_code == 403
        assert not await client.is_paused()

        admin = ("admin", "s3cret")
        done = await anon.post(f"/api/queues/{settings.queue}/pause", auth=admin, headers=ACT)
        assert done.status_code == 200
        assert await client.is_paused()


@pytest.mark.parametrize(
    "authorization",
    ["Bearer abc", "Basic !!!not-base64", "Basic " + base64.b64encode(b"no-colon").decode()],
)
async def test_malformed_credentials_are_a_401_problem(
    settings: Settings, authorization: str
) -> None:
    async with serve_monitor(settings, monitor_users="admin:s3cret:rw") as anon:
        reply = await anon.get("/api/overview", headers={"Authorization": authorization})
    assert reply.status_code == 401
    assert reply.headers["www-authenticate"] == 'Basic realm="Conveyor monitor"'
    assert reply.headers["content-type"] == "application/problem+json"
    assert reply.json()["type"] == "urn:conveyor:problem:credentials-required"


async def test_the_monitor_speaks_the_apis_problem_dialect(
    monitor: httpx.AsyncClient, settings: Settings
) -> None:
    """Every refusal is problem+json with a urn:conveyor:problem type, as the API's are."""
    cases = [
        (await monitor.get("/api/queues/nope/jobs"), 404, "queue-not-found"),
        (await monitor.get(f"/api/queues/{settings.queue}/jobs/ghost"), 404, "job-not-found"),
        (await monitor.get(f"/api/queues/{settings.queue}/jobs?size=0"), 400, "invalid-parameters"),
        (await monitor.post(f"/api/queues/{settings.queue}/pause"), 403, "cross-site-request"),
        (await monitor.get("/api/nothing-here"), 404, "not-found"),
    ]
    for reply, status, slug in cases:
        assert reply.status_code == status, reply.text
        assert reply.headers["content-type"] == "application/problem+json"
        body = reply.json()
        assert body["type"] == f"urn:conveyor:problem:{slug}", body
        assert body["status"] == status
        assert body["title"]
        assert body["detail"]
    assert cases[2][0].json()["errors"][0]["path"] == "query.size"
    assert cases[1][0].json()["job_id"] == "ghost"
    listed = (await monitor.get("/api/openapi.json")).json()["x-problem-types"]
    for _, status, slug in cases:
        assert listed[f"urn:conveyor:problem:{slug}"]["status"] == status


async def test_read_only_monitor_refuses_every_action(
    make_client: Callable[..., QueueClient], settings: Settings
) -> None:
    client = make_client()
    async with serve_monitor(settings, monitor_read_only=True) as http:
        assert (await http.get("/api/me")).json()["can_act"] is False
        reply = await http.post(f"/api/queues/{settings.queue}/pause", headers=ACT)
        assert reply.status_code == 403
        assert reply.json()["detail"] == "the monitor is read-only"
        assert reply.json()["type"] == "urn:conveyor:problem:action-forbidden"
    assert not await client.is_paused()


async def test_metrics_can_be_public_while_the_dashboard_is_not(settings: Settings) -> None:
    async with serve_monitor(
        settings, monitor_users="admin:pw:rw", monitor_metrics_public=True
    ) as http:
        assert (await http.get("/metrics")).status_code == 200
        assert (await http.get("/api/overview")).status_code == 401


async def test_dashboard_and_its_assets_are_served(monitor: httpx.AsyncClient) -> None:
    page = await monitor.get("/")
    assert page.status_code == 200
    assert '<canvas id="chart-throughput"' in page.text
    for asset in ("/static/app.js", "/static/charts.js", "/static/style.css"):
        reply = await monitor.get(asset)
        assert reply.status_code == 200, asset
        assert len(reply.text) > 1000


# --- cleanup history -----------------------------------------------------------------------------
async def test_the_cleanup_history_is_served_newest_first(
    monitor: httpx.AsyncClient,
    make_client: Callable[..., QueueClient],
    make_worker: Callable[..., Worker],
    registry: TaskRegistry,
    settings: Settings,
    redis: Redis,
) -> None:
    client = make_client()
    url = f"/api/queues/{settings.queue}/cleanup"
    empty = (await monitor.get(url)).json()
    assert empty == {"last_scheduled_run_ms": None, "runs": []}
    await _fail_jobs(client, make_worker, registry, ["a", "b", "c"])
    # Everything failed so far is older than a zero retention.
    runs = cleanup_service.scheduler(settings, redis, RetentionPolicy(failed_s=0))
    await runs.run_now(now_ms() + 1, dry_run=True)
    await runs.run_now(now_ms() + 1)
    reply = await monitor.get(url)
    assert reply.status_code == 200
    history = reply.json()
    assert [(r["dry_run"], r["trigger"]) for r in history["runs"]] == [
        (False, "manual"),
        (True, "manual"),
    ]
    real, dry = history["runs"]
    assert real["failed_jobs_removed"] == 3
    assert real["failure_records_removed"] == 3
    assert dry["failed_jobs_removed"] == 3  # what it would have removed
    assert real["started_at_ms"] >= dry["started_at_ms"]
    assert real["duration_ms"] >= 0
    assert history["last_scheduled_run_ms"] is None  # manual runs leave the schedule alone
    assert (await monitor.get("/api/queues/nope/cleanup")).status_code == 404
    assert (
        "CleanupHistory" in (await monitor.get("/api/openapi.json")).json()["components"]["schemas"]
    )
