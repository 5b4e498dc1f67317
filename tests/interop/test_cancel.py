"""A job Conveyor cancels is, to Node.js BullMQ 6.7, a job that failed: Node's getters see it
failed with its reason, and Node's ``job.retry()`` runs it again on a Conveyor worker (BullMQ
has no stored form of a cancellation: Node's ``worker.cancelJob`` only aborts a signal in the
process that runs the job)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from conveyor.client import QueueClient
from conveyor.jobs import JobState
from conveyor.registry import EmptyPayload, JobContext, TaskRegistry
from conveyor.testing import wait_for
from conveyor.worker import Worker
from tests.interop.conftest import NodeCall
from tests.interop.helpers import node_jobs, settled
from tests.interop.tasks import Runs, build_registry


def with_hold(runs: Runs) -> TaskRegistry:
    registry = build_registry(runs)

    @registry.task("hold")
    async def hold(payload: EmptyPayload, ctx: JobContext) -> None:
        runs.record(ctx)
        await asyncio.sleep(60)

    return registry


async def test_node_sees_cancelled_jobs_as_failed_and_its_retry_runs_them(
    node: NodeCall,
    runs: Runs,
    make_client: Callable[..., QueueClient],
    make_worker: Callable[..., Worker],
) -> None:
    registry = with_hold(runs)
    client = make_client(registry)
    waiting, running = (
        await node("add", [{"name": "echo", "data": {}, "opts": {"delay": 60_000}}])
    )["ids"] + (await node("add", [{"name": "hold", "data": {}}]))["ids"]
    await client.cancel(waiting, "not wanted", by="ops")
    make_worker(registry)
    await wait_for(lambda: running in runs.starts, message="hold never started")
    assert (await client.cancel(running, "too long", by="ops")).stopping
    await settled(client, running, JobState.FAILED)
    seen = await node_jobs(node, waiting, running)
    for job_id, reason in ((waiting, "not wanted"), (running, "too long")):
        assert seen[job_id]["state"] == "failed"
        assert seen[job_id]["failedReason"] == f"JobCancelled: cancelled by ops: {reason}"
        assert seen[job_id]["finishedOn"] is not None
    assert seen[running]["attemptsMade"] == 1
    # Node's retry keeps the request Conveyor left on the hash; the worker drops it and runs.
    await node("retry", [waiting])
    await settled(client, waiting, JobState.COMPLETED)
    assert len(runs.starts[waiting]) == 1
