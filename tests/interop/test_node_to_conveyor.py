"""Jobs that Node.js BullMQ adds, run by Conveyor's worker and read back from Node."""

from __future__ import annotations

import base64
import itertools
import json
from collections.abc import Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from conveyor.client import QueueClient
from conveyor.config import Settings
from conveyor.errors import JobNotFoundError
from conveyor.jobs import JobState
from conveyor.registry import TaskRegistry
from conveyor.testing import wait_for
from conveyor.worker import Worker
from tests.interop.conftest import NodeCall
from tests.interop.helpers import UNICODE, node_jobs, settled
from tests.interop.tasks import Runs
from tests.support.api import api_client
from tests.support.monitor import serve_monitor


async def test_node_job_runs_on_conveyor_and_node_reads_the_result(
    node: NodeCall,
    registry: TaskRegistry,
    make_client: Callable[..., QueueClient],
    make_worker: Callable[..., Worker],
) -> None:
    [job_id] = (await node("add", [{"name": "echo", "data": UNICODE}]))["ids"]
    assert job_id == "1"  # Node gives counter ids to jobs added without one
    client = make_client(registry)
    worker = make_worker(registry)

    await settled(client, job_id, JobState.COMPLETED)
    job = (await node_jobs(node, job_id))[job_id]
    assert job["state"] == "completed"
    assert job["name"] == "echo"
    assert job["data"] == UNICODE
    assert job["returnvalue"] == {"echo": UNICODE, "attempt": 1, "by": "conveyor"}
    assert job["attemptsMade"] == 1
    assert job["failedReason"] is None
    assert job["timestamp"] <= job["processedOn"] <= job["finishedOn"]
    assert job["processedBy"] == worker.options.name


async def test_node_job_retries_with_its_own_backoff_on_conveyor(
    node: NodeCall,
    registry: TaskRegistry,
    runs: Runs,
    make_client: Callable[..., QueueClient],
    make_worker: Callable[..., Worker],
) -> None:
    exponential, fixed = (
        await node(
            "add",
            [
                {
                    "name": "flaky",
                    "data": {"succeed_on": 3},
                    "opts": {"attempts": 3, "backoff": {"type": "exponential", "delay": 100}},
                },
                # BullMQ's shorthand: a number is a fixed delay.
                {
                    "name": "flaky",
                    "data": {"succeed_on": 2},
                    "opts": {"attempts": 2, "backoff": 150},
                },
            ],
        )
    )["ids"]
    client = make_client(registry)
    make_worker(registry)

    await settled(client, exponential, JobState.COMPLETED)
    await settled(client, fixed, JobState.COMPLETED)
    gaps = [(b - a) * 1000 for a, b in itertools.pairwise(runs.starts[exponential])]
    assert len(gaps) == 2
    assert gaps[0] >= 95, gaps  # 100 ms, then 200 ms (with a little clock slack)
    assert gaps[1] >= 190, gaps
    [fixed_gap] = [(b - a) * 1000 for a, b in itertools.pairwise(runs.starts[fixed])]
    assert fixed_gap >= 140

    jobs = await node_jobs(node, exponential, fixed)
    assert jobs[exponential]["state"] == "completed"
    assert jobs[exponential]["attemptsMade"] == 3
    assert jobs[exponential]["returnvalue"] == {"attempt": 3, "by": "conveyor"}
    assert len(jobs[exponential]["stacktrace"]) == 2  # one per failed attempt
    assert "conveyor flaky attempt 2" in jobs[exponential]["stacktrace"][-1]
    assert jobs[fixed]["attemptsMade"] == 2


async def test_node_job_fails_for_good_on_conveyor_with_a_failure_record(
    node: NodeCall,
    registry: TaskRegistry,
    runs: Runs,
    make_client: Callable[..., QueueClient],
    make_worker: Callable[..., Worker],
    redis: Redis,
    settings: Settings,
) -> None:
    opts = {"attempts": 2, "backoff": {"type": "fixed", "delay": 10}}
    [job_id] = (await node("add", [{"name": "fail", "data": UNICODE, "opts": opts}]))["ids"]
    client = make_client(registry)
    make_worker(registry)

    await settled(client, job_id, JobState.FAILED)
    assert len(runs.starts[job_id]) == 2
    job = (await node_jobs(node, job_id))[job_id]
    assert job["state"] == "failed"
    assert job["attemptsMade"] == 2
    assert job["failedReason"] == "InteropFailure: conveyor failure on attempt 2"
    assert len(job["stacktrace"]) == 2

    # Not the seed's queue: the record lives in the queue's own key space, so Node's counter
    # ids, which repeat in every queue, never share a key; failedJobs:* stays untouched.
    key = f"{settings.prefix}:{settings.queue}:conveyor:failed:{job_id}"
    assert await redis.exists(f"failedJobs:{job_id}") == 0
    assert await redis.exists(f"failedJobs:{settings.queue}:{job_id}") == 0
    record = await redis.hgetall(key)
    assert record == await client.failure_record(job_id)
    assert record["job_id"] == job_id
    assert record["queue"] == settings.queue
    assert record["prefix"] == settings.prefix
    assert record["name"] == "fail"
    assert json.loads(record["data"]) == UNICODE
    assert record["error"] == job["failedReason"]
    assert record["attempts"] == "2"
    assert await redis.zscore(f"{settings.prefix}:{settings.queue}:conveyor:failed-index", key)

    getters = await node("getters")
    assert getters["ids"]["failed"] == [job_id]
    assert getters["failedCount"] == 1
    assert getters["failed"][0]["failedReason"] == job["failedReason"]

    # Retrying from Conveyor drops the record; the job runs (and fails) again.
    await client.retry(job_id)
    assert await client.failure_record(job_id) is None
    await settled(client, job_id, JobState.FAILED)
    assert len(runs.starts[job_id]) == 4
    assert await client.failure_record(job_id) is not None


