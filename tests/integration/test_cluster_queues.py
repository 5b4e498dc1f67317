"""Several queues on two masters of a Redis Cluster (CONVEYOR_QUEUES): one worker process
serves both, each queue's jobs complete on its own master, and the monitor's counts,
`conveyor stats` and cleanup cover both shards; one API enqueues to both."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from conveyor import JobContext, QueueClient, Settings, TaskRegistry, run_worker
from conveyor.errors import Unrecoverable
from conveyor.hashtag import queue_route_key
from conveyor.jobs import JobState
from conveyor.maintenance import RetentionPolicy
from conveyor.redis import connect
from conveyor.services import cleanup
from conveyor.services.monitor.inspector import Inspector
from conveyor.services.redis_connection import QueueConnections
from conveyor.testing import wait_for
from tests.support.api import api_client
from tests.support.cluster import ClusterSetup, tags_on_two_masters


class Item(BaseModel):
    fail: bool = False


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterSetup]:
    setup = ClusterSetup(tmp_path_factory.mktemp("cluster"))
    try:
        yield setup.start()
    finally:
        setup.stop()


async def test_one_process_serves_queues_on_two_shards(
    cluster: ClusterSetup, tmp_path: Path
) -> None:
    first, second = tags_on_two_masters(cluster, uuid.uuid4().hex[:8])
    settings = Settings(
        redis_url=cluster.url,
        queues={first: 1, second: 1},
        prefix="bull",
        data_dir=tmp_path / "conveyor",
        concurrency=4,
    )
    registry = TaskRegistry()

    @registry.task("work", retries=0)
    async def work(payload: Item, ctx: JobContext) -> str:
        if payload.fail:
            raise Unrecoverable("for the cleanup")
        return ctx.queue

    clients = {
        q: QueueClient.from_settings(settings, registry=registry, queue=q) for q in (first, second)
    }
    homes = {q: cluster.master_of(queue_route_key("bull", q)) for q in clients}
    assert homes[first] != homes[second]
    runner = asyncio.create_task(run_worker(registry, settings, handle_signals=False))
    try:
        for client in clients.values():
            for _ in range(5):
                await client.enqueue("work", {})
            await client.enqueue("work", {"fail": True})

        async def settled() -> bool:
            counts = [await c.counts() for c in clients.values()]
            return all(
                c.get(JobState.COMPLETED, 0) == 5 and c.get(JobState.FAILED, 0) == 1 for c in counts
            )

        await wait_for(settled, 20, message="each queue's jobs finish on its own master")
        for queue, port in homes.items():  # the jobs are on the queue's own master
            with cluster.client(port) as node:
                assert node.zcard(f"bull:{queue}:completed") == 5

        # The monitor and `conveyor stats` read each queue on its own master.
        redis = connect(cluster.url, route_key=queue_route_key("bull", first))
        conns = QueueConnections(settings, cluster.url, redis)
        try:
            inspector = Inspector(redis, settings, conns)
            summaries = {s.name: s for s in await inspector.overview()}
            assert set(summaries) == {first, second}
            for summary in summaries.values():
                assert (summary.counts["completed"], summary.counts["failed"]) == (5, 1)
                assert summary.workers == 1
        finally:
            await conns.aclose()
            await redis.aclose()
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
        for client in clients.values():
            await client.close()

    reports = await cleanup.once(settings, cluster.url, RetentionPolicy(0), dry_run=False)
    assert [(r.queue, r.failed_jobs_removed, r.failure_records_removed) for r in reports] == [
        (first, 1, 1),
        (second, 1, 1),
    ]


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({}, id="fast-path+batching"),
        pytest.param({"api_fast_path": False, "api_batch_enqueue": False}, id="route+single"),
    ],
)
async def test_one_api_enqueues_to_queues_on_two_shards(
    cluster: ClusterSetup, tmp_path: Path, overrides: dict[str, Any]
) -> None:
    first, second = tags_on_two_masters(cluster, uuid.uuid4().hex[:8])
    settings = Settings(
        redis_url=cluster.url, queues={first: 1, second: 1}, data_dir=tmp_path / "conveyor"
    )
    async with api_client(settings, cluster.url, **overrides) as api:
        single = {
            q: await api.post("/enqueue", json={"name": "echo", "queue": q})
            for q in (first, second)
        }
        bulk = await api.post(
            "/enqueue/bulk", json={"queue": second, "jobs": [{"name": "echo"}] * 3}
        )
        assert {r.status_code for r in single.values()} | {bulk.status_code} == {201}
        status = await api.get(single[second].json()["status_url"])
        assert (status.json()["queue"], status.json()["state"]) == (second, "waiting")
    expected = {first: 1, second: 4}
    for queue, count in expected.items():  # each on its own master
        with cluster.client(cluster.master_of(queue_route_key("bull", queue))) as node:
            assert node.llen(f"bull:{queue}:wait") == count
