"""Jobs that Conveyor enqueues, run by a Node.js BullMQ worker and read back by Conveyor; and
Node's Queue getters (what Node dashboards show) over Conveyor's jobs."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from conveyor.client import JobSpec, QueueClient
from conveyor.errors import JobNotFoundError
from conveyor.jobs import JobState
from conveyor.registry import TaskRegistry
from conveyor.testing import wait_for
from conveyor.worker import Worker
from tests.interop.conftest import NodeCall, NodeWorker
from tests.interop.helpers import UNICODE, node_jobs, settled
from tests.interop.tasks import Runs

StartNodeWorker = Callable[..., Awaitable[NodeWorker]]


async def test_conveyor_job_runs_on_node_and_conveyor_reads_the_result(
    node_worker: StartNodeWorker,
    registry: TaskRegistry,
    make_client: Callable[..., QueueClient],
) -> None:
    client = make_client(registry)
    job_id = await client.enqueue("echo", UNICODE)
    assert uuid.UUID(job_id)
    worker = await node_worker()

    view = await settled(client, job_id, JobState.COMPLETED)
    assert view.info.return_value == {"echo": UNICODE, "attempt": 1, "by": "node"}
    assert view.info.attempts_made == 1
    assert view.info.processed_by == worker.name
    assert view.info.timestamp <= (view.info.processed_on or 0) <= (view.info.finished_on or 0)
    # The job is completed in Redis a moment before the Node process's event line is read.
    [completed] = await worker.wait("completed", job_id)
    assert completed["returnvalue"] == view.info.return_value


async def test_node_honours_conveyors_retry_policy(
    node: NodeCall,
    node_worker: StartNodeWorker,
    registry: TaskRegistry,
    make_client: Callable[..., QueueClient],
) -> None:
    client = make_client(registry)
    flaky = await client.enqueue(
        "flaky",
        {"succeed_on": 3},
        {"attempts": 3, "backoff": {"type": "exponential", "delay": 100}},
    )
    # No options: Conveyor's default policy (5 retries, exponential; 20 ms in the tests) is
    # written into the job, so a Node worker applies it too.
    doomed = await client.enqueue("fail", {})
    worker = await node_worker(concurrency=2)

    view = await settled(client, flaky, JobState.COMPLETED)
    assert view.info.attempts_made == 3
    assert view.info.return_value == {"attempt": 3, "by": "node"}
    await worker.wait("completed", flaky)  # every event line of the job has been read
    starts = [e["at"] for e in worker.of("started", flaky)]
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert len(gaps) == 2
    assert gaps[0] >= 95, gaps
    assert gaps[1] >= 190, gaps

    failed = await settled(client, doomed, JobState.FAILED)
    await worker.wait("failed", doomed)
    await wait_for(lambda: len(worker.of("started", doomed)) == 6, timeout=15)
    assert failed.info.attempts_made == 6
    assert failed.info.failed_reason == "node failure on attempt 6"
    assert failed.info.stacktrace  # Node's stack traces, readable from Python
    # Node workers do not write failedJobs records: only Conveyor's worker does.
    assert await client.failure_record(doomed) is None
    # Conveyor can still retry it, and a Node worker runs it again.
    await client.retry(doomed)
    await wait_for(lambda: len(worker.of("started", doomed)) == 12, timeout=15)

    dropped = await client.enqueue("fail", {}, {"attempts": 1, "removeOnFail": True})
    await worker.wait("failed", dropped)
    assert (await node_jobs(node, dropped))[dropped] is None
    with pytest.raises(JobNotFoundError):
        await client.get_job(dropped)


async def test_conveyor_job_options_are_honoured_by_node(
    node: NodeCall,
    node_worker: StartNodeWorker,
    registry: TaskRegistry,
    make_client: Callable[..., QueueClient],
) -> None:
    client = make_client(registry)

    async def echo(tag: str, **opts: Any) -> str:
        return await client.enqueue("echo", {"tag": tag}, opts)

    by_tag = {
        "p10": await echo("p10", priority=10),
        "p1": await echo("p1", priority=1),
        "p5": await echo("p5", priority=5),
        "plain-a": await echo("plain-a"),
        "plain-b": await echo("plain-b"),
        "lifo": await echo("lifo", lifo=True),
        "custom": await echo("custom", jobId="invoice-ß-7"),
        "gone": await echo("gone", removeOnComplete=True),
        "later": await echo("later", delay=600),
        "retries": await echo("retries", attempts=4, backoff={"type": "fixed", "delay": 70}),
    }
    bulk = await client.enqueue_many([JobSpec("echo", {"tag": f"bulk-{i}"}) for i in range(3)])
    assert by_tag["custom"] == "invoice-ß-7"

    before = await node_jobs(node, *by_tag.values())
    assert before[by_tag["p1"]]["opts"]["priority"] == 1
    assert before[by_tag["p1"]]["priority"] == 1
    assert before[by_tag["p1"]]["state"] == "prioritized"
    assert before[by_tag["later"]]["opts"]["delay"] == 600
    assert before[by_tag["later"]]["state"] == "delayed"
    assert before[by_tag["gone"]]["opts"]["removeOnComplete"] is True
    assert before[by_tag["lifo"]]["opts"]["lifo"] is True
    assert before[by_tag["retries"]]["opts"]["attempts"] == 4
    assert before[by_tag["retries"]]["opts"]["backoff"] == {"type": "fixed", "delay": 70}
    assert before["invoice-ß-7"]["id"] == "invoice-ß-7"
    assert before["invoice-ß-7"]["data"] == {"tag": "custom"}

    worker = await node_worker(concurrency=1)
    for job_id in [*bulk, *(i for t, i in by_tag.items() if t != "gone")]:
        await settled(client, job_id, JobState.COMPLETED)
    await worker.wait("completed", by_tag["gone"])
    with pytest.raises(JobNotFoundError):  # removeOnComplete
        await client.get_job(by_tag["gone"])

    tag_of = {i: t for t, i in by_tag.items()}
    started = [tag_of[e["id"]] for e in worker.of("started") if e["id"] in tag_of]
    assert started[:3] == ["lifo", "plain-a", "plain-b"]  # wait list first, LIFO on top
    assert started.index("p1") < started.index("p5") < started.index("p10")
    later = await client.get_job(by_tag["later"])
    assert (later.info.processed_on or 0) - later.info.timestamp >= 600
    assert (await client.get_job("invoice-ß-7")).info.return_value["echo"] == {"tag": "custom"}


async def test_node_getters_show_conveyors_jobs(
    node: NodeCall,
    registry: TaskRegistry,
    runs: Runs,
    make_client: Callable[..., QueueClient],
    make_worker: Callable[..., Worker],
) -> None:
    client = make_client(registry)
    done = await client.enqueue("echo", {"tag": "done"})
    failed = await client.enqueue("fail", {}, {"attempts": 1})
    worker = make_worker(registry)
    await settled(client, done, JobState.COMPLETED)
    await settled(client, failed, JobState.FAILED)
    worker.stop()
    await wait_for(lambda: not worker.running, message="the worker never stopped")

    waiting = await client.enqueue_many([JobSpec("echo", {"i": i}) for i in range(3)])
    prioritized = await client.enqueue("echo", {}, {"priority": 2})
    delayed = await client.enqueue("echo", {}, {"delay": 60_000})

    getters = await node("getters")
    counts = {s.value: n for s, n in (await client.counts()).items()}
    assert getters["counts"] == {
        "waiting": 3,
        "prioritized": 1,
        "delayed": 1,
        "active": 0,
        "completed": 1,
        "failed": 1,
        "paused": 0,
    }
    assert all(counts[state] == n for state, n in getters["counts"].items())
    assert getters["ids"]["waiting"] == waiting  # oldest first
    assert getters["ids"]["prioritized"] == [prioritized]
    assert getters["ids"]["delayed"] == [delayed]
    assert getters["ids"]["completed"] == [done]
    assert getters["ids"]["failed"] == [failed]
    assert getters["completed"][0]["returnvalue"] == {
        "echo": {"tag": "done"},
        "attempt": 1,
        "by": "conveyor",
    }
    assert getters["failed"][0]["failedReason"] == "InteropFailure: conveyor failure on attempt 1"
    assert getters["failed"][0]["processedBy"] == worker.options.name

    await client.pause()
    getters = await node("getters")
    assert getters["isPaused"] is True
    counts = {s.value: n for s, n in (await client.counts()).items()}
    assert all(counts[state] == n for state, n in getters["counts"].items()), counts
    assert getters["ids"]["waiting"] == waiting  # BullMQ keeps paused jobs in its wait list


BIG = 2**53 + 1  # 9007199254740993: the first integer a JavaScript number cannot hold


async def test_integers_beyond_2_pow_53_are_exact_in_python_and_rounded_by_node(
    node: NodeCall,
    node_worker: StartNodeWorker,
    registry: TaskRegistry,
    make_client: Callable[..., QueueClient],
    make_worker: Callable[..., Worker],
) -> None:
    """What docs/interop.md promises: Redis keeps the exact digits, Conveyor's side keeps them,
    and whatever Node parses is rounded to the nearest double."""
    client = make_client(registry)
    job_id = await client.enqueue("echo", {"id": BIG, "small": 2**53})
    assert (await client.get_job(job_id)).info.raw_data == f'{{"id":{BIG},"small":{2**53}}}'
    assert (await node_jobs(node, job_id))[job_id]["data"] == {"id": 2**53, "small": 2**53}

    await node_worker()
    view = await settled(client, job_id, JobState.COMPLETED)
    assert view.info.return_value["echo"] == {"id": 2**53, "small": 2**53}  # rounded by Node

    other = make_client(registry, queue=client.queue + "-py")
    make_worker(registry, queue=other.queue)
    py_job = await other.enqueue("echo", {"id": BIG})
    py_view = await settled(other, py_job, JobState.COMPLETED)
    assert py_view.info.return_value["echo"] == {"id": BIG}  # exact end to end in Python