async def test_counter_ids_of_two_queues_keep_separate_failure_records(
    node: NodeCall,
    registry: TaskRegistry,
    make_client: Callable[..., QueueClient],
    make_worker: Callable[..., Worker],
    settings: Settings,
) -> None:
    other = settings.queue + "-other"
    opts = {"attempts": 1}
    [first] = (await node("add", [{"name": "fail", "data": {"q": 1}, "opts": opts}]))["ids"]
    [second] = (await node("add", [{"name": "fail", "data": {"q": 2}, "opts": opts}], queue=other))[
        "ids"
    ]
    assert first == second == "1"
    client, other_client = make_client(registry), make_client(registry, queue=other)
    make_worker(registry)
    make_worker(registry, queue=other)

    await settled(client, first, JobState.FAILED)
    await settled(other_client, second, JobState.FAILED)
    record, other_record = await client.failure_record("1"), await other_client.failure_record("1")
    assert record is not None
    assert other_record is not None
    assert (record["queue"], json.loads(record["data"])) == (settings.queue, {"q": 1})
    assert (other_record["queue"], json.loads(other_record["data"])) == (other, {"q": 2})


async def test_node_jobs_with_remove_on_fail_or_a_custom_backoff(
    node: NodeCall,
    registry: TaskRegistry,
    runs: Runs,
    make_client: Callable[..., QueueClient],
    make_worker: Callable[..., Worker],
) -> None:
    removed, custom = (
        await node(
            "add",
            [
                {"name": "fail", "data": {"k": 1}, "opts": {"attempts": 1, "removeOnFail": True}},
                # A strategy only a Node worker knows: Conveyor keeps the attempts and uses its
                # own backoff.
                {"name": "fail", "data": {}, "opts": {"attempts": 2, "backoff": {"type": "jit"}}},
            ],
        )
    )["ids"]
    client = make_client(registry)
    make_worker(registry)

    await settled(client, custom, JobState.FAILED)
    assert len(runs.starts[custom]) == 2
    await wait_for(lambda: removed in runs.order, message="the removeOnFail job never ran")

    async def gone() -> bool:
        try:
            await client.get_job(removed)
        except JobNotFoundError:
            return True
        return False

    await wait_for(gone, message="removeOnFail did not remove the job")
    assert (await node_jobs(node, removed))[removed] is None
    record = await client.failure_record(removed)  # the record outlives the removed job
    assert record is not None
    assert json.loads(record["data"]) == {"k": 1}


async def _shown_max_attempts(settings: Settings, registry: TaskRegistry, job_id: str) -> list[int]:
    """The attempts GET /jobs/{id} and the monitor's job page report for ``job_id``."""
    async with api_client(settings, settings.redis_url or "", tasks=registry) as api:
        reply = await api.get(f"/jobs/{job_id}")
        assert reply.status_code == 200, reply.text
        from_api = reply.json()["max_attempts"]
    async with serve_monitor(settings) as monitor:
        reply = await monitor.get(f"/api/queues/{settings.queue}/jobs/{job_id}")
        assert reply.status_code == 200, reply.text
        from_monitor = reply.json()["attempts"]
    return [from_api, from_monitor]


async def test_node_job_without_attempts_gets_conveyors_default_retries(
    node: NodeCall,
    settings: Settings,
    registry: TaskRegistry,
    runs: Runs,
    make_client: Callable[..., QueueClient],
    make_worker: Callable[..., Worker],
) -> None:
    [job_id] = (await node("add", [{"name": "fail", "data": {}}]))["ids"]
    client = make_client(registry)
    # What the API and the monitor say before the job runs is what the worker then does
    # (they used to say 1, Node's default, while the worker gave it 6).
    assert await _shown_max_attempts(settings, registry, job_id) == [6, 6]
    make_worker(registry)  # 5 retries, exponential from 20 ms (the test settings)

    await settled(client, job_id, JobState.FAILED)
    assert len(runs.starts[job_id]) == 6  # not Node's own default of 1 attempt
    job = (await node_jobs(node, job_id))[job_id]
    assert job["attemptsMade"] == 6
    assert job["opts"]["attempts"] == 0  # Node wrote "no attempts given"; Conveyor filled in
    assert await _shown_max_attempts(settings, registry, job_id) == [6, 6]


