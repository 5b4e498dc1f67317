"""Node.js BullMQ (an ioredis Cluster) and Conveyor on one Redis Cluster, on a queue whose name
holds the hash tag: jobs cross both ways."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from conveyor import run_worker
from conveyor.client import QueueClient
from conveyor.config import Settings
from conveyor.hashtag import queue_route_key, slot_of
from conveyor.jobs import JobState
from conveyor.registry import TaskRegistry
from tests.interop.conftest import NodeCall, NodeDriver, NodeWorker, _caller, serve_node
from tests.interop.helpers import UNICODE, node_jobs, settled
from tests.support.cluster import ClusterSetup


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterSetup]:
    setup = ClusterSetup(tmp_path_factory.mktemp("cluster"))
    try:
        yield setup.start()
    finally:
        setup.stop()


@pytest.fixture
def settings(cluster: ClusterSetup, tmp_path: Path) -> Settings:
    """This test's queue on the cluster: its name is its hash tag."""
    return Settings(
        redis_url=cluster.url,
        queue="{q-" + uuid.uuid4().hex[:10] + "}",
        prefix="bull",
        data_dir=tmp_path / "conveyor",
        backoff_delay_ms=20,
    )


@pytest.fixture(scope="module")
def cluster_driver(
    node_modules: Path, cluster: ClusterSetup, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NodeDriver]:
    yield from serve_node(cluster.url, tmp_path_factory)


@pytest.fixture
def node(cluster_driver: NodeDriver, settings: Settings) -> NodeCall:
    return _caller(cluster_driver, settings)


@pytest.fixture
async def client(settings: Settings, registry: TaskRegistry) -> AsyncIterator[QueueClient]:
    queue = QueueClient.from_settings(settings, registry=registry)
    yield queue
    await queue.close()


async def test_the_queue_lives_on_the_master_of_its_tag(
    cluster: ClusterSetup, settings: Settings, client: QueueClient
) -> None:
    job_id = await client.enqueue("echo", {"x": 1})
    base = queue_route_key(settings.prefix, settings.queue)
    owner = cluster.master_of(base)
    with cluster.client(owner) as node:  # the master of the tag's slot holds the job
        assert node.exists(f"{base}{job_id}") == 1
    assert slot_of(f"{base}{job_id}") == slot_of(settings.queue)


async def test_node_job_runs_on_conveyor_and_node_reads_the_result(
    node: NodeCall, settings: Settings, client: QueueClient, registry: TaskRegistry
) -> None:
    [job_id] = (await node("add", [{"name": "echo", "data": UNICODE}]))["ids"]
    worker = asyncio.create_task(run_worker(registry, settings, handle_signals=False))
    try:
        view = await settled(client, job_id, JobState.COMPLETED)
        assert view.info.return_value == {"echo": UNICODE, "attempt": 1, "by": "conveyor"}
        job = (await node_jobs(node, job_id))[job_id]
        assert (job["state"], job["returnvalue"]) == ("completed", view.info.return_value)
    finally:
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker


async def test_conveyor_job_runs_on_node(
    node_worker: Callable[..., Awaitable[NodeWorker]], client: QueueClient, node: NodeCall
) -> None:
    job_id = await client.enqueue("echo", UNICODE)
    await node_worker()
    view = await settled(client, job_id, JobState.COMPLETED)
    assert view.info.return_value == {"echo": UNICODE, "attempt": 1, "by": "node"}
    assert (await node_jobs(node, job_id))[job_id]["state"] == "completed"
