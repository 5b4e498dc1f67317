"""BullMQ's ``deduplication`` shared with Node.js BullMQ 6.7, both ways: one deduplication id
is one job whichever side adds it, in the simple, throttle and debounce modes."""

from __future__ import annotations

from collections.abc import Callable

from redis.asyncio import Redis

from conveyor.client import QueueClient
from conveyor.jobs import JobState
from conveyor.registry import TaskRegistry
from tests.interop.conftest import NodeCall
from tests.interop.helpers import node_jobs


async def test_node_first_then_conveyor_gets_nodes_job(
    node: NodeCall, registry: TaskRegistry, make_client: Callable[..., QueueClient]
) -> None:
    client = make_client(registry)
    [node_id] = (
        await node(
            "add", [{"name": "echo", "data": {"n": 1}, "opts": {"deduplication": {"id": "s"}}}]
        )
    )["ids"]
    assert await client.enqueue("echo", {"n": 2}, {"deduplication": {"id": "s"}}) == node_id
    # Throttle: Node's ttl window holds Conveyor's duplicate too.
    [throttled] = (
        await node(
            "add",
            [{"name": "echo", "data": {}, "opts": {"deduplication": {"id": "t", "ttl": 60_000}}}],
        )
    )["ids"]
    dedup = {"deduplication": {"id": "t", "ttl": 60_000}}
    assert await client.enqueue("echo", {}, dedup) == throttled
    assert (await client.counts())[JobState.WAITING] == 2


async def test_conveyor_first_then_node_gets_conveyors_job(
    node: NodeCall, registry: TaskRegistry, make_client: Callable[..., QueueClient], redis: Redis
) -> None:
    client = make_client(registry)
    ours = await client.enqueue("echo", {"n": 1}, {"deduplication": {"id": "c", "ttl": 60_000}})
    # Node reads the option and the key as its own Queue.add would have written them.
    assert (await node("dedupJobId", "c"))["id"] == ours
    job = (await node_jobs(node, ours))[ours]
    assert job["deduplicationId"] == "c"
    assert job["opts"]["deduplication"] == {"id": "c", "ttl": 60_000}
    spec = {"name": "echo", "data": {"n": 2}, "opts": {"deduplication": {"id": "c"}}}
    assert (await node("add", [spec]))["ids"] == [ours]
    assert (await client.counts())[JobState.WAITING] == 1


async def test_debounce_across_both_sides_keeps_the_newest(
    node: NodeCall, registry: TaskRegistry, make_client: Callable[..., QueueClient]
) -> None:
    client = make_client(registry)
    debounce = {"id": "d", "ttl": 60_000, "extend": True, "replace": True}
    first = await client.enqueue("echo", {"n": 1}, {"delay": 30_000, "deduplication": debounce})
    [second] = (
        await node(
            "add",
            [
                {
                    "name": "echo",
                    "data": {"n": 2},
                    "opts": {"delay": 30_000, "deduplication": debounce},
                }
            ],
        )
    )["ids"]
    assert second != first
    assert await client.find_job(first) is None
    third = await client.enqueue("echo", {"n": 3}, {"delay": 30_000, "deduplication": debounce})
    assert await client.find_job(second) is None
    assert (await node("dedupJobId", "d"))["id"] == third
    job = (await node_jobs(node, third))[third]
    assert job["data"] == {"n": 3}
    assert job["state"] == "delayed"
    assert (await client.counts())[JobState.DELAYED] == 1