async def test_node_job_options_are_honoured_by_conveyor(
    node: NodeCall,
    registry: TaskRegistry,
    runs: Runs,
    make_client: Callable[..., QueueClient],
    make_worker: Callable[..., Worker],
) -> None:
    def echo(tag: str, **opts: Any) -> dict[str, Any]:
        return {"name": "echo", "data": {"tag": tag}, "opts": opts}

    ids = (
        await node(
            "add",
            [
                echo("p10", priority=10),
                echo("p1", priority=1),
                echo("p5", priority=5),
                echo("plain-a"),
                echo("plain-b"),
                echo("lifo", lifo=True),
                echo("custom", jobId="order-ü-42"),
                echo("gone", jobId="vanish-1", removeOnComplete=True),
                echo("later", delay=600),
            ],
        )
    )["ids"]
    tags = ["p10", "p1", "p5", "plain-a", "plain-b", "lifo", "custom", "gone", "later"]
    by_tag = dict(zip(tags, ids, strict=True))
    assert by_tag["custom"] == "order-ü-42"
    assert by_tag["gone"] == "vanish-1"
    bulk = (
        await node(
            "addBulk",
            [
                {"name": "echo", "data": {"tag": "bulk-1"}},
                {"name": "echo", "data": {"tag": "bulk-2"}, "opts": {"jobId": "bulk-two"}},
            ],
        )
    )["ids"]
    client = make_client(registry)
    assert (await client.get_job(by_tag["later"])).state is JobState.DELAYED
    assert (await client.get_job(by_tag["p1"])).state is JobState.PRIORITIZED

    make_worker(registry, concurrency=1)
    await settled(client, by_tag["later"], JobState.COMPLETED)
    for job_id in [*bulk, *[by_tag[t] for t in tags if t != "gone"]]:
        await settled(client, job_id, JobState.COMPLETED)
    await wait_for(lambda: by_tag["gone"] in runs.order, message="vanish-1 never ran")

    started = [next(t for t, i in by_tag.items() if i == j) for j in runs.order if j in ids]
    # The wait list first (LIFO on top, then FIFO), then prioritized by priority.
    assert started[:3] == ["lifo", "plain-a", "plain-b"]
    assert started.index("p1") < started.index("p5") < started.index("p10")

    jobs = await node_jobs(node, *ids, *bulk)
    assert jobs["vanish-1"] is None  # removeOnComplete
    with pytest.raises(JobNotFoundError):
        await client.get_job("vanish-1")
    later = jobs[by_tag["later"]]
    assert later["processedOn"] - later["timestamp"] >= 600
    assert jobs["order-ü-42"]["returnvalue"]["echo"] == {"tag": "custom"}
    assert jobs["bulk-two"]["returnvalue"]["echo"] == {"tag": "bulk-2"}
    assert all(jobs[i]["state"] == "completed" for i in [*bulk, *ids] if i != "vanish-1")


async def test_conveyor_sees_what_node_added(
    node: NodeCall,
    registry: TaskRegistry,
    make_client: Callable[..., QueueClient],
) -> None:
    ids = (
        await node(
            "add",
            [
                {"name": "echo", "data": UNICODE},
                {"name": "echo", "data": {}, "opts": {"priority": 3}},
                {"name": "echo", "data": {}, "opts": {"delay": 60_000}},
                {
                    "name": "flaky",
                    "data": {"succeed_on": 2},
                    "opts": {"attempts": 4, "backoff": {"type": "exponential", "delay": 250}},
                },
            ],
        )
    )["ids"]
    client = make_client(registry)
    counts = await client.counts()
    assert counts[JobState.WAITING] == 2
    assert counts[JobState.PRIORITIZED] == 1
    assert counts[JobState.DELAYED] == 1
    waiting = await client.list_jobs(JobState.WAITING, ascending=True)
    assert [j.id for j in waiting] == [ids[0], ids[3]]
    assert waiting[0].data == UNICODE
    assert waiting[0].name == "echo"

    plain, prioritized, delayed, flaky = [(await client.get_job(i)) for i in ids]
    assert plain.state is JobState.WAITING
    assert plain.info.timestamp > 0
    assert (prioritized.state, prioritized.info.priority) == (JobState.PRIORITIZED, 3)
    assert (delayed.state, delayed.info.delay) == (JobState.DELAYED, 60_000)
    assert flaky.info.options["attempts"] == 4
    assert flaky.info.options["backoff"] == {"type": "exponential", "delay": 250}


async def test_node_lists_a_running_conveyor_worker(
    node: NodeCall,
    registry: TaskRegistry,
    make_worker: Callable[..., Worker],
    redis: Redis,
    settings: Settings,
) -> None:
    worker = make_worker(registry)
    queue_b64 = base64.b64encode(settings.queue.encode()).decode()
    expected = f"{settings.prefix}:{queue_b64}:w:{worker.options.name}"

    async def named() -> bool:
        return expected in {c.get("name") for c in await redis.client_list()}

    await wait_for(named, message="the worker's blocking connection never got its name")
    getters = await node("getters")
    assert getters["workers"] == [expected]
