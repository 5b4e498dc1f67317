"""Integers beyond 64 bits stay exact everywhere: API, client, worker, monitor.

JSON has no size limit on integers and Python's are exact; orjson (the worker's decoder once)
turned 2**64 + 1 into a rounded float, so a typed task failed "invalid payload" and an untyped
one got the wrong number.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from pydantic import BaseModel

from conveyor.client import QueueClient
from conveyor.config import Settings
from conveyor.jobs import JobState
from conveyor.registry import JobContext, TaskRegistry
from conveyor.testing import wait_for_state
from conveyor.worker import Worker
from tests.support.api import api_client
from tests.support.monitor import serve_monitor

HUGE = 18446744073709551617  # 2**64 + 1
NEGATIVE = -(2**63) - 1  # one below the 64-bit minimum
ENORMOUS = 10**40 + 7


class Exact(BaseModel):
    n: int
    rest: list[int] = []


@pytest.fixture
def received() -> dict[str, Any]:
    return {}


@pytest.fixture
def registry(received: dict[str, Any]) -> TaskRegistry:
    registry = TaskRegistry()

    @registry.task("typed", retries=0)
    async def typed(payload: Exact, ctx: JobContext) -> dict[str, Any]:
        received[ctx.job_id] = payload.n
        return {"n": payload.n, "rest": payload.rest}

    @registry.task("untyped", retries=0)
    async def untyped(payload: Any, ctx: JobContext) -> Any:  # any JSON object
        received[ctx.job_id] = payload.n
        return payload.model_dump()

    @registry.task("sync_typed", retries=0)
    def sync_typed(payload: Exact, ctx: JobContext) -> int:
        received[ctx.job_id] = payload.n
        return payload.n

    return registry


@pytest.mark.parametrize("task", ["typed", "untyped", "sync_typed"])
async def test_the_handler_gets_the_exact_integer_from_the_api_and_the_client(
    registry: TaskRegistry,
    received: dict[str, Any],
    make_client: Callable[..., QueueClient],
    make_worker: Callable[..., Worker],
    settings: Settings,
    redis_url: str,
    task: str,
) -> None:
    client = make_client(registry)
    data = {"n": HUGE, "rest": [NEGATIVE, ENORMOUS]}
    async with api_client(settings, redis_url, tasks=registry) as api:
        reply = await api.post("/enqueue", json={"name": task, "data": data})
        assert reply.status_code == 201, reply.text
        via_api = reply.json()["id"]
        via_client = await client.enqueue(task, data)
        make_worker(registry)
        for job_id in (via_api, via_client):
            view = await wait_for_state(client, job_id, JobState.COMPLETED)
            assert received[job_id] == HUGE
            assert type(received[job_id]) is int
            assert view.info.data == data
            status = (await api.get(f"/jobs/{job_id}")).json()
            assert status["data"] == data
            assert '"n":18446744073709551617' in (await api.get(f"/jobs/{job_id}")).text.replace(
                " ", ""
            )
            expected = HUGE if task == "sync_typed" else data
            assert status["result"] == expected
            assert view.info.return_value == expected


async def test_the_monitor_shows_the_exact_integer(
    make_client: Callable[..., QueueClient], settings: Settings
) -> None:
    client = make_client()
    job_id = await client.enqueue("anything", {"n": HUGE})
    async with serve_monitor(settings) as monitor:
        reply = await monitor.get(f"/api/queues/{settings.queue}/jobs/{job_id}")
        assert reply.status_code == 200, reply.text
        assert reply.json()["data"] == {"n": HUGE}
