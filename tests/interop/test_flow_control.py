"""Flow control shared with Node.js BullMQ: one rate limit for a Node worker's limiter and a
Conveyor worker's, queue-wide limits that either side sets and the other reads, and a manual
hold (Node's queue.rateLimit) that Conveyor's workers obey."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from conveyor import JobContext, QueueLimits, RateLimit, TaskRegistry
from conveyor.client import QueueClient
from conveyor.jobs import JobState
from conveyor.registry import EmptyPayload
from conveyor.worker import Worker
from tests.interop.conftest import NodeCall
from tests.interop.helpers import settled

MAX, DURATION_MS = 3, 1000


def stamping_registry(starts: list[float]) -> TaskRegistry:
    """``echo`` that records when it starts (epoch ms, the clock Node's worker reports)."""
    registry = TaskRegistry()

    @registry.task("echo")
    async def echo(payload: EmptyPayload, ctx: JobContext) -> dict[str, Any]:
        starts.append(time.time() * 1000)
        return {"attempt": ctx.attempt, "by": "conveyor"}

    return registry


async def test_a_node_limiter_and_a_conveyor_limiter_keep_one_limit(
    make_client: Callable[..., QueueClient],
    make_worker: Callable[..., Worker],
    node_worker: Callable[..., Awaitable[Any]],
) -> None:
    client = make_client()
    limiter = {"max": MAX, "duration": DURATION_MS}
    node = await node_worker(concurrency=5, limiter=limiter)
    conveyor_starts: list[float] = []
    make_worker(
        stamping_registry(conveyor_starts), concurrency=5, limiter=RateLimit(MAX, DURATION_MS)
    )
    ids = [await client.enqueue("echo", {}) for _ in range(12)]
    for job_id in ids:
        await settled(client, job_id, JobState.COMPLETED, 20)
    node_starts = [float(e["at"]) for e in node.of("started")]
    assert node_starts, "the node worker took jobs"
    assert conveyor_starts, "the conveyor worker took jobs"
    assert len(node_starts) + len(conveyor_starts) == len(ids)
    # When each job was taken: the "active" event moveToActive writes in the same script
    # that asks the limiter, its stream id in Redis's own milliseconds. (A handler's start,
    # stamped later by the worker, can lag by hundreds of ms on a loaded machine.)
    events = await client.redis.xrange(client.bull.keys["events"]) or []
    starts = sorted(
        float(str(event_id).split("-")[0])
        for event_id, fields in events
        if fields and fields.get("event") == "active" and str(fields.get("jobId")) in ids
    )
    assert len(starts) == len(ids), events
    # 3 jobs per 1000 ms window between both: the 4th start comes a window after the 1st
    gaps = [starts[i] - starts[i - MAX] for i in range(MAX, len(starts))]
    assert min(gaps) >= DURATION_MS - 50, [round(s - starts[0]) for s in starts]


async def test_queue_limits_cross_both_ways(
    make_client: Callable[..., QueueClient], node: NodeCall
) -> None:
    client = make_client()
    await client.set_limits(QueueLimits(RateLimit(7, 2000), concurrency=3))
    seen = await node("limits")
    assert seen["rate"] == {"max": 7, "duration": 2000}
    assert seen["concurrency"] == 3
    await node("setLimits", {"rate": {"max": 11, "duration": 500}, "concurrency": None})
    assert await client.get_limits() == QueueLimits(RateLimit(11, 500), concurrency=None)
    await client.set_limits(QueueLimits())
    seen = await node("limits")
    assert seen["rate"] is None
    assert seen["concurrency"] is None


async def test_a_node_manual_hold_stops_conveyor_workers(
    make_client: Callable[..., QueueClient], make_worker: Callable[..., Worker], node: NodeCall
) -> None:
    client = make_client()
    starts: list[float] = []
    make_worker(stamping_registry(starts), concurrency=2)  # no limiter of its own
    warm = await client.enqueue("echo", {})
    await settled(client, warm, JobState.COMPLETED)
    await node("rateLimit", 1000)
    held_at = time.time() * 1000
    job_id = await client.enqueue("echo", {})
    await settled(client, job_id, JobState.COMPLETED)
    assert starts[-1] - held_at >= 900, starts[-1] - held_at
    flow = await client.flow_state()
    assert not flow.held


async def test_a_conveyor_hold_stops_a_node_worker_with_a_limiter(
    make_client: Callable[..., QueueClient], node_worker: Callable[..., Awaitable[Any]]
) -> None:
    """What RateLimited writes is Node's own manual rate limit: a Node worker with a limiter
    obeys it (BullMQ's rule; one without a limiter would not, docs/flow-control.md)."""
    client = make_client()
    node = await node_worker(concurrency=2, limiter={"max": 100, "duration": 1000})
    held_ms = await client.bull.hold(1500)  # what RateLimited(1.5) sets
    held_at = time.time() * 1000
    job_id = await client.enqueue("echo", {})
    await settled(client, job_id, JobState.COMPLETED, 20)
    (started,) = [e for e in node.of("started") if e["id"] == job_id]
    assert held_ms == 1500
    assert float(started["at"]) - held_at >= 1300, float(started["at"]) - held_at
