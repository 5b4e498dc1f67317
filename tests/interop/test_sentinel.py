"""Node.js BullMQ (ioredis in sentinel mode, configured as docs/scaling.md shows) and Conveyor
on one queue through the same sentinels, both ways, before and after a failover."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from conveyor.client import QueueClient
from conveyor.config import Settings
from conveyor.jobs import JobState
from conveyor.registry import TaskRegistry
from conveyor.worker import Worker
from tests.interop.conftest import NodeCall, NodeDriver, NodeWorker, _caller, serve_node
from tests.interop.helpers import UNICODE, node_jobs, settled
from tests.support.sentinel import SentinelSetup

StartNodeWorker = Callable[..., Awaitable[NodeWorker]]


@pytest.fixture(scope="module")
def sentinels(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelSetup]:
    setup = SentinelSetup(tmp_path_factory.mktemp("sentinel"))
    try:
        yield setup.start()
    finally:
        setup.stop()


@pytest.fixture(scope="module")
def redis_url(sentinels: SentinelSetup) -> str:
    """Every fixture of this module (settings, clients, workers, Node) goes through the
    sentinels."""
    return sentinels.url


@pytest.fixture(scope="module")
def sentinel_node(
    node_modules: Path, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NodeDriver]:
    yield from serve_node(redis_url, tmp_path_factory)


@pytest.fixture
def node(sentinel_node: NodeDriver, settings: Settings) -> NodeCall:
    return _caller(sentinel_node, settings)


async def test_jobs_cross_both_ways_through_the_sentinels_and_after_a_failover(
    sentinels: SentinelSetup,
    node: NodeCall,
    node_worker: StartNodeWorker,
    registry: TaskRegistry,
    make_client: Callable[..., QueueClient],
    make_worker: Callable[..., Worker],
) -> None:
    client = make_client(registry)
    worker = await node_worker()
    before = await client.enqueue("echo", UNICODE)
    view = await settled(client, before, JobState.COMPLETED)
    assert view.info.return_value == {"echo": UNICODE, "attempt": 1, "by": "node"}

    old = sentinels.kill_master()
    await asyncio.to_thread(sentinels.wait_failover, old)
    # Conveyor's client and Node's worker find the promoted replica by themselves.
    after = await client.enqueue("echo", {"n": 2})
    view = await settled(client, after, JobState.COMPLETED, timeout=30)
    assert view.info.return_value == {"echo": {"n": 2}, "attempt": 1, "by": "node"}
    await worker.stop()
    # While there was no master, ioredis reported its failed connects (and nothing else).
    failures = worker.of("error")
    assert all(("ECONNREFUSED" in e["message"] or "sentinels" in e["message"]) for e in failures)
    worker.events[:] = [e for e in worker.events if e["event"] != "error"]

    # Node's Queue too; and a Conveyor worker runs what it adds.
    [from_node] = (await node("add", [{"name": "echo", "data": UNICODE}]))["ids"]
    make_worker(registry)
    await settled(client, from_node, JobState.COMPLETED, timeout=30)
    job = (await node_jobs(node, from_node))[from_node]
    assert job["state"] == "completed"
    assert job["returnvalue"] == {"echo": UNICODE, "attempt": 1, "by": "conveyor"}
