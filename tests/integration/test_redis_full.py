"""Redis full (``maxmemory`` reached under ``noeviction``): a real redis-server whose limit is
set just below what it holds refuses every write with OOM. The API and the monitor answer
507 ``redis-full`` (not ``redis-unavailable``), write nothing, and their readiness says so;
once memory is freed everything works again."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from conveyor.client import QueueClient
from conveyor.config import Settings
from conveyor.embedded import RedisServer
from conveyor.jobs import COUNTED_STATES
from conveyor.redis import connect, is_out_of_memory, memory_full
from tests.support.api import api_client, registry
from tests.support.monitor import serve_monitor

FULL = "urn:conveyor:problem:redis-full"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    redis = RedisServer(tmp_path / "redis").start()
    try:
        yield redis
    finally:
        redis.stop()


@pytest.fixture
async def admin(server: RedisServer) -> AsyncIterator[Redis]:
    client = connect(server.url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def own(settings: Settings, server: RedisServer) -> Settings:
    return settings.model_copy(update={"redis_url": server.url, "redis_wait_s": 1.0})


async def fill_up(redis: Redis) -> None:
    """Hold some data, then set maxmemory below what Redis uses: every write is refused."""
    for i in range(40):
        await redis.set(f"ballast:{i}", "x" * 10_000)
    used = int((await redis.info("memory"))["used_memory"])
    await redis.config_set("maxmemory", used - 200_000)


async def job_ids(client: QueueClient) -> set[str]:
    return set(await client.bull.get_range(list(COUNTED_STATES), 0, -1))


@pytest.mark.parametrize(
    "config",
    [
        pytest.param({}, id="fast-path+batching"),
        pytest.param({"api_fast_path": False, "api_batch_enqueue": False}, id="route+single"),
    ],
)
async def test_the_api_answers_507_redis_full_and_writes_nothing(
    own: Settings, server: RedisServer, admin: Redis, config: dict[str, Any]
) -> None:
    client = QueueClient(admin, queue=own.queue, prefix=own.prefix, registry=registry)
    async with api_client(own, server.url, **config) as api:
        first = (await api.post("/enqueue", json={"name": "echo"})).json()["id"]
        await fill_up(admin)
        before = await job_ids(client)
        for method, path, body in [
            ("POST", "/enqueue", {"name": "echo", "data": {"value": 1}}),
            ("POST", "/enqueue/bulk", {"jobs": [{"name": "echo"}, {"name": "echo"}]}),
            ("POST", f"/queues/{own.queue}/pause", None),
            ("DELETE", f"/jobs/{first}", None),
        ]:
            response = await api.request(method, path, json=body)
            assert response.status_code == 507, (path, response.text)
            assert response.headers["content-type"] == "application/problem+json"
            assert response.json()["type"] == FULL
            assert "retry-after" not in response.headers
        ready = await api.get("/readyz")
        assert ready.status_code == 507
        assert ready.json()["type"] == FULL
        assert "maxmemory" in ready.json()["detail"]
        assert (await api.get("/healthz")).status_code == 200
        assert await job_ids(client) == before
        assert not await client.is_paused()

        await admin.config_set("maxmemory", 0)
        assert (await api.get("/readyz")).status_code == 200
        assert (await api.post("/enqueue", json={"name": "echo"})).status_code == 201
    await client.close()


async def test_the_monitor_answers_507_and_its_readiness_says_so(
    own: Settings, admin: Redis
) -> None:
    client = QueueClient(admin, queue=own.queue, prefix=own.prefix)
    await client.enqueue("echo", {})
    async with serve_monitor(own) as monitor:
        await fill_up(admin)
        act = {"X-Conveyor-Action": "1"}
        paused = await monitor.post(f"/api/queues/{own.queue}/pause", headers=act)
        assert paused.status_code == 507, paused.text
        assert paused.json()["type"] == "urn:conveyor:problem:redis-full"
        ready = await monitor.get("/readyz")
        assert ready.status_code == 507
        assert "maxmemory" in ready.json()["detail"]
        assert (await monitor.get("/api/overview")).status_code == 200
        await admin.config_set("maxmemory", 0)
        assert (await monitor.get("/readyz")).status_code == 200
    assert not await client.is_paused()
    await client.close()


def test_oom_is_told_apart_from_other_errors() -> None:
    from redis.exceptions import ConnectionError, OutOfMemoryError, ResponseError

    assert is_out_of_memory(OutOfMemoryError("command not allowed when used memory"))
    scripted = ResponseError("Error running script: -OOM command not allowed when used memory")
    assert is_out_of_memory(scripted)
    wrapped = RuntimeError("x")
    wrapped.__cause__ = scripted
    assert is_out_of_memory(wrapped)
    assert not is_out_of_memory(ResponseError("WRONGTYPE Operation against a key"))
    assert not is_out_of_memory(ConnectionError("refused"))
    assert memory_full({"maxmemory": 0, "used_memory": 10}) is None
    assert memory_full({"maxmemory": 100, "used_memory": 90}) is None
    assert (
        memory_full({"maxmemory": 100, "used_memory": 150, "mem_not_counted_for_evict": 60}) is None
    )
    assert "150 bytes used" in str(memory_full({"maxmemory": 100, "used_memory": 150}))
